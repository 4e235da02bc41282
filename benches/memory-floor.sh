#!/usr/bin/env bash
# What the kernel charges for the parts of an idle container, each part alone, N at a time:
# a sleeping process, a network namespace (--network none still has one, with its loopback),
# the pid/ipc/uts namespaces, a mount namespace, a tmpfs mount, a bind mount, and a cgroup in
# each hierarchy. It shows the floor under any engine's per-container figure on this host: no
# manager, image store or overlay is involved. Reads host memory as benches/engine.sh does
# (anonymous memory, page tables, kernel stacks, per-cpu and vmalloc memory, shared memory and
# the live objects of every slab cache), with caches dropped and a pause before each reading.
# Run as root; nothing is left behind (processes killed, the mounts live in namespaces that
# die with them, the cgroups removed). See benches/README.md.
#
# Knobs (environment): N (items per part, 200).
set -euo pipefail
N=${N:-200}
[ "$(id -u)" = 0 ] || { echo "benches/memory-floor.sh: run as root" >&2; exit 1; }
SLEEP=$(command -v busybox || true)
[ -n "$SLEEP" ] || { echo "benches/memory-floor.sh: busybox missing (bash scripts/deps.sh)" >&2; exit 1; }

tag="berth-floor-$$"
pids=()
cgdirs=()
cleanup() {
  set +e
  [ ${#pids[@]} -gt 0 ] && kill -9 "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  for d in "${cgdirs[@]}"; do rmdir "$d" 2>/dev/null; done
  rm -f "/tmp/$tag.ready"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mem_used() {
  local slab
  slab=$(awk 'NR>2 {s+=$2*$4} END {printf "%d", s/1024}' /proc/slabinfo)
  awk -v slab="$slab" '/^(AnonPages|PageTables|KernelStack|Percpu|Shmem|VmallocUsed):/ {m+=$2} END {print m+slab}' /proc/meminfo
}
settle() { sync; echo 3 > /proc/sys/vm/drop_caches; sleep 2; }

# $1 name, $2 function that makes N items (and records what to undo).
measure() {
  settle
  local before after
  before=$(mem_used)
  "$2"
  settle
  after=$(mem_used)
  cleanup
  pids=(); cgdirs=()
  echo "$1 $(( (after - before) * 1024 / N ))"
}

procs() { for _ in $(seq "$N"); do "$SLEEP" sleep 3600 & pids+=($!); done; }
netns() { for _ in $(seq "$N"); do unshare -n "$SLEEP" sleep 3600 & pids+=($!); done; }
# A pid namespace needs a fork: unshare stays as the parent, so it is set against the same pair
# of processes without the namespace.
pair() { for _ in $(seq "$N"); do unshare --fork --kill-child "$SLEEP" sleep 3600 & pids+=($!); done; }
pidns() { for _ in $(seq "$N"); do unshare -p --fork --kill-child "$SLEEP" sleep 3600 & pids+=($!); done; }
ipcuts() { for _ in $(seq "$N"); do unshare -i -u "$SLEEP" sleep 3600 & pids+=($!); done; }
mntns() { for _ in $(seq "$N"); do unshare -m "$SLEEP" sleep 3600 & pids+=($!); done; }
# $1: tmpfs or bind. One process holds a private mount namespace with N mounts in it.
mounts() {
  unshare -m bash -c '
    mount --make-rprivate / && mount -t tmpfs none /mnt && mkdir /mnt/src
    for i in $(seq '"$N"'); do
      mkdir /mnt/$i
      if [ '"$1"' = tmpfs ]; then mount -t tmpfs none /mnt/$i; else mount --bind /mnt/src /mnt/$i; fi
    done
    touch /tmp/'"$tag"'.ready; exec sleep 3600' &
  pids+=($!)
  while [ ! -e "/tmp/$tag.ready" ]; do sleep 0.1; done
}
tmpfs_mounts() { mounts tmpfs; }
bind_mounts() { mounts bind; }

results=()
results+=("$(measure process procs)")
results+=("$(measure netns netns)")
results+=("$(measure unshare+process pair)")
results+=("$(measure pidns pidns)")
results+=("$(measure ipc+uts ipcuts)")
results+=("$(measure mntns mntns)")
results+=("$(measure tmpfs tmpfs_mounts)")
results+=("$(measure bind bind_mounts)")
if [ -d /sys/fs/cgroup/memory ]; then
  hierarchies=$(ls /sys/fs/cgroup | grep -v -x -e unified)
else
  hierarchies=unified-v2
fi
for h in $hierarchies; do
  make_cgroups() {
    local base=/sys/fs/cgroup/$h
    [ "$h" = unified-v2 ] && base=/sys/fs/cgroup
    for i in $(seq "$N"); do
      mkdir "$base/$tag-$i"
      cgdirs+=("$base/$tag-$i")
      [ "$h" = cpuset ] && cat "$base/cpuset.cpus" > "$base/$tag-$i/cpuset.cpus"
    done
    true
  }
  results+=("$(measure "cgroup:$h" make_cgroups)")
done

proc=$(echo "${results[0]}" | cut -d' ' -f2)
pair_b=$(echo "${results[2]}" | cut -d' ' -f2)
printf '%-22s %12s\n' "part" "KiB each"
for r in "${results[@]}"; do
  name=${r% *}; kib=$(python3 -c "print('%.1f' % (${r#* }/1024))")
  case $name in
    netns|ipc+uts|mntns)
      # Each of these holds a process too: the namespace alone is the rest.
      printf '%-22s %12s  (with its process; alone %s)\n' "$name" "$kib" "$(python3 -c "print('%.1f' % ((${r#* }-$proc)/1024))")" ;;
    pidns)
      printf '%-22s %12s  (with unshare and its child; alone %s)\n' "$name" "$kib" "$(python3 -c "print('%.1f' % ((${r#* }-$pair_b)/1024))")" ;;
    *) printf '%-22s %12s\n' "$name" "$kib" ;;
  esac
done
