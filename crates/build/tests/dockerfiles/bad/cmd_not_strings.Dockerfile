FROM alpine
CMD [true]
