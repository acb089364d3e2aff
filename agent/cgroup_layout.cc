#include "agent/cgroup_layout.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace fairwatch::agent {

absl::StatusOr<std::string> CgroupMounts::MountOf(const std::string& hierarchy) const {
  if (hierarchy == "unified") {
    if (unified.empty()) return absl::NotFoundError("no cgroup2 (unified) hierarchy is mounted");
    return unified;
  }
  auto it = v1_by_controller.find(hierarchy);
  if (it == v1_by_controller.end()) {
    return absl::NotFoundError(
        absl::StrCat("no cgroup v1 hierarchy with controller '", hierarchy, "' is mounted"));
  }
  return it->second;
}

absl::StatusOr<CgroupMounts> ParseMountInfo(const std::string& mountinfo) {
  CgroupMounts mounts;
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::vector<absl::string_view> halves = absl::StrSplit(line, absl::MaxSplits(" - ", 1));
    if (halves.size() != 2) continue;
    std::vector<absl::string_view> pre = absl::StrSplit(halves[0], ' ', absl::SkipEmpty());
    std::vector<absl::string_view> post = absl::StrSplit(halves[1], ' ', absl::SkipEmpty());
    if (pre.size() < 5 || post.size() < 3) continue;
    // Only whole hierarchies: a bind mount of a sub-cgroup (root != "/") is not one.
    if (pre[3] != "/") continue;
    std::string mount_point(pre[4]);
    if (post[0] == "cgroup2") {
      if (mounts.unified.empty()) mounts.unified = mount_point;
    } else if (post[0] == "cgroup") {
      for (absl::string_view opt : absl::StrSplit(post[2], ',')) {
        static const char* const kIgnored[] = {"rw",     "ro",    "relatime", "noatime",
                                               "nosuid", "nodev", "noexec",   "clone_children"};
        bool ignored = false;
        for (const char* skip : kIgnored) ignored = ignored || opt == skip;
        if (ignored || absl::StartsWith(opt, "name=") || absl::StartsWith(opt, "release_agent")) {
          continue;
        }
        mounts.v1_by_controller.emplace(std::string(opt), mount_point);
      }
    }
  }
  if (mounts.unified.empty() && mounts.v1_by_controller.empty()) {
    return absl::FailedPreconditionError("no cgroup hierarchy is mounted (looked in mountinfo)");
  }
  if (mounts.v1_by_controller.empty()) {
    mounts.layout = v1::CGROUP_LAYOUT_V2;
  } else if (mounts.unified.empty()) {
    mounts.layout = v1::CGROUP_LAYOUT_V1;
  } else {
    mounts.layout = v1::CGROUP_LAYOUT_HYBRID;
  }
  return mounts;
}

absl::StatusOr<CgroupMounts> ReadCgroupMounts(const std::string& mountinfo_path) {
  std::ifstream in(mountinfo_path);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", mountinfo_path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<CgroupMounts> parsed = ParseMountInfo(buffer.str());
  if (!parsed.ok()) return Annotate(parsed.status(), mountinfo_path);
  return parsed;
}

absl::StatusOr<std::string> ChooseCpuHierarchy(const CgroupMounts& mounts,
                                               const std::string& requested) {
  if (requested.empty() || requested == "auto") {
    if (mounts.v1_by_controller.count("cpu")) return std::string("cpu");
    if (!mounts.unified.empty()) return std::string("unified");
    return absl::FailedPreconditionError(
        "neither a cgroup v1 cpu hierarchy nor a cgroup2 hierarchy is mounted");
  }
  if (requested != "unified" && requested != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu_hierarchy must be auto, unified or cpu; got '", requested, "'"));
  }
  RETURN_IF_ERROR(mounts.MountOf(requested).status());
  return requested;
}

std::optional<CpuTimeFile> KernelCpuTimeFile(const v1::Tenant& tenant,
                                             const std::string& cpu_hierarchy,
                                             const CgroupMounts& mounts) {
  auto ref_in = [&](const std::string& hierarchy) -> const v1::CgroupRef* {
    for (const v1::CgroupRef& ref : tenant.cgroups()) {
      if (ref.hierarchy() == hierarchy) return &ref;
    }
    return nullptr;
  };
  auto in_dir = [&](const std::string& hierarchy, const char* file,
                    bool microseconds) -> std::optional<CpuTimeFile> {
    const v1::CgroupRef* ref = ref_in(hierarchy);
    absl::StatusOr<std::string> mount = mounts.MountOf(hierarchy);
    // The hierarchy's root is the host's, not a tenant's.
    if (ref == nullptr || !mount.ok() || ref->path().empty()) return std::nullopt;
    return CpuTimeFile{absl::StrCat(*mount, "/", ref->path(), "/", file), ref->id(), microseconds};
  };
  if (cpu_hierarchy == "cpu") {
    absl::StatusOr<std::string> cpu = mounts.MountOf("cpu");
    absl::StatusOr<std::string> cpuacct = mounts.MountOf("cpuacct");
    if (cpu.ok() && cpuacct.ok()) {
      // Co-mounted (cpu,cpuacct): discovery records the directory once, as cpu's.
      std::optional<CpuTimeFile> file =
          in_dir(*cpuacct == *cpu ? "cpu" : "cpuacct", "cpuacct.usage", false);
      if (file) return file;
    }
  }
  return in_dir("unified", "cpu.stat", true);
}

}  // namespace fairwatch::agent
