FROM alpine
RUN --mount=from=$STAGE,target=/s true
