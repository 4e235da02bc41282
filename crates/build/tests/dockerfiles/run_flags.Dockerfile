FROM golang:1.22
RUN --mount=type=cache,target=/root/.cache/go-build,id=gobuild,sharing=locked \
    --mount=type=cache,target=/go/pkg/mod,mode=0777,uid=1000,gid=1000 \
    go build ./...
RUN --mount=type=bind,source=go.sum,target=go.sum --mount=target=/src,rw go mod download
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required=true \
    --mount=type=secret,id=token,env=TOKEN \
    --mount=type=ssh \
    --mount=type=tmpfs,target=/tmp,size=64m \
    make
RUN --mount="type=bind,src=/x,dst=/y,ro=false" --network=none --security=insecure true
RUN --network=host -- --not-a-flag
RUN --mount=type=cache,target=$CACHE_DIR,id=${CACHE_ID:-default} echo variables stay for later
