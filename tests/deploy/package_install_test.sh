#!/usr/bin/env bash
# Builds the .deb with CPack, installs it with apt into a fresh Debian root
# (debootstrap, minbase) and checks it there: its runtime dependencies come
# in by themselves (it goes in before systemd, so nothing else brings them),
# the binaries answer --help and --version, the shipped
# configs pass --check-config, the maintainer scripts made the controller's
# user and state directory, and the systemd units pass systemd-analyze verify
# against that root.
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
for tool in debootstrap cpack dpkg-deb systemd-analyze apt-get; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (deploy/install-deps.sh installs it)"
done

# shellcheck source=/dev/null
. /etc/os-release
SUITE=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
# deb lines of every configured repository of this suite's family, and the
# one of the suite itself as the mirror.
mapfile -t REPOS < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
  'Created-By: Packages' | sort -u | awk -v s="$SUITE" '$2 == s || index($2, s "-") == 1')
MIRROR=""
for line in "${REPOS[@]}"; do
  read -r uri release _ <<<"$line"
  if [[ $release == "$SUITE" ]]; then
    MIRROR=$uri
    break
  fi
done
[[ -n $MIRROR ]] || skip "no apt repository of suite $SUITE configured on this machine"

WORK=$(mktemp -d /tmp/fwtest-pkg-$$-XXXXXX)
ROOT=$WORK/root
cleanup() {
  local status=$?
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
printf 'deb %s\n' "${REPOS[@]}" >"$ROOT/etc/apt/sources.list"
for key in Acquire::Check-Valid-Until Acquire::Check-Date Acquire::http::Proxy \
  Acquire::https::Proxy; do
  value=$(apt-config dump "$key" | awk -v k="$key" '$1 == k {print $2}' | tr -d '";')
  [[ -n $value ]] && echo "$key \"$value\";" >>"$ROOT/etc/apt/apt.conf.d/90fairwatch-test"
done
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
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

step "purge keeps the case record"
echo "x" >"$ROOT/var/lib/fairwatch/controller.db"
DEBIAN_FRONTEND=noninteractive in_root apt-get purge -y -q fairwatch >>"$WORK/apt.log" 2>&1 ||
  { tail -20 "$WORK/apt.log" >&2; fail "apt-get purge"; }
[[ -f $ROOT/var/lib/fairwatch/controller.db ]] || fail "purge removed /var/lib/fairwatch"
[[ ! -e $ROOT/usr/sbin/fairwatch-agent && ! -e $ROOT/etc/fairwatch/agent.textproto ]] ||
  fail "purge left the binaries or the configs"

step "passed"
