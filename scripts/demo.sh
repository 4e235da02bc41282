#!/usr/bin/env bash
# berth's main job on a fresh Debian 12 machine (as root): install packages, build, make a
# busybox image locally from busybox-static (no internet), and run a container from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --quiet
bin=$PWD/target/release
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A root filesystem from the host's busybox-static, as a bundle for the runtime.
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$work/bundle/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/bundle/rootfs/etc/passwd"
(cd "$work/bundle" && "$bin/berth-runtime" spec)
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sh", "-c", "echo Hello from a berth container: $(hostname), pid $$"/' "$work/bundle/config.json"
"$bin/berth-runtime" --root "$work/state" run --bundle "$work/bundle" berth-demo
