# escape=`
# escape=`
FROM alpine
