#!/usr/bin/env bash
# Runs a scenario with the agent holding only the capabilities its systemd
# unit grants (CapabilityBoundingSet= of deploy/systemd/fairwatch-agent.service),
# so the unit's set is the one proven to measure and limit. First checks that
# each capability in the set is needed: without CAP_BPF, CAP_PERFMON or
# CAP_NET_ADMIN the agent cannot load its probes; without CAP_SYS_PTRACE a
# root process cannot tell another user's network namespace.
#
#   tests/deploy/agent_caps_test.sh BIN_DIR UNIT_FILE SCENARIO
# Exit 77: skipped (not root, or setpriv missing).
set -euo pipefail

BIN_DIR=$(realpath "$1")
UNIT=$2
SCENARIO=$3
[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (BPF, cgroups)" >&2; exit 77; }
SETPRIV=$(command -v setpriv) || { echo "SKIP: setpriv (util-linux) missing" >&2; exit 77; }

caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$UNIT")
[[ -n $caps ]] || { echo "FAIL: no CapabilityBoundingSet= in $UNIT" >&2; exit 1; }
# "CAP_BPF CAP_PERFMON" -> "+bpf,+perfmon"
to_setpriv() { local c out=""; for c in "$@"; do c=${c#CAP_}; out+=",+${c,,}"; done; echo "${out#,}"; }
read -r -a set <<<"$caps"
echo "unit grants: ${set[*]}"

WORK=$(mktemp -d /tmp/fwtest-caps-$$-XXXXXX)
sleeper=""
cleanup() {
  [[ -n $sleeper ]] && kill "$sleeper" 2>/dev/null
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

for drop in CAP_BPF CAP_PERFMON CAP_NET_ADMIN; do
  rest=()
  for c in "${set[@]}"; do [[ $c == "$drop" ]] || rest+=("$c"); done
  # The test driver of libvirt needs no daemon: the agent gets as far as
  # loading its probes and no further.
  status=0
  timeout -s INT 20 "$SETPRIV" --bounding-set="-all,$(to_setpriv "${rest[@]}")" --inh-caps=-all -- \
    "$BIN_DIR/fairwatch-agent" --controller 127.0.0.1:1 --insecure-plaintext \
    --metrics-address off --state-dir "$WORK/state-$drop" --host-id fwtest-caps \
    --libvirt-uri test:///default >"$WORK/agent-$drop.log" 2>&1 || status=$?
  if [[ $status -ne 1 ]]; then
    echo "FAIL: without $drop the agent did not fail to start (exit $status):" >&2
    tail -5 "$WORK/agent-$drop.log" >&2
    exit 1
  fi
  echo "without $drop: $(grep -m1 -E 'failed|not permitted' "$WORK/agent-$drop.log")"
done

if [[ " ${set[*]} " == *" CAP_SYS_PTRACE "* ]]; then
  "$SETPRIV" --reuid=65534 --regid=65534 --clear-groups sleep 60 &
  sleeper=$!
  sleep 0.2
  if "$SETPRIV" --bounding-set=-all --inh-caps=-all -- stat -L "/proc/$sleeper/ns/net" \
    >/dev/null 2>&1; then
    echo "FAIL: another user's /proc/<pid>/ns/net was readable without CAP_SYS_PTRACE" >&2
    exit 1
  fi
  "$SETPRIV" --bounding-set=-all,+sys_ptrace --inh-caps=-all -- stat -L "/proc/$sleeper/ns/net" \
    >/dev/null || { echo "FAIL: not readable with CAP_SYS_PTRACE" >&2; exit 1; }
  echo "without CAP_SYS_PTRACE: another user's network namespace cannot be identified"
fi

echo "=== scenario $SCENARIO with the agent under the unit's capabilities"
exec "$BIN_DIR/fairwatch-scenarios" --bin-dir "$BIN_DIR" \
  --agent-wrapper "$SETPRIV --bounding-set=-all,$(to_setpriv "${set[@]}") --inh-caps=-all --" \
  "$SCENARIO"
