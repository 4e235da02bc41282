# nothing to start from
RUN true
