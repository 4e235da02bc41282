FROM alpine
FROM busybox
COPY --from=2 /x /x
