#!/usr/bin/env bash
# berth's networking against podman (netavark) and a bare veth pair, inside a throwaway
# network namespace (no bridge or rule ever lands in the machine's own namespace):
#   - `run --rm IMAGE true` on the default bridge network (medians, ratio to podman);
#   - container-to-container TCP throughput over the bridge vs a bare veth pair (iperf3);
#   - published-port throughput from the host's loopback to a container (iperf3).
# Run as root after a release build: bash benches/network.sh   (RUNS=30 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BERTH_BENCH_IN_NETNS:-}" ]; then
  command -v iperf3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null; }
  exec unshare --net env BERTH_BENCH_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
BERTH=${BERTH:-$PWD/target/release/berth}
RUNS=${RUNS:-30}
work=$(mktemp -d /tmp/berth-bench-net.XXXXXX)
export BERTH_ROOT=$work/root BERTH_RUNROOT=$work/run
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for f in "$work"/iperf.*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  ids=$("$BERTH" ps -aq 2>/dev/null)
  [ -n "$ids" ] && "$BERTH" rm -f $ids >/dev/null 2>&1
  if command -v podman >/dev/null; then podman rmi -f berth-bench/busybox >/dev/null 2>&1; fi
  podman_done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
. "$(dirname "$0")/podman.sh"

"$PWD/target/release/berth-bundle" "$work/bundle" >/dev/null
tar -C "$work/bundle/rootfs" -cf "$work/busybox.tar" .
"$BERTH" import "$work/busybox.tar" berth-bench/busybox >/dev/null
json_median() { python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"]*1000))' "$1" "$2"; }
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }

echo "== run --rm IMAGE true on the default bridge ($RUNS runs)"
cmds=("$BERTH run --rm berth-bench/busybox true")
if command -v podman >/dev/null && podman import "$work/busybox.tar" berth-bench/busybox >/dev/null 2>&1 \
   && podman_ready berth-bench/busybox; then
  cmds+=("podman run --rm $PODMAN_RUN berth-bench/busybox true")
fi
hyperfine -N -w 3 -r "$RUNS" --export-json "$work/run.json" "${cmds[@]}" 2>&1 | grep -E "Time|^Benchmark" || true
b_run=$(json_median "$work/run.json" 0)
printf '%-44s %10s ms\n' "berth run --rm true (bridge)" "$b_run"
if [ "${#cmds[@]}" -gt 1 ]; then
  p_run=$(json_median "$work/run.json" 1)
  printf '%-44s %10s ms  berth/podman %s\n' "podman run --rm true (bridge)" "$p_run" "$(ratio "$b_run" "$p_run")"
else
  echo "(podman did not run here: no ratio)"
fi

gbits() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9) if "sum_received" in d.get("end", {}) else "failed: " + d.get("error", "?"))' "$1"; }

ROUNDS=${ROUNDS:-5}
echo "== TCP throughput (iperf3, $ROUNDS alternating rounds of 2 s each, medians)"
# Bare veth pair between two namespaces (held by two sleeping processes): the ceiling for one hop.
unshare --net sleep 600 & a=$!; pids+=("$a")
unshare --net sleep 600 & b=$!; pids+=("$b")
sleep 0.2
ip link add bva netns "$a" type veth peer name bvb netns "$b"
nsenter --net=/proc/"$a"/ns/net sh -c 'ip addr add 192.168.250.1/24 dev bva && ip link set bva up'
nsenter --net=/proc/"$b"/ns/net sh -c 'ip addr add 192.168.250.2/24 dev bvb && ip link set bvb up'
nsenter --net=/proc/"$a"/ns/net iperf3 -s -D -I "$work/iperf.veth.pid" -p 5201 >/dev/null
# Two containers on the default bridge; iperf3 runs in their network namespaces.
s=$("$BERTH" run -d berth-bench/busybox sleep 600)
c=$("$BERTH" run -d berth-bench/busybox sleep 600)
spid=$("$BERTH" inspect -f '{{.State.Pid}}' "$s"); cpid=$("$BERTH" inspect -f '{{.State.Pid}}' "$c")
sip=$("$BERTH" inspect -f '{{.NetworkSettings.IPAddress}}' "$s")
nsenter --net=/proc/"$spid"/ns/net iperf3 -s -D -I "$work/iperf.bridge.pid" -p 5201 >/dev/null
# A published port, reached from the host's loopback.
p=$("$BERTH" run -d -p 15201:5201 berth-bench/busybox sleep 600)
ppid=$("$BERTH" inspect -f '{{.State.Pid}}' "$p")
nsenter --net=/proc/"$ppid"/ns/net iperf3 -s -D -I "$work/iperf.published.pid" -p 5201 >/dev/null
sleep 1
# Alternating rounds, so that load from elsewhere on the machine falls on all three alike.
for r in $(seq "$ROUNDS"); do
  nsenter --net=/proc/"$b"/ns/net iperf3 -c 192.168.250.1 -p 5201 -t 2 -J > "$work/veth.$r.json"
  nsenter --net=/proc/"$cpid"/ns/net iperf3 -c "$sip" -p 5201 -t 2 -J > "$work/bridge.$r.json"
  iperf3 -c 127.0.0.1 -p 15201 -t 2 -J > "$work/published.$r.json"
done
med() { for f in "$work"/"$1".*.json; do gbits "$f"; done | grep -v failed | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "failed")}'; }
veth=$(med veth); bridge=$(med bridge); published=$(med published)
printf '%-44s %10s Gbit/s\n' "bare veth pair" "$veth"
printf '%-44s %10s Gbit/s  of veth %s\n' "container to container over the bridge" "$bridge" "$(ratio "$bridge" "$veth")"
printf '%-44s %10s Gbit/s\n' "host loopback to a published port" "$published"
