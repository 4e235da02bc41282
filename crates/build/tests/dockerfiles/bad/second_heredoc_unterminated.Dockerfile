FROM alpine
COPY <<A <<B /
a
A
b
