FROM alpine AS first
COPY --from=second /x /x
FROM alpine AS second
COPY --from=first /y /y
