FROM alpine IS x
