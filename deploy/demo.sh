#!/usr/bin/env bash
# The main job on one machine: installs what is needed, builds, and runs
# fairwatch's scenarios narrated. Each scenario starts fairwatch-controller
# (embedded SQLite) and fairwatch-agent on this host, creates its own tenants
# (cgroups, network namespaces on a shaped bridge, libvirt guests) with real
# workloads (stress-ng, fio, iperf3), and tells what fairwatch detected,
# why, what it did, and when it let go. Everything a scenario started or
# created is stopped and removed when it ends, also on Ctrl-C.
#
#   sudo deploy/demo.sh                       # every scenario, about 9 minutes
#   sudo deploy/demo.sh cpu-hog exempt        # only these
#   sudo deploy/demo.sh --list                # what there is
#   FAIRWATCH_SKIP_DEPS=1 / FAIRWATCH_SKIP_BUILD=1 skip those steps
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FAIRWATCH_BUILD:-build}

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: must run as root: the agent loads eBPF programs and the demo creates cgroups" >&2
  exit 1
fi
[[ ${FAIRWATCH_SKIP_DEPS:-0} == 1 ]] || bash deploy/install-deps.sh
if [[ ${FAIRWATCH_SKIP_BUILD:-0} != 1 ]]; then
  echo "demo: building (cmake, -j$(nproc)); the first build takes several minutes"
  bash deploy/build.sh "$BUILD"
fi

exec "$BUILD/bin/fairwatch-scenarios" --narrate "$@"
