#include "agent/enforcer.h"

#include <fcntl.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/cgroup_dir.h"
#include "common/log.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

constexpr char kJournalFile[] = "limits.journal";

// This boot's id (/proc/sys/kernel/random/boot_id); empty if unknown.
std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  in >> id;
  return id;
}

// When this boot began (btime of /proc/stat), in unix seconds; 0 if unknown.
int64_t BootTimeUnix() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      int64_t t = 0;
      return in >> t ? t : 0;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}
constexpr uint32_t kJournalVersion = 1;
// The kernel refuses a CFS quota under 1 ms.
constexpr int64_t kMinQuotaUs = 1000;

bool IsAtOrBelow(const std::string& path, const std::string& base) {
  return path == base || absl::StartsWith(path, absl::StrCat(base, "/"));
}

std::string Trimmed(const std::string& path) {
  std::string out(absl::StripSuffix(absl::StripPrefix(path, "/"), "/"));
  return out;
}

absl::Status ErrnoStatus(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::Status MakeDirs(const std::string& dir) {
  std::string path;
  for (absl::string_view part : absl::StrSplit(dir, '/', absl::SkipEmpty())) {
    absl::StrAppend(&path, "/", part);
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoStatus(absl::StrCat("creating ", path));
    }
  }
  return absl::OkStatus();
}

// Quota and period from cpu.max ("max 100000" or "50000 100000").
absl::Status ParseCpuMax(const std::string& text, int64_t* quota_us, uint64_t* period_us) {
  std::vector<std::string> parts = absl::StrSplit(text, ' ', absl::SkipWhitespace());
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], period_us) || *period_us == 0) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.max reads '", text, "'"));
  }
  if (parts[0] == "max") {
    *quota_us = -1;
  } else if (!absl::SimpleAtoi(parts[0], quota_us)) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.max reads '", text, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ParseInt(const std::string& text, absl::string_view what) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " reads '", text, "'"));
  }
  return v;
}

// The quota for `cores` in `period_us`, never above a quota that was there
// before fairwatch (`original_quota_us` >= 0).
int64_t QuotaFor(double cores, uint64_t period_us, int64_t original_quota_us) {
  auto quota = static_cast<int64_t>(std::llround(cores * static_cast<double>(period_us)));
  quota = std::max(quota, kMinQuotaUs);
  if (original_quota_us >= 0) quota = std::min(quota, original_quota_us);
  return quota;
}

double Cores(int64_t quota_us, uint64_t period_us) {
  return quota_us < 0 || period_us == 0
             ? 0
             : static_cast<double>(quota_us) / static_cast<double>(period_us);
}

// The per-device throttle keys of a disk resource in each interface.
struct DiskKeys {
  const char* v2_read;
  const char* v2_write;
  const char* v1_read_file;
  const char* v1_write_file;
  const char* libvirt_read;
  const char* libvirt_write;
};

DiskKeys KeysFor(v1::Resource resource) {
  if (resource == v1::RESOURCE_DISK_IOPS) {
    return {"riops",
            "wiops",
            "blkio.throttle.read_iops_device",
            "blkio.throttle.write_iops_device",
            "device_read_iops_sec",
            "device_write_iops_sec"};
  }
  return {"rbps",
          "wbps",
          "blkio.throttle.read_bps_device",
          "blkio.throttle.write_bps_device",
          "device_read_bytes_sec",
          "device_write_bytes_sec"};
}

// A device's read and write throttles; 0: none.
struct ReadWrite {
  uint64_t read = 0;
  uint64_t write = 0;
};

std::string Side(uint64_t v) { return v == 0 ? "max" : absl::StrCat(v); }
std::string FormatPair(ReadWrite rw) { return absl::StrCat(Side(rw.read), " ", Side(rw.write)); }

absl::StatusOr<ReadWrite> ParsePair(const std::string& raw) {
  std::vector<std::string> parts = absl::StrSplit(raw, ' ', absl::SkipWhitespace());
  ReadWrite rw;
  auto side = [](const std::string& text, uint64_t* v) {
    if (text == "max") {
      *v = 0;
      return true;
    }
    return absl::SimpleAtoi(text, v);
  };
  if (parts.size() != 2 || !side(parts[0], &rw.read) || !side(parts[1], &rw.write)) {
    return absl::InvalidArgumentError(absl::StrCat("a saved disk throttle reads '", raw, "'"));
  }
  return rw;
}

std::string Dev(const v1::DeviceId& d) { return absl::StrCat(d.major(), ":", d.minor()); }

// One device's keys from io.max ("8:0 rbps=1048576 wbps=max riops=max wiops=max").
ReadWrite ParseIoMax(const std::string& text, const v1::DeviceId& device, const DiskKeys& keys) {
  ReadWrite rw;
  const std::string dev = Dev(device);
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (fields.empty() || fields[0] != dev) continue;
    for (size_t i = 1; i < fields.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(fields[i], '=');
      uint64_t v = 0;
      if (kv.second == "max" || !absl::SimpleAtoi(kv.second, &v)) v = 0;
      if (kv.first == keys.v2_read) rw.read = v;
      if (kv.first == keys.v2_write) rw.write = v;
    }
  }
  return rw;
}

// One device's value from a v1 throttle file ("8:0 1048576" per line).
uint64_t ParseThrottleFile(const std::string& text, const v1::DeviceId& device) {
  const std::string dev = Dev(device);
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    uint64_t v = 0;
    if (fields.size() == 2 && fields[0] == dev && absl::SimpleAtoi(fields[1], &v)) return v;
  }
  return 0;
}

// /dev/<name> of a device number, from /sys/dev/block/M:m/uevent.
absl::StatusOr<std::string> DevicePath(const std::string& sys_dev_block,
                                       const v1::DeviceId& device) {
  const std::string path = absl::StrCat(sys_dev_block, "/", Dev(device), "/uevent");
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "DEVNAME=")) return absl::StrCat("/dev/", line.substr(8));
  }
  return absl::NotFoundError(absl::StrCat("no block device ", Dev(device), " (", path, ")"));
}

// The throttle for `value` (rounded, at least 1), never above one that was
// there before fairwatch (`original` > 0).
uint64_t ThrottleFor(double value, uint64_t original) {
  auto v = static_cast<uint64_t>(std::max(1.0, std::round(value)));
  return original > 0 ? std::min(v, original) : v;
}

v1::Lever LeverOf(const v1::AppliedLimit& l) {
  return l.lever() == v1::LEVER_UNSPECIFIED ? v1::LEVER_CAP : l.lever();
}

// The weight knobs' floor and a plain task's weight: cpu.shares 2 and 1024
// (v1, libvirt), cpu.weight 1 and 100 (v2).
struct WeightScale {
  uint64_t min;
  uint64_t plain;
};
WeightScale ScaleOf(v1::AppliedLimit::Knob knob) {
  return knob == v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT ? WeightScale{1, 100}
                                                           : WeightScale{2, 1024};
}

// `fraction` of the weight that was there, at least the knob's floor.
uint64_t WeightFor(double fraction, uint64_t original, WeightScale scale) {
  const double w = std::round(static_cast<double>(original) * std::min(1.0, fraction));
  return std::max<uint64_t>(scale.min, static_cast<uint64_t>(std::max(0.0, w)));
}

VmDiskUnit UnitOf(v1::Resource resource) {
  return resource == v1::RESOURCE_DISK_IOPS ? VmDiskUnit::kIops : VmDiskUnit::kBytes;
}

// QEMU throttles of a domain's guest disks: "vda=<total>,<read>,<write> vdb=...".
using GuestThrottles = std::vector<std::pair<std::string, VmDiskThrottle>>;

std::string FormatGuestThrottles(const GuestThrottles& disks) {
  std::vector<std::string> parts;
  for (const auto& [target, t] : disks) {
    parts.push_back(absl::StrCat(target, "=", t.total, ",", t.read, ",", t.write));
  }
  return absl::StrJoin(parts, " ");
}

absl::StatusOr<GuestThrottles> ParseGuestThrottles(const std::string& raw) {
  GuestThrottles out;
  for (absl::string_view part : absl::StrSplit(raw, ' ', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, '=');
    std::vector<absl::string_view> v = absl::StrSplit(kv.second, ',');
    VmDiskThrottle t;
    if (kv.first.empty() || v.size() != 3 || !absl::SimpleAtoi(v[0], &t.total) ||
        !absl::SimpleAtoi(v[1], &t.read) || !absl::SimpleAtoi(v[2], &t.write)) {
      return absl::InvalidArgumentError(
          absl::StrCat("a saved guest disk throttle reads '", raw, "'"));
    }
    out.emplace_back(std::string(kv.first), t);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError("a saved guest disk throttle names no disk");
  }
  return out;
}

// One guest disk's throttle for `value`, never looser than `original`: a total
// below it, or, where the domain had a per-direction plan (QEMU takes no total
// beside one), each direction at most `value`.
VmDiskThrottle GuestThrottleFor(double value, const VmDiskThrottle& original) {
  if (original.total == 0 && (original.read > 0 || original.write > 0)) {
    return {0, ThrottleFor(value, original.read), ThrottleFor(value, original.write)};
  }
  return {ThrottleFor(value, original.total), 0, 0};
}

// What a guest disk's throttle allows in all, 0 if unlimited.
uint64_t GuestThrottleValue(const VmDiskThrottle& t) {
  if (t.total > 0) return t.total;
  if (t.read > 0 && t.write > 0) return std::max(t.read, t.write);
  return 0;
}

}  // namespace

std::string ProtectionReason(const std::string& raw_path, const std::vector<std::string>& extra,
                             const std::string& raw_own) {
  const std::string path = Trimmed(raw_path);
  if (path.empty()) return "the root cgroup is the whole machine";
  for (const char* base : {"system.slice", "user.slice", "init.scope"}) {
    if (IsAtOrBelow(path, base)) return absl::StrCat("it is in ", base, ", the host's own");
  }
  for (const std::string& raw : extra) {
    const std::string base = Trimmed(raw);
    if (!base.empty() && IsAtOrBelow(path, base)) {
      return absl::StrCat("it is in ", base, ", protected by the agent's config");
    }
  }
  const std::string own = Trimmed(raw_own);
  if (!own.empty() && IsAtOrBelow(own, path)) {
    return "it holds the fairwatch agent itself";
  }
  return "";
}

std::map<std::string, std::string> ParseProcCgroup(const std::string& text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    const std::string path = Trimmed(std::string(fields[2]));
    if (fields[0] == "0" && fields[1].empty()) {
      out["unified"] = path;
      continue;
    }
    for (absl::string_view controller : absl::StrSplit(fields[1], ',', absl::SkipEmpty())) {
      out[std::string(absl::StripPrefix(controller, "name="))] = path;
    }
  }
  return out;
}

Enforcer::Enforcer(EnforcerOptions options)
    : options_(std::move(options)),
      journal_path_(absl::StrCat(options_.state_dir, "/", kJournalFile)) {}

absl::StatusOr<std::unique_ptr<Enforcer>> Enforcer::Create(EnforcerOptions options) {
  if (options.own_cgroups.empty()) {
    std::ifstream in("/proc/self/cgroup");
    std::stringstream text;
    text << in.rdbuf();
    options.own_cgroups = ParseProcCgroup(text.str());
  }
  if (options.state_dir.empty() || options.state_dir.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("state_dir '", options.state_dir, "' must be an absolute path"));
  }
  RETURN_IF_ERROR(MakeDirs(options.state_dir));
  std::unique_ptr<Enforcer> enforcer(new Enforcer(std::move(options)));
  RETURN_IF_ERROR(enforcer->LoadJournal());
  return enforcer;
}

std::string Enforcer::Prefix(const std::string& tenant_id, v1::Resource resource) {
  return absl::StrCat(tenant_id, "\x1f", static_cast<int>(resource), "\x1f");
}

std::string Enforcer::Key(const v1::AppliedLimit& l) {
  return absl::StrCat(Prefix(l.tenant_id(), l.resource()), static_cast<int>(LeverOf(l)), "\x1f",
                      l.device().major(), ":", l.device().minor(), "/", l.interface());
}

absl::Status Enforcer::LoadJournal() {
  struct stat st {};
  if (stat(journal_path_.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(absl::StrCat("the limit journal ", journal_path_));
  }
  std::ifstream in(journal_path_, std::ios::binary);
  if (!in) return ErrnoStatus(absl::StrCat("opening the limit journal ", journal_path_));
  std::stringstream bytes;
  bytes << in.rdbuf();
  v1::LimitJournal journal;
  const bool parsed = journal.ParseFromString(bytes.str());
  // Of another boot: the limits it records went with that kernel. Known by
  // its boot id; a journal that does not parse (written without fsync, a
  // power cut may tear it) by its age.
  const std::string boot_id = BootId();
  const int64_t boot = BootTimeUnix();
  if ((parsed && !journal.boot_id().empty() && !boot_id.empty() && journal.boot_id() != boot_id) ||
      ((!parsed || journal.boot_id().empty()) && boot > 0 && st.st_mtim.tv_sec < boot)) {
    FW_LOG(Info, "limit journal ", journal_path_,
           " is from an earlier boot; its limits went with that boot: ignored");
    return absl::OkStatus();
  }
  if (!parsed) {
    return absl::DataLossError(absl::StrCat(
        "the limit journal ", journal_path_,
        " does not parse; limits it recorded may still be in force. Check the tenants' cgroups, "
        "then move the file away to start afresh"));
  }
  if (journal.version() > kJournalVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("the limit journal ", journal_path_, " is version ", journal.version(),
                     ", newer than this agent understands (", kJournalVersion, ")"));
  }
  absl::MutexLock lock(&mu_);
  for (v1::AppliedLimit& l : *journal.mutable_limits()) {
    const std::string key = Key(l);
    unchecked_[key] = true;
    limits_[key] = std::move(l);
  }
  if (!limits_.empty()) {
    FW_LOG(Info, "limit journal ", journal_path_, ": ", limits_.size(),
           " limit(s) from an earlier run; reapplied while leased, reverted once expired");
  }
  return absl::OkStatus();
}

absl::Status Enforcer::SaveJournal() {
  v1::LimitJournal journal;
  journal.set_version(kJournalVersion);
  journal.set_boot_id(BootId());
  for (const auto& [key, l] : limits_) *journal.add_limits() = l;
  const std::string bytes = journal.SerializeAsString();
  const std::string tmp = absl::StrCat(journal_path_, ".tmp");
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(absl::StrCat("writing ", tmp));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status status = ErrnoStatus(absl::StrCat("writing ", tmp));
      close(fd);
      return status;
    }
    done += static_cast<size_t>(n);
  }
  // No fsync: the journal must outlive the agent, not the kernel. The limits
  // it records die with the boot, and a journal from an earlier boot is
  // ignored (LoadJournal). An fsync here queued behind the very tenant being
  // limited for flooding the disk: ~1 s before the limit (docs/enforcement.md).
  close(fd);
  if (rename(tmp.c_str(), journal_path_.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("renaming ", tmp));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CgroupRef> Enforcer::CgroupOf(const v1::Tenant& tenant,
                                                 const std::string& hierarchy) const {
  const v1::CgroupRef* ref = nullptr;
  for (const v1::CgroupRef& c : tenant.cgroups()) {
    if (c.hierarchy() == hierarchy) ref = &c;
  }
  if (ref == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("tenant ", tenant.id(), " has no cgroup in the '", hierarchy, "' hierarchy"));
  }
  auto own = options_.own_cgroups.find(hierarchy);
  const std::string reason = ProtectionReason(ref->path(), options_.protected_cgroups,
                                              own == options_.own_cgroups.end() ? "" : own->second);
  if (!reason.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat("refused: cgroup '", ref->path(), "' is protected (", reason, ")"));
  }
  return *ref;
}

absl::StatusOr<std::vector<v1::AppliedLimit>> Enforcer::Targets(const v1::Tenant& tenant,
                                                                const v1::Limit& limit) const {
  const v1::Resource resource = limit.resource();
  const bool vm = tenant.source() == v1::TENANT_SOURCE_LIBVIRT;
  const bool net = resource == v1::RESOURCE_NET_RX || resource == v1::RESOURCE_NET_TX;
  if (vm && !net && options_.vm == nullptr) {
    return absl::FailedPreconditionError("libvirt VM tenants cannot be limited: no libvirt link");
  }
  v1::AppliedLimit base;
  base.set_tenant_id(tenant.id());
  base.set_resource(resource);
  base.set_lever(limit.lever() == v1::LEVER_WEIGHT ? v1::LEVER_WEIGHT : v1::LEVER_CAP);
  if (limit.lever() == v1::LEVER_WEIGHT) {
    if (resource != v1::RESOURCE_CPU) {
      return absl::UnimplementedError(
          absl::StrCat("the weight lever is for CPU only, not ", v1::Resource_Name(resource)));
    }
    if (vm) {
      base.set_knob(v1::AppliedLimit::KNOB_LIBVIRT_CPU_SHARES);
      base.set_domain_uuid(tenant.id());
      return std::vector<v1::AppliedLimit>{base};
    }
    ASSIGN_OR_RETURN(v1::CgroupRef ref, CgroupOf(tenant, options_.cpu_hierarchy));
    base.set_hierarchy(ref.hierarchy());
    base.set_cgroup_path(ref.path());
    base.set_knob(options_.cpu_hierarchy == "unified" ? v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT
                                                      : v1::AppliedLimit::KNOB_CGROUP1_CPU_SHARES);
    return std::vector<v1::AppliedLimit>{base};
  }
  if (resource == v1::RESOURCE_CPU) {
    if (vm) {
      base.set_knob(v1::AppliedLimit::KNOB_LIBVIRT_GLOBAL_QUOTA);
      base.set_domain_uuid(tenant.id());
      return std::vector<v1::AppliedLimit>{base};
    }
    ASSIGN_OR_RETURN(v1::CgroupRef ref, CgroupOf(tenant, options_.cpu_hierarchy));
    base.set_hierarchy(ref.hierarchy());
    base.set_cgroup_path(ref.path());
    base.set_knob(options_.cpu_hierarchy == "unified" ? v1::AppliedLimit::KNOB_CGROUP2_CPU_MAX
                                                      : v1::AppliedLimit::KNOB_CGROUP1_CFS_QUOTA);
    return std::vector<v1::AppliedLimit>{base};
  }
  if (resource == v1::RESOURCE_NET_RX || resource == v1::RESOURCE_NET_TX) {
    if (options_.shaper == nullptr) {
      return absl::UnimplementedError("network limits are off in this agent (no shaper)");
    }
    // The interface named, if it is the tenant's, else each of its interfaces.
    std::vector<std::string> interfaces(tenant.interfaces().begin(), tenant.interfaces().end());
    if (!limit.interface().empty()) {
      if (std::find(interfaces.begin(), interfaces.end(), limit.interface()) == interfaces.end()) {
        return absl::PermissionDeniedError(absl::StrCat("refused: interface '", limit.interface(),
                                                        "' is not one of tenant ", tenant.id(),
                                                        "'s"));
      }
      interfaces = {limit.interface()};
    }
    if (interfaces.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no host-side interface is known for tenant ", tenant.id()));
    }
    std::vector<v1::AppliedLimit> targets;
    for (const std::string& name : interfaces) {
      RETURN_IF_ERROR(ValidInterfaceName(name));
      v1::AppliedLimit t = base;
      t.set_interface(name);
      // To the tenant is the host side's egress; from the tenant its ingress.
      if (resource == v1::RESOURCE_NET_RX) {
        t.set_knob(v1::AppliedLimit::KNOB_TC_EGRESS_TBF);
      } else {
        t.set_knob(v1::AppliedLimit::KNOB_TC_INGRESS_IFB);
        ASSIGN_OR_RETURN(std::string ifb, options_.shaper->IfbName(name));
        t.set_ifb(ifb);
      }
      targets.push_back(std::move(t));
    }
    return targets;
  }
  if (resource != v1::RESOURCE_DISK_BANDWIDTH && resource != v1::RESOURCE_DISK_IOPS) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit on an unknown resource (", static_cast<int>(resource), ")"));
  }
  // The devices: the one named, else the tenant's own disks, else every disk of the host.
  std::vector<v1::DeviceId> devices;
  if (limit.has_device() && (limit.device().major() != 0 || limit.device().minor() != 0)) {
    devices.push_back(limit.device());
  } else if (tenant.disks_size() > 0) {
    devices.assign(tenant.disks().begin(), tenant.disks().end());
  } else {
    devices = options_.host_disks;
  }
  if (devices.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no block device is known for tenant ", tenant.id()));
  }
  std::vector<v1::AppliedLimit> targets;
  for (const v1::DeviceId& d : devices) {
    v1::AppliedLimit t = base;
    *t.mutable_device() = d;
    // A VM's disks through QEMU's own throttle, whatever the host's I/O
    // scheduler; its cgroup only where libvirt has no guest disk to throttle
    // there (another driver, a device it does not name).
    if (vm) {
      absl::StatusOr<std::vector<std::string>> guest = options_.vm->GuestDisksOn(tenant.id(), d);
      if (!guest.ok() && !absl::IsUnimplemented(guest.status())) return guest.status();
      if (guest.ok() && !guest->empty()) {
        t.set_knob(v1::AppliedLimit::KNOB_LIBVIRT_DISK_IOTUNE);
        t.set_domain_uuid(tenant.id());
        for (std::string& target : *guest) t.add_guest_disks(std::move(target));
        targets.push_back(std::move(t));
        continue;
      }
    }
    ASSIGN_OR_RETURN(v1::CgroupRef ref, CgroupOf(tenant, options_.disk_hierarchy));
    t.set_hierarchy(ref.hierarchy());
    t.set_cgroup_path(ref.path());
    t.set_knob(options_.disk_hierarchy == "unified"
                   ? v1::AppliedLimit::KNOB_CGROUP2_IO_MAX
                   : v1::AppliedLimit::KNOB_CGROUP1_BLKIO_THROTTLE);
    targets.push_back(std::move(t));
  }
  return targets;
}

namespace {

absl::StatusOr<CgroupDir> OpenTarget(const CgroupMounts& mounts, const v1::AppliedLimit& t) {
  ASSIGN_OR_RETURN(std::string mount, mounts.MountOf(t.hierarchy()));
  return CgroupDir::Open(mount, t.cgroup_path());
}

}  // namespace

absl::StatusOr<std::string> Enforcer::ReadRaw(const v1::AppliedLimit& t) const {
  switch (t.knob()) {
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_MAX: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      absl::StatusOr<std::string> raw = dir.Read("cpu.max");
      if (absl::IsNotFound(raw.status())) {
        return absl::FailedPreconditionError(
            absl::StrCat(dir.path(), " has no cpu.max: the cpu controller is not enabled for it"));
      }
      return raw;
    }
    case v1::AppliedLimit::KNOB_CGROUP1_CFS_QUOTA: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      return dir.Read("cpu.cfs_quota_us");
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_GLOBAL_QUOTA: {
      ASSIGN_OR_RETURN(VmCpuQuota q, options_.vm->GetCpuQuota(t.domain_uuid()));
      return absl::StrCat(q.quota_us);
    }
    case v1::AppliedLimit::KNOB_TC_EGRESS_TBF:
      // Only the kernel's default qdisc (or ours) is replaced: what comes back is the default.
      RETURN_IF_ERROR(options_.shaper->CheckEgressFree(t.interface()));
      return std::string("default");
    case v1::AppliedLimit::KNOB_TC_INGRESS_IFB: {
      ASSIGN_OR_RETURN(bool clsact, options_.shaper->HasClsact(t.interface()));
      return std::string(clsact ? "clsact" : "no-clsact");
    }
    case v1::AppliedLimit::KNOB_CGROUP2_IO_MAX: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      absl::StatusOr<std::string> text = dir.Read("io.max");
      if (absl::IsNotFound(text.status())) {
        return absl::FailedPreconditionError(
            absl::StrCat(dir.path(), " has no io.max: the io controller is not enabled for it"));
      }
      if (!text.ok()) return text.status();
      return FormatPair(ParseIoMax(*text, t.device(), KeysFor(t.resource())));
    }
    case v1::AppliedLimit::KNOB_CGROUP1_BLKIO_THROTTLE: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      const DiskKeys keys = KeysFor(t.resource());
      ASSIGN_OR_RETURN(std::string read, dir.Read(keys.v1_read_file));
      ASSIGN_OR_RETURN(std::string write, dir.Read(keys.v1_write_file));
      return FormatPair(
          {ParseThrottleFile(read, t.device()), ParseThrottleFile(write, t.device())});
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_BLKIO: {
      ASSIGN_OR_RETURN(std::string path, DevicePath(options_.sys_dev_block, t.device()));
      const DiskKeys keys = KeysFor(t.resource());
      ASSIGN_OR_RETURN(uint64_t read,
                       options_.vm->GetBlkioThrottle(t.domain_uuid(), keys.libvirt_read, path));
      ASSIGN_OR_RETURN(uint64_t write,
                       options_.vm->GetBlkioThrottle(t.domain_uuid(), keys.libvirt_write, path));
      return FormatPair({read, write});
    }
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT:
    case v1::AppliedLimit::KNOB_CGROUP1_CPU_SHARES: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      const char* file =
          t.knob() == v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT ? "cpu.weight" : "cpu.shares";
      absl::StatusOr<std::string> raw = dir.Read(file);
      if (absl::IsNotFound(raw.status())) {
        return absl::FailedPreconditionError(absl::StrCat(
            dir.path(), " has no ", file, ": the cpu controller is not enabled for it"));
      }
      return raw;
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_CPU_SHARES: {
      ASSIGN_OR_RETURN(uint64_t shares, options_.vm->GetCpuShares(t.domain_uuid()));
      return absl::StrCat(shares);
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_DISK_IOTUNE: {
      GuestThrottles disks;
      for (const std::string& target : t.guest_disks()) {
        ASSIGN_OR_RETURN(VmDiskThrottle now, options_.vm->GetDiskThrottle(t.domain_uuid(), target,
                                                                          UnitOf(t.resource())));
        disks.emplace_back(target, now);
      }
      return FormatGuestThrottles(disks);
    }
    default:
      return absl::InvalidArgumentError("unknown knob in the limit journal");
  }
}

absl::Status Enforcer::WriteRaw(const v1::AppliedLimit& t, const std::string& raw) const {
  switch (t.knob()) {
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_MAX: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      return dir.Write("cpu.max", raw);
    }
    case v1::AppliedLimit::KNOB_CGROUP1_CFS_QUOTA: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      return dir.Write("cpu.cfs_quota_us", raw);
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_GLOBAL_QUOTA: {
      ASSIGN_OR_RETURN(int64_t quota, ParseInt(raw, "the saved global_quota"));
      return options_.vm->SetCpuQuota(t.domain_uuid(), quota);
    }
    case v1::AppliedLimit::KNOB_TC_EGRESS_TBF:
      return options_.shaper->ClearEgress(t.interface());
    case v1::AppliedLimit::KNOB_TC_INGRESS_IFB: {
      absl::Status cleared = options_.shaper->ClearIngress(t.interface(), raw == "no-clsact");
      // The interface went first (a VM or container torn down): the IFB
      // outlives it unless removed here.
      if (absl::IsNotFound(cleared) && !t.ifb().empty() && if_nametoindex(t.ifb().c_str()) != 0) {
        RETURN_IF_ERROR(options_.shaper->DeleteLink(t.ifb()));
      }
      return cleared;
    }
    case v1::AppliedLimit::KNOB_CGROUP2_IO_MAX: {
      ASSIGN_OR_RETURN(ReadWrite rw, ParsePair(raw));
      const DiskKeys keys = KeysFor(t.resource());
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      return dir.Write("io.max",
                       absl::StrCat(Dev(t.device()), " ", keys.v2_read, "=", Side(rw.read), " ",
                                    keys.v2_write, "=", Side(rw.write)));
    }
    case v1::AppliedLimit::KNOB_CGROUP1_BLKIO_THROTTLE: {
      ASSIGN_OR_RETURN(ReadWrite rw, ParsePair(raw));
      const DiskKeys keys = KeysFor(t.resource());
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      // 0 removes the device's rule.
      RETURN_IF_ERROR(dir.Write(keys.v1_read_file, absl::StrCat(Dev(t.device()), " ", rw.read)));
      return dir.Write(keys.v1_write_file, absl::StrCat(Dev(t.device()), " ", rw.write));
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_BLKIO: {
      ASSIGN_OR_RETURN(ReadWrite rw, ParsePair(raw));
      const DiskKeys keys = KeysFor(t.resource());
      ASSIGN_OR_RETURN(std::string path, DevicePath(options_.sys_dev_block, t.device()));
      RETURN_IF_ERROR(
          options_.vm->SetBlkioThrottle(t.domain_uuid(), keys.libvirt_read, path, rw.read));
      return options_.vm->SetBlkioThrottle(t.domain_uuid(), keys.libvirt_write, path, rw.write);
    }
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT:
    case v1::AppliedLimit::KNOB_CGROUP1_CPU_SHARES: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      return dir.Write(
          t.knob() == v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT ? "cpu.weight" : "cpu.shares", raw);
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_CPU_SHARES: {
      ASSIGN_OR_RETURN(int64_t shares, ParseInt(raw, "the saved cpu_shares"));
      return options_.vm->SetCpuShares(t.domain_uuid(), static_cast<uint64_t>(shares));
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_DISK_IOTUNE: {
      ASSIGN_OR_RETURN(GuestThrottles disks, ParseGuestThrottles(raw));
      for (const auto& [target, throttle] : disks) {
        RETURN_IF_ERROR(
            options_.vm->SetDiskThrottle(t.domain_uuid(), target, UnitOf(t.resource()), throttle));
      }
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError("unknown knob in the limit journal");
  }
}

absl::Status Enforcer::WriteValue(const v1::AppliedLimit& r) const {
  switch (r.knob()) {
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_MAX: {
      int64_t original = -1;
      uint64_t period = 0;
      RETURN_IF_ERROR(ParseCpuMax(r.original(), &original, &period));
      return WriteRaw(r, absl::StrCat(QuotaFor(r.value(), period, original), " ", period));
    }
    case v1::AppliedLimit::KNOB_CGROUP1_CFS_QUOTA: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, r));
      ASSIGN_OR_RETURN(std::string period_text, dir.Read("cpu.cfs_period_us"));
      ASSIGN_OR_RETURN(int64_t period, ParseInt(period_text, "cpu.cfs_period_us"));
      ASSIGN_OR_RETURN(int64_t original, ParseInt(r.original(), "the saved cpu.cfs_quota_us"));
      return dir.Write("cpu.cfs_quota_us",
                       absl::StrCat(QuotaFor(r.value(), static_cast<uint64_t>(period), original)));
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_GLOBAL_QUOTA: {
      ASSIGN_OR_RETURN(VmCpuQuota now, options_.vm->GetCpuQuota(r.domain_uuid()));
      ASSIGN_OR_RETURN(int64_t original, ParseInt(r.original(), "the saved global_quota"));
      return options_.vm->SetCpuQuota(r.domain_uuid(),
                                      QuotaFor(r.value(), now.period_us, original));
    }
    case v1::AppliedLimit::KNOB_TC_EGRESS_TBF:
      return options_.shaper->SetEgress(r.interface(), r.value());
    case v1::AppliedLimit::KNOB_TC_INGRESS_IFB: {
      bool created = false;
      return options_.shaper->SetIngress(r.interface(), r.value(), &created);
    }
    case v1::AppliedLimit::KNOB_CGROUP2_IO_MAX:
    case v1::AppliedLimit::KNOB_CGROUP1_BLKIO_THROTTLE:
    case v1::AppliedLimit::KNOB_LIBVIRT_BLKIO: {
      // Reads and writes each get the whole value: what a tenant's disk use is
      // measured as does not tell them apart (docs/enforcement.md).
      ASSIGN_OR_RETURN(ReadWrite original, ParsePair(r.original()));
      return WriteRaw(r, FormatPair({ThrottleFor(r.value(), original.read),
                                     ThrottleFor(r.value(), original.write)}));
    }
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT:
    case v1::AppliedLimit::KNOB_CGROUP1_CPU_SHARES:
    case v1::AppliedLimit::KNOB_LIBVIRT_CPU_SHARES: {
      ASSIGN_OR_RETURN(int64_t original, ParseInt(r.original(), "the saved weight"));
      return WriteRaw(r, absl::StrCat(WeightFor(
                             r.value(), static_cast<uint64_t>(std::max<int64_t>(original, 0)),
                             ScaleOf(r.knob()))));
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_DISK_IOTUNE: {
      // The guest disks on one host device share the value: together they
      // never take more than it.
      ASSIGN_OR_RETURN(GuestThrottles disks, ParseGuestThrottles(r.original()));
      const double each = r.value() / static_cast<double>(disks.size());
      for (auto& [target, throttle] : disks) throttle = GuestThrottleFor(each, throttle);
      return WriteRaw(r, FormatGuestThrottles(disks));
    }
    default:
      return absl::InvalidArgumentError("unknown knob in the limit journal");
  }
}

absl::StatusOr<double> Enforcer::ReadValue(const v1::AppliedLimit& t) const {
  switch (t.knob()) {
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_MAX: {
      ASSIGN_OR_RETURN(std::string raw, ReadRaw(t));
      int64_t quota = -1;
      uint64_t period = 0;
      RETURN_IF_ERROR(ParseCpuMax(raw, &quota, &period));
      return Cores(quota, period);
    }
    case v1::AppliedLimit::KNOB_CGROUP1_CFS_QUOTA: {
      ASSIGN_OR_RETURN(CgroupDir dir, OpenTarget(options_.mounts, t));
      ASSIGN_OR_RETURN(std::string quota_text, dir.Read("cpu.cfs_quota_us"));
      ASSIGN_OR_RETURN(std::string period_text, dir.Read("cpu.cfs_period_us"));
      ASSIGN_OR_RETURN(int64_t quota, ParseInt(quota_text, "cpu.cfs_quota_us"));
      ASSIGN_OR_RETURN(int64_t period, ParseInt(period_text, "cpu.cfs_period_us"));
      return Cores(quota, static_cast<uint64_t>(period));
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_GLOBAL_QUOTA: {
      ASSIGN_OR_RETURN(VmCpuQuota q, options_.vm->GetCpuQuota(t.domain_uuid()));
      return Cores(q.quota_us, q.period_us);
    }
    case v1::AppliedLimit::KNOB_TC_EGRESS_TBF:
      return options_.shaper->EgressRate(t.interface());
    case v1::AppliedLimit::KNOB_TC_INGRESS_IFB:
      return options_.shaper->IngressRate(t.interface());
    case v1::AppliedLimit::KNOB_CGROUP2_IO_MAX:
    case v1::AppliedLimit::KNOB_CGROUP1_BLKIO_THROTTLE:
    case v1::AppliedLimit::KNOB_LIBVIRT_BLKIO: {
      ASSIGN_OR_RETURN(std::string raw, ReadRaw(t));
      ASSIGN_OR_RETURN(ReadWrite rw, ParsePair(raw));
      // Unlimited on either side is unlimited.
      return rw.read == 0 || rw.write == 0 ? 0.0 : static_cast<double>(std::max(rw.read, rw.write));
    }
    case v1::AppliedLimit::KNOB_CGROUP2_CPU_WEIGHT:
    case v1::AppliedLimit::KNOB_CGROUP1_CPU_SHARES:
    case v1::AppliedLimit::KNOB_LIBVIRT_CPU_SHARES: {
      // The fraction of the weight that was there (a plain task's if unknown).
      ASSIGN_OR_RETURN(std::string raw, ReadRaw(t));
      ASSIGN_OR_RETURN(int64_t now,
                       ParseInt(std::string(absl::StripAsciiWhitespace(raw)), "the weight"));
      int64_t original = static_cast<int64_t>(ScaleOf(t.knob()).plain);
      if (!t.original().empty()) {
        ASSIGN_OR_RETURN(original, ParseInt(t.original(), "the saved weight"));
      }
      return original > 0 ? static_cast<double>(now) / static_cast<double>(original) : 0.0;
    }
    case v1::AppliedLimit::KNOB_LIBVIRT_DISK_IOTUNE: {
      ASSIGN_OR_RETURN(std::string raw, ReadRaw(t));
      ASSIGN_OR_RETURN(GuestThrottles disks, ParseGuestThrottles(raw));
      double sum = 0;
      for (const auto& [target, throttle] : disks) {
        const uint64_t v = GuestThrottleValue(throttle);
        if (v == 0) return 0.0;  // one disk unlimited: so is the device
        sum += static_cast<double>(v);
      }
      return sum;
    }
    default:
      return absl::InvalidArgumentError("unknown knob in the limit journal");
  }
}

absl::Status Enforcer::Restore(const v1::AppliedLimit& r) const {
  return WriteRaw(r, r.original());
}

v1::LimitAck Enforcer::Handle(const v1::LimitCommand& command) {
  v1::LimitAck ack;
  ack.set_command_id(command.command_id());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<v1::Limit> result;
  switch (command.kind()) {
    case v1::LimitCommand::KIND_APPLY:
      result = Apply(command);
      break;
    case v1::LimitCommand::KIND_CLEAR:
      result = Clear(command);
      break;
    default:
      result = absl::InvalidArgumentError("limit command of unknown kind");
      ++stats_.refused;
  }
  if (result.ok()) {
    *ack.mutable_in_effect() = *result;
  } else {
    ack.set_status_code(static_cast<int>(result.status().code()));
    ack.set_status_message(std::string(result.status().message()));
    FW_LOG(Warning, "limit command ", command.command_id(), " for ", command.limit().tenant_id(),
           ": ", result.status().message());
  }
  return ack;
}

double Enforcer::InEffect(const std::vector<v1::AppliedLimit>& records) const {
  double loosest = 0;
  for (const v1::AppliedLimit& r : records) {
    absl::StatusOr<double> v = ReadValue(r);
    if (!v.ok()) continue;
    if (*v == 0) return 0;  // one device unlimited: so is the tenant there
    loosest = std::max(loosest, *v);
  }
  return loosest;
}

absl::StatusOr<v1::Limit> Enforcer::Apply(const v1::LimitCommand& command) {
  const v1::Limit& limit = command.limit();
  auto refuse = [&](absl::Status status) {
    ++stats_.refused;
    return status;
  };
  if (!std::isfinite(limit.value()) || limit.value() <= 0) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("limit value ", limit.value(), " is not a positive amount")));
  }
  if (limit.lever() == v1::LEVER_WEIGHT && limit.value() > 1) {
    return refuse(absl::InvalidArgumentError(absl::StrCat(
        "a weight is lowered to a fraction of the tenant's own, in (0, 1]; not ", limit.value())));
  }
  const absl::Duration lease = absl::Milliseconds(command.lease_ms());
  if (lease <= absl::ZeroDuration() || lease > options_.max_lease) {
    return refuse(absl::InvalidArgumentError(absl::StrCat(
        "lease of ", command.lease_ms(), " ms is refused: every limit needs a lease of at most ",
        absl::FormatDuration(options_.max_lease))));
  }
  auto tenant = tenants_.find(limit.tenant_id());
  if (tenant == tenants_.end()) {
    return refuse(absl::NotFoundError(absl::StrCat(
        "tenant '", limit.tenant_id(), "' is not one this agent discovered; nothing written")));
  }
  absl::StatusOr<std::vector<v1::AppliedLimit>> targets = Targets(tenant->second, limit);
  if (!targets.ok()) return refuse(targets.status());

  const absl::Time now = options_.now();
  const std::map<std::string, v1::AppliedLimit> before = limits_;
  std::vector<v1::AppliedLimit> records;
  std::vector<bool> first;
  for (v1::AppliedLimit& target : *targets) {
    const std::string key = Key(target);
    auto existing = limits_.find(key);
    v1::AppliedLimit record;
    if (existing == limits_.end()) {
      record = std::move(target);
      absl::StatusOr<std::string> original = ReadRaw(record);
      if (!original.ok()) return refuse(original.status());
      record.set_original(*original);
      record.set_applied_unix_ns(absl::ToUnixNanos(now));
    } else {
      record = existing->second;
    }
    first.push_back(existing == limits_.end());
    record.set_value(limit.value());
    record.set_command_id(command.command_id());
    record.set_lease_expires_unix_ns(absl::ToUnixNanos(now + lease));
    records.push_back(std::move(record));
  }
  // On record before the kernel sees it: a crash between the two leaves a
  // journal entry to revert, never a limit nobody knows about.
  for (const v1::AppliedLimit& r : records) {
    limits_[Key(r)] = r;
    unchecked_.erase(Key(r));
  }
  absl::Status saved = SaveJournal();
  if (!saved.ok()) {
    limits_ = before;
    ++stats_.failed;
    return Annotate(saved, "limit journal; nothing written");
  }
  for (size_t i = 0; i < records.size(); ++i) {
    absl::Status written = WriteValue(records[i]);
    if (written.ok()) continue;
    ++stats_.failed;
    // All or nothing for a new limit: the devices already done go back.
    for (size_t k = 0; k < i; ++k) {
      if (first[k]) (void)Restore(records[k]);
    }
    for (size_t k = 0; k < records.size(); ++k) {
      if (first[k]) limits_.erase(Key(records[k]));
    }
    (void)SaveJournal();
    return written;
  }
  const double in_effect = InEffect(records);
  ++stats_.applied;
  v1::Limit out = limit;
  out.set_value(in_effect);
  FW_LOG(Info, first[0] ? "limit applied: " : "limit renewed: ", limit.tenant_id(), " ",
         v1::Resource_Name(limit.resource()), " ", in_effect, " (asked ", limit.value(), ") on ",
         records.size(), records.size() == 1 ? " knob" : " devices", ", lease ",
         absl::FormatDuration(lease));
  return out;
}

absl::StatusOr<v1::Limit> Enforcer::Clear(const v1::LimitCommand& command) {
  const v1::Limit& limit = command.limit();
  const std::string prefix = Prefix(limit.tenant_id(), limit.resource());
  std::vector<v1::AppliedLimit> records;
  for (auto it = limits_.lower_bound(prefix);
       it != limits_.end() && absl::StartsWith(it->first, prefix); ++it) {
    // No lever named: every lever of the resource.
    if (limit.lever() != v1::LEVER_UNSPECIFIED && LeverOf(it->second) != limit.lever()) continue;
    records.push_back(it->second);
  }
  v1::Limit out;
  out.set_tenant_id(limit.tenant_id());
  out.set_resource(limit.resource());
  if (records.empty()) {
    // Nothing of ours: already cleared, expired, or never applied. Say what is there.
    auto tenant = tenants_.find(limit.tenant_id());
    if (tenant == tenants_.end()) return out;
    absl::StatusOr<std::vector<v1::AppliedLimit>> targets = Targets(tenant->second, limit);
    if (targets.ok()) out.set_value(InEffect(*targets));
    return out;
  }
  absl::Status failed;
  std::vector<v1::AppliedLimit> restored;
  for (const v1::AppliedLimit& r : records) {
    absl::Status status = Restore(r);
    if (!status.ok() && !absl::IsNotFound(status)) {
      failed.Update(status);  // kept: the lease end retries
      continue;
    }
    limits_.erase(Key(r));
    unchecked_.erase(Key(r));
    if (status.ok()) restored.push_back(r);
  }
  (void)SaveJournal();
  if (!failed.ok()) {
    ++stats_.failed;
    return failed;
  }
  ++stats_.cleared;
  out.set_value(InEffect(restored));
  FW_LOG(Info, "limit cleared: ", limit.tenant_id(), " ", v1::Resource_Name(limit.resource()),
         ", restored '", records[0].original(), "'",
         records.size() > 1 ? absl::StrCat(" and ", records.size() - 1, " more device(s)") : "");
  return out;
}

void Enforcer::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  const int64_t now = absl::ToUnixNanos(options_.now());
  bool changed = false;
  for (auto it = limits_.begin(); it != limits_.end();) {
    const v1::AppliedLimit& r = it->second;
    if (r.lease_expires_unix_ns() > now) {
      ++it;
      continue;
    }
    absl::Status restored = Restore(r);
    if (!restored.ok() && !absl::IsNotFound(restored)) {
      // Kept, and tried again at the next pass.
      ++stats_.failed;
      FW_LOG(Error, "lease of ", r.tenant_id(), " ", v1::Resource_Name(r.resource()),
             " ended but the original value could not be restored: ", restored.message());
      ++it;
      continue;
    }
    FW_LOG(Info, "lease ended: ", r.tenant_id(), " ", v1::Resource_Name(r.resource()),
           restored.ok() ? absl::StrCat(", restored '", r.original(), "'")
                         : ", tenant gone (nothing to restore)");
    ++stats_.expired;
    unchecked_.erase(it->first);
    it = limits_.erase(it);
    changed = true;
  }
  if (changed) {
    absl::Status saved = SaveJournal();
    if (!saved.ok()) FW_LOG(Error, "limit journal: ", saved.message());
  }
}

void Enforcer::SetTenants(const std::vector<TenantEntry>& tenants) {
  absl::MutexLock lock(&mu_);
  std::map<std::string, v1::Tenant> before = std::move(tenants_);
  tenants_.clear();
  for (const TenantEntry& t : tenants) tenants_[t.tenant.id()] = t.tenant;
  for (auto it = limits_.begin(); it != limits_.end();) {
    const v1::AppliedLimit& r = it->second;
    if (tenants_.contains(r.tenant_id()) && !before.contains(r.tenant_id())) {
      unchecked_[it->first] = true;
    }
    // A tenant that went takes its shaping with it at once: an IFB and a
    // redirect must not wait for the lease to end.
    const bool net = r.knob() == v1::AppliedLimit::KNOB_TC_EGRESS_TBF ||
                     r.knob() == v1::AppliedLimit::KNOB_TC_INGRESS_IFB;
    if (net && before.contains(r.tenant_id()) && !tenants_.contains(r.tenant_id())) {
      absl::Status restored = Restore(r);
      if (restored.ok() || absl::IsNotFound(restored)) {
        FW_LOG(Info, "tenant ", r.tenant_id(), " gone: its ", v1::Resource_Name(r.resource()),
               " shaping on ", r.interface(), " removed");
        unchecked_.erase(it->first);
        it = limits_.erase(it);
        (void)SaveJournal();
        continue;
      }
    }
    ++it;
  }
  // Journal entries from an earlier run, or of a tenant that came back (a VM
  // restarted by its owner gets libvirt's defaults): put the limit back while
  // it is leased. An expired one is left to ExpireLeases.
  const int64_t now = absl::ToUnixNanos(options_.now());
  for (auto it = unchecked_.begin(); it != unchecked_.end();) {
    auto record = limits_.find(it->first);
    if (record == limits_.end()) {
      it = unchecked_.erase(it);
      continue;
    }
    const v1::AppliedLimit& r = record->second;
    if (r.lease_expires_unix_ns() <= now || !tenants_.contains(r.tenant_id())) {
      ++it;
      continue;
    }
    absl::Status written = WriteValue(r);
    if (written.ok()) {
      ++stats_.reapplied;
      FW_LOG(Info, "limit from the journal in force again: ", r.tenant_id(), " ",
             v1::Resource_Name(r.resource()), " ", r.value());
    } else {
      ++stats_.failed;
      FW_LOG(Warning, "limit from the journal for ", r.tenant_id(), ": ", written.message());
    }
    it = unchecked_.erase(it);
  }
}

void Enforcer::RemoveOrphanIfbs() {
  if (options_.shaper == nullptr) return;
  absl::StatusOr<std::vector<std::string>> ifbs = options_.shaper->ListIfbs();
  if (!ifbs.ok()) {
    FW_LOG(Warning, "listing IFB devices: ", ifbs.status().message());
    return;
  }
  absl::MutexLock lock(&mu_);
  for (const std::string& ifb : *ifbs) {
    bool owned = false;
    for (const auto& [key, l] : limits_) owned = owned || l.ifb() == ifb;
    if (owned) continue;
    // "fwi<ifindex>": the redirect to it sits on that interface; it goes first,
    // so no packet is sent to a device that is gone.
    char name[IF_NAMESIZE] = {};
    uint32_t index = 0;
    if (absl::SimpleAtoi(ifb.substr(std::strlen(kIfbPrefix)), &index) &&
        if_indextoname(index, name) != nullptr) {
      options_.shaper->RemoveRedirect(name);
    }
    absl::Status removed = options_.shaper->DeleteLink(ifb);
    FW_LOG(Info, "IFB ", ifb,
           " owned by no limit: ", removed.ok() ? "removed" : std::string(removed.message()));
  }
}

std::vector<v1::AppliedLimit> Enforcer::InForce() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::AppliedLimit> out;
  for (const auto& [key, l] : limits_) out.push_back(l);
  return out;
}

EnforcerStats Enforcer::stats() const {
  absl::MutexLock lock(&mu_);
  EnforcerStats s = stats_;
  s.in_force = limits_.size();
  for (const auto& [key, l] : limits_) s.cpu_in_force += l.resource() == v1::RESOURCE_CPU;
  return s;
}

}  // namespace fairwatch::agent
