#!/usr/bin/env bash
# `berth build` against `buildah bud --isolation chroot` (shared/design/peers.md), side by side
# in one hyperfine run per case, medians and berth/buildah ratios:
#   - cached: a 2-stage, 10-step Dockerfile rebuilt with every step cached (buildah --layers);
#   - cold: the same Dockerfile built from nothing (berth --no-cache; buildah's default, which
#     commits once per stage, with --no-cache);
#   - context: 10,000 small files in the context, `COPY . /ctx/`: the cold build and the cached
#     rebuild (every file read and hashed for the cache key each time).
# Both tools start from the test kit's busybox rootfs (host busybox-static), imported into each
# one's own throwaway store; RUN steps get no network (buildah's chroot isolation has none;
# berth runs them with --network none). Run as root after a release build:
#   cargo build --release -p berth-cli -p berth-testkit && bash benches/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH=${BERTH:-$PWD/target/release/berth}
RUNS=${RUNS:-10}
FILES=${FILES:-10000}
command -v buildah >/dev/null || { echo "buildah is missing: bash scripts/deps.sh (apt install buildah)"; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine is missing: bash scripts/deps.sh"; exit 1; }
work=$(mktemp -d /tmp/berth-bench-build.XXXXXX)
export BERTH_ROOT=$work/root BERTH_RUNROOT=$work/run
BUILDAH="buildah --root $work/buildah-root --runroot $work/buildah-run --storage-driver overlay"
cleanup() {
  set +e
  $BUILDAH rm --all >/dev/null 2>&1
  $BUILDAH rmi --all --force >/dev/null 2>&1
  # buildah leaves its overlay mounts until its store is unmounted.
  grep -o "$work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The base image in both stores, as localhost/berth-bench/busybox.
"$PWD/target/release/berth-bundle" "$work/bundle" >/dev/null
tar -C "$work/bundle/rootfs" -cf "$work/busybox.tar" .
"$BERTH" import "$work/busybox.tar" localhost/berth-bench/busybox >/dev/null
ctr=$($BUILDAH from scratch)
$BUILDAH add "$ctr" "$work/busybox.tar" / >/dev/null
$BUILDAH config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
$BUILDAH commit -q "$ctr" localhost/berth-bench/busybox >/dev/null
$BUILDAH rm "$ctr" >/dev/null

# The 2-stage, 10-step Dockerfile.
ten=$work/ten
mkdir -p "$ten"
echo a > "$ten/a.txt"
echo b > "$ten/b.txt"
cat > "$ten/Dockerfile" <<'DOCKERFILE'
FROM localhost/berth-bench/busybox AS build
COPY a.txt /a.txt
RUN cat /a.txt > /copy.txt
ENV STAGE=build
RUN echo built > /built.txt
FROM localhost/berth-bench/busybox
COPY --from=build /built.txt /built.txt
COPY b.txt /b.txt
WORKDIR /app
LABEL bench=build
CMD ["cat", "/built.txt"]
DOCKERFILE

# A context of many small files, in 100 directories.
many=$work/many
python3 - "$many" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
        f.write("file %d\n" % i * 3)
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM localhost/berth-bench/busybox\nCOPY . /ctx/\n")
PY

median_of() { python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"]*1000))' "$1" "$2"; }
report() { # $1 = name, $2 = json
  local b p
  b=$(median_of "$2" 0)
  p=$(median_of "$2" 1)
  printf '%-34s berth %8s ms   buildah %8s ms   ratio %s\n' "$1" "$b" "$p" "$(python3 -c "print('%.3f' % ($b/$p))")"
}

B="$BERTH build -q --network none"
P="$BUILDAH bud --isolation chroot -q"

echo "== cached rebuild of the 2-stage, 10-step Dockerfile ($RUNS runs)"
$B -t bench-ten "$ten" >/dev/null
$P --layers -t localhost/bench-ten "$ten" >/dev/null
hyperfine -N -w 2 -r "$RUNS" --export-json "$work/cached.json" \
  "$B -t bench-ten $ten" "$P --layers -t localhost/bench-ten $ten" 2>&1 | grep -E "Time|^Benchmark" || true

echo "== cold build of the same ($RUNS runs)"
hyperfine -N -w 1 -r "$RUNS" --export-json "$work/cold.json" \
  "$B --no-cache -t bench-cold $ten" "$P --no-cache -t localhost/bench-cold $ten" 2>&1 | grep -E "Time|^Benchmark" || true

echo "== $FILES small files in the context: cold, then cached ($RUNS runs)"
hyperfine -N -w 1 -r "$RUNS" --export-json "$work/many-cold.json" \
  "$B --no-cache -t bench-many $many" "$P --no-cache -t localhost/bench-many $many" 2>&1 | grep -E "Time|^Benchmark" || true
$P --layers -t localhost/bench-many "$many" >/dev/null
hyperfine -N -w 2 -r "$RUNS" --export-json "$work/many-cached.json" \
  "$B -t bench-many $many" "$P --layers -t localhost/bench-many $many" 2>&1 | grep -E "Time|^Benchmark" || true

echo
report "cached 10-step rebuild" "$work/cached.json"
report "cold 2-stage build" "$work/cold.json"
report "$FILES files: cold build" "$work/many-cold.json"
report "$FILES files: cached rebuild" "$work/many-cached.json"
