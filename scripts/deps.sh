#!/usr/bin/env bash
# Installs the system packages berth's demo and tests need (Debian 12, as root).
# Skips apt entirely when everything is already there.
set -euo pipefail
pkgs=(busybox-static docker-registry skopeo runc crun libseccomp-dev pkg-config iproute2 nftables uidmap
      apache2-utils openssl curl hyperfine bzip2 xz-utils zstd procps
      libc6-dev   # libc.a: berth-runtime is linked statically (Makefile: runtime-static)
      qemu-system-x86 criu   # tests/vm: cgroup v2 and checkpoint/restore in a VM
      podman   # podman: the peer in benches/pull.sh (two packages on top of skopeo's)
      buildah) # buildah: the peer in benches/build.sh
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# docker-registry's package starts a service on :5000 where systemd runs; tests start their own.
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
