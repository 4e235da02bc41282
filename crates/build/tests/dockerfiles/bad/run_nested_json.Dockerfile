FROM alpine
RUN ["nested", [1, {"a": null}]]
