#!/usr/bin/env bash
# Builds the .deb with CPack, installs it with apt into a fresh Debian root
# (debootstrap, minbase) and checks it there: its runtime dependencies come
# in by themselves (it goes in before systemd, so nothing else brings them),
# the binaries answer --help and --version, the shipped
# configs pass --check-config, the maintainer scripts made the controller's
# user and state directory, and the systemd units pass systemd-analyze verify
# against that root. Then the root boots under systemd (systemd-nspawn, its
# own network namespace) and both units run there with all their sandboxing:
# the agent loads its probes and reports to the controller, with exactly the
# unit's capabilities, and its journal directory survives a restart.
#
#   tests/deploy/package_install_test.sh BUILD_DIR
#
# The Debian mirror and suite come from this machine's apt configuration.
# Exit 77: skipped (not root, or a tool is missing). FW_KEEP_ROOT=1 keeps the
# root for a look.
set -euo pipefail

BUILD=$(realpath "${1:?usage: package_install_test.sh BUILD_DIR}")
skip() {
  echo "SKIP: $*" >&2
  exit 77
}
[[ $(id -u) -eq 0 ]] || skip "needs root (debootstrap, chroot)"
for tool in debootstrap cpack dpkg-deb systemd-analyze apt-get systemd-nspawn nsenter capsh; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (deploy/install-deps.sh installs it)"
done

# shellcheck source=../../deploy/lib/debian-root.sh
. "$(dirname "$0")/../../deploy/lib/debian-root.sh"
debian_repos || skip "no apt repository of this machine's suite is configured"

WORK=$(mktemp -d /tmp/fwtest-pkg-$$-XXXXXX)
ROOT=$WORK/root
# systemd-nspawn --keep-unit puts the container in the caller's cgroup and
# makes a payload/ cgroup beside it in the unified and name=systemd
# hierarchies: the caller is moved into one of ours first.
CGROUP=fwtest-$$-nspawn
NSPAWN=""
stop_box() {
  if [[ -n $NSPAWN ]] && kill -0 "$NSPAWN" 2>/dev/null; then
    kill -KILL "$NSPAWN" 2>/dev/null
    wait "$NSPAWN" 2>/dev/null || true
  fi
  NSPAWN=""
  local h dir
  for h in unified systemd; do
    dir=/sys/fs/cgroup/$h/$CGROUP
    [[ -d $dir ]] || continue
    find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    sleep 0.2
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
cleanup() {
  local status=$?
  stop_box
  # Unmount before removing anything, and never cross into another file system.
  for m in proc dev/pts dev sys; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
  done
  if [[ ${FW_KEEP_ROOT:-0} == 1 ]]; then
    echo "kept $ROOT" >&2
  else
    rm -rf --one-file-system "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo "=== [$SECONDS s] $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

step "cpack: the .deb from $BUILD"
(cd "$BUILD" && cpack -G DEB -B "$WORK/pkg" >"$WORK/cpack.log" 2>&1) ||
  { cat "$WORK/cpack.log" >&2; fail "cpack"; }
DEB=$(ls "$WORK"/pkg/fairwatch_*.deb)
echo "$(basename "$DEB"): $(du -h "$DEB" | cut -f1)"
dpkg-deb -f "$DEB" Depends

step "debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -30 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }

# The root's apt: the same repositories and the same Acquire settings as here.
debian_root_apt "$ROOT"
mount -t proc proc "$ROOT/proc"
# No daemon may start inside the root.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

step "apt-get install ./$(basename "$DEB") in the fresh root"
cp "$DEB" "$ROOT/tmp/"
in_root apt-get update -q >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; fail "apt-get update"; }
DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -q --no-install-recommends \
  "/tmp/$(basename "$DEB")" >>"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log" >&2; fail "apt-get install"; }
echo "installed with it: $(sed -n 's/^Setting up \([^ :]*\).*/\1/p' "$WORK/apt.log" | sort -u |
  tr '\n' ' ')" | fold -s -w 100

step "binaries answer --help and --version"
for bin in /usr/sbin/fairwatch-agent /usr/sbin/fairwatch-controller /usr/bin/fairwatch; do
  in_root "$bin" --help >"$WORK/help.txt" 2>&1 || { cat "$WORK/help.txt" >&2; fail "$bin --help"; }
  grep -q -- "--" "$WORK/help.txt" || fail "$bin --help printed no options"
  version=$(in_root "$bin" --version 2>&1) || fail "$bin --version: $version"
  echo "$bin: $version"
done

step "shipped configs pass --check-config"
in_root /usr/sbin/fairwatch-agent --config /etc/fairwatch/agent.textproto --check-config ||
  fail "agent --check-config on the shipped config"
in_root /usr/sbin/fairwatch-controller --config /etc/fairwatch/controller.textproto --check-config ||
  fail "controller --check-config on the shipped config"
# And a broken one is refused there too (the check is not a no-op).
echo 'listen_adress: "x"' >"$ROOT/tmp/broken.textproto"
if in_root /usr/sbin/fairwatch-controller --config /tmp/broken.textproto --check-config \
  >/dev/null 2>&1; then
  fail "controller --check-config accepted a misspelt key"
fi

step "maintainer scripts: user, state directory, conffiles"
in_root getent passwd fairwatch | grep -q ":/var/lib/fairwatch:/usr/sbin/nologin$" ||
  fail "no system user fairwatch with home /var/lib/fairwatch"
# stat inside the root: owners are named by the root's /etc/passwd.
state=$(in_root stat -c %U:%G:%a /var/lib/fairwatch)
[[ $state == fairwatch:fairwatch:750 ]] || fail "/var/lib/fairwatch is $state"
conf=$(in_root stat -c %G:%a /etc/fairwatch/controller.textproto)
[[ $conf == fairwatch:640 ]] || fail "controller.textproto is $conf"
in_root dpkg-query -W -f '${Conffiles}\n' fairwatch | grep -q /etc/fairwatch/agent.textproto ||
  fail "configs are not conffiles"

step "systemd-analyze verify the units against the root (with systemd, as on a Debian host)"
DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -q --no-install-recommends systemd \
  >>"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; fail "apt-get install systemd"; }
for unit in fairwatch-agent.service fairwatch-controller.service; do
  out=$(systemd-analyze verify --root="$ROOT" "$ROOT/lib/systemd/system/$unit" 2>&1) ||
    { echo "$out" >&2; fail "systemd-analyze verify $unit"; }
  # verify exits 0 on some warnings; any line about our unit is one.
  if grep -F "$unit" <<<"$out"; then fail "systemd-analyze verify warned about $unit"; fi
  echo "$unit: ok"
done

step "the units under systemd: the root booted with systemd-nspawn"
umount "$ROOT/proc"
rm -f "$ROOT/usr/sbin/policy-rc.d"
for h in unified systemd; do
  [[ -d /sys/fs/cgroup/$h ]] && mkdir "/sys/fs/cgroup/$h/$CGROUP"
done
# bpf and perf_event_open are outside nspawn's default system call filter;
# its own network namespace keeps the agent off this machine's interfaces.
(
  for h in unified systemd; do
    [[ -d /sys/fs/cgroup/$h/$CGROUP ]] && echo "$BASHPID" >"/sys/fs/cgroup/$h/$CGROUP/cgroup.procs"
  done
  exec systemd-nspawn -D "$ROOT" --boot --register=no --keep-unit --capability=all \
    --system-call-filter="bpf perf_event_open" --private-network --machine "fwtest-$$" \
    --console=read-only
) >"$WORK/nspawn.log" 2>&1 &
NSPAWN=$!
INIT=""
for _ in $(seq 100); do
  INIT=$(pgrep -P "$NSPAWN" -x systemd || true)
  [[ -n $INIT ]] && break
  sleep 0.2
done
[[ -n $INIT ]] || { tail -20 "$WORK/nspawn.log" >&2; fail "systemd did not start in the container"; }
# -r -w: the container's root and directory too. Entering its mount namespace
# alone puts us at that namespace's root, which is not the container's when
# this test itself runs in a chroot (deploy/bare-root-check.sh).
in_box() { nsenter -t "$INIT" -a -r -w /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
# (is-system-running --wait needs D-Bus, which a minbase root has not.)
state=""
for _ in $(seq 240); do
  state=$(in_box systemctl is-system-running 2>/dev/null) || true
  [[ $state == running || $state == degraded ]] && break
  sleep 0.5
done
echo "container booted: $state"
[[ $state == running || $state == degraded ]] || fail "the container's systemd is '$state'"

in_box systemctl start fairwatch-controller.service fairwatch-agent.service ||
  { in_box journalctl -n 40 --no-pager >&2; fail "systemctl start"; }
box_host=$(in_box hostname)
connected=""
for _ in $(seq 60); do
  if in_box fairwatch --insecure-plaintext --output json hosts 2>"$WORK/hosts.err" |
    python3 -c 'import json, sys
hosts = json.load(sys.stdin).get("hosts", [])
sys.exit(0 if any(h.get("host_id") == sys.argv[1] and h.get("connected") for h in hosts) else 1)' \
      "$box_host"; then
    connected=1
    break
  fi
  sleep 0.5
done
if [[ -z $connected ]]; then
  in_box journalctl -u fairwatch-agent -u fairwatch-controller -n 60 --no-pager >&2
  cat "$WORK/hosts.err" >&2
  fail "the agent's host $box_host never showed as connected at the controller"
fi
# The run-queue probe always attaches (CPU time needs no program where the
# kernel keeps a counter for every tenant, and there is no tenant here).
in_box journalctl -u fairwatch-agent --no-pager | grep -q "runq: attached to" ||
  fail "the agent's probes did not attach under its unit"
echo "agent of $box_host connected to the controller; probes attached"

# The processes hold exactly what the units say.
caps_of() { in_box sh -c "grep ^$2: /proc/\$(systemctl show -p MainPID --value $1)/status" | awk '{print $2}'; }
want=$(sed -n 's/^CapabilityBoundingSet=//p' "$ROOT/lib/systemd/system/fairwatch-agent.service" |
  tr 'A-Z ' 'a-z\n' | sort | tr '\n' ' ')
got=$(capsh --decode="$(caps_of fairwatch-agent.service CapEff)" | sed 's/.*=//' | tr ',' '\n' |
  sort | tr '\n' ' ')
[[ $got == "$want" ]] || fail "agent capabilities: '$got', the unit says '$want'"
echo "agent capabilities: $got"
[[ $(caps_of fairwatch-controller.service CapEff) == 0000000000000000 ]] ||
  fail "the controller has capabilities"
uid=$(caps_of fairwatch-controller.service Uid)
[[ $uid == "$(in_box id -u fairwatch)" ]] || fail "the controller runs as uid $uid, not fairwatch"
echo "controller: user fairwatch, no capabilities"

# The journal's directory outlives a restart (RuntimeDirectoryPreserve=yes).
before=$(in_box stat -c %i /run/fairwatch-agent)
in_box systemctl restart fairwatch-agent.service
after=$(in_box stat -c %i /run/fairwatch-agent 2>/dev/null || echo gone)
[[ $before == "$after" ]] || fail "/run/fairwatch-agent did not survive a restart ($before -> $after)"
in_box systemctl is-active --quiet fairwatch-agent.service || fail "the agent did not come back"
echo "agent restarted; /run/fairwatch-agent kept"

in_box systemctl poweroff 2>/dev/null || true
for _ in $(seq 100); do
  kill -0 "$NSPAWN" 2>/dev/null || break
  sleep 0.2
done
stop_box
mount -t proc proc "$ROOT/proc"

step "purge keeps the case record"
echo "x" >"$ROOT/var/lib/fairwatch/controller.db"
DEBIAN_FRONTEND=noninteractive in_root apt-get purge -y -q fairwatch >>"$WORK/apt.log" 2>&1 ||
  { tail -20 "$WORK/apt.log" >&2; fail "apt-get purge"; }
[[ -f $ROOT/var/lib/fairwatch/controller.db ]] || fail "purge removed /var/lib/fairwatch"
[[ ! -e $ROOT/usr/sbin/fairwatch-agent && ! -e $ROOT/etc/fairwatch/agent.textproto ]] ||
  fail "purge left the binaries or the configs"

step "passed"
