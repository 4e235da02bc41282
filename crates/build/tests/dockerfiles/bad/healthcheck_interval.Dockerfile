FROM alpine
HEALTHCHECK --interval=500us CMD true
