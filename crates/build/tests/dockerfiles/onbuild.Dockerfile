FROM alpine AS tools
RUN echo tools > /tools
FROM node:20 AS base
ONBUILD COPY package.json /app/
ONBUILD   RUN npm ci
onbuild copy --from=tools /tools /tools
ONBUILD RUN <<EOF
echo trigger with a heredoc
EOF
ONBUILD HEALTHCHECK NONE
FROM base
CMD ["node", "index.js"]
