FROM alpine
ENV FULL=${HOME}/${NAME}-${VERSION} DEF=${MISSING:-fallback} ALT=${NAME:+set} EMPTYDEF=${EMPTY:-was-empty} DASH=${EMPTY-kept-empty}
ENV TRIM1=${VERSION#*.} TRIM2=${VERSION##*.} TRIM3=${VERSION%.*} TRIM4=${VERSION%%.*}
ENV REPL=${VERSION/./-} REPLALL=${VERSION//./-} PATHS=${FILE##*/} EXT=${FILE%.tar.*}
ENV QUOTES="$NAME" SINGLE='$NAME' ESCAPED=\$NAME MIXED="a'$NAME'b" 'KEY$NAME'=v
WORKDIR ${HOME}/src/$NAME
USER ${NAME}:${NAME}
EXPOSE ${PORTS} 9000/udp
VOLUME ["$HOME/data", "/static"]
STOPSIGNAL ${SIGNAL:-SIGQUIT}
LABEL version=$VERSION "name"="${NAME}"
COPY --chown=$NAME:$NAME --chmod=${MODE} src/$NAME.conf $HOME/
ADD --checksum=${SUM} https://example.com/$NAME-${VERSION}.tar.gz /tmp/
COPY --from=alpine --exclude=$NOT_EXPANDED a b
RUN --mount=type=cache,target=$HOME/.cache,id=${NAME}-cache echo $NAME is not expanded here
CMD echo $NAME
ONBUILD ENV LATER=$NAME
