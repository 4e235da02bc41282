FROM alpine
SHELL ["bash", 1]
