#!/bin/bash
# What each CPU lever leaves of a hog's harm to its neighbours (issue 19, docs/policy.md,
# "What a cap cannot remove"): a hog with one busy worker per CPU next to two steady tenants
# at 40 % of a core each (10 ms periods, as in the cpu-hog scenario), under each lever set by
# hand on a cgroup v1 host. Reports each neighbour's run-queue wait per second of wall time
# (from /proc/<pid>/schedstat: no tracer, nothing added to the scheduler's path) and the CPU
# the hog kept.
#
#   sudo bench/cpu_levers.sh [BUILD_DIR] [ROUNDS] [SECONDS]
#
# Rounds alternate the levers; compare medians. Every cgroup made here is under a
# fwbench-<pid>- prefix and removed on exit.
set -euo pipefail

build=${1:-build}
rounds=${2:-3}
seconds=${3:-6}
scenarios="$build/bin/fairwatch-scenarios"
[[ -x "$scenarios" ]] || { echo "cpu_levers: no $scenarios (build first)" >&2; exit 2; }
command -v stress-ng >/dev/null || { echo "cpu_levers: stress-ng not installed (deploy/install-deps.sh)" >&2; exit 2; }
for c in cpu cpuacct cpuset; do
  [[ -d /sys/fs/cgroup/$c ]] || { echo "cpu_levers: needs the cgroup v1 $c controller" >&2; exit 2; }
done

prefix="fwbench-$$"
cpus=$(nproc)
pids=()
cleanup() {
  local d p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Only what runs in our own cgroups: the workloads and whatever they forked.
  for _ in $(seq 50); do
    local left=0
    for d in "/sys/fs/cgroup/cpu/$prefix"-*; do
      [[ -d $d ]] || continue
      while read -r p; do
        kill "$p" 2>/dev/null || true
        left=1
      done <"$d/cgroup.procs"
    done
    ((left)) || break
    sleep 0.1
  done
  for c in cpu cpuacct cpuset; do
    for d in "/sys/fs/cgroup/$c/$prefix"-*; do [[ -d $d ]] && { rmdir "$d" || true; }; done
  done
}
trap cleanup EXIT

start_in() {  # start_in TENANT COMMAND...: runs COMMAND in the tenant's cgroups, prints its pid
  local tenant=$1
  shift
  (
    for c in cpu cpuacct cpuset; do echo "$BASHPID" >"/sys/fs/cgroup/$c/$prefix-$tenant/cgroup.procs"; done
    exec "$@"
  ) >/dev/null 2>&1 &
  echo $!
}

one() {  # one LEVER
  local lever=$1 t
  for t in hog web db; do
    for c in cpu cpuacct cpuset; do mkdir -p "/sys/fs/cgroup/$c/$prefix-$t"; done
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$prefix-$t/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$prefix-$t/cpuset.mems"
  done
  local web db hog=""
  web=$(start_in web "$scenarios" --steady-work 0.40)
  db=$(start_in db "$scenarios" --steady-work 0.40)
  pids=("$web" "$db")
  if [[ $lever != quiet ]]; then
    hog=$(start_in hog stress-ng --cpu "$cpus" --quiet)
    pids+=("$hog")
  fi
  sleep 1
  local h=/sys/fs/cgroup/cpu/$prefix-hog
  # The cap is what the neighbours leave with 5 % headroom: cpus x 0.95 - 0.8 cores.
  local cap_cores
  cap_cores=$(awk -v n="$cpus" 'BEGIN { print n * 0.95 - 0.8 }')
  case $lever in
    quiet | unthrottled) ;;
    weight) echo 10 >"$h/cpu.shares" ;;  # 1 % of 1024, the planner's default
    weight+cap100ms)
      echo 10 >"$h/cpu.shares"
      echo 100000 >"$h/cpu.cfs_period_us"
      awk -v c="$cap_cores" 'BEGIN { printf "%d\n", c * 100000 }' >"$h/cpu.cfs_quota_us"
      ;;
    weight+cap10ms)
      echo 10 >"$h/cpu.shares"
      echo 10000 >"$h/cpu.cfs_period_us"
      awk -v c="$cap_cores" 'BEGIN { printf "%d\n", c * 10000 }' >"$h/cpu.cfs_quota_us"
      ;;
    idle) echo 1 >"$h/cpu.idle" ;;
    weight+cpuset) # the hog on all CPUs but the last
      echo 10 >"$h/cpu.shares"
      echo "0-$((cpus - 2))" >"/sys/fs/cgroup/cpuset/$prefix-hog/cpuset.cpus"
      ;;
  esac
  sleep 2
  local w0 d0 h0 w1 d1 h1
  w0=$(awk '{ print $2 }' "/proc/$web/schedstat")
  d0=$(awk '{ print $2 }' "/proc/$db/schedstat")
  h0=$(cat "/sys/fs/cgroup/cpuacct/$prefix-hog/cpuacct.usage")
  sleep "$seconds"
  w1=$(awk '{ print $2 }' "/proc/$web/schedstat")
  d1=$(awk '{ print $2 }' "/proc/$db/schedstat")
  h1=$(cat "/sys/fs/cgroup/cpuacct/$prefix-hog/cpuacct.usage")
  awk -v l="$lever" -v w=$((w1 - w0)) -v d=$((d1 - d0)) -v h=$((h1 - h0)) -v s="$seconds" \
    'BEGIN { printf "%-16s web waits %7.2f ms/s  db waits %7.2f ms/s  hog keeps %.2f cores\n", l, w / s / 1e6, d / s / 1e6, h / s / 1e9 }'
  cleanup
  pids=()
}

echo "# $cpus CPUs, $(uname -r), $rounds rounds of $seconds s"
for ((r = 1; r <= rounds; ++r)); do
  for lever in quiet unthrottled weight weight+cap100ms weight+cap10ms idle weight+cpuset; do
    one "$lever"
  done
done
