FROM alpine
onbuild maintainer me
