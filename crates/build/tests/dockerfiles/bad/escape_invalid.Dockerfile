# escape=^
FROM alpine
