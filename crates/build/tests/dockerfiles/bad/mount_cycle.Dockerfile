FROM alpine AS a
RUN --mount=from=c,target=/c true
FROM a AS b
FROM b AS c
