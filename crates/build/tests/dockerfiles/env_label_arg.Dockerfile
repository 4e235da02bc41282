FROM alpine
ENV A=1 B="two words" C=three\ words D='single $quoted' E=
ENV LEGACY value with   many   spaces
ENV "QUOTED KEY"=x
ENV X=${A}-$B Y=\$A
LABEL a=b "c d"="e f" g='h i'
LABEL legacy.form this is the value
LABEL multi.line="one \
two"
ARG ONE
ARG TWO=2 THREE="3 3" FOUR=
ARG FIVE=${TWO:-x}
ARG  SIX	SEVEN=7
