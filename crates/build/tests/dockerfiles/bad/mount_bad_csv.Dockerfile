FROM alpine
RUN --mount='target="/x"y' true
