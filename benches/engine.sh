#!/usr/bin/env bash
# berth's engine against podman (when installed): `run --rm --network none IMAGE true`, N idle
# containers started with `run -d` (time and host memory each), `ps -a`, `exec`, `rm -f`.
# Prints medians and berth/peer ratios. Run as root: bash benches/engine.sh (after a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH=${BERTH:-$PWD/target/release/berth}
RUNS=${RUNS:-30}
N=${N:-50}
work=$(mktemp -d /tmp/berth-bench-engine.XXXXXX)
export BERTH_ROOT=$work/root BERTH_RUNROOT=$work/run
cleanup() {
  set +e
  ids=$("$BERTH" ps -aq 2>/dev/null)
  [ -n "$ids" ] && "$BERTH" rm -f $ids >/dev/null 2>&1
  if command -v podman >/dev/null; then podman rm -f --filter label=berth-bench=1 >/dev/null 2>&1; podman rmi -f berth-bench/busybox >/dev/null 2>&1; fi
  if [ -d "$work/crunroot" ]; then
    for c in $(crun --root "$work/crunroot" list -q 2>/dev/null); do crun --root "$work/crunroot" delete -f "$c" >/dev/null 2>&1; done
  fi
  podman_done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
. "$(dirname "$0")/podman.sh"

# The test kit's busybox image, as an oci-archive.
"$PWD/target/release/berth-bundle" "$work/bundle" >/dev/null
tar -C "$work/bundle/rootfs" -cf "$work/busybox.tar" .
"$BERTH" import "$work/busybox.tar" berth-bench/busybox >/dev/null
peers=()
if command -v podman >/dev/null && podman import "$work/busybox.tar" berth-bench/busybox >/dev/null \
   && podman_ready berth-bench/busybox; then
  peers+=(podman)
fi

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
json_median() { python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$1"; }

echo "== run --rm --network none IMAGE true ($RUNS runs)"
cmds=("$BERTH run --rm --network none berth-bench/busybox true")
for p in "${peers[@]}"; do cmds+=("$p run --rm $PODMAN_RUN --network none berth-bench/busybox true"); done
hyperfine -N -w 3 -r "$RUNS" --export-json "$work/run.json" "${cmds[@]}" 2>&1 | grep -E "Time|±|^Benchmark" || true
declare -A run_ms
i=0
for c in "${cmds[@]}"; do
  run_ms[$i]=$(python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"]*1000))' "$work/run.json" "$i")
  i=$((i+1))
done

# Host memory in use, KiB, counted from what is live: anonymous memory, page tables, kernel
# stacks, per-cpu and vmalloc memory, shared memory (tmpfs), and the live objects of every slab
# cache. Free memory and MemAvailable moved by more than a container's worth between runs (page
# cache, and slab pages freed by earlier containers and not yet given back); this is repeatable
# to a few KiB per container.
mem_used() {
  local slab
  slab=$(awk 'NR>2 {s+=$2*$4} END {printf "%d", s/1024}' /proc/slabinfo)
  awk -v slab="$slab" '/^(AnonPages|PageTables|KernelStack|Percpu|Shmem|VmallocUsed):/ {m+=$2} END {print m+slab}' /proc/meminfo
}

# The issue's own reading: how much MemAvailable dropped (KiB). It misses kernel objects that
# reuse slab pages freed by earlier containers, so it depends on what ran before; shown beside
# the live count, not instead of it.
avail() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }

# Lets memory settle before a reading: dying cgroups and namespaces of earlier containers are
# freed late (RCU, work queues), and page cache charged to them keeps them around until dropped.
settle() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; sleep 2; }

start_many() { # $1 = tool
  local before after t0 t1
  settle
  before=$(mem_used); before_av=$(avail)
  t0=$(date +%s.%N)
  local extra=""
  [ "$1" = podman ] && extra=$PODMAN_RUN
  for i in $(seq 1 "$N"); do "$1" run -d $extra --network none --label berth-bench=1 berth-bench/busybox sleep 3600 >/dev/null; done
  t1=$(date +%s.%N)
  settle
  after=$(mem_used); after_av=$(avail)
  # Also the proportional set size of the per-container processes (berth's monitors, podman's
  # conmons): steady under other load, unlike MemAvailable.
  local pat="container-monitor"
  [ "$1" = podman ] && pat="^/usr/bin/conmon"
  local pss=0 v
  for p in $(pgrep -f "$pat"); do
    v=$(awk '/^Pss:/ {print $2}' /proc/"$p"/smaps_rollup 2>/dev/null || true)
    pss=$((pss + ${v:-0}))
  done
  echo "$(python3 -c "print('%.2f' % (($t1-$t0)))") $(python3 -c "print('%.3f' % (($after-$before)/1024/$N))") $(python3 -c "print('%.3f' % ($pss/1024/$N))") $(python3 -c "print('%.3f' % (($before_av-$after_av)/1024/$N))")"
}

# The floor: N bare crun containers (the same busybox `sleep`, its namespaces and cgroups, no
# image store, overlay or per-container process of a manager), when crun is installed.
crun_floor() {
  local before after
  "$PWD/target/release/berth-bundle" "$work/crun" >/dev/null
  python3 - "$work/crun/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["sleep", "3600"]
c["process"]["terminal"] = False
json.dump(c, open(sys.argv[1], "w"))
PY
  settle
  before=$(mem_used); before_av=$(avail)
  for i in $(seq 1 "$N"); do (cd "$work/crun" && crun --root "$work/crunroot" run -d "bench$i" </dev/null >/dev/null 2>&1); done
  settle
  after=$(mem_used); after_av=$(avail)
  for i in $(seq 1 "$N"); do crun --root "$work/crunroot" delete -f "bench$i" >/dev/null 2>&1 || true; done
  python3 -c "print('%.3f %.3f' % (($after-$before)/1024/$N, ($before_av-$after_av)/1024/$N))"
}
c_mem=""; c_av=""
command -v crun >/dev/null && read -r c_mem c_av < <(crun_floor)

echo "== $N idle containers: start time (s), host memory each (MiB)"
read -r b_start b_mem b_pss b_av < <(start_many "$BERTH")
t_ps=$(hyperfine -N -w 2 -r 10 --export-json "$work/ps.json" "$BERTH ps -a" >/dev/null 2>&1; json_median "$work/ps.json")
one=$("$BERTH" ps -lq)  # not `| head -1`: with pipefail, ps dying of SIGPIPE would end the script
t_exec=$(hyperfine -N -w 2 -r 10 --export-json "$work/exec.json" "$BERTH exec $one true" >/dev/null 2>&1; json_median "$work/exec.json")
t0=$(date +%s.%N); "$BERTH" rm -f $("$BERTH" ps -aq) >/dev/null; t1=$(date +%s.%N)
b_rm=$(python3 -c "print('%.2f' % ($t1-$t0))")
printf '%-34s %10s\n' "berth run --rm true (ms)" "${run_ms[0]}"
printf '%-34s %10s\n' "berth start $N (s)" "$b_start"
printf '%-34s %10s\n' "berth host MiB per container" "$b_mem"
printf '%-34s %10s\n' "berth monitor PSS MiB each" "$b_pss"
printf '%-34s %10s\n' "berth MemAvailable drop MiB each" "$b_av"
[ -n "$c_mem" ] && printf '%-34s %10s  (berth adds %s)\n' "bare crun host MiB per container" "$c_mem" "$(python3 -c "print('%.3f' % ($b_mem-$c_mem))")"
[ -n "$c_av" ] && printf '%-34s %10s\n' "bare crun MemAvailable drop MiB" "$c_av"
printf '%-34s %10s\n' "berth ps -a with $N (ms)" "$t_ps"
printf '%-34s %10s\n' "berth exec true (ms)" "$t_exec"
printf '%-34s %10s\n' "berth rm -f $N (s)" "$b_rm"
if [ ${#peers[@]} -gt 0 ]; then
  read -r p_start p_mem p_pss p_av < <(start_many podman)
  pone=$(podman ps -lq)
  p_exec=$(hyperfine -N -w 2 -r 10 --export-json "$work/pexec.json" "podman exec $pone true" >/dev/null 2>&1; json_median "$work/pexec.json")
  t0=$(date +%s.%N); podman rm -f -t 0 --filter label=berth-bench=1 >/dev/null; t1=$(date +%s.%N)
  p_rm=$(python3 -c "print('%.2f' % ($t1-$t0))")
  printf '%-34s %10s  ratio %s\n' "podman run --rm true (ms)" "${run_ms[1]}" "$(python3 -c "print('%.2f' % (${run_ms[0]}/${run_ms[1]}))")"
  printf '%-34s %10s  ratio %s\n' "podman start $N (s)" "$p_start" "$(python3 -c "print('%.2f' % ($b_start/$p_start))")"
  printf '%-34s %10s  ratio %s\n' "podman host MiB per container" "$p_mem" "$(python3 -c "print('%.2f' % ($b_mem/max($p_mem,0.001)))")"
  [ -n "$c_mem" ] && printf '%-34s %10s  ratio %s\n' "podman adds to bare crun (MiB)" "$(python3 -c "print('%.3f' % ($p_mem-$c_mem))")" "$(python3 -c "print('%.2f' % (($b_mem-$c_mem)/max($p_mem-$c_mem,0.001)))")"
  printf '%-34s %10s  ratio %s\n' "podman conmon PSS MiB each" "$p_pss" "$(python3 -c "print('%.2f' % ($b_pss/max($p_pss,0.001)))")"
  printf '%-34s %10s  ratio %s\n' "podman MemAvailable drop MiB each" "$p_av" "$(python3 -c "print('%.2f' % ($b_av/max($p_av,0.001)))")"
  printf '%-34s %10s  ratio %s\n' "podman exec true (ms)" "$p_exec" "$(python3 -c "print('%.2f' % ($t_exec/$p_exec))")"
  printf '%-34s %10s  ratio %s\n' "podman rm -f $N (s)" "$p_rm" "$(python3 -c "print('%.2f' % ($b_rm/$p_rm))")"
else
  echo "(podman is not installed: apt-get install podman to compare)"
fi
