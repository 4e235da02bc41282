FROM alpine:3.20
RUN <<EOF
apk add --no-cache python3
echo "$HOME" > /home.txt
EOF
RUN <<-"SCRIPT" sh -x
		echo tabs stripped
	SCRIPT
RUN python3 <<'PY' && echo after
print("no expansion of $HOME")
PY
RUN <<EOF1 cat > /a && 2<<EOF2 cat /b
first
EOF1
second
EOF2
RUN <<SH
#!/bin/sh
echo shebang
  SH
SH
COPY <<EOF /etc/motd
Welcome to ${NAME:-berth}
  \$escaped and \\ backslash "quotes" stay
EOF
COPY --chmod=755 <<"RAW" <<-COOKED /usr/local/bin/
#!/bin/sh
echo "$1 stays as written"
RAW
		cooked $NAME
	COOKED
ADD <<EOF /added.txt
added
EOF
RUN echo '<<NOT_A_HEREDOC' cat<<ALSO_NOT
RUN ["sh", "-c", "cat <<EOF"]
