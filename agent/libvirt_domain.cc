#include "agent/libvirt_domain.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/block_devices.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

// Hierarchies a tenant records, beside the CPU one (as cgroup discovery does).
constexpr const char* kHierarchies[] = {"unified", "cpu", "cpuacct", "blkio"};

struct XmlDocFree {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
struct XPathContextFree {
  void operator()(xmlXPathContext* ctx) const { xmlXPathFreeContext(ctx); }
};
struct XPathObjectFree {
  void operator()(xmlXPathObject* obj) const { xmlXPathFreeObject(obj); }
};
using XPathObject = std::unique_ptr<xmlXPathObject, XPathObjectFree>;

std::string NodeText(xmlNode* node) {
  xmlChar* content = xmlNodeGetContent(node);
  if (content == nullptr) return "";
  std::string text(reinterpret_cast<const char*>(content));
  xmlFree(content);
  return std::string(absl::StripAsciiWhitespace(text));
}

// Every node `expr` selects, relative to `node` (the document when null).
std::vector<xmlNode*> Select(xmlXPathContext* ctx, const char* expr, xmlNode* node = nullptr) {
  if (node != nullptr) ctx->node = node;
  XPathObject result(xmlXPathEvalExpression(reinterpret_cast<const xmlChar*>(expr), ctx));
  std::vector<xmlNode*> nodes;
  if (result && result->nodesetval != nullptr) {
    for (int i = 0; i < result->nodesetval->nodeNr; ++i) {
      nodes.push_back(result->nodesetval->nodeTab[i]);
    }
  }
  return nodes;
}

std::string FirstText(xmlXPathContext* ctx, const char* expr, xmlNode* node = nullptr) {
  std::vector<xmlNode*> nodes = Select(ctx, expr, node);
  return nodes.empty() ? "" : NodeText(nodes.front());
}

// <sys/sysmacros.h> defines major() and minor() as macros, which would also
// rewrite the DeviceId accessors of the same names.
uint32_t DevMajor(dev_t dev) { return major(dev); }
uint32_t DevMinor(dev_t dev) { return minor(dev); }
#undef major
#undef minor

// libvirt's per-VM directory holds one directory per thread group.
bool IsLibvirtThreadDir(absl::string_view name) {
  if (name == "emulator") return true;
  for (absl::string_view prefix : {"vcpu", "iothread"}) {
    if (absl::ConsumePrefix(&name, prefix)) {
      return !name.empty() &&
             std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<DomainInfo> ParseDomainXml(absl::string_view xml) {
  std::unique_ptr<xmlDoc, XmlDocFree> doc(
      xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) return absl::InvalidArgumentError("domain XML does not parse");
  std::unique_ptr<xmlXPathContext, XPathContextFree> ctx(xmlXPathNewContext(doc.get()));
  if (!ctx) return absl::ResourceExhaustedError("cannot allocate an XPath context");
  xmlXPathContext* c = ctx.get();

  DomainInfo info;
  info.uuid = FirstText(c, "/domain/uuid");
  info.name = FirstText(c, "/domain/name");
  if (info.uuid.empty() || info.name.empty()) {
    return absl::InvalidArgumentError("domain XML has no <uuid> or <name>");
  }
  info.partition = FirstText(c, "/domain/resource/partition");
  for (xmlNode* dev : Select(c, "/domain/devices/interface/target/@dev")) {
    std::string name = NodeText(dev);
    if (!name.empty()) info.interfaces.push_back(std::move(name));
  }
  for (xmlNode* disk : Select(c, "/domain/devices/disk")) {
    DomainDisk d;
    d.target = FirstText(c, "target/@dev", disk);
    std::string file = FirstText(c, "source/@file", disk);
    std::string dev = FirstText(c, "source/@dev", disk);
    if (!file.empty()) {
      d.source = std::move(file);
    } else if (!dev.empty()) {
      d.source = std::move(dev);
      d.block = true;
    } else {
      continue;  // network or empty drive: no host path
    }
    info.disks.push_back(std::move(d));
  }
  std::string shares = FirstText(c, "/domain/cputune/shares");
  if (!shares.empty()) {
    uint64_t value = 0;
    if (!absl::SimpleAtoi(shares, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("domain ", info.name, ": <cputune><shares> is not a number: ", shares));
    }
    info.cpu_shares = value;
  }
  return info;
}

std::map<std::string, std::string> ParseProcCgroup(absl::string_view text) {
  std::map<std::string, std::string> paths;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    // hierarchy-ID:controller-list:path; the path may itself hold ':'.
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    if (fields[0] == "0" && fields[1].empty()) {
      paths["unified"] = std::string(fields[2]);
      continue;
    }
    for (absl::string_view controller : absl::StrSplit(fields[1], ',', absl::SkipEmpty())) {
      if (absl::StartsWith(controller, "name=")) continue;
      paths[std::string(controller)] = std::string(fields[2]);
    }
  }
  return paths;
}

absl::StatusOr<std::string> VmCgroupPath(absl::string_view process_path,
                                         absl::string_view partition) {
  absl::string_view path = absl::StripSuffix(process_path, "/");
  absl::string_view part = absl::StripSuffix(partition, "/");
  if (!part.empty() && part != "/" && absl::StartsWith(path, part) && path.size() > part.size() &&
      path[part.size()] == '/') {
    absl::string_view rest = path.substr(part.size() + 1);
    absl::string_view child = rest.substr(0, rest.find('/'));
    if (!child.empty()) {
      return std::string(absl::StripPrefix(absl::StrCat(part, "/", child), "/"));
    }
  }
  // No partition (or the process is not under it): drop libvirt's thread directory.
  size_t slash = path.rfind('/');
  if (slash != absl::string_view::npos && IsLibvirtThreadDir(path.substr(slash + 1))) {
    path = path.substr(0, slash);
  }
  path = absl::StripPrefix(path, "/");
  if (path.empty()) {
    return absl::FailedPreconditionError(
        "the QEMU process is in the root cgroup: libvirt did not give the VM a cgroup");
  }
  return std::string(path);
}

bool IsLibvirtMachineCgroup(absl::string_view name) {
  if (absl::EndsWith(name, ".libvirt-qemu") || absl::EndsWith(name, ".libvirt-lxc")) return true;
  return absl::EndsWith(name, ".scope") &&
         (absl::StartsWith(name, "machine-qemu") || absl::StartsWith(name, "machine-lxc"));
}

double WeightFromCpuShares(uint64_t shares, const std::string& cpu_hierarchy) {
  const double base = cpu_hierarchy == "unified" ? 100.0 : 1024.0;
  if (shares == 0) return 1.0;
  return static_cast<double>(shares) / base;
}

absl::StatusOr<int> ReadQemuPid(const std::string& run_dir, const std::string& domain_name) {
  const std::string path = absl::StrCat(run_dir, "/", domain_name, ".pid");
  std::ifstream in(path);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  std::string text;
  std::getline(in, text);
  int pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) || pid <= 0) {
    return absl::DataLossError(absl::StrCat(path, " does not hold a pid: '", text, "'"));
  }
  return pid;
}

absl::StatusOr<std::vector<v1::CgroupRef>> VmCgroupRefs(const CgroupMounts& mounts,
                                                        const std::string& cpu_hierarchy, int pid,
                                                        const std::string& partition,
                                                        const std::string& proc_root) {
  const std::string file = absl::StrCat(proc_root, "/", pid, "/cgroup");
  std::ifstream in(file);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", file));
  std::stringstream text;
  text << in.rdbuf();
  const std::map<std::string, std::string> paths = ParseProcCgroup(text.str());

  std::vector<std::string> order{cpu_hierarchy};
  for (const char* h : kHierarchies) {
    if (h != cpu_hierarchy) order.emplace_back(h);
  }
  std::vector<v1::CgroupRef> refs;
  std::vector<std::string> mounts_seen;
  for (const std::string& hierarchy : order) {
    absl::StatusOr<std::string> mount = mounts.MountOf(hierarchy);
    auto path = paths.find(hierarchy);
    if (!mount.ok() || path == paths.end()) continue;
    // cpu and cpuacct may share one mount: record it once.
    if (std::find(mounts_seen.begin(), mounts_seen.end(), *mount) != mounts_seen.end()) continue;
    absl::StatusOr<std::string> rel = VmCgroupPath(path->second, partition);
    if (!rel.ok()) {
      if (hierarchy == cpu_hierarchy) return Annotate(rel.status(), hierarchy);
      continue;
    }
    struct stat st {};
    const std::string dir = absl::StrCat(*mount, "/", *rel);
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      if (hierarchy == cpu_hierarchy) return ErrnoStatus(errno, absl::StrCat("stat ", dir));
      continue;
    }
    mounts_seen.push_back(*mount);
    v1::CgroupRef& ref = refs.emplace_back();
    ref.set_hierarchy(hierarchy);
    ref.set_path(*rel);
    ref.set_id(st.st_ino);
  }
  if (refs.empty() || refs.front().hierarchy() != cpu_hierarchy) {
    return absl::NotFoundError(
        absl::StrCat("process ", pid, " has no cgroup in the '", cpu_hierarchy, "' hierarchy"));
  }
  return refs;
}

std::optional<v1::DeviceId> HostDiskOf(const DomainDisk& disk, const std::string& sys_dev_block) {
  struct stat st {};
  if (stat(disk.source.c_str(), &st) != 0) return std::nullopt;
  const dev_t dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
  if (DevMajor(dev) == 0) return std::nullopt;  // tmpfs, overlay, btrfs subvolumes: no block device
  absl::StatusOr<v1::DeviceId> whole = WholeDiskOf(DevMajor(dev), DevMinor(dev), sys_dev_block);
  if (!whole.ok()) return std::nullopt;
  return *whole;
}

std::vector<v1::DeviceId> DomainHostDisks(const DomainInfo& info,
                                          const std::string& sys_dev_block) {
  std::vector<v1::DeviceId> disks;
  for (const DomainDisk& disk : info.disks) {
    std::optional<v1::DeviceId> whole = HostDiskOf(disk, sys_dev_block);
    if (!whole) continue;
    const bool seen = std::any_of(disks.begin(), disks.end(), [&](const v1::DeviceId& d) {
      return d.major() == whole->major() && d.minor() == whole->minor();
    });
    if (!seen) disks.push_back(*whole);
  }
  return disks;
}

std::vector<std::string> GuestDisksOn(const DomainInfo& info, const v1::DeviceId& device,
                                      const std::string& sys_dev_block) {
  std::vector<std::string> targets;
  for (const DomainDisk& disk : info.disks) {
    std::optional<v1::DeviceId> whole = HostDiskOf(disk, sys_dev_block);
    if (whole && whole->major() == device.major() && whole->minor() == device.minor() &&
        !disk.target.empty()) {
      targets.push_back(disk.target);
    }
  }
  return targets;
}

}  // namespace fairwatch::agent
