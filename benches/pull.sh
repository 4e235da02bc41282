#!/usr/bin/env bash
# `berth pull` against `podman pull` and `skopeo copy docker://… oci:DIR` from one local
# docker-registry on loopback (plain HTTP), side by side in one hyperfine run per image:
#   - busybox: the test kit's busybox rootfs (host busybox-static) as one gzip layer;
#   - big: ~200 MiB of /dev/urandom in 4 gzip layers (incompressible);
#   - files: many small files, one gzip layer of the host's /usr/lib/gcc, /usr/lib/python3 and
#     /usr/lib/python3.11 (about 5,000 files, 220 MB; the fixture of shared/design/peers.md).
# Every timed pull is cold: an untimed --prepare removes what the previous one stored (`rmi`
# for berth and podman, which then also drop the layers; `rm -rf` of skopeo's OCI dir). berth
# and podman unpack the layers; skopeo only stores the blobs. Then peak RSS of one cold pull
# of `big` per tool (GNU time's %M). Prints medians and berth/peer ratios.
# Run as root after `cargo build --release`; see benches/README.md.
#
# Knobs (environment): RUNS (timed runs per tool, 10), WARMUP (1), BIG_MIB (size of the big
# image, 200), IMAGES (which to time, "busybox big files"), FS (where the tools store what they pull: `loop`, the default, a fresh ext4
# image with a journal, loop-mounted, as on a usual host; `tmp`, the temp dir's own file
# system), BERTH (target/release/berth), BUNDLE (target/release/berth-bundle).
#
# Everything lives in one temp dir that is removed on exit (also on failure or Ctrl-C),
# after the registry it started is stopped and the loop file system is unmounted.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
WARMUP=${WARMUP:-1}
BIG_MIB=${BIG_MIB:-200}
IMAGES=${IMAGES:-busybox big files}
FS=${FS:-loop}
BERTH=$(realpath -m "${BERTH:-target/release/berth}")
BUNDLE=$(realpath -m "${BUNDLE:-target/release/berth-bundle}")

die() { echo "benches/pull.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$BERTH" ] && [ -x "$BUNDLE" ] || die "$BERTH or $BUNDLE missing: cargo build --release first"
for t in hyperfine docker-registry skopeo python3; do
  command -v "$t" >/dev/null || die "$t missing (bash scripts/deps.sh)"
done

tmp=""
reg_pid=""
loop_mounted=0
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
  if [ -n "$tmp" ]; then
    # podman may leave overlay mounts of its own under its root; nothing of ours is mounted.
    grep -o " $tmp/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | xargs -r -n1 umount 2>/dev/null
    if [ "$loop_mounted" = 1 ] && mountpoint -q "$tmp/fs"; then
      umount "$tmp/fs" || echo "benches/pull.sh: warning: could not unmount $tmp/fs" >&2
    fi
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tmp=$(mktemp -d /tmp/berth-bench-pull.XXXXXX)
case $FS in
  loop)
    # A journaled ext4 (this VM's root file system has no journal, and there ext4 scans past
    # every inode deleted in the last ~30 s when it allocates one: the rmi before each timed
    # pull would then cost the next pull more than its own work).
    truncate -s 4G "$tmp/fs.img"
    mkfs.ext4 -q -F "$tmp/fs.img"
    mkdir "$tmp/fs"
    mount -o loop "$tmp/fs.img" "$tmp/fs"
    loop_mounted=1
    work=$tmp/fs
    ;;
  tmp) work=$tmp/work; mkdir "$work" ;;
  *) die "FS must be loop or tmp" ;;
esac
export TMPDIR=$work/tmpdir   # skopeo and podman keep big temp files there
mkdir -p "$TMPDIR"

# The registry, on a free loopback port.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done
host=127.0.0.1:$port

# An OCI layout of gzip layers made from the given tar files: mk_image DIR TAR...
mk_image() {
  local dir=$1 diffs=() layers=() history=() t d gz size
  shift
  mkdir -p "$dir/blobs/sha256"
  for t in "$@"; do
    d=$(sha256sum "$t" | cut -d' ' -f1)
    gzip -1 -n -c "$t" >"$dir/blob.tmp"
    gz=$(sha256sum "$dir/blob.tmp" | cut -d' ' -f1)
    size=$(stat -c %s "$dir/blob.tmp")
    mv "$dir/blob.tmp" "$dir/blobs/sha256/$gz"
    diffs+=("\"sha256:$d\"")
    history+=("{\"created\":\"2026-01-01T00:00:00Z\",\"created_by\":\"benches/pull.sh: $(basename "$t")\"}")
    layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$gz\",\"size\":$size}")
  done
  local arch
  arch=$(case $(uname -m) in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac)
  # A history entry per layer: buildah refuses images without.
  printf '{"architecture":"%s","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' \
    "$arch" "$(IFS=,; echo "${diffs[*]}")" "$(IFS=,; echo "${history[*]}")" >"$dir/config.json"
  local cd cs
  cd=$(sha256sum "$dir/config.json" | cut -d' ' -f1)
  cs=$(stat -c %s "$dir/config.json")
  mv "$dir/config.json" "$dir/blobs/sha256/$cd"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$cd" "$cs" "$(IFS=,; echo "${layers[*]}")" >"$dir/manifest.json"
  local md ms
  md=$(sha256sum "$dir/manifest.json" | cut -d' ' -f1)
  ms=$(stat -c %s "$dir/manifest.json")
  mv "$dir/manifest.json" "$dir/blobs/sha256/$md"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
    "$md" "$ms" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
}

echo "== making the images"
"$BUNDLE" "$tmp/bb" >/dev/null
tar -C "$tmp/bb/rootfs" -cf "$tmp/busybox.tar" .
mk_image "$tmp/oci-busybox" "$tmp/busybox.tar"
per=$((BIG_MIB / 4))
big_tars=()
for i in 1 2 3 4; do
  mkdir -p "$tmp/big$i"
  head -c "$((per * 1024 * 1024))" /dev/urandom >"$tmp/big$i/data-$i"
  tar -C "$tmp/big$i" -cf "$tmp/big$i.tar" .
  rm -rf "$tmp/big$i"
  big_tars+=("$tmp/big$i.tar")
done
mk_image "$tmp/oci-big" "${big_tars[@]}"
tar -C / -cf "$tmp/files.tar" usr/lib/gcc usr/lib/python3 usr/lib/python3.11
echo "   files: $(tar -tf "$tmp/files.tar" | wc -l) entries, $(du -sh "$tmp/files.tar" | cut -f1) of tar"
mk_image "$tmp/oci-files" "$tmp/files.tar"
rm -f "$tmp"/*.tar
for img in busybox big files; do
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$tmp/oci-$img:latest" "docker://$host/bench/$img:latest"
done
du -sh "$tmp/oci-busybox/blobs" "$tmp/oci-big/blobs" "$tmp/oci-files/blobs" | sed 's/^/   /'
rm -rf "$tmp/oci-busybox" "$tmp/oci-big" "$tmp/oci-files"

berth_cmd="$BERTH --root $work/berth-root --runroot $tmp/berth-run"
podman_cmd="podman --root $work/podman-root --runroot $tmp/podman-run --storage-driver overlay"
tools=(berth)
command -v podman >/dev/null && tools+=(podman) || echo "note: podman is not installed; leaving it out"
tools+=(skopeo)

pull_cmd() { # TOOL IMAGE
  case $1 in
    berth) echo "$berth_cmd pull -q $host/bench/$2:latest" ;;
    podman) echo "$podman_cmd pull -q --tls-verify=false $host/bench/$2:latest" ;;
    skopeo) echo "skopeo --insecure-policy copy -q --src-tls-verify=false docker://$host/bench/$2:latest oci:$work/skopeo-oci:latest" ;;
  esac
}
reset_cmd() { # TOOL IMAGE: untimed, before each run
  case $1 in
    berth) echo "bash -c '$berth_cmd rmi -f $host/bench/$2:latest >/dev/null 2>&1 || true'" ;;
    podman) echo "bash -c '$podman_cmd rmi -f $host/bench/$2:latest >/dev/null 2>&1 || true'" ;;
    skopeo) echo "rm -rf $work/skopeo-oci" ;;
  esac
}

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), storage on $(findmnt -no FSTYPE,SOURCE -T "$work" | tr -s ' ' ' ') (FS=$FS)"
echo "   berth $("$BERTH" --version 2>&1 | head -1 | awk '{print $NF}'), $(command -v podman >/dev/null && podman --version), $(skopeo --version), $(hyperfine --version)"
for img in $IMAGES; do
  args=()
  for t in "${tools[@]}"; do
    # Each must work once before it is timed.
    eval "$(reset_cmd "$t" "$img")"
    eval "$(pull_cmd "$t" "$img")" >/dev/null || die "$t could not pull $img"
    args+=(-n "$t" -p "$(reset_cmd "$t" "$img")" "$(pull_cmd "$t" "$img")")
  done
  echo
  echo "== cold pull of $img"
  hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-csv "$tmp/$img.csv" "${args[@]}"
done

echo
echo "== peak RSS of one cold pull of big (KiB)"
: >"$tmp/rss.txt"
for t in "${tools[@]}"; do
  eval "$(reset_cmd "$t" big)"
  if [ -x /usr/bin/time ]; then
    # shellcheck disable=SC2046
    /usr/bin/time -f %M -o "$tmp/rss.one" $(pull_cmd "$t" big) >/dev/null
    echo "   $t: $(tail -1 "$tmp/rss.one")"
    echo "$t $(tail -1 "$tmp/rss.one")" >>"$tmp/rss.txt"
  fi
done
[ -x /usr/bin/time ] || echo "   /usr/bin/time is missing (apt install time): no RSS figures"
# Check berth's result: the big image is there and its layers were unpacked.
$berth_cmd images | grep -q "bench/big" || die "berth's big image is missing after the pull"

echo
echo "== summary (medians; ratios below 1 mean berth is faster/smaller)"
{
  for img in $IMAGES; do
    # hyperfine CSV: command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, -v img="$img" 'NR > 1 { printf "%s %s %.1f\n", img, $1, $4 * 1000 }' "$tmp/$img.csv"
  done
  awk '{ printf "rss %s %.1f\n", $1, $2 / 1024 }' "$tmp/rss.txt"
} | awk -v order="${tools[*]}" '
  BEGIN { n = split(order, t, " ") }
  { v[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; row[++nr] = $1 } }
  END {
    printf "%-9s", "pull"
    for (i = 1; i <= n; i++) printf "%12s", t[i]
    for (i = 2; i <= n; i++) printf "%14s", "berth/" t[i]
    printf "\n"
    for (r = 1; r <= nr; r++) {
      unit = row[r] == "rss" ? " MiB" : " ms"
      printf "%-9s", row[r]
      for (i = 1; i <= n; i++) printf "%12s", ((row[r], t[i]) in v) ? v[row[r], t[i]] unit : "-"
      for (i = 2; i <= n; i++) {
        if ((row[r], t[1]) in v && (row[r], t[i]) in v && v[row[r], t[i]] > 0) printf "%14.2f", v[row[r], t[1]] / v[row[r], t[i]]
        else printf "%14s", "-"
      }
      printf "\n"
    }
  }'
