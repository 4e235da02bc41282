FROM alpine
VOLUME ["/a", "  "]
