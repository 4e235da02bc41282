# Global ARGs are seen by FROM only.
ARG GO_VERSION=1.22
ARG BASE=alpine:3.20
ARG UNUSED
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS Build
ARG TARGETOS TARGETARCH
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app .
FROM build AS test
RUN go test ./...
FROM ${BASE} AS assets
RUN mkdir /assets
FROM scratch AS unused
COPY --from=test /x /x
# A duplicate name: FROM binds the earlier stage, --from and --target the last one.
FROM assets AS assets
FROM $BASE
COPY --from=BUILD /out/app /usr/local/bin/app
COPY --from=2 /assets /assets
COPY --from=docker.io/library/busybox:latest /bin/busybox /bin/
RUN --mount=from=assets,target=/a --mount=type=bind,from=redis:7,target=/r ls /a /r
