FROM busybox
CMD ["echo", "hello world"] trailing text is ignored
RUN ["printf", "%s\n", "\u00e9\t\"q\"\/", "\ud83d\ude00", "\ud800"]
RUN [ "spaced" , "array" ]
RUN ['single', 'quotes'] are shell form
RUN ["c:\x"] invalid escape is shell form
RUN ["unterminated"
RUN ["trailing comma",]
RUN [1e999]
RUN ["first"] ["second is ignored"]
ENTRYPOINT []
CMD
HEALTHCHECK CMD ["true"]
VOLUME ["/with space", "/plain"]
