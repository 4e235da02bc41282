FROM alpine
RUN --mount=target=/x,mode=0600 true
