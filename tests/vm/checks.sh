# Sourced by tests/vm/guest.sh inside the VM. Bundles under /b/NAME (config.json, root /rootfs)
# were written on the host by tests/vm/run.sh; cgroups go under /sys/fs/cgroup/vmtest.
RT=/berth-runtime
CG=/sys/fs/cgroup
pass() { echo "VM-PASS $1"; }
fail() { echo "VM-FAIL $1: $2"; }
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
sleep 0.3
$RT delete sleeper
[ -d $CG/vmtest/sleep ] && fail "v2 delete removes the cgroup" "left" || pass "v2 delete removes the cgroup"
