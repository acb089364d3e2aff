#include "agent/cgroup_discovery.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

// Hierarchies recorded beside the CPU one, for measurements that need them.
constexpr const char* kSideHierarchies[] = {"unified", "cpu", "cpuacct", "blkio"};

bool DirInode(const std::string& path, uint64_t* inode) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  *inode = st.st_ino;
  return true;
}

}  // namespace

absl::StatusOr<std::string> NormalizeRelativeCgroupPath(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("cgroup path is empty");
  if (path.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "cgroup path '", path, "' must be relative to the hierarchy root (no leading '/')"));
  }
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup path '", path, "' must not contain '.' or '..'"));
    }
    parts.emplace_back(part);
  }
  if (parts.empty())
    return absl::InvalidArgumentError(absl::StrCat("cgroup path '", path, "' is empty"));
  return absl::StrJoin(parts, "/");
}

CgroupParentDiscovery::CgroupParentDiscovery(CgroupMounts mounts, std::string cpu_hierarchy,
                                             std::vector<v1::CgroupParentSource> parents)
    : mounts_(std::move(mounts)),
      cpu_hierarchy_(std::move(cpu_hierarchy)),
      parents_(std::move(parents)) {}

absl::Status CgroupParentDiscovery::Init() {
  ASSIGN_OR_RETURN(cpu_mount_, mounts_.MountOf(cpu_hierarchy_));
  for (auto& parent : parents_) {
    absl::StatusOr<std::string> normalized = NormalizeRelativeCgroupPath(parent.path());
    if (!normalized.ok()) return Annotate(normalized.status(), "cgroup_parents");
    parent.set_path(*normalized);
    if (parent.weight() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup_parents '", parent.path(), "': weight must be positive"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DiscoveredTenant>> CgroupParentDiscovery::Scan() {
  std::vector<DiscoveredTenant> found;
  for (const auto& parent : parents_) {
    std::string dir_path = absl::StrCat(cpu_mount_, "/", parent.path());
    std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir(dir_path.c_str()), closedir);
    if (!dir) {
      if (errno == ENOENT) {
        if (missing_logged_.insert(dir_path).second) {
          FW_LOG(Warning, "cgroup parent ", dir_path, " does not exist yet; watching for it");
        }
        continue;
      }
      return ErrnoStatus(errno, absl::StrCat("listing cgroup parent ", dir_path));
    }
    missing_logged_.erase(dir_path);
    while (struct dirent* entry = readdir(dir.get())) {
      std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      if (entry->d_type != DT_DIR && entry->d_type != DT_UNKNOWN) continue;
      std::string rel = absl::StrCat(parent.path(), "/", name);
      DiscoveredTenant t;
      // The directory may vanish between readdir and stat: then it is not a tenant.
      if (!DirInode(absl::StrCat(cpu_mount_, "/", rel), &t.cpu_cgroup_id)) continue;
      t.tenant.set_id(rel);
      t.tenant.set_name(name);
      t.tenant.set_account(parent.account());
      t.tenant.set_weight(parent.weight() > 0 ? parent.weight() : 1.0);
      t.tenant.set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
      v1::CgroupRef* primary = t.tenant.add_cgroups();
      primary->set_hierarchy(cpu_hierarchy_);
      primary->set_path(rel);
      primary->set_id(t.cpu_cgroup_id);
      for (const char* side : kSideHierarchies) {
        if (side == cpu_hierarchy_) continue;
        absl::StatusOr<std::string> mount = mounts_.MountOf(side);
        uint64_t inode = 0;
        if (!mount.ok() || *mount == cpu_mount_) continue;
        if (!DirInode(absl::StrCat(*mount, "/", rel), &inode)) continue;
        v1::CgroupRef* ref = t.tenant.add_cgroups();
        ref->set_hierarchy(side);
        ref->set_path(rel);
        ref->set_id(inode);
      }
      found.push_back(std::move(t));
    }
  }
  std::sort(found.begin(), found.end(), [](const DiscoveredTenant& a, const DiscoveredTenant& b) {
    return a.tenant.id() < b.tenant.id();
  });
  // Two parents may list the same directory (nested parents): keep one.
  found.erase(std::unique(found.begin(), found.end(),
                          [](const DiscoveredTenant& a, const DiscoveredTenant& b) {
                            return a.tenant.id() == b.tenant.id();
                          }),
              found.end());
  return found;
}

std::vector<DiscoveredTenant> MergeTenantSources(std::vector<std::vector<DiscoveredTenant>> lists,
                                                 std::vector<std::string>* dropped) {
  std::vector<DiscoveredTenant> merged;
  absl::flat_hash_set<std::string> ids;
  absl::flat_hash_set<std::pair<std::string, uint64_t>> cgroups;
  for (auto& list : lists) {
    for (auto& t : list) {
      bool taken = ids.contains(t.tenant.id());
      for (const auto& ref : t.tenant.cgroups()) {
        taken = taken || cgroups.contains(std::make_pair(ref.hierarchy(), ref.id()));
      }
      if (taken) {
        if (dropped != nullptr) dropped->push_back(t.tenant.id());
        continue;
      }
      ids.insert(t.tenant.id());
      for (const auto& ref : t.tenant.cgroups()) cgroups.emplace(ref.hierarchy(), ref.id());
      merged.push_back(std::move(t));
    }
  }
  std::sort(merged.begin(), merged.end(), [](const DiscoveredTenant& a, const DiscoveredTenant& b) {
    return a.tenant.id() < b.tenant.id();
  });
  return merged;
}

}  // namespace fairwatch::agent
