# A small single-stage image using most instructions.
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="demo app" version=1.0
MAINTAINER Someone <someone@example.com>
ENV APP_HOME=/srv/app PATH=/srv/app/bin:$PATH
ARG USER=app
RUN useradd --create-home "$USER" && mkdir -p $APP_HOME
WORKDIR $APP_HOME
COPY . .
EXPOSE 8080/tcp 9090/udp 80
VOLUME /data /cache
USER $USER
STOPSIGNAL SIGTERM
ENTRYPOINT ["/srv/app/bin/server"]
CMD ["--port", "8080"]
