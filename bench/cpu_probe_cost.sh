#!/usr/bin/env bash
# Measures every agent BPF program's cost per event (bpf_stats run_time_ns /
# run_cnt) and the pipe ping-pong slowdown with the agent running (its
# default probe set: cpu, run-queue, disk, network).
#
#   sudo bench/cpu_probe_cost.sh [build-dir] [tenants]
#
# It turns kernel.bpf_stats_enabled on for the run and restores it after;
# cgroups it creates are under fwbench-<pid> and removed on exit.
set -euo pipefail
BUILD=${1:-build}
TENANTS=${2:-20}
BIN=$BUILD/bin
[[ $(id -u) -eq 0 ]] || { echo "needs root (BPF, cgroups, sysctl)" >&2; exit 1; }
for b in fairwatch-agent pipe_pingpong; do
  [[ -x $BIN/$b ]] || { echo "missing $BIN/$b: build first (cmake --build $BUILD -j2)" >&2; exit 1; }
done

if [[ -d /sys/fs/cgroup/cpu && -n $(grep -w cpu /proc/self/mountinfo | grep ' - cgroup ' || true) ]]; then
  CG=/sys/fs/cgroup/cpu
else
  CG=/sys/fs/cgroup
fi
PREFIX=fwbench-$$
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
AGENT_PID=
cleanup() {
  [[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  for d in "$CG/$PREFIX"/*/; do
    [[ -d $d ]] || continue
    while read -r p; do kill -9 "$p" 2>/dev/null || true; done < "$d/cgroup.procs"
  done
  sleep 0.2
  for d in "$CG/$PREFIX"/*/; do [[ -d $d ]] && rmdir "$d" 2>/dev/null || true; done
  rmdir "$CG/$PREFIX" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"
}
trap cleanup EXIT INT TERM

mkdir -p "$CG/$PREFIX"
for i in $(seq 1 "$TENANTS"); do mkdir -p "$CG/$PREFIX/t$i"; done

pingpong() {  # runs the ping-pong inside tenant t1: both ends are accounted
  local runs=() r
  for _ in 1 2 3 4 5; do
    r=$(sh -c "echo \$\$ > $CG/$PREFIX/t1/cgroup.procs; exec $BIN/pipe_pingpong 200000" | awk '{print $1}')
    runs+=("$r")
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 3p   # median of 5
}

echo "tenants: $TENANTS under $CG/$PREFIX"
BASE=$(pingpong)
echo "pipe ping-pong without agent: $BASE round-trips/s (median of 5)"

sysctl -qw kernel.bpf_stats_enabled=1
$BIN/fairwatch-agent --insecure-plaintext --controller 127.0.0.1:1 --cgroup-parent "$PREFIX" \
  --log-level error &
AGENT_PID=$!
sleep 3
WITH=$(pingpong)
echo "pipe ping-pong with agent:    $WITH round-trips/s (median of 5)"
awk -v a="$BASE" -v b="$WITH" 'BEGIN { printf "slowdown: %.1f %%\n", (a - b) / a * 100 }'

# Busy tenants too, so the cost covers events that are charged, not only lookups.
for i in $(seq 2 4); do
  sh -c "echo \$\$ > $CG/$PREFIX/t$i/cgroup.procs; exec timeout 5 sh -c 'while :; do :; done'" &
done
sleep 5
bpftool prog show --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name", "").startswith("fw_") and p.get("run_cnt"):
        print("%s: %.1f ns/event over %d events" % (p["name"], p["run_time_ns"] / p["run_cnt"], p["run_cnt"]))
'
