// Where the cgroup hierarchies are mounted, read from /proc/self/mountinfo.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::agent {

struct CgroupMounts {
  v1::CgroupLayout layout = v1::CGROUP_LAYOUT_UNSPECIFIED;
  std::string unified;                                  // cgroup2 mount, empty if none
  std::map<std::string, std::string> v1_by_controller;  // "cpu" -> /sys/fs/cgroup/cpu

  // The mount point of a hierarchy named as in CgroupRef ("unified", "cpu").
  absl::StatusOr<std::string> MountOf(const std::string& hierarchy) const;
};

// Parses mountinfo text (proc(5) format).
absl::StatusOr<CgroupMounts> ParseMountInfo(const std::string& mountinfo);
absl::StatusOr<CgroupMounts> ReadCgroupMounts(
    const std::string& mountinfo_path = "/proc/self/mountinfo");

// Picks the hierarchy CPU is attributed in: `requested` is "auto", "unified" or
// "cpu". auto means the v1 cpu controller where it is mounted, else unified.
absl::StatusOr<std::string> ChooseCpuHierarchy(const CgroupMounts& mounts,
                                               const std::string& requested);

// The file in which the kernel keeps a tenant's CPU time, exactly, for every
// task under its cgroup: v1 `cpuacct.usage` (ns) in the cpuacct hierarchy
// (co-mounted with cpu or not) when CPU is attributed in the v1 cpu
// hierarchy, else the unified `cpu.stat` (`usage_usec`, kept for every cgroup2
// directory, with or without the cpu controller). nullopt: the tenant has no
// directory where a counter is kept (then the sched_stat_runtime program
// measures it, docs/architecture.md, "measure: CPU").
struct CpuTimeFile {
  std::string path;
  uint64_t cgroup_id = 0;     // its directory's, in its hierarchy (a new one: recreated)
  bool microseconds = false;  // cpu.stat's usage_usec; else cpuacct.usage in ns
};
std::optional<CpuTimeFile> KernelCpuTimeFile(const v1::Tenant& tenant,
                                             const std::string& cpu_hierarchy,
                                             const CgroupMounts& mounts);

}  // namespace fairwatch::agent
