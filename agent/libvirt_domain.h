// What the agent needs from a libvirt domain, parsed from its live XML, and
// how a running QEMU domain maps onto cgroups. Pure functions: the libvirt
// connection itself is in libvirt_source.h.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/cgroup_layout.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::agent {

struct DomainDisk {
  std::string target;  // guest name: "vda"
  std::string source;  // host path: image file or block device node
  bool block = false;  // source is a block device (<disk type='block'>)
};

struct DomainInfo {
  std::string uuid;
  std::string name;
  // <resource><partition>, e.g. "/machine"; empty when the XML has none.
  std::string partition;
  // Host-side interface names (<interface><target dev=.../>), in XML order.
  std::vector<std::string> interfaces;
  // Disks with a host path (file or block); network disks have none.
  std::vector<DomainDisk> disks;
  // <cputune><shares>, when set.
  std::optional<uint64_t> cpu_shares;
};

// Parses a domain's XML (virDomainGetXMLDesc). Needs <uuid> and <name>.
absl::StatusOr<DomainInfo> ParseDomainXml(absl::string_view xml);

// Parses /proc/<pid>/cgroup: hierarchy ("unified" for the v2 line, else each
// v1 controller of the line, e.g. "cpu" and "cpuacct") -> absolute path.
// Named hierarchies (name=systemd) are left out.
std::map<std::string, std::string> ParseProcCgroup(absl::string_view text);

// The tenant cgroup of a VM from the cgroup of its QEMU process: the child of
// `partition` on that path (libvirt's per-VM directory, which holds emulator,
// vcpuN and iothreadN), or, without a usable partition, the path with a
// trailing libvirt thread directory removed. Returned relative to the
// hierarchy root, without a leading '/'.
absl::StatusOr<std::string> VmCgroupPath(absl::string_view process_path,
                                         absl::string_view partition);

// Whether a cgroup directory name is one libvirt makes for a domain:
// "qemu-3-web.libvirt-qemu" (no systemd), "machine-qemu\x2d3\x2dweb.scope"
// (systemd), and the LXC driver's equivalents.
bool IsLibvirtMachineCgroup(absl::string_view name);

// Tenant weight from libvirt CPU shares: relative to the controller's default
// (1024 for v1 cpu.shares, 100 for v2 cpu.weight), so the default is 1.
double WeightFromCpuShares(uint64_t shares, const std::string& cpu_hierarchy);

// Reads `<run_dir>/<name>.pid`, written by the QEMU driver for a running domain.
absl::StatusOr<int> ReadQemuPid(const std::string& run_dir, const std::string& domain_name);

// The VM's cgroup in every hierarchy the agent uses that is mounted, from the
// cgroups of process `pid` (under `proc_root`). The CPU hierarchy comes first;
// fails if the VM has no directory in it.
absl::StatusOr<std::vector<v1::CgroupRef>> VmCgroupRefs(const CgroupMounts& mounts,
                                                        const std::string& cpu_hierarchy, int pid,
                                                        const std::string& partition,
                                                        const std::string& proc_root = "/proc");

// The whole host disks the domain's disk sources live on (the device holding
// an image file, or the block device itself), without duplicates. Sources that
// do not exist or are not on a block device (tmpfs, overlay) are skipped.
std::vector<v1::DeviceId> DomainHostDisks(const DomainInfo& info,
                                          const std::string& sys_dev_block = "/sys/dev/block");

// The whole host disk one guest disk's source lives on; none for a source
// that does not exist or is not on a block device.
std::optional<v1::DeviceId> HostDiskOf(const DomainDisk& disk,
                                       const std::string& sys_dev_block = "/sys/dev/block");

// The guest names ("vda") of the domain's disks whose source lives on the
// whole host disk `device`, in XML order.
std::vector<std::string> GuestDisksOn(const DomainInfo& info, const v1::DeviceId& device,
                                      const std::string& sys_dev_block = "/sys/dev/block");

}  // namespace fairwatch::agent
