FROM alpine
ADD --chmod=1 --chmod=2 a b
