FROM alpine
ONBUILD FROM alpine
