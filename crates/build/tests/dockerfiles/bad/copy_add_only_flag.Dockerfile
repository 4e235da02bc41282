FROM alpine
COPY --keep-git-dir a b
