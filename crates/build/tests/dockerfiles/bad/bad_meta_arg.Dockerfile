ARG A=${B:?required}
FROM alpine
