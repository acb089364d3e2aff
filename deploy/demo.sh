#!/usr/bin/env bash
# The main job on one machine: installs what is needed, builds, starts
# fairwatch-controller (embedded SQLite) and fairwatch-agent on this host, and
# in demo mode creates three tenant cgroups -- two steady ones and one CPU hog
# (stress-ng) -- then shows `fairwatch top` until Ctrl-C. Everything it
# started or created is stopped and removed on exit.
#
#   sudo deploy/demo.sh                     # interactive, until Ctrl-C
#   sudo DEMO_SECONDS=20 deploy/demo.sh     # stop by itself after 20 s
#   FAIRWATCH_SKIP_DEPS=1 / FAIRWATCH_SKIP_BUILD=1 skip those steps
#   FAIRWATCH_PORT=7400 picks the controller's loopback port
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${FAIRWATCH_BUILD:-build}
PORT=${FAIRWATCH_PORT:-7400}
DEMO_SECONDS=${DEMO_SECONDS:-0}

if [[ -t 1 ]]; then
  say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
else
  say() { printf 'demo: %s\n' "$*"; }
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: must run as root: the agent loads eBPF programs and the demo creates cgroups" >&2
  exit 1
fi
[[ ${FAIRWATCH_SKIP_DEPS:-0} == 1 ]] || bash deploy/install-deps.sh
if [[ ${FAIRWATCH_SKIP_BUILD:-0} != 1 ]]; then
  say "building (cmake, -j$(nproc)); the first build takes a few minutes"
  bash deploy/build.sh "$BUILD"
fi
BIN=$ROOT/$BUILD/bin

if ss -ltn "sport = :$PORT" | grep -q LISTEN; then
  echo "demo.sh: port $PORT on 127.0.0.1 is in use; set FAIRWATCH_PORT to a free one" >&2
  exit 1
fi

# Hybrid hosts attribute CPU in the v1 cpu hierarchy; pure v2 hosts in the unified one.
if grep -q ' - cgroup cgroup .*\bcpu\b' /proc/self/mountinfo && [[ -d /sys/fs/cgroup/cpu ]]; then
  CG=/sys/fs/cgroup/cpu
else
  CG=/sys/fs/cgroup
fi
PARENT=fairwatch-demo
STATE=$(mktemp -d /tmp/fairwatch-demo.XXXXXX)
PIDS=()

remove_cgroups() {
  [[ -d $CG/$PARENT ]] || return 0
  for d in "$CG/$PARENT"/*/; do
    [[ -d $d ]] || continue
    while read -r p; do kill -9 "$p" 2>/dev/null || true; done < "$d/cgroup.procs"
  done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local left=0
    for d in "$CG/$PARENT"/*/; do
      [[ -d $d ]] || continue
      rmdir "$d" 2>/dev/null || left=1
    done
    ((left)) || break
    sleep 0.2
  done
  rmdir "$CG/$PARENT" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  # Stop everything before saying so: if stdout is gone (a closed pipe), a
  # message would end this handler before it cleaned up.
  trap '' PIPE
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  remove_cgroups
  for p in "${PIDS[@]}"; do { wait "$p"; } 2>/dev/null || true; done
  { echo; say "stopped workloads, agent and controller; removed $CG/$PARENT"
    say "logs and database kept in $STATE"; } 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 141' PIPE

# A previous demo killed hard may have left its cgroups: they are ours by name.
remove_cgroups
mkdir -p "$CG/$PARENT/web" "$CG/$PARENT/db" "$CG/$PARENT/batch-hog"

say "controller on 127.0.0.1:$PORT, SQLite at $STATE/controller.db, metrics on http://127.0.0.1:9478/metrics"
"$BIN/fairwatch-controller" --insecure-plaintext --listen "127.0.0.1:$PORT" \
  --db "$STATE/controller.db" 2>"$STATE/controller.log" &
PIDS+=($!)
say "agent watching $CG/$PARENT (each child cgroup is a tenant)"
"$BIN/fairwatch-agent" --insecure-plaintext --controller "127.0.0.1:$PORT" \
  --cgroup-parent "$PARENT" --host-id "$(hostname)" --state-dir "$STATE/agent-state" \
  2>"$STATE/agent.log" &
PIDS+=($!)

start_in() {  # start_in <tenant> <command...>: runs the command inside the tenant's cgroup
  local tenant=$1
  shift
  # Started from a subshell so they are not this shell's jobs; they are found
  # and stopped through their cgroup.
  (sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG/$PARENT/$tenant" "$@" \
    >>"$STATE/workloads.log" 2>&1 &)
}
start_in web stress-ng --cpu 1 --cpu-load 20 --quiet
start_in db stress-ng --cpu 1 --cpu-load 30 --quiet
start_in batch-hog stress-ng --cpu "$(nproc)" --quiet
say "tenants: web (20 % of a core), db (30 %), batch-hog ($(nproc) busy workers)"

CLI=("$BIN/fairwatch" --insecure-plaintext --controller "127.0.0.1:$PORT")
for _ in $(seq 1 50); do
  "${CLI[@]}" hosts >/dev/null 2>&1 && break
  sleep 0.2
done
sleep 3  # a few reports, so rates have a window
"${CLI[@]}" hosts
echo
if ((DEMO_SECONDS > 0)); then
  say "showing top for $DEMO_SECONDS s"
  timeout --foreground "$DEMO_SECONDS" "${CLI[@]}" top || true
  echo
  say "cases the controller opened, and what the agent applied (read back from the kernel)"
  "${CLI[@]}" cases || true
  newest=$("${CLI[@]}" -o json cases --limit 1 | grep -o '"case_id":"[0-9]*"' | grep -o '[0-9]\+' || true)
  if [[ -n $newest ]]; then
    echo
    "${CLI[@]}" case "$newest" || true
  fi
  echo
  say "an operator's own limit, and its release; both need a reason and are audited"
  "${CLI[@]}" --operator demo throttle web --cpu 0.1 --reason "demo: limit by hand" || true
  "${CLI[@]}" --operator demo release web --reason "demo: done" || true
  "${CLI[@]}" audit --limit 5 || true
else
  say "fairwatch top (Ctrl-C stops the demo and removes its cgroups)"
  "${CLI[@]}" top || true
fi
