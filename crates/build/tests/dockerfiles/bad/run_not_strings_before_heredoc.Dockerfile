FROM alpine
RUN ["a", null] <<EOF
