// Limits on libvirt VM tenants go through libvirt, which owns their cgroups
// (writing them behind its back is undone at its next change and confuses
// its own bookkeeping). An interface so the enforcer's logic is testable
// without a daemon; LibvirtTuning is the real one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fairwatch::agent {

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
  // A live per-device blkio throttle of the domain: `field` is libvirt's
  // name ("device_read_bytes_sec", "device_write_iops_sec", ...), `device`
  // the host block device's path (/dev/sda). 0: no throttle.
  virtual absl::StatusOr<uint64_t> GetBlkioThrottle(const std::string& uuid,
                                                    const std::string& field,
                                                    const std::string& device) = 0;
  virtual absl::Status SetBlkioThrottle(const std::string& uuid, const std::string& field,
                                        const std::string& device, uint64_t value) = 0;
};

// Opens its own connection to `uri` on first use and again after a failure.
std::unique_ptr<VmTuning> MakeLibvirtTuning(std::string uri);

}  // namespace fairwatch::agent
