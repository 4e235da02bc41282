#!/usr/bin/env bash
# berth's main job on a fresh Debian 12 machine (as root): install packages, build, make a
# busybox image locally from busybox-static (no internet), and run containers from it with the
# engine (`berth`: a greeting, then a web server with a published port) and with the OCI
# runtime alone (`berth-runtime`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --quiet
bin=$PWD/target/release
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A root filesystem from the host's busybox-static, as a tarball.
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/root"
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$work/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$work/rootfs/etc/group"
tar -C "$work/rootfs" -czf "$work/busybox.tar.gz" .

# The engine: import the tarball as an image, run a container from it.
"$bin/berth" import "$work/busybox.tar.gz" berth-demo/busybox:latest >/dev/null
"$bin/berth" images
"$bin/berth" run --rm --network none --memory 64m berth-demo/busybox sh -c 'echo "Hello from a berth container: $(hostname), pid $$, memory limit $(($(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max) / 1048576)) MiB"'

# Networking: a web server container on the default bridge network with a published port,
# fetched from the host. It runs in a throwaway network namespace, so that the demo leaves the
# machine's own network (interfaces, firewall) exactly as it was; berth makes its bridge there.
unshare --net env bin="$bin" bash -euo pipefail -c '
  ip link set lo up
  "$bin/berth" run -d --name berth-demo-web -p 8080:80 berth-demo/busybox \
    sh -c "echo \"<h1>Hello from a berth web server</h1>\" > /index.html && exec httpd -f -p 80 -h /" >/dev/null
  trap "\"\$bin/berth\" rm -f berth-demo-web >/dev/null" EXIT
  "$bin/berth" ps --format "{{.Names}}  {{.Status}}  {{.Ports}}"
  for i in $(seq 50); do curl -fsS http://127.0.0.1:8080/ && exit 0; sleep 0.1; done
  echo "the web server did not answer" >&2; exit 1
'

# The runtime on its own, as runc would be used: a bundle and `berth-runtime run`.
mkdir -p "$work/bundle"
cp -a "$work/rootfs" "$work/bundle/rootfs"
(cd "$work/bundle" && "$bin/berth-runtime" spec)
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sh", "-c", "echo Hello from berth-runtime: $(hostname), pid $$"/' "$work/bundle/config.json"
"$bin/berth-runtime" --root "$work/state" run --bundle "$work/bundle" berth-demo
