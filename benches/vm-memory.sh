# Host memory per idle container on cgroup v2, sourced inside the VM of tests/vm/run.sh in place
# of its checks (this machine's own cgroups are v1, where each container has a cgroup in each of
# twelve hierarchies):
#   VM_CHECKS=benches/vm-memory.sh VM_MEM=2048 bash tests/vm/run.sh     (N=100 by default)
# Counts live memory as benches/engine.sh does (anonymous, page tables, kernel stacks, per-cpu,
# vmalloc, shmem, live slab objects), after dropping caches, before and after starting N idle
# containers: berth's `run -d --network none IMAGE sleep` (its monitor, overlay root, cgroup,
# namespaces), then the bare runtime (`berth-runtime run -d` of the busybox bundle: the same
# namespaces and a cgroup, no engine, no overlay, no monitor) as the floor. Prints VM-INFO lines.
N=${N:-100}
RT=/berth-runtime
B="/berth --root /var/lib/berth --runroot /run/berth"
mem_used() {
  slab=$(awk 'NR>2 {s+=$2*$4} END {printf "%d", s/1024}' /proc/slabinfo)
  awk -v slab="$slab" '/^(AnonPages|PageTables|KernelStack|Percpu|Shmem|VmallocUsed):/ {m+=$2} END {print m+slab}' /proc/meminfo
}
settle() { sync; echo 3 >/proc/sys/vm/drop_caches; sleep 3; }
per() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN {printf "%.3f", (b-a)/1024/n}'; }

tar -C /rootfs -cf /tmp/bb.tar . && $B import /tmp/bb.tar vmtest/busybox >/dev/null
# One container first: the engine's database, the image's layer and the first overlay are made
# once, not per container.
$B run -d --network none vmtest/busybox sleep 3600 >/dev/null
settle; before=$(mem_used)
i=0; while [ $i -lt "$N" ]; do $B run -d --network none vmtest/busybox sleep 3600 >/dev/null || echo "VM-FAIL run $i"; i=$((i+1)); done
settle; after=$(mem_used)
berth=$(per "$before" "$after")
mons=$(grep -l container-monitor /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3)
monitors=$(echo $mons | wc -w)
pss=0; for p in $mons; do v=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup); pss=$((pss + ${v:-0})); done
echo "VM-INFO berth: $($B ps -q | wc -l) containers running"
echo "VM-INFO berth: $N idle containers ($monitors monitors) add $berth MiB each (live memory); monitor PSS $(awk -v p=$pss -v n=$monitors 'BEGIN {printf "%.3f", p/1024/n}') MiB each"
$B rm -f $($B ps -aq) >/dev/null
settle

i=0; while [ $i -lt "$N" ]; do
  mkdir -p /tmp/b$i && sed "s|/vmtest/sleep|/vmtest/s$i|" /b/sleep/config.json >/tmp/b$i/config.json
  i=$((i+1))
done
$RT run -d -b /tmp/b0 s0 </dev/null >/dev/null 2>&1
settle; before=$(mem_used)
i=1; while [ $i -le "$N" ]; do
  [ -d /tmp/b$i ] || { mkdir -p /tmp/b$i && sed "s|/vmtest/sleep|/vmtest/s$i|" /b/sleep/config.json >/tmp/b$i/config.json; }
  $RT run -d -b /tmp/b$i s$i </dev/null >/dev/null 2>&1 || echo "VM-FAIL runtime run $i"
  i=$((i+1))
done
settle; after=$(mem_used)
bare=$(per "$before" "$after")
echo "VM-INFO bare berth-runtime: $N idle containers add $bare MiB each (live memory)"
echo "VM-INFO berth adds $(awk -v a="$berth" -v b="$bare" 'BEGIN {printf "%.3f", a-b}') MiB per container to the bare runtime"
i=0; while [ $i -le "$N" ]; do $RT delete -f s$i >/dev/null 2>&1; i=$((i+1)); done
