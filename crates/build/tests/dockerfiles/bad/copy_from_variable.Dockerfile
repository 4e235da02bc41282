ARG S=builder
FROM alpine
COPY --from=${S} /x /x
