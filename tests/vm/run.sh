#!/usr/bin/env bash
# The VM tests: what this machine cannot show (its cgroups are v1 with a cgroup2 side that holds
# only hugetlb; Debian 12's criu cannot run on its kernel), shown in a VM under qemu (software
# emulation) on Debian 12's own kernel, booted with cgroup v2 only (`cgroup_no_v1=all`).
#
# The initramfs holds busybox (host busybox-static) as init and shell, berth-runtime linked
# statically (as `make build` ships it), busybox bundles written here with the test kit's
# berth-bundle (one shared root, a config.json per check), criu with its libraries, and the
# kernel's modules the checks need. tests/vm/guest.sh mounts the usual file systems and sources
# tests/vm/checks.sh, which prints VM-PASS / VM-FAIL lines and VM-DONE. Exits non-zero when a
# check failed or the VM did not get to the end.
#
# Knobs: RUNTIME (a statically linked berth-runtime; default: built here, debug, into
# target/static), BERTH (the engine, target/debug/berth), BUNDLE_BIN (target/debug/berth-bundle), VM_CACHE (where the kernel package is
# kept, target/vm), VM_TIMEOUT (seconds, 900), VM_CHECKS (the script the guest sources instead
# of tests/vm/checks.sh: benches/vm-memory.sh). Uses qemu-system-x86, apt-get download, dpkg-deb,
# python3, the host's busybox-static and criu (scripts/deps.sh installs them); about 10 s here.
set -euo pipefail
cd "$(dirname "$0")/../.."

VM_CACHE=$(realpath -m "${VM_CACHE:-target/vm}")
VM_TIMEOUT=${VM_TIMEOUT:-900}
BUNDLE_BIN=$(realpath -m "${BUNDLE_BIN:-target/debug/berth-bundle}")
BERTH=$(realpath -m "${BERTH:-target/debug/berth}")
die() { echo "tests/vm/run.sh: $*" >&2; exit 1; }
for t in qemu-system-x86_64 dpkg-deb python3 criu; do
  command -v "$t" >/dev/null || die "$t missing (bash scripts/deps.sh)"
done
[ -x /bin/busybox ] || die "/bin/busybox missing (busybox-static)"

if [ -z "${RUNTIME:-}" ]; then
  cargo rustc --quiet -p berth-cli --bin berth-runtime -- -C target-feature=+crt-static
  mkdir -p target/static && cp target/debug/berth-runtime target/static/berth-runtime
  RUNTIME=target/static/berth-runtime
fi
RUNTIME=$(realpath "$RUNTIME")
[ -x "$BUNDLE_BIN" ] || cargo build --quiet -p berth-testkit --bin berth-bundle
[ -x "$BERTH" ] || cargo build --quiet -p berth-cli --bin berth
case $(python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); print("dynamic" if b"/lib64/ld-linux" in d[:4096] else "static")' "$RUNTIME") in
  static) ;;
  *) die "$RUNTIME is linked dynamically; the VM has no libc for it (make runtime-static)" ;;
esac

# Debian 12's kernel, from the package linux-image-amd64 points to (downloaded once), and the
# modules the checks need, in load order: overlay (the runtime's sealed view of itself), the
# socket diag modules criu dumps sockets with, nf_tables (criu probes it at start).
MODULES='overlay|unix_diag|inet_diag|tcp_diag|udp_diag|netlink_diag|af_packet_diag|crc32c_generic|libcrc32c|nfnetlink|nf_tables'

mkdir -p "$VM_CACHE"
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1; }
pkg=$(kernel_pkg || true)
[ -n "$pkg" ] || { apt-get update -qq >/dev/null 2>&1 || true; pkg=$(kernel_pkg || true); }
[ -n "$pkg" ] || die "no linux-image package known to apt"
kdir=$VM_CACHE/$pkg
if [ ! -d "$kdir" ]; then
  # Stale lists may name a kernel the mirror no longer has: update once and ask again.
  if ! (cd "$VM_CACHE" && apt-get download -q "$pkg" >/dev/null 2>&1); then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(kernel_pkg || true)
    kdir=$VM_CACHE/$pkg
    (cd "$VM_CACHE" && apt-get download -q "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
  fi
  rm -rf "$kdir.tmp"
  dpkg-deb -x "$VM_CACHE/$pkg"_*.deb "$kdir.tmp"
  # Keep the kernel and the few modules the checks load (the package holds ~400 MB of them).
  find "$kdir.tmp/lib/modules" -name '*.ko*' | grep -v -E "/($MODULES)\.ko" | xargs rm -f
  mv "$kdir.tmp" "$kdir" && rm -f "$VM_CACHE/$pkg"_*.deb
fi
kernel=$(ls "$kdir"/boot/vmlinuz-*)
modules=$(ls -d "$kdir"/lib/modules/*)

tmp=$(mktemp -d /tmp/berth-vm.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"/{bin,usr/sbin,modules,b,proc,sys,dev,lib64}
cp /bin/busybox "$root/bin/busybox"
cp "$RUNTIME" "$root/berth-runtime"
cp tests/vm/guest.sh "$root/init"
cp "${VM_CHECKS:-tests/vm/checks.sh}" "$root/checks.sh"
chmod 755 "$root/init"
for m in ${MODULES//|/ }; do
  f=$(find "$modules" -name "$m.ko*" | head -1)
  [ -n "$f" ] || die "module $m missing from $modules (rm -rf $kdir to fetch it again)"
  cp "$f" "$root/modules/" && basename "$f" >>"$root/modules/order"
done
# The engine (stripped), criu, GNU tar (criu saves tmpfs contents with it) and the libraries
# they load, at the paths the loader looks in.
strip -o "$root/berth" "$BERTH"
cp "$(command -v criu)" "$root/usr/sbin/criu"
mkdir -p "$root/usr/bin" && cp "$(command -v tar)" "$root/usr/bin/tar"
for lib in $(ldd "$BERTH" "$(command -v criu)" "$(command -v tar)" | grep -v ':$' | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
done

# The bundles: one root, a config per check (python3 edits the test kit's default config).
"$BUNDLE_BIN" "$tmp/bb" >/dev/null
mv "$tmp/bb/rootfs" "$root/rootfs"
python3 - "$tmp/bb/config.json" "$root/b" <<'PY'
import copy, json, os, sys
base = json.load(open(sys.argv[1]))
base["root"] = {"path": "/rootfs", "readonly": True}
def bundle(name, args, resources=None, caps=(), edit=None):
    c = copy.deepcopy(base)
    c["process"]["args"] = args
    c["process"]["terminal"] = False
    c["linux"]["cgroupsPath"] = "/vmtest/" + name
    if resources:
        c["linux"].setdefault("resources", {}).update(resources)
    for s in ("bounding", "effective", "permitted"):
        c["process"]["capabilities"][s] = sorted(set(c["process"]["capabilities"][s]) | set(caps))
    if edit:
        edit(c)
    os.makedirs(os.path.join(sys.argv[2], name))
    json.dump(c, open(os.path.join(sys.argv[2], name, "config.json"), "w"), indent=1)
sh = lambda s: ["/bin/sh", "-c", s]
bundle("limits", sh("cd /sys/fs/cgroup && cat memory.max pids.max cpu.max cpu.weight"),
       {"memory": {"limit": 64 << 20}, "pids": {"limit": 32}, "cpu": {"quota": 50000, "period": 100000, "shares": 2048}})
# Character devices 240:0 (allowed by a rule) and 240:1 (left to "deny all"): no driver has
# 240, so an open the filter lets through fails with ENXIO, one it stops with EPERM. mknod is
# allowed for any device by the default rules (as runc's); 1:5 is /dev/zero, a default device.
bundle("devices", sh("try() { if m=$( (: >$1) 2>&1); then echo $2-opened; else case $m in"
                     " *'not permitted'*) echo $2-denied;; *) echo $2-allowed;; esac; fi; };"
                     " mknod /dev/a c 240 0 && try /dev/a rule; mknod /dev/b c 240 1 && try /dev/b other;"
                     " mknod /dev/z c 1 5 && head -c1 /dev/z >/dev/null && echo zero-ok"),
       {"devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 240, "minor": 0, "access": "rw"}]},
       caps=("CAP_MKNOD",))
bundle("sleep", ["/bin/sleep", "600"])
# A counter in the container's /dev/shm (a tmpfs CRIU saves and restores), stdio on the
# container's own /dev/null; in the host's network namespace (CRIU would need iproute2 and
# iptables in the VM to save a new one).
def host_net(c):
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
bundle("counter", sh("exec </dev/null >/dev/null 2>&1; i=0; while :; do i=$((i+1)); echo $i >/dev/shm/n; sleep 0.1; done"),
       edit=host_net)
PY

(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$tmp/initrd"
echo "tests/vm/run.sh: booting $(basename "$kernel") with $(du -h "$tmp/initrd" | cut -f1) of initramfs (qemu, software emulation)"
log=$tmp/console.log
set +e
timeout "$VM_TIMEOUT" qemu-system-x86_64 -m "${VM_MEM:-1024}" -smp 2 -nodefaults -display none -no-reboot \
  -serial "file:$log" -kernel "$kernel" -initrd "$tmp/initrd" \
  -append "console=ttyS0 cgroup_no_v1=all rdinit=/init panic=-1 quiet loglevel=3"
rc=$?
set -e
grep -E '^VM-' "$log" | tr -d '\r' || true
[ $rc -eq 0 ] || { echo "tests/vm/run.sh: qemu exited with $rc (124: timed out after ${VM_TIMEOUT}s)"; tail -30 "$log"; exit 1; }
grep -q '^VM-DONE' "$log" || { echo "tests/vm/run.sh: the VM did not get to the end"; tail -30 "$log"; exit 1; }
if grep -q '^VM-FAIL' "$log"; then exit 1; fi
echo "tests/vm/run.sh: $(grep -c '^VM-PASS' "$log") checks passed"
