FROM mcr.microsoft.com/powershell
SHELL ["pwsh", "-Command", "$ErrorActionPreference = 'Stop';"]
RUN Write-Host hello
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN set -x; echo piped | cat
