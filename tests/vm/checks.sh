# Sourced by tests/vm/guest.sh inside the VM. Bundles under /b/NAME (config.json, root /rootfs)
# were written on the host by tests/vm/run.sh; cgroups go under /sys/fs/cgroup/vmtest.
RT=/berth-runtime
CG=/sys/fs/cgroup
pass() { echo "VM-PASS $1"; }
fail() { echo "VM-FAIL $1: $(printf "%s" "$2" | tr "\n" "|")"; }
# expect NAME WANT GOT
expect() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "want '$2', got '$3'"; fi; }

# Limits reach cgroup v2's files, seen from inside the container through its cgroup namespace.
out=$($RT run -b /b/limits limits 2>&1 | tr '\n' ' ')
# cpu.weight 79 from shares 2048: runc's conversion.
expect "v2 limits inside the container (memory.max pids.max cpu.max cpu.weight)" \
  "67108864 32 50000 100000 79 " "$out"
[ -d $CG/vmtest/limits ] && fail "v2 cgroup removed after run" "$CG/vmtest/limits is left" || pass "v2 cgroup removed after run"

# The v2 device filter (an eBPF program on the cgroup): see the bundle in run.sh.
out=$($RT run -b /b/devices devices 2>&1 | tr '\n' ' ')
expect "v2 eBPF device filter: a rule's allow, deny all, the default devices" "rule-allowed other-denied zero-ok " "$out"

# update, pause and resume of a running container.
$RT create -b /b/sleep sleeper >/dev/null 2>&1 && $RT start sleeper
expect "v2 start" "running" "$($RT state sleeper | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p')"
$RT update --memory 134217728 --pids-limit 64 sleeper
expect "v2 update memory.max" "134217728" "$(cat $CG/vmtest/sleep/memory.max)"
expect "v2 update pids.max" "64" "$(cat $CG/vmtest/sleep/pids.max)"
$RT pause sleeper
expect "v2 pause (cgroup.freeze)" "1 paused" "$(cat $CG/vmtest/sleep/cgroup.freeze) $($RT state sleeper | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p')"
$RT resume sleeper
expect "v2 resume" "0 running" "$(cat $CG/vmtest/sleep/cgroup.freeze) $($RT state sleeper | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p')"
expect "v2 ps lists the container's processes" "1" "$($RT ps --format json sleeper | tr ',' '\n' | grep -c '[0-9]')"
$RT kill sleeper KILL
for _ in $(seq 100); do
  [ "$($RT state sleeper | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p')" = stopped ] && break
  sleep 0.1
done
$RT delete sleeper
[ -d $CG/vmtest/sleep ] && fail "v2 delete removes the cgroup" "left" || pass "v2 delete removes the cgroup"

# checkpoint and restore through CRIU: the counter goes on from where it was, not from 1.
count() { cat /proc/$($RT state counter | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')/root/dev/shm/n 2>/dev/null; }
$RT run -d -b /b/counter counter </dev/null >/dev/null 2>&1
# Until it has counted a few times (software emulation on a busy host can be slow to start).
n1=""
for _ in $(seq 100); do
  n1=$(count)
  [ -n "$n1" ] && [ "$n1" -ge 3 ] && break
  sleep 0.1
done
if out=$($RT checkpoint --image-path /tmp/ckpt counter 2>&1); then
  pass "criu checkpoint"
else
  fail "criu checkpoint" "$out"
fi
$RT state counter >/dev/null 2>&1 && fail "checkpoint removes the container" "still there" || pass "checkpoint removes the container"
if out=$($RT restore -d -b /b/counter --image-path /tmp/ckpt counter 2>&1 </dev/null); then
  pass "criu restore"
else
  fail "criu restore" "$out"
fi
n2=$(count)
sleep 0.5
n3=$(count)
if [ -n "$n1" ] && [ -n "$n2" ] && [ -n "$n3" ] && [ "$n2" -ge "$n1" ] && [ "$n3" -gt "$n2" ]; then
  pass "restored counter goes on ($n1 before, $n2 then $n3 after)"
else
  fail "restored counter goes on" "before $n1, after $n2 then $n3"
fi
expect "restored container is running" "running" "$($RT state counter 2>&1 | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p')"
rpid=$($RT state counter | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
if [ -n "$rpid" ] && grep -qx "$rpid" $CG/vmtest/counter/cgroup.procs 2>/dev/null; then
  pass "restored init is in the bundle's cgroup"
else
  fail "restored init is in the bundle's cgroup" "pid $rpid, procs: $(cat $CG/vmtest/counter/cgroup.procs 2>&1)"
fi
if out=$($RT checkpoint --leave-running --image-path /tmp/ckpt2 counter 2>&1); then
  expect "checkpoint --leave-running leaves it running" "running" "$($RT state counter | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p')"
else
  fail "checkpoint --leave-running" "$out"
fi
$RT delete -f counter
[ -d $CG/vmtest/counter ] && fail "restored container's cgroup removed by delete" "left" || pass "restored container's cgroup removed by delete"

# The engine on cgroup v2: resource flags, update, pause, stats, rm (cgroups under /berth).
B="/berth --root /var/lib/berth --runroot /run/berth"
tar -C /rootfs -cf /tmp/bb.tar . && $B import /tmp/bb.tar vmtest/busybox >/dev/null
out=$($B run --rm --network none --memory 64m --pids-limit 20 --cpus 0.5 --cpu-shares 2048 vmtest/busybox \
  sh -c 'cd /sys/fs/cgroup && cat memory.max pids.max cpu.max cpu.weight' 2>&1 | tr '\n' ' ')
expect "engine: run --memory --pids-limit --cpus --cpu-shares on v2" "67108864 20 50000 100000 79 " "$out"
id=$($B run -d --name web --network none vmtest/busybox sleep 600 2>&1)
$B update --memory 128m --pids-limit 30 web >/dev/null
expect "engine: update on v2" "134217728 30" "$(cat $CG/berth/$id/memory.max $CG/berth/$id/pids.max 2>&1 | tr '\n' ' ' | sed 's/ $//')"
$B pause web
expect "engine: pause on v2" "paused 1" "$($B inspect -f '{{.State.Status}}' web) $(cat $CG/berth/$id/cgroup.freeze)"
$B unpause web
expect "engine: unpause on v2" "running 0" "$($B inspect -f '{{.State.Status}}' web) $(cat $CG/berth/$id/cgroup.freeze)"
case $($B stats --no-stream --format '{{.MemUsage}} {{.PIDs}}' web 2>&1) in
  *"/ 128MiB 1") pass "engine: stats on v2" ;;
  *) fail "engine: stats on v2" "$($B stats --no-stream --format '{{.MemUsage}} {{.PIDs}}' web 2>&1)" ;;
esac
$B rm -f web >/dev/null
[ -e $CG/berth/$id ] && fail "engine: rm removes the cgroup on v2" "left" || pass "engine: rm removes the cgroup on v2"
