FROM alpine AS src
FROM alpine
COPY --from=src --chown=1000:1000 --chmod=0644 --link /etc/os-release /etc/alpine-release /out/
COPY --parents --exclude=*.md --exclude="**/test" ./docs/./**/*.txt /docs/
COPY ["file with spaces.txt", "other file", "/dest dir/"]
COPY --from=0 /bin/busybox /bin/
COPY --from=nginx:1.27 /etc/nginx/nginx.conf /etc/nginx/
COPY --link=false a b
ADD --chown=app --chmod=u+rwx --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/tool.tar.gz /opt/
ADD --keep-git-dir=true git@github.com:example/repo.git#main:sub /src
ADD --unpack=false --link archive.tar.gz /archives/
ADD --exclude=*.tmp ./assets/ /assets/
