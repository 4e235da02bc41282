FROM alpine
USER --uid=1 app
