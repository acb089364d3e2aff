// The agent's configuration: file, defaults, validation.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "fairwatch/v1/config.pb.h"

namespace fairwatch::agent {

inline constexpr uint32_t kDefaultIntervalMs = 1000;
inline constexpr uint32_t kDefaultMaxTenants = 4096;
inline constexpr uint32_t kDefaultReportBuffer = 600;
inline constexpr uint32_t kDefaultMaxBackoffMs = 5000;
inline constexpr char kDefaultControllerAddress[] = "127.0.0.1:7400";
inline constexpr char kDefaultCgroupRoot[] = "/sys/fs/cgroup";
inline constexpr char kDefaultMetricsAddress[] = "127.0.0.1:9477";
inline constexpr char kDefaultLibvirtUri[] = "qemu:///system";
inline constexpr char kDefaultQemuRunDir[] = "/run/libvirt/qemu";
inline constexpr uint32_t kDefaultLibvirtResyncMs = 30000;
// tmpfs: outlives the agent, not the boot, like the kernel limits it records;
// and its fsync does not wait behind a tenant flooding a disk.
inline constexpr char kDefaultStateDir[] = "/run/fairwatch-agent";

// Fills in defaults for unset fields.
void ApplyDefaults(v1::AgentConfig* config);
// Checks ranges and combinations; messages name the field.
absl::Status Validate(const v1::AgentConfig& config);

}  // namespace fairwatch::agent
