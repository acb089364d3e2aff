// Where the cgroup hierarchies are mounted, read from /proc/self/mountinfo.
#pragma once

#include <map>
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

}  // namespace fairwatch::agent
