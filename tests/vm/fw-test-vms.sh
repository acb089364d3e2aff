#!/usr/bin/env bash
#
# fw-test-vms.sh - small real libvirt/QEMU guests as tenants for fairwatch tests.
#
# Turns a Debian 12 machine (root, no systemd, no usable KVM) into a libvirt
# host and runs tiny TCG guests on it: a stock Debian kernel booted directly
# with a busybox initramfs whose /init (tests/vm/guest-init.sh) runs one
# workload: cpu (busy loop), steady (part of a vCPU), disk (O_DIRECT dd on its
# virtio disk), net (steady ping to the host end of its tap) or idle.  Every guest is 1 vCPU (--vcpus: more), 128 MiB,
# has a raw virtio disk (cache=none, io=native), a virtio NIC on a tap with a
# fixed name, a CPU cap (<cputune><global_quota>) and its serial console in a
# file, so fairwatch sees ordinary libvirt tenants with real cgroups, block
# I/O and tap traffic.
#
# How tests use it (root; pick a prefix that is unique per test run):
#
#   tests/vm/fw-test-vms.sh setup                  # once; idempotent
#   tests/vm/fw-test-vms.sh define t123-cpu --workload cpu --quota-pct 30
#   tests/vm/fw-test-vms.sh start t123-cpu         # prints tap + addresses
#   tests/vm/fw-test-vms.sh wait-ready t123-cpu --timeout 180
#   tests/vm/fw-test-vms.sh info t123-cpu          # key=value for the test
#   ... measure ...
#   tests/vm/fw-test-vms.sh teardown t123-         # everything named t123-*
#
# Everything the script creates is named after the domain NAME (tap, disk
# image, serial log, host address) and recorded in a state directory; domains
# are also marked with a libvirt <metadata> element.  The script never touches
# domains, taps, cgroups or processes it did not create, and it stops
# virtlogd/libvirtd at teardown only if it started them and none of its
# domains remain.
#
# Environment:
#   FW_VM_STATE       state directory           (default /run/fw-test-vms)
#   FW_VM_CACHE       guest kernel + initramfs  (default /var/cache/fw-test-vms)
#   FW_VM_WORK        disk images, serial logs  (default /var/lib/fw-test-vms)
#   FW_VM_KERNEL_PKG  guest kernel package      (default: newest
#                     linux-image-6.1.0-N-amd64, else 6.12 amd64)
#   FW_VM_NET_PREFIX  first two octets of the /16 the per-guest /30s come
#                     from (default 10.253)
#   FW_VM_URI         libvirt URI               (default qemu:///system)

set -euo pipefail

readonly PROG=${0##*/}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly INIT_TEMPLATE=$SCRIPT_DIR/guest-init.sh

STATE_DIR=${FW_VM_STATE:-/run/fw-test-vms}
CACHE_DIR=${FW_VM_CACHE:-/var/cache/fw-test-vms}
WORK_DIR=${FW_VM_WORK:-/var/lib/fw-test-vms}
NET_PREFIX=${FW_VM_NET_PREFIX:-10.253}
URI=${FW_VM_URI:-qemu:///system}
readonly STATE_DIR CACHE_DIR WORK_DIR NET_PREFIX URI

readonly PACKAGES=(libvirt-daemon libvirt-daemon-system libvirt-clients
    libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils busybox-static cpio)
readonly QEMU_CONF=/etc/libvirt/qemu.conf
readonly META_NS=urn:fairwatch:fw-test-vms:1
readonly READY_MARKER=FW-GUEST-READY
readonly FAIL_MARKER=FW-GUEST-FAILED
# Modules the guest needs; their dependencies are added automatically.
readonly GUEST_MODULES=(virtio_pci virtio_blk virtio_net)

readonly DEFAULT_QUOTA_PCT=30
readonly DEFAULT_DISK_MB=64
readonly DEFAULT_MEM_MB=128
readonly CPU_PERIOD_US=100000

# ---------------------------------------------------------------- helpers

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_error() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    printf "Run '%s --help' for usage.\n" "$PROG" >&2
    exit 2
}

usage() {
    cat <<EOF
Usage: $PROG COMMAND [ARGS]

Real small libvirt/QEMU (TCG) guests as fairwatch test tenants.

Commands:
  setup                 install packages if missing, configure $QEMU_CONF,
                        start virtlogd + libvirtd if not running, build the
                        guest kernel + initramfs into the cache (reused)
  define NAME [--workload cpu|steady|disk|net|idle] [--quota-pct N] [--disk-mb N]
              [--tap TAP] [--mem-mb N] [--vcpus N] [--cmdline-extra 'k=v ...']
                        create the disk image and define the domain
                        (defaults: idle, ${DEFAULT_QUOTA_PCT}% of one core, ${DEFAULT_DISK_MB} MiB,
                        1 vCPU (cpu: one busy loop per vCPU; steady: a
                        fixed amount of work every 100 ms, fw_duty=PCT of
                        one vCPU via --cmdline-extra, default 40), tap
                        derived from NAME; --quota-pct 0 = no cap)
  start NAME [--fast-boot]
                        start the domain, put the host address on its tap;
                        --fast-boot boots without the CPU cap (TCG boots ~3x
                        faster) and wait-ready applies the cap when ready
  wait-ready NAME [--timeout S]
                        wait for "$READY_MARKER" on the serial log
                        (default 180 s); prints the log tail on failure;
                        restores the CPU cap lifted by start --fast-boot
  info NAME             key=value lines: uuid, state, tap, addresses, files,
                        qemu pid and cgroup paths while running
  destroy NAME          stop the domain (hard power-off)
  undefine NAME         destroy if running, undefine, remove image and logs
  list                  domains created by this script
  teardown [PREFIX] [--purge-cache]
                        destroy + undefine every domain of this script whose
                        name starts with PREFIX (default: all of them), remove
                        their files and taps, stop the daemons this script
                        started once none of its domains remain
  restart-libvirtd      stop and start libvirtd if this script started it
                        (guests keep running); exit 3 if it did not
  help, --help          this text

NAME: letters, digits, '_' and '-', starting with a letter or digit, at most
48 characters.  Names of taps, files and addresses derive from NAME, so use a
unique prefix per test run.

Environment: FW_VM_STATE (default /run/fw-test-vms), FW_VM_CACHE (default
/var/cache/fw-test-vms), FW_VM_WORK (default /var/lib/fw-test-vms),
FW_VM_KERNEL_PKG, FW_VM_NET_PREFIX (default 10.253), FW_VM_URI.

Exit status: 0 success, 1 failure, 2 usage error, 3 restart-libvirtd refused.
EOF
}

vsh() { virsh -q -c "$URI" "$@"; }

libvirt_up() { virsh -q -c "$URI" version >/dev/null 2>&1; }

require_root() {
    [[ $EUID -eq 0 ]] || die "must run as root"
}

# Undo stack for long commands: on a failing exit the pushed commands run in
# reverse order, so a half-done setup/define/start leaves nothing behind.
UNDO=()
push_undo() {
    local cmd
    printf -v cmd '%q ' "$@"
    UNDO+=("$cmd")
}
clear_undo() { UNDO=(); }
rmdir_if_empty() { rmdir "$@" 2>/dev/null || true; }
on_exit() {
    local rc=$? i
    if ((rc != 0 && ${#UNDO[@]} > 0)); then
        log "failed; undoing partial work"
        for ((i = ${#UNDO[@]} - 1; i >= 0; i--)); do
            eval "${UNDO[i]}" || true
        done
    fi
    UNDO=()
    return "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Serialize commands that allocate names/addresses or start/stop daemons.
take_lock() {
    mkdir -p "$STATE_DIR/vms" "$STATE_DIR/daemons"
    exec 9>"$STATE_DIR/lock"
    flock 9
}

validate_name() {
    local name=$1
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$ ]] ||
        usage_error "invalid NAME '$name' (letters, digits, '_', '-'; max 48; must start with a letter or digit)"
}

# check_uint OPTION VALUE MIN MAX: print VALUE as a decimal or fail (exit 2).
check_uint() {
    if [[ ! $2 =~ ^[0-9]{1,9}$ ]] || ((10#$2 < $3 || 10#$2 > $4)); then
        usage_error "$1 must be an integer in $3..$4"
    fi
    printf '%d\n' "$((10#$2))"
}

hash_hex() { printf '%s' "$1" | sha256sum | cut -c1-"$2"; }

record_file() { printf '%s/vms/%s.rec' "$STATE_DIR" "$1"; }
started_file() { printf '%s/vms/%s.started' "$STATE_DIR" "$1"; }
# Pending CPU quota of a guest started with --fast-boot.
cap_file() { printf '%s/vms/%s.cap' "$STATE_DIR" "$1"; }

# restore_cap NAME: apply the quota held back by start --fast-boot.
restore_cap() {
    local f q
    f=$(cap_file "$1")
    [[ -f $f ]] || return 0
    q=$(cat "$f")
    if domain_active "$1"; then
        vsh schedinfo "$1" --live --set "global_quota=$q" >/dev/null ||
            { log "could not restore the CPU cap of $1"; return 1; }
        log "$1: CPU cap restored (global_quota=$q)"
    fi
    rm -f "$f"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# secs_since MS: seconds since now_ms value MS, one decimal.
secs_since() {
    local d=$(($(now_ms) - $1))
    printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

# rec_get FILE KEY: value of KEY in a key=value record ('' if absent).
rec_get() {
    local line
    [[ -f $1 ]] || return 0
    while IFS= read -r line; do
        if [[ ${line%%=*} == "$2" ]]; then
            printf '%s\n' "${line#*=}"
            return 0
        fi
    done <"$1"
}

# meta_get NAME KEY: attribute KEY of the domain's fw-test-vms metadata.
meta_get() {
    local xml
    xml=$(vsh metadata "$1" --uri "$META_NS" 2>/dev/null) || return 0
    sed -n "s/.* $2=[\"']\([^\"']*\)[\"'].*/\1/p" <<<"$xml" | head -n1
}

domain_exists() { vsh dominfo "$1" >/dev/null 2>&1; }
domain_is_ours() { vsh metadata "$1" --uri "$META_NS" >/dev/null 2>&1; }
domain_active() {
    local st
    st=$(vsh domstate "$1" 2>/dev/null) || return 1
    [[ $st == running || $st == paused || $st == "in shutdown" ]]
}

# vm_get NAME KEY: from the state record, else from the domain metadata.
vm_get() {
    local v
    v=$(rec_get "$(record_file "$1")" "$2")
    if [[ -z $v ]] && libvirt_up; then
        v=$(meta_get "$1" "$2")
    fi
    printf '%s\n' "$v"
}

require_libvirt() {
    libvirt_up || die "libvirt ($URI) is not answering; run '$PROG setup' first"
}

require_our_domain() {
    require_libvirt
    domain_exists "$1" || die "no domain '$1'"
    domain_is_ours "$1" || die "domain '$1' was not created by $PROG; not touching it"
}

# ---------------------------------------------------------------- daemons

proc_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # After "comm) " the fields start at #3 (state); starttime is #22.
    awk '{print $20}' <<<"$stat"
}

proc_comm() { cat "/proc/$1/comm" 2>/dev/null; }

# proc_alive PID: PID exists and is not a zombie.
proc_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

pidfile_pid() {
    local pid
    [[ -r $1 ]] || return 1
    read -r pid <"$1" || true
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# daemon_running NAME: NAME runs according to its standard pid file.
daemon_running() {
    local pid
    pid=$(pidfile_pid "/run/$1.pid") || return 1
    [[ $(proc_comm "$pid") == "$1" ]]
}

# start_daemon NAME ARGS...: start it, record pid + start time as ours.
start_daemon() {
    local name=$1 pid i
    shift
    log "starting $name"
    # 9>&-: the daemon must not inherit the lock of this script.
    "$name" "$@" 9>&- || die "$name failed to start"
    for ((i = 0; i < 100; i++)); do
        if pid=$(pidfile_pid "/run/$name.pid") && [[ $(proc_comm "$pid") == "$name" ]]; then
            printf '%s %s\n' "$pid" "$(proc_starttime "$pid")" >"$STATE_DIR/daemons/$name"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not write /run/$name.pid"
}

# stop_daemon NAME: stop NAME only if this script started it.
stop_daemon() {
    local name=$1 rec pid start i
    rec=$STATE_DIR/daemons/$name
    [[ -f $rec ]] || return 0
    read -r pid start <"$rec" || true
    if [[ -n ${pid:-} && $(proc_comm "$pid") == "$name" && $(proc_starttime "$pid") == "${start:-}" ]]; then
        log "stopping $name (pid $pid, started by $PROG)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            proc_alive "$pid" || break
            sleep 0.1
        done
        if proc_alive "$pid"; then
            log "$name did not exit after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$rec"
}

# A libvirtd without systemd puts VMs below a "machine" cgroup in every
# hierarchy it uses and leaves that directory behind.  Before starting
# libvirtd, note which hierarchies lack it, so teardown removes only the ones
# our libvirtd created (and only when empty).
note_machine_cgroups() {
    local d f=$STATE_DIR/daemons/machine-cgroups
    [[ -f $f ]] && return 0
    for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
        if [[ -f $d/cgroup.procs && ! -e $d/machine ]]; then
            printf '%s\n' "$d/machine"
        fi
    done >"$f"
}

remove_machine_cgroups() {
    local d f=$STATE_DIR/daemons/machine-cgroups
    [[ -f $f ]] || return 0
    while read -r d; do
        [[ -n $d && -d $d ]] || continue
        if rmdir "$d" 2>/dev/null; then
            log "removed empty cgroup $d (created by our libvirtd)"
        else
            log "left $d in place (not empty)"
        fi
    done <"$f"
    rm -f "$f"
}

# ensure_daemons: start virtlogd and libvirtd if needed; undo on failure.
ensure_daemons() {
    if libvirt_up; then
        log "libvirtd already answering on $URI"
        return 0
    fi
    if daemon_running virtlogd; then
        log "virtlogd already running"
    else
        push_undo stop_daemon virtlogd
        start_daemon virtlogd -d
    fi
    if daemon_running libvirtd; then
        log "libvirtd already running (not started by $PROG); waiting for it"
    else
        note_machine_cgroups
        push_undo stop_daemon libvirtd
        start_daemon libvirtd -d
    fi
    wait_libvirt_up
}

# wait_libvirt_up: until libvirtd answers on $URI (60 s at most).
wait_libvirt_up() {
    local i
    for ((i = 0; i < 600; i++)); do
        libvirt_up && { log "libvirtd answers after $((i / 10)).$((i % 10)) s"; return 0; }
        sleep 0.1
    done
    die "libvirtd does not answer on $URI after 60 s"
}

# ---------------------------------------------------------------- setup

install_packages() {
    local p missing=()
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "packages already installed"
        return 0
    fi
    log "installing ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        log "install failed; running apt-get update and retrying"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

# set_conf KEY VALUE: make "KEY = VALUE" the active setting in qemu.conf.
# Prints "changed" if the file had to be modified.
set_conf() {
    local key=$1 value=$2 want active
    want="$key = $value"
    active=$(grep -E "^[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF" || true)
    [[ $active == "$want" ]] && return 0
    [[ -f $QEMU_CONF.fw-test-vms.orig ]] || cp -p "$QEMU_CONF" "$QEMU_CONF.fw-test-vms.orig"
    # Comment out any other active setting of the key, then append ours.
    sed -i -E "s/^([[:space:]]*${key}[[:space:]]*=.*)$/# fw-test-vms replaced: \1/" "$QEMU_CONF"
    printf '# added by fw-test-vms\n%s\n' "$want" >>"$QEMU_CONF"
    echo changed
}

configure_qemu_conf() {
    local changed=""
    [[ -f $QEMU_CONF ]] || die "$QEMU_CONF missing (is libvirt-daemon-driver-qemu installed?)"
    changed+=$(set_conf user '"root"')
    changed+=$(set_conf group '"root"')
    changed+=$(set_conf security_driver '"none"')
    changed+=$(set_conf cgroup_controllers '[ "cpu", "cpuacct", "blkio", "devices", "cpuset" ]')
    if [[ -n $changed ]]; then
        log "updated $QEMU_CONF (backup: $QEMU_CONF.fw-test-vms.orig)"
        if libvirt_up; then
            log "WARNING: libvirtd was already running and $QEMU_CONF changed;"
            log "WARNING: restart libvirtd yourself for the change to take effect"
        fi
    else
        log "$QEMU_CONF already configured"
    fi
}

pick_kernel_pkg() {
    local pkg
    if [[ -n ${FW_VM_KERNEL_PKG:-} ]]; then
        printf '%s\n' "$FW_VM_KERNEL_PKG"
        return 0
    fi
    pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' |
        awk '{print $1}' | sort -V | tail -n1)
    if [[ -z $pkg ]]; then
        pkg=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64(-unsigned)?$' |
            awk '{print $1}' | sort -V | tail -n1)
    fi
    printf '%s\n' "$pkg"
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# Wanted stamp of the cached guest: kernel package + init + busybox.
cache_stamp() {
    printf 'kernel=%s\ninit=%s\nbusybox=%s\n' "$1" "$(sha_of "$INIT_TEMPLATE")" "$(sha_of /bin/busybox)"
}

# module_file DIR NAME: path of module NAME (any compression) below DIR.
module_file() {
    local alt=${2//_/-}
    find "$1" -type f \( -name "$2.ko" -o -name "$2.ko.*" -o -name "$alt.ko" -o -name "$alt.ko.*" \) | head -n1
}

# decompress_module SRC DEST: write the plain .ko of SRC to DEST.
decompress_module() {
    case $1 in
        *.ko) cp "$1" "$2" ;;
        *.ko.xz) xz -dc "$1" >"$2" ;;
        *.ko.zst) zstd -qdc "$1" >"$2" ;;
        *.ko.gz) gzip -dc "$1" >"$2" ;;
        *) die "unknown module format: $1" ;;
    esac
}

module_depends() {
    tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}

# fetch_kernel PKG DIR: download PKG, leave vmlinuz + plain virtio modules
# (and load order) in DIR.
fetch_kernel() {
    local pkg=$1 out=$2 dl deb tree builtin m
    local -a order=()
    local -A state=()
    dl=$(mktemp -d "$CACHE_DIR/.dl.XXXXXX")
    push_undo rm -rf "$dl"
    chmod 755 "$dl"
    if id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
    log "downloading $pkg"
    if ! (cd "$dl" && apt-get download "$pkg"); then
        log "download failed; running apt-get update and retrying"
        apt-get update
        (cd "$dl" && apt-get download "$pkg") || die "cannot download $pkg"
    fi
    deb=$(find "$dl" -maxdepth 1 -name '*.deb' | head -n1)
    [[ -n $deb ]] || die "apt-get download left no .deb"
    tree=$dl/tree
    mkdir -p "$tree"

    # extract PATTERNS...: pull matching members out of the package.
    extract() {
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tree" --wildcards "$@" 2>/dev/null || true
    }
    log "extracting kernel and virtio modules"
    extract './boot/vmlinuz-*' '*/modules.builtin' '*/virtio*.ko*' '*/failover.ko*' '*/net_failover.ko*'
    builtin=$(find "$tree" -name modules.builtin | head -n1)
    [[ -n $(find "$tree/boot" -name 'vmlinuz-*' 2>/dev/null) ]] || die "$pkg has no vmlinuz"

    # Dependency closure, loading order = depth-first post-order.
    mkdir -p "$out/modules"
    visit() {
        local m=$1 f d
        [[ -n ${state[$m]:-} ]] && return 0
        state[$m]=seen
        f=$(module_file "$tree" "$m")
        if [[ -z $f ]]; then
            extract "*/$m.ko*" "*/${m//_/-}.ko*"
            f=$(module_file "$tree" "$m")
        fi
        if [[ -z $f ]]; then
            if [[ -n $builtin ]] && grep -qE "/($m|${m//_/-})\.ko$" "$builtin"; then
                return 0 # built into the kernel
            fi
            die "module $m not found in $pkg"
        fi
        decompress_module "$f" "$out/modules/$m.ko"
        for d in $(module_depends "$out/modules/$m.ko"); do
            visit "${d//-/_}"
        done
        order+=("$m")
    }
    for m in "${GUEST_MODULES[@]}"; do visit "$m"; done
    printf '%s\n' "${order[@]}" >"$out/modules/order"
    cp "$(find "$tree/boot" -name 'vmlinuz-*' | head -n1)" "$out/vmlinuz"
    printf '%s\n' "$pkg" >"$out/kernel.pkg"
    log "guest modules: ${order[*]}"
    rm -rf "$dl"
}

build_initramfs() {
    local kdir=$1 dest=$2 stage applet
    stage=$(mktemp -d "$CACHE_DIR/.initramfs.XXXXXX")
    push_undo rm -rf "$stage"
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib/fw-modules}
    cp /bin/busybox "$stage/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ $applet == busybox ]] || ln -s busybox "$stage/bin/$applet"
    done
    ln -s bin "$stage/sbin"
    cp "$kdir"/modules/*.ko "$kdir/modules/order" "$stage/lib/fw-modules/"
    install -m 0755 "$INIT_TEMPLATE" "$stage/init"
    mknod -m 600 "$stage/dev/console" c 5 1
    mknod -m 666 "$stage/dev/null" c 1 3
    (cd "$stage" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -9 >"$dest.tmp"
    mv -f "$dest.tmp" "$dest"
    rm -rf "$stage"
}

build_guest() {
    local pkg stamp cached_pkg kdir
    if [[ ! -d $CACHE_DIR ]]; then
        mkdir -p "$CACHE_DIR"
        push_undo rmdir_if_empty "$CACHE_DIR"
    fi
    [[ -f $INIT_TEMPLATE ]] || die "guest init template $INIT_TEMPLATE missing"
    [[ -x /bin/busybox ]] || die "/bin/busybox missing (busybox-static)"
    kdir=$CACHE_DIR/kernel
    cached_pkg=$(cat "$kdir/kernel.pkg" 2>/dev/null || true)
    if [[ -n $cached_pkg && (-z ${FW_VM_KERNEL_PKG:-} || $cached_pkg == "${FW_VM_KERNEL_PKG:-}") ]]; then
        pkg=$cached_pkg
    else
        pkg=$(pick_kernel_pkg)
        if [[ -z $pkg ]]; then
            log "no guest kernel package known to apt; running apt-get update"
            apt-get update
            pkg=$(pick_kernel_pkg)
        fi
        [[ -n $pkg ]] || die "no linux-image-6.1.0-N-amd64 or 6.12 amd64 package available"
    fi
    stamp=$(cache_stamp "$pkg")
    if [[ -f $CACHE_DIR/vmlinuz && -f $CACHE_DIR/initrd.img && -f $CACHE_DIR/stamp &&
        $(cat "$CACHE_DIR/stamp") == "$stamp" ]]; then
        log "guest kernel + initramfs cached in $CACHE_DIR ($pkg)"
        return 0
    fi
    rm -f "$CACHE_DIR/stamp"
    if [[ $cached_pkg != "$pkg" || ! -f $kdir/vmlinuz || ! -f $kdir/modules/order ]]; then
        local tmpk
        tmpk=$(mktemp -d "$CACHE_DIR/.kernel.XXXXXX")
        push_undo rm -rf "$tmpk"
        fetch_kernel "$pkg" "$tmpk"
        rm -rf "$kdir"
        mv "$tmpk" "$kdir"
        chmod 755 "$kdir"
    fi
    log "building initramfs"
    build_initramfs "$kdir" "$CACHE_DIR/initrd.img"
    cp "$kdir/vmlinuz" "$CACHE_DIR/vmlinuz.tmp"
    mv -f "$CACHE_DIR/vmlinuz.tmp" "$CACHE_DIR/vmlinuz"
    printf '%s\n' "$stamp" >"$CACHE_DIR/stamp"
    log "guest ready: $CACHE_DIR/vmlinuz ($(du -h "$CACHE_DIR/vmlinuz" | cut -f1)), $CACHE_DIR/initrd.img ($(du -h "$CACHE_DIR/initrd.img" | cut -f1))"
}

cmd_setup() {
    local t0
    t0=$(now_ms)
    (($# == 0)) || usage_error "setup takes no arguments"
    require_root
    take_lock
    local was_up=""
    libvirt_up && was_up=1
    log "step 1/4: packages (t=$(secs_since "$t0") s)"
    install_packages
    # A package install may have started the daemons (no policy-rc.d): then
    # they are ours to stop.
    if [[ -z $was_up ]] && libvirt_up; then
        local d pid
        for d in virtlogd libvirtd; do
            if pid=$(pidfile_pid "/run/$d.pid") && [[ $(proc_comm "$pid") == "$d" ]]; then
                printf '%s %s\n' "$pid" "$(proc_starttime "$pid")" >"$STATE_DIR/daemons/$d"
                push_undo stop_daemon "$d"
            fi
        done
    fi
    [[ -e /dev/net/tun ]] || die "/dev/net/tun missing: tap devices cannot be created"
    log "step 2/4: $QEMU_CONF (t=$(secs_since "$t0") s)"
    configure_qemu_conf
    log "step 3/4: daemons (t=$(secs_since "$t0") s)"
    ensure_daemons
    log "step 4/4: guest kernel + initramfs (t=$(secs_since "$t0") s)"
    build_guest
    clear_undo
    log "setup done in $(secs_since "$t0") s"
}

# ---------------------------------------------------------------- define

# Guest addressing: NAME hashes to one of 16384 /30 subnets of
# $NET_PREFIX.0.0/16; if taken (another of our guests, or any host address in
# it) the next free one is used.  Host = .1 of the /30, guest = .2.
subnet_taken() {
    local idx=$1 f ip
    for f in "$STATE_DIR"/vms/*.rec; do
        [[ -f $f ]] || continue
        [[ $(rec_get "$f" net_index) == "$idx" ]] && return 0
    done
    while read -r ip; do
        ip=${ip%/*}
        [[ $ip == "$NET_PREFIX".* ]] || continue
        local o3 o4
        IFS=. read -r _ _ o3 o4 <<<"$ip"
        (((o3 * 256 + o4) / 4 == idx)) && return 0
    done < <(ip -4 -o addr show | awk '{print $4}')
    return 1
}

index_to_ip() {
    local n=$(($1 * 4 + $2))
    printf '%s.%d.%d\n' "$NET_PREFIX" $((n / 256)) $((n % 256))
}

default_tap() {
    local name=$1 clean
    clean=${name//_/-}
    if ((${#clean} <= 11)); then
        printf 'fwt-%s\n' "$clean"
    else
        printf 'fwt-%s%s\n' "${clean:0:3}" "$(hash_hex "$name" 8)"
    fi
}

tap_taken() {
    local tap=$1 f
    [[ -e /sys/class/net/$tap ]] && return 0
    for f in "$STATE_DIR"/vms/*.rec; do
        [[ -f $f ]] || continue
        [[ $(rec_get "$f" tap) == "$tap" ]] && return 0
    done
    return 1
}

xml_escape() {
    local s=$1
    s=${s//&/&amp;}
    s=${s//</&lt;}
    s=${s//>/&gt;}
    s=${s//\"/&quot;}
    s=${s//\'/&apos;}
    printf '%s' "$s"
}

write_domain_xml() {
    local out=$1 cmdline cputune="" mac emulator h
    h=$(hash_hex "$NAME" 6)
    mac="52:54:00:${h:0:2}:${h:2:2}:${h:4:2}"
    emulator=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found"
    cmdline="console=ttyS0 loglevel=4 ipv6.disable=1 mitigations=off fw_name=$NAME fw_workload=$WORKLOAD fw_ip=$GUEST_IP/30 fw_gw=$HOST_IP"
    [[ -n $CMDLINE_EXTRA ]] && cmdline+=" $CMDLINE_EXTRA"
    if ((QUOTA_PCT > 0)); then
        cputune="  <cputune>
    <global_period>$CPU_PERIOD_US</global_period>
    <global_quota>$((QUOTA_PCT * CPU_PERIOD_US / 100))</global_quota>
  </cputune>"
    fi
    cat >"$out" <<EOF
<domain type='qemu'>
  <name>$NAME</name>
  <metadata>
    <fwvm:vm xmlns:fwvm="$META_NS" workload="$WORKLOAD" tap="$TAP" image="$IMAGE" serial="$SERIAL_LOG" xml="$XML_FILE" host_ip="$HOST_IP" guest_ip="$GUEST_IP" prefixlen="30" net_index="$NET_INDEX" quota_pct="$QUOTA_PCT"/>
  </metadata>
  <memory unit='MiB'>$MEM_MB</memory>
  <vcpu placement='static'>$VCPUS</vcpu>
$cputune
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$CACHE_DIR/vmlinuz</kernel>
    <initrd>$CACHE_DIR/initrd.img</initrd>
    <cmdline>$(xml_escape "$cmdline")</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$emulator</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='$IMAGE'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <mac address='$mac'/>
      <target dev='$TAP' managed='yes'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='$SERIAL_LOG' append='off'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

write_record() {
    local f
    f=$(record_file "$NAME")
    cat >"$f.tmp" <<EOF
name=$NAME
workload=$WORKLOAD
tap=$TAP
image=$IMAGE
serial=$SERIAL_LOG
xml=$XML_FILE
host_ip=$HOST_IP
guest_ip=$GUEST_IP
prefixlen=30
net_index=$NET_INDEX
quota_pct=$QUOTA_PCT
EOF
    mv -f "$f.tmp" "$f"
}

cmd_define() {
    (($# >= 1)) || usage_error "define needs NAME"
    NAME=$1
    shift
    validate_name "$NAME"
    WORKLOAD=idle QUOTA_PCT=$DEFAULT_QUOTA_PCT DISK_MB=$DEFAULT_DISK_MB MEM_MB=$DEFAULT_MEM_MB VCPUS=1
    TAP="" CMDLINE_EXTRA=""
    while (($#)); do
        case $1 in
            --workload) (($# >= 2)) || usage_error "--workload needs a value"; WORKLOAD=$2; shift 2 ;;
            --quota-pct) (($# >= 2)) || usage_error "--quota-pct needs a value"; QUOTA_PCT=$2; shift 2 ;;
            --disk-mb) (($# >= 2)) || usage_error "--disk-mb needs a value"; DISK_MB=$2; shift 2 ;;
            --mem-mb) (($# >= 2)) || usage_error "--mem-mb needs a value"; MEM_MB=$2; shift 2 ;;
            --vcpus) (($# >= 2)) || usage_error "--vcpus needs a value"; VCPUS=$2; shift 2 ;;
            --tap) (($# >= 2)) || usage_error "--tap needs a value"; TAP=$2; shift 2 ;;
            --cmdline-extra) (($# >= 2)) || usage_error "--cmdline-extra needs a value"; CMDLINE_EXTRA=$2; shift 2 ;;
            *) usage_error "define: unknown argument '$1'" ;;
        esac
    done
    case $WORKLOAD in cpu | steady | disk | net | idle) ;; *) usage_error "--workload must be cpu, steady, disk, net or idle" ;; esac
    QUOTA_PCT=$(check_uint --quota-pct "$QUOTA_PCT" 0 100)
    DISK_MB=$(check_uint --disk-mb "$DISK_MB" 1 65536)
    MEM_MB=$(check_uint --mem-mb "$MEM_MB" 64 4096)
    VCPUS=$(check_uint --vcpus "$VCPUS" 1 8)
    [[ $CMDLINE_EXTRA != *$'\n'* ]] || usage_error "--cmdline-extra must be one line"
    if [[ -n $TAP ]]; then
        [[ $TAP =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$ ]] || usage_error "--tap must be 1..15 chars of letters, digits, '_', '.', '-'"
    else
        TAP=$(default_tap "$NAME")
    fi
    require_root
    take_lock
    require_libvirt
    [[ -f $CACHE_DIR/vmlinuz && -f $CACHE_DIR/initrd.img ]] || die "guest kernel not built; run '$PROG setup' first"
    domain_exists "$NAME" && die "domain '$NAME' already exists"
    [[ -f $(record_file "$NAME") ]] && die "state for '$NAME' exists ($(record_file "$NAME")); run '$PROG undefine $NAME'"
    tap_taken "$TAP" && die "tap name '$TAP' is already in use"

    NET_INDEX=$((16#$(hash_hex "$NAME" 4) % 16384))
    local tries=0
    while subnet_taken "$NET_INDEX"; do
        NET_INDEX=$(((NET_INDEX + 1) % 16384))
        ((++tries < 16384)) || die "no free /30 in $NET_PREFIX.0.0/16"
    done
    HOST_IP=$(index_to_ip "$NET_INDEX" 1)
    GUEST_IP=$(index_to_ip "$NET_INDEX" 2)

    if [[ ! -d $WORK_DIR ]]; then
        mkdir -p "$WORK_DIR"
        push_undo rmdir_if_empty "$WORK_DIR"
    fi
    IMAGE=$WORK_DIR/$NAME.img
    SERIAL_LOG=$WORK_DIR/$NAME.serial.log
    XML_FILE=$WORK_DIR/$NAME.xml
    [[ -e $IMAGE ]] && die "$IMAGE already exists"

    push_undo rm -f "$IMAGE" "$XML_FILE" "$SERIAL_LOG"
    # Fully allocated so O_DIRECT I/O reaches the host disk, not holes.
    if ! fallocate -l "${DISK_MB}M" "$IMAGE" 2>/dev/null; then
        dd if=/dev/zero of="$IMAGE" bs=1M count="$DISK_MB" status=none
    fi
    write_domain_xml "$XML_FILE"
    push_undo rm -f "$(record_file "$NAME")"
    write_record
    vsh define "$XML_FILE" >/dev/null
    clear_undo
    printf 'defined %s: workload=%s quota=%s%% disk=%sMiB tap=%s host=%s/30 guest=%s/30\n' \
        "$NAME" "$WORKLOAD" "$QUOTA_PCT" "$DISK_MB" "$TAP" "$HOST_IP" "$GUEST_IP"
}

# ---------------------------------------------------------------- lifecycle

cmd_start() {
    (($# >= 1)) || usage_error "usage: start NAME [--fast-boot]"
    local name=$1 tap host_ip serial i t0 fast="" quota
    shift
    while (($#)); do
        case $1 in
            --fast-boot) fast=1; shift ;;
            *) usage_error "start: unknown argument '$1'" ;;
        esac
    done
    validate_name "$name"
    require_root
    require_our_domain "$name"
    domain_active "$name" && die "domain '$name' is already running"
    tap=$(vm_get "$name" tap)
    host_ip=$(vm_get "$name" host_ip)
    serial=$(vm_get "$name" serial)
    [[ -n $tap && -n $host_ip ]] || die "no tap/address recorded for '$name'"
    if [[ -e /sys/class/net/$tap ]]; then
        die "tap '$tap' already exists before start; refusing to reuse it"
    fi
    [[ -n $serial ]] && rm -f "$serial"
    t0=$(now_ms)
    push_undo rm -f "$(started_file "$name")"
    push_undo destroy_domain "$name"
    mkdir -p "$STATE_DIR/vms"
    printf '%s\n' "$t0" >"$(started_file "$name")"
    # Start paused so the host end of the tap is configured (and, with
    # --fast-boot, the CPU cap lifted) before the guest runs.
    vsh start --paused "$name" >/dev/null
    for ((i = 0; i < 50; i++)); do
        [[ -e /sys/class/net/$tap ]] && break
        sleep 0.1
    done
    [[ -e /sys/class/net/$tap ]] || die "tap '$tap' did not appear"
    if [[ -w /proc/sys/net/ipv6/conf/$tap/disable_ipv6 ]]; then
        echo 1 >"/proc/sys/net/ipv6/conf/$tap/disable_ipv6"
    fi
    ip addr replace "$host_ip/30" dev "$tap"
    ip link set "$tap" up
    quota=$(vm_get "$name" quota_pct)
    if [[ -n $fast && ${quota:-0} -gt 0 ]]; then
        printf '%s\n' "$((quota * CPU_PERIOD_US / 100))" >"$(cap_file "$name")"
        push_undo rm -f "$(cap_file "$name")"
        vsh schedinfo "$name" --live --set global_quota=-1 >/dev/null
        log "$name boots without its CPU cap; wait-ready restores ${quota}%"
    fi
    vsh resume "$name" >/dev/null
    clear_undo
    printf 'started %s in %s s: tap=%s host=%s/30 guest=%s/30 serial=%s\n' \
        "$name" "$(secs_since "$t0")" "$tap" "$host_ip" "$(vm_get "$name" guest_ip)" "$serial"
}

cmd_wait_ready() {
    (($# >= 1)) || usage_error "usage: wait-ready NAME [--timeout S]"
    local name=$1 timeout=180 serial start booted
    shift
    while (($#)); do
        case $1 in
            --timeout) (($# >= 2)) || usage_error "--timeout needs a value"; timeout=$2; shift 2 ;;
            *) usage_error "wait-ready: unknown argument '$1'" ;;
        esac
    done
    validate_name "$name"
    [[ $timeout =~ ^[0-9]+$ ]] || usage_error "--timeout must be whole seconds"
    require_root
    require_our_domain "$name"
    serial=$(vm_get "$name" serial)
    start=$(now_ms)
    booted=$(cat "$(started_file "$name")" 2>/dev/null || true)
    while :; do
        if [[ -f $serial ]] && grep -q "$READY_MARKER" "$serial" 2>/dev/null; then
            printf '%s ready %s s after start (waited %s s): %s\n' "$name" \
                "$([[ -n $booted ]] && secs_since "$booted" || echo '?')" "$(secs_since "$start")" \
                "$(grep -m1 "$READY_MARKER" "$serial" | tr -d '\r')"
            restore_cap "$name"
            return 0
        fi
        if [[ -f $serial ]] && grep -qE "$FAIL_MARKER|Kernel panic" "$serial" 2>/dev/null; then
            log "guest '$name' failed; serial log tail ($serial):"
            tail -n 30 "$serial" | tr -d '\r' >&2
            restore_cap "$name" || true
            return 1
        fi
        if ! domain_active "$name"; then
            log "domain '$name' is not running; serial log tail ($serial):"
            [[ -f $serial ]] && tail -n 30 "$serial" | tr -d '\r' >&2
            return 1
        fi
        if (($(now_ms) - start >= timeout * 1000)); then
            log "timeout after ${timeout} s waiting for $READY_MARKER from '$name'; serial log tail ($serial):"
            [[ -f $serial ]] && tail -n 30 "$serial" | tr -d '\r' >&2
            restore_cap "$name" || true
            return 1
        fi
        sleep 0.2
    done
}

# destroy_domain NAME: power off if running, drop its tap if left behind.
destroy_domain() {
    local name=$1 tap
    tap=$(vm_get "$name" tap)
    if domain_exists "$name" && domain_active "$name"; then
        vsh destroy "$name" >/dev/null
    fi
    rm -f "$(started_file "$name")" "$(cap_file "$name")"
    if [[ -n $tap && -e /sys/class/net/$tap ]]; then
        ip link del "$tap" 2>/dev/null || true
    fi
}

cmd_destroy() {
    (($# == 1)) || usage_error "usage: destroy NAME"
    local name=$1 t0
    validate_name "$name"
    require_root
    require_our_domain "$name"
    t0=$(now_ms)
    destroy_domain "$name"
    printf 'destroyed %s in %s s\n' "$name" "$(secs_since "$t0")"
}

# remove_vm NAME: destroy, undefine and delete everything recorded for NAME.
# Domains without our metadata are left alone.
remove_vm() {
    local name=$1 rec f tap
    rec=$(record_file "$name")
    if libvirt_up && domain_exists "$name"; then
        if ! domain_is_ours "$name"; then
            log "domain '$name' exists but was not created by $PROG; leaving it and its files"
            rm -f "$rec"
            return 0
        fi
    fi
    local -A files=()
    for f in image serial xml; do
        files[$f]=$(vm_get "$name" "$f")
    done
    tap=$(vm_get "$name" tap)
    if libvirt_up && domain_exists "$name"; then
        domain_active "$name" && vsh destroy "$name" >/dev/null
        vsh undefine "$name" >/dev/null
    fi
    if [[ -n $tap && -e /sys/class/net/$tap ]]; then
        ip link del "$tap" 2>/dev/null || true
    fi
    for f in "${files[@]}"; do
        [[ -n $f ]] && rm -f "$f"
    done
    # libvirt's own log of the domain (qemu command line, errors).
    rm -f "/var/log/libvirt/qemu/$name.log" "/var/log/libvirt/qemu/$name.log."[0-9]*
    rm -f "$rec" "$(started_file "$name")" "$(cap_file "$name")"
    rmdir "$WORK_DIR" 2>/dev/null || true
    log "removed $name"
}

cmd_undefine() {
    (($# == 1)) || usage_error "usage: undefine NAME"
    local name=$1
    validate_name "$name"
    require_root
    take_lock
    if libvirt_up && domain_exists "$name"; then
        domain_is_ours "$name" || die "domain '$name' was not created by $PROG; not touching it"
    elif [[ ! -f $(record_file "$name") ]]; then
        die "no domain '$name' created by $PROG"
    fi
    remove_vm "$name"
}

# our_names: names of our domains (libvirt metadata) and of state records.
our_names() {
    local n f
    {
        if libvirt_up; then
            while read -r n; do
                [[ -n $n ]] && domain_is_ours "$n" && printf '%s\n' "$n"
            done < <(vsh list --all --name 2>/dev/null)
        fi
        for f in "$STATE_DIR"/vms/*.rec; do
            [[ -f $f ]] || continue
            n=${f##*/}
            printf '%s\n' "${n%.rec}"
        done
    } | sort -u
}

cmd_list() {
    (($# == 0)) || usage_error "list takes no arguments"
    require_root
    local n state
    printf '%-30s %-9s %-8s %-15s %-15s %-15s %s\n' NAME STATE WORKLOAD TAP HOST_IP GUEST_IP QUOTA
    while read -r n; do
        [[ -n $n ]] || continue
        state=$(vsh domstate "$n" 2>/dev/null || echo missing)
        printf '%-30s %-9s %-8s %-15s %-15s %-15s %s%%\n' "$n" "${state// /-}" \
            "$(vm_get "$n" workload)" "$(vm_get "$n" tap)" "$(vm_get "$n" host_ip)" \
            "$(vm_get "$n" guest_ip)" "$(vm_get "$n" quota_pct)"
    done < <(our_names)
}

cmd_info() {
    (($# == 1)) || usage_error "usage: info NAME"
    local name=$1 k pid line
    validate_name "$name"
    require_root
    require_our_domain "$name"
    printf 'name=%s\n' "$name"
    printf 'uuid=%s\n' "$(vsh domuuid "$name")"
    printf 'state=%s\n' "$(vsh domstate "$name" | tr ' ' '-')"
    for k in workload tap host_ip guest_ip prefixlen quota_pct image serial xml; do
        printf '%s=%s\n' "$k" "$(vm_get "$name" "$k")"
    done
    printf 'cap_pending=%s\n' "$([[ -f $(cap_file "$name") ]] && echo 1 || echo 0)"
    if pid=$(pidfile_pid "/run/libvirt/qemu/$name.pid") && [[ -d /proc/$pid ]]; then
        printf 'qemu_pid=%s\n' "$pid"
        # The VM's cgroup in each hierarchy libvirt placed it in (the main
        # qemu thread sits in its emulator/ child where there is one).
        while IFS=: read -r _ ctrl line; do
            [[ $line == /machine/* ]] || continue
            printf 'cgroup_%s=%s\n' "${ctrl:-unified}" "${line%/emulator}"
        done <"/proc/$pid/cgroup"
    fi
}

cmd_teardown() {
    local prefix="" purge="" n remaining
    while (($#)); do
        case $1 in
            --purge-cache) purge=1; shift ;;
            -*) usage_error "teardown: unknown option '$1'" ;;
            *) [[ -z $prefix ]] || usage_error "teardown takes at most one PREFIX"; prefix=$1; shift ;;
        esac
    done
    require_root
    take_lock
    # Persistent domains survive a daemon stop; to remove ours libvirtd must
    # answer.  Start it (as ours) only if some of our state needs it.
    if ! libvirt_up; then
        local need=""
        compgen -G "$STATE_DIR/vms/*.rec" >/dev/null && need=1
        grep -qsl "$META_NS" /etc/libvirt/qemu/*.xml && need=1
        if [[ -n $need ]] && command -v libvirtd >/dev/null; then
            log "libvirtd not answering; starting it to remove our domains"
            # Subshell: a failure must not abort the rest of the teardown;
            # daemons it started are recorded and stopped below.
            (ensure_daemons && clear_undo) || log "could not start libvirtd; removing files only"
        fi
    fi
    while read -r n; do
        [[ -n $n && $n == "$prefix"* ]] || continue
        remove_vm "$n"
    done < <(our_names)
    remaining=$(our_names | grep -c . || true)
    local others=""
    if libvirt_up; then
        others=$(vsh list --name 2>/dev/null | grep -c . || true)
    fi
    if ((remaining == 0 && ${others:-0} > 0)); then
        log "$others running domain(s) not created by $PROG; daemons left running"
    elif ((remaining == 0)); then
        local ours=""
        [[ -f $STATE_DIR/daemons/libvirtd ]] && ours=1
        stop_daemon libvirtd
        stop_daemon virtlogd
        # Only once libvirtd is gone, and only if it was ours.
        if [[ -n $ours ]]; then remove_machine_cgroups; else rm -f "$STATE_DIR/daemons/machine-cgroups"; fi
        rm -f "$STATE_DIR/lock"
        rmdir "$STATE_DIR/vms" "$STATE_DIR/daemons" "$STATE_DIR" 2>/dev/null || true
    else
        log "$remaining domain(s) of $PROG remain; daemons left running"
    fi
    rmdir "$WORK_DIR" 2>/dev/null || true
    if [[ -n $purge ]]; then
        log "removing cache $CACHE_DIR"
        rm -rf "$CACHE_DIR"
    fi
    log "teardown done"
}

# restart-libvirtd: stop and start the libvirtd this script started (its VMs
# keep running, as in a real libvirtd upgrade or crash).  Exit 3, touching
# nothing, when libvirtd is not ours.
cmd_restart_libvirtd() {
    (($# == 0)) || usage_error "usage: restart-libvirtd"
    require_root
    take_lock
    local rec=$STATE_DIR/daemons/libvirtd pid="" start=""
    [[ -f $rec ]] && read -r pid start <"$rec"
    if [[ -z $pid || $(proc_comm "$pid") != libvirtd || $(proc_starttime "$pid") != "$start" ]]; then
        log "libvirtd was not started by $PROG: not restarting it"
        exit 3
    fi
    stop_daemon libvirtd
    start_daemon libvirtd -d
    wait_libvirt_up
}

# ---------------------------------------------------------------- main

main() {
    (($# >= 1)) || usage_error "missing COMMAND"
    local cmd=$1
    shift
    case $cmd in
        -h | --help | help) usage ;;
        setup) cmd_setup "$@" ;;
        define) cmd_define "$@" ;;
        start) cmd_start "$@" ;;
        wait-ready) cmd_wait_ready "$@" ;;
        info) cmd_info "$@" ;;
        destroy) cmd_destroy "$@" ;;
        undefine) cmd_undefine "$@" ;;
        list) cmd_list "$@" ;;
        teardown) cmd_teardown "$@" ;;
        restart-libvirtd) cmd_restart_libvirtd "$@" ;;
        *) usage_error "unknown command '$cmd'" ;;
    esac
}

main "$@"
