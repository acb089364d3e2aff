#!/usr/bin/env bash
# Installs every Debian 12 package fairwatch needs to build, test and run its demo.
# Non-interactive and idempotent: packages already present are left alone.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: must run as root (it calls apt-get)" >&2
  exit 1
fi

PACKAGES=(
  # toolchain
  build-essential cmake pkg-config git
  clang llvm clang-format clang-tidy
  # BPF
  libbpf-dev bpftool libelf-dev zlib1g-dev
  # RPC, config, storage, flags
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libsqlite3-dev libcli11-dev libcpp-httplib-dev
  # libvirt tenants
  libvirt-dev libxml2-dev
  # tests and benchmarks (prometheus: promtool and a server for the
  # deploy/prometheus tests)
  libgtest-dev libgmock-dev libbenchmark-dev prometheus
  # workloads and tools used by tests and the demo
  stress-ng fio iperf3 iproute2 procps util-linux openssl python3
  # the package test: CPack's DEB generator (dpkg-shlibdeps, file), a fresh
  # Debian root to install the .deb into, systemd-analyze for its units,
  # systemd-nspawn to boot it, capsh
  debootstrap dpkg-dev file systemd systemd-container libcap2-bin
  # CI records every program the run executes (.ci/run, deploy/check-deps.py);
  # the benchmarks count cycles with it
  linux-perf
  # real VMs for the libvirt tests (tests/vm/fw-test-vms.sh): TCG guests
  libvirt-daemon libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
  qemu-system-x86 qemu-utils busybox-static cpio xz-utils
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps.sh: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
