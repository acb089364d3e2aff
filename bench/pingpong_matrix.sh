#!/usr/bin/env bash
# Context-switch worst case with the agent's probe sets: `perf bench sched pipe`
# pinned to one CPU, both ends inside a tenant, with no agent, with the agent
# measuring CPU only (cpu: from the kernel's cgroup counters, the default;
# cpu-bpf: with the sched_stat_runtime program, probes.cpu_time "bpf"), with
# its default probe set (CPU, run-queue, disk, network; run-queue tracing
# adaptive: the ping-pong starts once the agent has stopped tracing the new
# tenant, so one interval in ten is traced as on a quiet host), and with that
# set tracing the run queue always (runq-always: what a contended host pays).
# Configurations alternate round by round so drift hits all alike; medians
# are printed.
#
#   sudo bench/pingpong_matrix.sh [build-dir] [rounds] [loops]
#
# Needs perf (Debian: linux-perf). Cgroups go under fwbench-<pid>, removed on exit.
set -euo pipefail
BUILD=${1:-build}
ROUNDS=${2:-7}
LOOPS=${3:-100000}
AGENT=$BUILD/bin/fairwatch-agent
[[ $(id -u) -eq 0 ]] || { echo "needs root (BPF, cgroups)" >&2; exit 1; }
[[ -x $AGENT ]] || { echo "missing $AGENT: build first" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }

if grep -q ' - cgroup cgroup .*\bcpu\b' /proc/self/mountinfo && [[ -d /sys/fs/cgroup/cpu ]]; then
  CG=/sys/fs/cgroup/cpu
else
  CG=/sys/fs/cgroup
fi
# A v1 tenant is in the cpuacct hierarchy too (where the kernel keeps its CPU
# time), as a container manager or libvirt places it.
ACCT=
if [[ $CG == /sys/fs/cgroup/cpu && -d /sys/fs/cgroup/cpuacct ]] &&
  [[ $(stat -c %d /sys/fs/cgroup/cpuacct) != "$(stat -c %d $CG)" ]]; then
  # Separate hierarchies are separate file systems (a hierarchy's root
  # directory is inode 1 on every one of them: compare the devices).
  ACCT=/sys/fs/cgroup/cpuacct
fi
PREFIX=fwbench-$$
METRICS_PORT=$((20000 + $$ % 20000))
WORK=$(mktemp -d)
AGENT_PID=
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS" || true
  if [[ -n $AGENT_PID ]]; then
    kill "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
  fi
  for m in $CG $ACCT; do rmdir "$m/$PREFIX/t" "$m/$PREFIX" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
for m in $CG $ACCT; do mkdir -p "$m/$PREFIX/t"; done

config() {  # config <name>: an agent config file for that probe set
  local file=$WORK/$1.textproto
  {
    echo "controller_address: \"127.0.0.1:1\""
    echo "insecure_plaintext: true"
    echo "metrics_address: \"127.0.0.1:$METRICS_PORT\""
    echo "cgroup_parents { path: \"$PREFIX\" }"
    case $1 in
      cpu) echo "probes { disable_runq: true disable_disk: true disable_net: true }" ;;
      cpu-bpf) echo "probes { disable_runq: true disable_disk: true disable_net: true cpu_time: \"bpf\" }" ;;
      runq-always) echo "probes { runq_tracing: \"always\" }" ;;
    esac
  } >"$file"
  echo "$file"
}

# Whether the agent's run-queue programs are detached now (its /metrics).
runq_detached() {
  local reply
  reply=$(exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT" &&
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3) 2>/dev/null || return 1
  grep -q '^fairwatch_agent_runq_tracing 0' <<<"$reply"
}

run_one() {  # run_one <none|cpu|cpu-bpf|default|runq-always>: prints usecs/op
  if [[ $1 != none ]]; then
    "$AGENT" --config "$(config "$1")" --log-level error &
    AGENT_PID=$!
    sleep 2
  fi
  if [[ $1 == default ]]; then
    # A new tenant is traced for its first 15 s (agent/runq_gate.h).
    local waited=0
    until runq_detached; do
      sleep 0.5
      waited=$((waited + 1))
      ((waited < 60)) || { echo "default: run-queue tracing never stopped" >&2; exit 1; }
    done
  fi
  [[ -n $COUNT_EVENTS ]] && prog_stats >"$WORK/before"
  local join="echo \$\$ > $CG/$PREFIX/t/cgroup.procs"
  [[ -n $ACCT ]] && join+="; echo \$\$ > $ACCT/$PREFIX/t/cgroup.procs"
  sh -c "$join; exec taskset -c 0 perf bench sched pipe -l $LOOPS" |
    awk '/usecs\/op/ { print $1 }'
  [[ -n $COUNT_EVENTS ]] && prog_stats >"$WORK/after"
  if [[ -n $AGENT_PID ]]; then
    kill "$AGENT_PID"
    wait "$AGENT_PID" 2>/dev/null || true
    AGENT_PID=
  fi
}

# "name run_cnt run_time_ns" of every loaded fw_ program (bpftool).
prog_stats() {
  bpftool prog show 2>/dev/null | awk '
    / name fw_/ { for (i = 1; i <= NF; i++) if ($i == "name") name = $(i + 1); keep = 1 }
    keep && /run_time_ns/ {
      for (i = 1; i <= NF; i++) { if ($i == "run_time_ns") t = $(i + 1); if ($i == "run_cnt") c = $(i + 1) }
      print name, c, t; keep = 0
    }'
}
COUNT_EVENTS=

declare -A results
sets=(none cpu cpu-bpf default runq-always)
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!sets[@]}"; do
    set_name=${sets[$(((r + i) % ${#sets[@]}))]}
    results[$set_name]+="$(run_one "$set_name") "
  done
  echo "round $r/$ROUNDS done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
base=$(echo "${results[none]}" | median)
for s in "${sets[@]}"; do
  m=$(echo "${results[$s]}" | median)
  awk -v s="$s" -v m="$m" -v b="$base" -v all="${results[$s]}" \
    'BEGIN { printf "%-11s median %.3f usecs/op  (%+.1f %% vs none)  runs: %s\n", s, m, (m - b) / b * 100, all }'
done

# What each program does per round trip: one more run of the two agent sets
# with kernel.bpf_stats_enabled on (it adds its own clock reads, so not in the
# timed rounds above): program runs per op and ns per run.
sysctl -qw kernel.bpf_stats_enabled=1
COUNT_EVENTS=1
for s in default runq-always; do
  run_one "$s" >/dev/null
  echo "$s: BPF programs during the ping-pong ($LOOPS round trips):"
  join <(sort "$WORK/before") <(sort "$WORK/after") | awk -v loops="$LOOPS" '
    { runs = $4 - $2; ns = $5 - $3
      if (runs > 0) printf "  %-26s %6.2f runs/op  %5.0f ns/run\n", $1, runs / loops, ns / runs }'
done
sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"
