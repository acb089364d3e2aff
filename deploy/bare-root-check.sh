#!/usr/bin/env bash
# Plays a new user on a bare Debian 12: builds a minbase root with
# debootstrap, clones this repository into it and runs the README's two
# commands there as root — `bash deploy/demo.sh`, then `bash deploy/test.sh` —
# timing each. What the dev and CI machines have beyond a bare system cannot
# help: every package either command needs must come from
# deploy/install-deps.sh. Too long for CI (about an hour on 2 cores); run it
# before a release or after changing what the build, tests or demo run, and
# record the result in docs/testing.md.
#
#   sudo deploy/bare-root-check.sh [--keep] [--only demo|test] [--commit REF]
#
# The root lives in /var/tmp/fw-bare-root-<pid> and is removed at the end
# (--keep leaves it, unmounted, for a look). The Debian mirror comes from this
# machine's apt configuration. Inside the root, / is a mount point (the root
# bound onto itself: `ip netns` and libvirt's QEMU need mount propagation
# there), /proc, /sys and /dev are the host's, /run is its own tmpfs.
# Logs: <root dir>/demo.log and test.log; a summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
KEEP=0
ONLY=""
REF=HEAD
while (($#)); do
  case $1 in
    --keep) KEEP=1 ;;
    --only)
      ONLY=${2:?--only needs demo or test}
      shift
      ;;
    --commit)
      REF=${2:?--commit needs a ref}
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "bare-root-check.sh: unknown argument '$1' (--help)" >&2
      exit 2
      ;;
  esac
  shift
done
[[ -z $ONLY || $ONLY == demo || $ONLY == test ]] || {
  echo "bare-root-check.sh: --only takes demo or test, not '$ONLY'" >&2
  exit 2
}
[[ $(id -u) -eq 0 ]] || {
  echo "bare-root-check.sh: must run as root (debootstrap, mounts, chroot)" >&2
  exit 1
}
for tool in debootstrap git chroot mount findmnt; do
  command -v "$tool" >/dev/null || {
    echo "bare-root-check.sh: $tool is missing (deploy/install-deps.sh installs it)" >&2
    exit 1
  }
done
COMMIT=$(git rev-parse --verify "$REF^{commit}")

# shellcheck source=lib/debian-root.sh
. deploy/lib/debian-root.sh
debian_repos || {
  echo "bare-root-check.sh: no apt repository of this machine's suite is configured" >&2
  exit 1
}

WORK=/var/tmp/fw-bare-root-$$
ROOT=$WORK/root
mkdir -p "$WORK"

# Every process whose root is ours (daemons the demo or tests started there).
kill_inside() {
  local pid root
  for pid in /proc/[0-9]*; do
    root=$(readlink "$pid/root" 2>/dev/null) || continue
    [[ $root == "$ROOT" || $root == "$ROOT"/* ]] && kill -KILL "${pid#/proc/}" 2>/dev/null
  done
  return 0
}
unmount_all() {
  local m
  # Deepest first; lazily, so a busy one cannot keep the rest mounted.
  for m in $(findmnt -rn -o TARGET | grep -E "^$ROOT(/|$)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
cleanup() {
  local status=$?
  kill_inside
  sleep 0.5
  unmount_all
  if ((KEEP)); then
    echo "kept $ROOT (unmounted)" >&2
  else
    rm -rf --one-file-system "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo "=== [$(date +%T), $SECONDS s] $*"; }

step "debootstrap --variant=minbase $SUITE from this machine's apt configuration ($MIRROR)"
t0=$SECONDS
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -30 "$WORK/debootstrap.log" >&2
  exit 1
}
debian_root_apt "$ROOT"
echo "root made in $((SECONDS - t0)) s: $(chroot "$ROOT" dpkg-query -W -f='.\n' | wc -l) packages"

step "git clone $COMMIT into $ROOT/root/fairwatch"
git clone -q --no-checkout "$REPO" "$ROOT/root/fairwatch"
git -C "$ROOT/root/fairwatch" checkout -q "$COMMIT"

# / a mount point of its own; the host's kernel interfaces; its own /run
# (tmpfs, as systemd makes it). /tmp stays the root's own directory, on disk,
# as on a Debian 12 install.
mount --bind "$ROOT" "$ROOT"
mount --make-private "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mount -t tmpfs -o mode=755 tmpfs "$ROOT/run"

in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb LANG=C.UTF-8 "$@"
}

declare -A RESULT SECS
run_command() {
  local name=$1
  shift
  step "as a new user, in the bare root: $*"
  local t=$SECONDS rc=0
  in_root bash -c "cd /root/fairwatch && $*" >"$WORK/$name.log" 2>&1 || rc=$?
  SECS[$name]=$((SECONDS - t))
  RESULT[$name]=$rc
  tail -15 "$WORK/$name.log"
  echo "--- $name: exit $rc after ${SECS[$name]} s (log $WORK/$name.log)"
}
[[ -z $ONLY || $ONLY == demo ]] && run_command demo bash deploy/demo.sh
[[ -z $ONLY || $ONLY == test ]] && run_command test bash deploy/test.sh

step "summary: commit $COMMIT, kernel $(uname -r), $(nproc) CPUs"
rc=0
for name in demo test; do
  [[ -n ${RESULT[$name]:-} ]] || continue
  echo "$name: exit ${RESULT[$name]}, $((SECS[$name] / 60)) min $((SECS[$name] % 60)) s"
  ((RESULT[$name] == 0)) || rc=1
done
if [[ -n ${RESULT[test]:-} ]]; then
  grep -E "tests passed|tests failed out of" "$WORK/test.log" || true
fi
exit "$rc"
