#include "agent/enforcer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/cgroup_dir.h"
#include "common/log.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

constexpr char kJournalFile[] = "limits.journal";
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

std::string Enforcer::Key(const std::string& tenant_id, v1::Resource resource) {
  return absl::StrCat(tenant_id, "\x1f", static_cast<int>(resource));
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
  if (!journal.ParseFromString(bytes.str())) {
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
    const std::string key = Key(l.tenant_id(), l.resource());
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
  if (fsync(fd) != 0) {
    absl::Status status = ErrnoStatus(absl::StrCat("fsync ", tmp));
    close(fd);
    return status;
  }
  close(fd);
  if (rename(tmp.c_str(), journal_path_.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("renaming ", tmp));
  }
  const int dir = open(options_.state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)fsync(dir);
    close(dir);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::AppliedLimit> Enforcer::Target(const v1::Tenant& tenant,
                                                  v1::Resource resource) const {
  if (resource != v1::RESOURCE_CPU) {
    return absl::UnimplementedError(absl::StrCat(
        "this agent version enforces CPU limits only, not ", v1::Resource_Name(resource)));
  }
  v1::AppliedLimit target;
  target.set_tenant_id(tenant.id());
  target.set_resource(resource);
  if (tenant.source() == v1::TENANT_SOURCE_LIBVIRT) {
    if (options_.vm == nullptr) {
      return absl::FailedPreconditionError("libvirt VM tenants cannot be limited: no libvirt link");
    }
    target.set_knob(v1::AppliedLimit::KNOB_LIBVIRT_GLOBAL_QUOTA);
    target.set_domain_uuid(tenant.id());
    return target;
  }
  const v1::CgroupRef* ref = nullptr;
  for (const v1::CgroupRef& c : tenant.cgroups()) {
    if (c.hierarchy() == options_.cpu_hierarchy) ref = &c;
  }
  if (ref == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tenant ", tenant.id(), " has no cgroup in the '", options_.cpu_hierarchy, "' hierarchy"));
  }
  auto own = options_.own_cgroups.find(options_.cpu_hierarchy);
  const std::string reason = ProtectionReason(ref->path(), options_.protected_cgroups,
                                              own == options_.own_cgroups.end() ? "" : own->second);
  if (!reason.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat("refused: cgroup '", ref->path(), "' is protected (", reason, ")"));
  }
  target.set_hierarchy(options_.cpu_hierarchy);
  target.set_cgroup_path(ref->path());
  target.set_knob(options_.cpu_hierarchy == "unified" ? v1::AppliedLimit::KNOB_CGROUP2_CPU_MAX
                                                      : v1::AppliedLimit::KNOB_CGROUP1_CFS_QUOTA);
  return target;
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
  absl::StatusOr<v1::AppliedLimit> target = Target(tenant->second, limit.resource());
  if (!target.ok()) return refuse(target.status());

  const absl::Time now = options_.now();
  const std::string key = Key(limit.tenant_id(), limit.resource());
  auto existing = limits_.find(key);
  const bool first = existing == limits_.end();
  v1::AppliedLimit record;
  if (first) {
    record = std::move(*target);
    absl::StatusOr<std::string> original = ReadRaw(record);
    if (!original.ok()) return refuse(original.status());
    record.set_original(*original);
    record.set_applied_unix_ns(absl::ToUnixNanos(now));
  } else {
    record = existing->second;
  }
  record.set_value(limit.value());
  record.set_command_id(command.command_id());
  record.set_lease_expires_unix_ns(absl::ToUnixNanos(now + lease));
  // On record before the kernel sees it: a crash between the two leaves a
  // journal entry to revert, never a limit nobody knows about.
  limits_[key] = record;
  unchecked_.erase(key);
  absl::Status saved = SaveJournal();
  if (!saved.ok()) {
    if (first) {
      limits_.erase(key);
    } else {
      limits_[key] = existing->second;
    }
    ++stats_.failed;
    return Annotate(saved, "limit journal; nothing written");
  }
  absl::Status written = WriteValue(record);
  if (!written.ok()) {
    ++stats_.failed;
    if (first) {
      limits_.erase(key);
      (void)SaveJournal();
    }
    return written;
  }
  ASSIGN_OR_RETURN(double in_effect, ReadValue(record));
  ++stats_.applied;
  v1::Limit out = limit;
  out.set_value(in_effect);
  FW_LOG(Info, first ? "limit applied: " : "limit renewed: ", limit.tenant_id(), " ",
         v1::Resource_Name(limit.resource()), " ", in_effect, " (asked ", limit.value(),
         "), lease ", absl::FormatDuration(lease));
  return out;
}

absl::StatusOr<v1::Limit> Enforcer::Clear(const v1::LimitCommand& command) {
  const v1::Limit& limit = command.limit();
  const std::string key = Key(limit.tenant_id(), limit.resource());
  auto it = limits_.find(key);
  v1::Limit out;
  out.set_tenant_id(limit.tenant_id());
  out.set_resource(limit.resource());
  if (it == limits_.end()) {
    // Nothing of ours: already cleared, expired, or never applied. Say what is there.
    auto tenant = tenants_.find(limit.tenant_id());
    if (tenant == tenants_.end()) return out;
    absl::StatusOr<v1::AppliedLimit> target = Target(tenant->second, limit.resource());
    if (!target.ok()) return out;
    absl::StatusOr<double> now_value = ReadValue(*target);
    if (now_value.ok()) out.set_value(*now_value);
    return out;
  }
  const v1::AppliedLimit record = it->second;
  absl::Status restored = Restore(record);
  if (!restored.ok() && !absl::IsNotFound(restored)) {
    ++stats_.failed;
    return restored;  // kept: the lease end retries
  }
  limits_.erase(it);
  unchecked_.erase(key);
  (void)SaveJournal();
  ++stats_.cleared;
  if (restored.ok()) {
    absl::StatusOr<double> now_value = ReadValue(record);
    if (now_value.ok()) out.set_value(*now_value);
  }
  FW_LOG(Info, "limit cleared: ", limit.tenant_id(), " ", v1::Resource_Name(limit.resource()),
         ", restored '", record.original(), "'");
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
  for (const auto& [key, r] : limits_) {
    if (tenants_.contains(r.tenant_id()) && !before.contains(r.tenant_id())) unchecked_[key] = true;
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
  return s;
}

}  // namespace fairwatch::agent
