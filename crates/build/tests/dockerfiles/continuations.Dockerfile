FROM alpine:3.20
RUN apk add --no-cache \
# a comment inside the continuation is dropped
        curl \
  # an indented one too
        git \	  
        make
RUN echo "two spaces kept:" \

    after-an-empty-line
RUN echo 'backslash at the end' \\
RUN echo leading-blanks-kept\
    x\
y
   RUN    echo    indented instruction   
run echo lower case \
    # a comment does not end a continuation
    still-the-run
EXPOSE \
# Port
80
