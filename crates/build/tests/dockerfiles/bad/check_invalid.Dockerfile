# check=warn=all
FROM alpine
