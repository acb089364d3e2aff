#!/bin/busybox sh
# shellcheck shell=sh
#
# /init (PID 1) of the fairwatch test guests built by tests/vm/fw-test-vms.sh.
#
# The initramfs holds a static busybox (every applet linked into /bin), the
# virtio modules listed in /lib/fw-modules/order (dependencies first) and this
# file.  Everything a guest should do comes from the kernel command line:
#
#   fw_name=NAME            label printed with the ready marker
#   fw_workload=cpu|steady|disk|net|idle
#   fw_duty=PERCENT         steady workload: share of one vCPU   (default 40)
#   fw_ip=A.B.C.D/N         guest address for eth0 (optional)
#   fw_gw=A.B.C.D           host side of the tap; target of the net workload
#   fw_ping_size=BYTES      net workload: ICMP payload size   (default 1400)
#   fw_ping_interval=SECS   net workload: seconds between pings (default 0.02)
#   fw_disk_bs=BYTES        disk workload: dd block size       (default 65536)
#
# Once the workload runs it prints "FW-GUEST-READY ..." on the console
# (ttyS0, which libvirt writes to a file); on failure it prints
# "FW-GUEST-FAILED: reason".  PID 1 never exits, so the kernel never panics.

export PATH=/bin

/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

fail() {
    echo "FW-GUEST-FAILED: $*"
    while :; do sleep 3600; done
}

# Pick up fw_* settings from the kernel command line.
fw_name=guest
fw_workload=idle
fw_ip=
fw_gw=
fw_ping_size=1400
fw_ping_interval=0.02
fw_disk_bs=65536
fw_duty=40
read -r cmdline </proc/cmdline
set -f
# shellcheck disable=SC2086 # split the command line into words on purpose
for arg in $cmdline; do
    case $arg in
        fw_*=*) ;;
        *) continue ;;
    esac
    key=${arg%%=*}
    case $key in
        *[!a-z0-9_]*) continue ;;
    esac
    eval "$key=\${arg#*=}"
done
set +f

echo "fw-guest: $fw_name booting (workload=$fw_workload)"

while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/fw-modules/$mod.ko" || fail "insmod $mod"
done </lib/fw-modules/order

# Wait up to $2 tenths of a second for path $1 to appear.
wait_for() {
    n=0
    while [ ! -e "$1" ]; do
        n=$((n + 1))
        [ "$n" -le "$2" ] || return 1
        sleep 0.1
    done
}

ip link set lo up
if [ -n "$fw_ip" ]; then
    wait_for /sys/class/net/eth0 100 || fail "no eth0"
    ip addr add "$fw_ip" dev eth0 || fail "ip addr add $fw_ip"
    ip link set eth0 up || fail "eth0 up"
    echo "fw-guest: eth0 $fw_ip gw=$fw_gw"
fi

case $fw_workload in
    cpu)
        # One busy loop per vCPU.
        for _ in $(seq "$(grep -c '^processor' /proc/cpuinfo)"); do
            ( while :; do :; done ) &
        done
        ;;
    steady)
        # A fixed amount of work every 100 ms, $fw_duty % of one vCPU as
        # measured at boot, done whenever the vCPU gets to run: work that
        # falls behind is caught up (up to 1 s of it), so a guest squeezed
        # by a neighbour still asks for the same CPU and shows the wait.
        case $fw_duty in '' | *[!0-9]*) fail "fw_duty must be a number" ;; esac
        (
            # Centiseconds since boot, in $now (no fork).
            tick() {
                read -r up _ </proc/uptime
                f=${up#*.}
                f=${f#0}
                now=$((${up%.*} * 100 + f))
            }
            spin() {
                i=0
                while [ "$i" -lt "$1" ]; do i=$((i + 1)); done
            }
            # Iterations per second: the best of three runs of at least
            # half a second each (the least disturbed by the rest of boot).
            n=1000
            while :; do
                tick
                t0=$now
                spin "$n"
                tick
                [ $((now - t0)) -ge 50 ] && break
                n=$((n * 2))
            done
            best=$((n * 100 / (now - t0)))
            for _ in 1 2; do
                tick
                t0=$now
                spin "$n"
                tick
                rate=$((n * 100 / (now - t0)))
                [ "$rate" -gt "$best" ] && best=$rate
            done
            work=$((best * fw_duty / 1000))
            echo "fw-guest: steady: $work iterations per 100 ms ($fw_duty %)"
            # Ready once calibrated: a guest booted next must not disturb it.
            echo "FW-GUEST-READY name=$fw_name workload=$fw_workload"
            tick
            next=$now
            while :; do
                spin "$work"
                next=$((next + 10))
                tick
                if [ "$now" -lt "$next" ]; then
                    usleep $(((next - now) * 10000))
                elif [ $((now - next)) -gt 100 ]; then
                    next=$now
                fi
            done
        ) &
        ;;
    disk)
        wait_for /dev/vda 100 || fail "no /dev/vda"
        size=$(blockdev --getsize64 /dev/vda) || fail "blockdev"
        blocks=$((size / fw_disk_bs))
        [ "$blocks" -gt 0 ] || fail "disk smaller than $fw_disk_bs bytes"
        # Direct writes then direct reads of the whole disk, forever.
        (
            while :; do
                dd if=/dev/zero of=/dev/vda bs="$fw_disk_bs" count="$blocks" \
                    oflag=direct conv=notrunc status=none
                dd if=/dev/vda of=/dev/null bs="$fw_disk_bs" count="$blocks" \
                    iflag=direct status=none
            done
        ) >/dev/null 2>&1 &
        ;;
    net)
        [ -n "$fw_gw" ] || fail "net workload needs fw_gw"
        (
            while :; do
                ping -q -s "$fw_ping_size" -i "$fw_ping_interval" "$fw_gw"
                sleep 1
            done
        ) >/dev/null 2>&1 &
        ;;
    idle)
        ;;
    *)
        fail "unknown workload $fw_workload"
        ;;
esac

# The steady workload says it is ready itself, once calibrated.
[ "$fw_workload" = steady ] || echo "FW-GUEST-READY name=$fw_name workload=$fw_workload"

# Stay alive as PID 1; the shell reaps exiting children.
while :; do sleep 3600; done
