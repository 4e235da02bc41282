# syntax=docker/dockerfile:1.7
#  ESCAPE = `
# check=skip=JSONArgsRecommended,StageNameCasing;error=false
# A plain comment ends the directives,
# escape=\
# so the line above is only a comment.
FROM mcr.microsoft.com/windows/servercore:ltsc2022
COPY testfile.txt c:\
RUN dir c:\ `
    && echo done
WORKDIR c:\app\
ENV PATH="c:\tools;${PATH}" `
    TICK=`$NOT_A_VAR
