#!/usr/bin/env bash
# berth-runtime against runc and crun on the same busybox bundle, side by side in one hyperfine
# run per phase: `run` of /bin/true, then create / start / delete separately, then peak RSS.
# Prints medians and berth/peer ratios. Run as root after `make build` (the release build,
# with berth-runtime linked statically; `make bench` does both). See benches/README.md.
#
# Knobs (environment): RUNS (timed runs per command, 50), WARMUP (5), RSS_RUNS (5),
# BERTH (target/release/berth-runtime), BUNDLE (target/release/berth-bundle).
#
# Everything it makes lives in one temp dir, is named bb<pid>-*, and is removed on exit, also
# on failure or Ctrl-C: containers (delete -f with each runtime), cgroups a runtime left,
# the bundles and state roots, and the hugetlb v1 mount crun needs on this hybrid layout.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
RSS_RUNS=${RSS_RUNS:-5}
BERTH=$(realpath -m "${BERTH:-target/release/berth-runtime}")
BUNDLE=$(realpath -m "${BUNDLE:-target/release/berth-bundle}")
HUGETLB=/sys/fs/cgroup/hugetlb

die() { echo "benches/runtime.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$BERTH" ] && [ -x "$BUNDLE" ] || die "$BERTH or $BUNDLE missing: run 'make bench' (cargo build --release first)"
command -v hyperfine >/dev/null || die "hyperfine missing (apt install hyperfine)"

prefix="bb$$"
tmp=""
made_hugetlb_dir=0
mounted_hugetlb=0
names=()
bins=()

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local i ph
  for i in "${!names[@]}"; do
    for ph in check run create start delete rss; do
      "${bins[$i]}" --root "$tmp/root-${names[$i]}" delete -f "$prefix-${names[$i]}-$ph" </dev/null >/dev/null 2>&1
    done
  done
  # Cgroups named after our containers that a runtime did not remove, deepest first (a v1
  # hierarchy with children left would stay alive, invisibly, after the umount below).
  find /sys/fs/cgroup -mindepth 2 -depth -type d -name "$prefix-*" -exec rmdir {} \; 2>/dev/null
  if [ "$mounted_hugetlb" = 1 ]; then
    # berth-runtime removes its shared `berth` parent cgroup when empty; should a run have been
    # interrupted, it must not stay in the hierarchy mounted for this run (rmdir: only if empty).
    rmdir "$HUGETLB/berth" 2>/dev/null
    # A cgroup removed just before is still dying for a moment, and a hierarchy unmounted with
    # a child left stays bound (hugetlb then missing from the cgroup2 side): unmount, and if
    # hugetlb did not go back to the default hierarchy (id 0 in /proc/cgroups), remount and retry.
    local back=0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      if ! umount "$HUGETLB"; then
        echo "benches/runtime.sh: warning: could not unmount $HUGETLB" >&2
        break
      fi
      sleep 0.2
      if awk '$1 == "hugetlb" { found = ($2 == 0) } END { exit !found }' /proc/cgroups; then
        back=1
        break
      fi
      mount -t cgroup -o hugetlb cgroup "$HUGETLB" || break
    done
    # Cgroups that someone else made in it meanwhile (other containers) keep it: left mounted
    # and visible, to be unmounted by hand once they are gone.
    [ "$back" = 1 ] || echo "benches/runtime.sh: warning: hugetlb is still a v1 hierarchy at $HUGETLB (cgroups left in it: $(find "$HUGETLB" -mindepth 1 -type d 2>/dev/null | head -3 | tr '\n' ' ')); unmount it when they are gone" >&2
  fi
  if [ "$made_hugetlb_dir" = 1 ]; then
    rmdir "$HUGETLB" || echo "benches/runtime.sh: warning: could not remove $HUGETLB" >&2
  fi
  [ -n "$tmp" ] && rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tmp=$(mktemp -d /tmp/berth-bench.XXXXXX)

# The runtimes: berth always, the peers when installed.
names+=(berth); bins+=("$BERTH")
for peer in runc crun; do
  if command -v "$peer" >/dev/null; then
    names+=("$peer"); bins+=("$(command -v "$peer")")
  else
    echo "note: $peer is not installed; leaving it out (apt install $peer)"
  fi
done

# crun refuses the hybrid layout (v1 controllers + a cgroup2 mount) unless hugetlb is a v1
# hierarchy; mount it for this run only, if it is not mounted already.
is_mounted() { awk -v mp="$1" '$5 == mp { found = 1 } END { exit !found }' /proc/self/mountinfo; }
if command -v crun >/dev/null && is_mounted /sys/fs/cgroup/unified && ! is_mounted "$HUGETLB"; then
  if [ ! -d "$HUGETLB" ]; then
    mkdir "$HUGETLB"
    made_hugetlb_dir=1
  fi
  # The kernel refuses (EBUSY) while cgroups with hugetlb enabled live on the cgroup2 side,
  # e.g. other containers made by a runtime that enables it there.
  mount -t cgroup -o hugetlb cgroup "$HUGETLB" ||
    die "cannot mount hugetlb as a v1 hierarchy for crun (in use under /sys/fs/cgroup/unified?); retry when those cgroups are gone"
  mounted_hugetlb=1
fi

# One bundle per runtime (busybox rootfs, /bin/true, runc's default spec) and one state root.
for n in "${names[@]}"; do
  "$BUNDLE" "$tmp/bundle-$n" /bin/true
  mkdir -p "$tmp/root-$n"
done

# The helper hyperfine runs (untimed) before each timed command: removes the previous run's
# container and brings a new one to the state the phase starts from.
cat >"$tmp/prep" <<'EOF'
#!/usr/bin/env bash
# prep RUNTIME ROOT BUNDLE ID PHASE
rt=$1 root=$2 bundle=$3 id=$4 phase=$5
"$rt" --root "$root" delete -f "$id" </dev/null >/dev/null 2>&1 || true
case $phase in
  create | cleanup) ;;
  start) "$rt" --root "$root" create -b "$bundle" "$id" </dev/null >/dev/null 2>&1 ;;
  delete)
    "$rt" --root "$root" create -b "$bundle" "$id" </dev/null >/dev/null 2>&1
    "$rt" --root "$root" start "$id" </dev/null >/dev/null 2>&1
    for _ in $(seq 500); do
      "$rt" --root "$root" state "$id" 2>/dev/null | grep -Eq '"status": *"stopped"' && exit 0
      sleep 0.01
    done
    echo "prep: $id did not stop" >&2
    exit 1
    ;;
esac
EOF
chmod +x "$tmp/prep"

# Each runtime must run the bundle before we time it.
for i in "${!names[@]}"; do
  n=${names[$i]}
  if ! out=$("${bins[$i]}" --root "$tmp/root-$n" run -b "$tmp/bundle-$n" "$prefix-$n-check" </dev/null 2>&1); then
    die "$n cannot run the bundle: $out"
  fi
done

linkage() { command -v file >/dev/null && file -bL "$1" | grep -o 'static-pie\|statically\|dynamically' | sed 's/^dynamically$/(dynamic)/; s/^static.*$/(static)/'; }
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!names[@]}"; do
  echo "   ${names[$i]}: $("${bins[$i]}" --version 2>&1 | head -1) $(linkage "${bins[$i]}")"
done
case $(linkage "$BERTH") in
  *dynamic*) echo "   note: $BERTH is linked dynamically; 'make build' (or 'make runtime-static') links it statically, as shipped" ;;
esac

# hyperfine -N: no intermediate shell, so nothing to subtract. Prepare commands run untimed.
hf() {
  hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" "$@"
}

phase() {
  local ph=$1 args=() i n b r bd id
  for i in "${!names[@]}"; do
    n=${names[$i]} b=${bins[$i]} r=$tmp/root-${names[$i]} bd=$tmp/bundle-${names[$i]}
    id=$prefix-$n-$ph
    case $ph in
      run) args+=(-n "$n" "$b --root $r run -b $bd $id") ;;
      create) args+=(-n "$n" -p "$tmp/prep $b $r $bd $id create" "$b --root $r create -b $bd $id") ;;
      start) args+=(-n "$n" -p "$tmp/prep $b $r $bd $id start" "$b --root $r start $id") ;;
      delete) args+=(-n "$n" -p "$tmp/prep $b $r $bd $id delete" "$b --root $r delete $id") ;;
    esac
  done
  echo
  echo "== $ph"
  hf --export-csv "$tmp/$ph.csv" "${args[@]}"
  for i in "${!names[@]}"; do
    "$tmp/prep" "${bins[$i]}" "$tmp/root-${names[$i]}" "$tmp/bundle-${names[$i]}" "$prefix-${names[$i]}-$ph" cleanup
  done
}

for ph in run create start delete; do
  phase "$ph"
done

# Peak RSS (ru_maxrss of the runtime and the children it waited for: GNU time's %M, KiB) of
# `run`, median of RSS_RUNS invocations.
echo
echo "== peak RSS of one 'run' (median of $RSS_RUNS, KiB)"
: >"$tmp/rss.txt"
for i in "${!names[@]}"; do
  n=${names[$i]}
  if [ ! -x /usr/bin/time ]; then
    echo "$n n/a" >>"$tmp/rss.txt"
    continue
  fi
  vals=()
  for _ in $(seq "$RSS_RUNS"); do
    /usr/bin/time -f %M -o "$tmp/rss.one" "${bins[$i]}" --root "$tmp/root-$n" run -b "$tmp/bundle-$n" "$prefix-$n-rss" \
      </dev/null >/dev/null
    vals+=("$(tail -1 "$tmp/rss.one")")
  done
  med=$(printf '%s\n' "${vals[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  echo "   $n: ${vals[*]} -> $med"
  echo "$n $med" >>"$tmp/rss.txt"
done
[ -x /usr/bin/time ] || echo "   /usr/bin/time is missing (apt install time): no RSS figures"

# Summary: medians (ms; RSS in MiB) and berth/peer ratios (< 1 means berth is faster/smaller).
echo
echo "== summary (medians)"
{
  for ph in run create start delete; do
    # hyperfine CSV: command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, -v ph="$ph" 'NR > 1 { printf "%s %s %.2f\n", ph, $1, $4 * 1000 }' "$tmp/$ph.csv"
  done
  awk '$2 != "n/a" { printf "rss %s %.1f\n", $1, $2 / 1024 }' "$tmp/rss.txt"
} | awk -v order="${names[*]}" '
  BEGIN { n = split(order, rt, " ") }
  { v[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; ph[++np] = $1 } }
  END {
    printf "%-8s", "phase"
    for (i = 1; i <= n; i++) printf "%12s", rt[i]
    for (i = 2; i <= n; i++) printf "%14s", "berth/" rt[i]
    printf "\n"
    for (p = 1; p <= np; p++) {
      unit = ph[p] == "rss" ? " MiB" : " ms"
      printf "%-8s", ph[p]
      for (i = 1; i <= n; i++) printf "%12s", ((ph[p], rt[i]) in v) ? v[ph[p], rt[i]] unit : "-"
      for (i = 2; i <= n; i++)
        if (((ph[p], rt[i]) in v) && ((ph[p], "berth") in v) && v[ph[p], rt[i]] > 0)
          printf "%14.2f", v[ph[p], "berth"] / v[ph[p], rt[i]]
        else printf "%14s", "-"
      printf "\n"
    }
  }'
