FROM nginx
HEALTHCHECK NONE
HEALTHCHECK --interval=30s --timeout=1m30s --start-period=0s --start-interval=500ms --retries=3 \
  CMD curl -f http://localhost/ || exit 1
HEALTHCHECK cmd ["wget", "-q", "-O-", "http://localhost/"]
HEALTHCHECK --interval=1.5h --timeout=0 CMD true
HEALTHCHECK NONE []
