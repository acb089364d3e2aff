// Limits on libvirt VM tenants go through libvirt, which owns their cgroups
// (writing them behind its back is undone at its next change and confuses
// its own bookkeeping). An interface so the enforcer's logic is testable
// without a daemon; LibvirtTuning is the real one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::agent {

// QEMU's own I/O throttle of one guest disk (libvirt's block I/O tuning,
// `virsh blkdeviotune`), in one unit: bytes or operations per second. 0: no
// throttle. QEMU refuses a total beside a per-direction value; libvirt sets
// all three of a unit together (those not given become 0).
struct VmDiskThrottle {
  uint64_t total = 0;
  uint64_t read = 0;
  uint64_t write = 0;
  friend bool operator==(const VmDiskThrottle&, const VmDiskThrottle&) = default;
};
enum class VmDiskUnit { kBytes, kIops };

// A domain's CPU bandwidth for all its vCPUs and emulator threads together.
struct VmCpuQuota {
  uint64_t period_us = 0;
  int64_t quota_us = -1;  // -1 (or any value < 0): unlimited
};

class VmTuning {
 public:
  virtual ~VmTuning() = default;
  // The live values of a running domain, by UUID. NOT_FOUND: not running.
  virtual absl::StatusOr<VmCpuQuota> GetCpuQuota(const std::string& uuid) = 0;
  // Sets the live global_quota (microseconds per global_period; -1 lifts it).
  virtual absl::Status SetCpuQuota(const std::string& uuid, int64_t quota_us) = 0;
  // The live cpu_shares: the domain's scheduling weight (1024 is a plain task's).
  virtual absl::StatusOr<uint64_t> GetCpuShares(const std::string& uuid) = 0;
  virtual absl::Status SetCpuShares(const std::string& uuid, uint64_t shares) = 0;
  // The guest disks ("vda") of a running domain whose source lives on the
  // whole host disk `device`. UNIMPLEMENTED: this domain's driver has none.
  virtual absl::StatusOr<std::vector<std::string>> GuestDisksOn(const std::string& uuid,
                                                                const v1::DeviceId& device) = 0;
  // QEMU's live throttle of one guest disk. Works on any host I/O scheduler
  // (what OpenStack's disk QoS uses). UNIMPLEMENTED where the driver has none.
  virtual absl::StatusOr<VmDiskThrottle> GetDiskThrottle(const std::string& uuid,
                                                         const std::string& target,
                                                         VmDiskUnit unit) = 0;
  virtual absl::Status SetDiskThrottle(const std::string& uuid, const std::string& target,
                                       VmDiskUnit unit, const VmDiskThrottle& throttle) = 0;
  // A live per-device blkio throttle of the domain: `field` is libvirt's
  // name ("device_read_bytes_sec", "device_write_iops_sec", ...), `device`
  // the host block device's path (/dev/sda). 0: no throttle. Only to take
  // back limits an older agent set this way (its journal): reading fails on a
  // host device without BFQ or CFQ, as libvirt reads the weight with it.
  virtual absl::StatusOr<uint64_t> GetBlkioThrottle(const std::string& uuid,
                                                    const std::string& field,
                                                    const std::string& device) = 0;
  virtual absl::Status SetBlkioThrottle(const std::string& uuid, const std::string& field,
                                        const std::string& device, uint64_t value) = 0;
};

// Opens its own connection to `uri` on first use and again after a failure.
std::unique_ptr<VmTuning> MakeLibvirtTuning(std::string uri);

}  // namespace fairwatch::agent
