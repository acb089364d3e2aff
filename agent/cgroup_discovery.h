// Tenant discovery from configured cgroup parent directories: each child
// directory of a parent is one tenant, rescanned every interval.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/cgroup_layout.h"
#include "fairwatch/v1/config.pb.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::agent {

struct DiscoveredTenant {
  v1::Tenant tenant;
  uint64_t cpu_cgroup_id = 0;  // id in the hierarchy CPU is attributed in
  // Host-side interfaces the source knows carry this tenant's traffic (a
  // VM's taps); the network collector counts them beside what it finds.
  std::vector<std::string> declared_interfaces;
};

// One list from every source, sorted by id. A tenant of an earlier list wins
// over a later one with the same id or the same cgroup (in one hierarchy): a
// VM found by libvirt is not counted again as a child of a cgroup parent.
// `dropped` (optional) receives the ids of the losers.
std::vector<DiscoveredTenant> MergeTenantSources(std::vector<std::vector<DiscoveredTenant>> lists,
                                                 std::vector<std::string>* dropped = nullptr);

// Checks that `path` is relative, without "." or ".." components; returns it
// without leading or trailing slashes.
absl::StatusOr<std::string> NormalizeRelativeCgroupPath(const std::string& path);

class CgroupParentDiscovery {
 public:
  // `cpu_hierarchy` names the hierarchy tenants are found and keyed in.
  CgroupParentDiscovery(CgroupMounts mounts, std::string cpu_hierarchy,
                        std::vector<v1::CgroupParentSource> parents);

  // Validates the configured parents (paths, weights).
  absl::Status Init();

  // Lists the tenants present now. A missing parent directory is not an error
  // (it may be created later); it is logged once.
  absl::StatusOr<std::vector<DiscoveredTenant>> Scan();

 private:
  CgroupMounts mounts_;
  std::string cpu_hierarchy_;
  std::string cpu_mount_;
  std::vector<v1::CgroupParentSource> parents_;
  std::set<std::string> missing_logged_;
};

}  // namespace fairwatch::agent
