#include "agent/cgroup_stats_collector.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

// Per-tenant cgroup files are a few hundred bytes; cpu.stat is the largest.
constexpr size_t kReadChunk = 4096;

}  // namespace

absl::StatusOr<PressureTotals> ParsePressure(absl::string_view text) {
  PressureTotals out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (fields.empty() || (fields[0] != "some" && fields[0] != "full")) continue;
    bool found = false;
    uint64_t total_us = 0;
    for (size_t i = 1; i < fields.size(); ++i) {
      absl::string_view value = fields[i];
      if (absl::ConsumePrefix(&value, "total=")) {
        if (!absl::SimpleAtoi(value, &total_us)) break;
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("pressure line without a valid total=: '", line, "'"));
    }
    if (fields[0] == "some") {
      out.has_some = true;
      out.some_total_us = total_us;
    } else {
      out.has_full = true;
      out.full_total_us = total_us;
    }
  }
  if (!out.has_some && !out.has_full) {
    return absl::InvalidArgumentError(
        absl::StrCat("no 'some' or 'full' line in pressure text '", text.substr(0, 80), "'"));
  }
  return out;
}

absl::StatusOr<CfsThrottling> ParseCpuStatThrottling(absl::string_view text) {
  CfsThrottling out;
  bool has_periods = false, has_throttled = false, has_time = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> kv = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (kv.size() != 2) continue;
    uint64_t value = 0;
    const bool known = kv[0] == "nr_periods" || kv[0] == "nr_throttled" ||
                       kv[0] == "throttled_time" || kv[0] == "throttled_usec";
    if (!known) continue;
    if (!absl::SimpleAtoi(kv[1], &value)) {
      return absl::InvalidArgumentError(absl::StrCat("cpu.stat line '", line, "': not a number"));
    }
    if (kv[0] == "nr_periods") {
      out.nr_periods = value;
      has_periods = true;
    } else if (kv[0] == "nr_throttled") {
      out.nr_throttled = value;
      has_throttled = true;
    } else if (kv[0] == "throttled_time") {  // v1: ns
      out.throttled_ns = value;
      has_time = true;
    } else {  // v2: us
      out.throttled_ns = value * 1000;
      has_time = true;
    }
  }
  out.present = has_periods && has_throttled && has_time;
  if (!out.present) out = CfsThrottling{};
  return out;
}

absl::StatusOr<uint64_t> ParseCpuTime(absl::string_view text, bool microseconds) {
  if (!microseconds) {
    uint64_t ns = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &ns)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cpuacct.usage: not a number: '", text.substr(0, 40), "'"));
    }
    return ns;
  }
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> kv = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (kv.size() != 2 || kv[0] != "usage_usec") continue;
    uint64_t us = 0;
    if (!absl::SimpleAtoi(kv[1], &us) || us > UINT64_MAX / 1000) {
      return absl::InvalidArgumentError(absl::StrCat("cpu.stat line '", line, "': not a number"));
    }
    return us * 1000;
  }
  return absl::InvalidArgumentError("cpu.stat without usage_usec");
}

CgroupStatsCollector::CgroupStatsCollector(CgroupStatsOptions options)
    : options_(std::move(options)) {}

CgroupStatsCollector::~CgroupStatsCollector() { CloseAll(); }

absl::Status CgroupStatsCollector::Init() {
  if (options_.cpu_hierarchy != "cpu" && options_.cpu_hierarchy != "unified") {
    state_ = CollectorState::kFailed;
    return absl::InvalidArgumentError(
        absl::StrCat("cgroup_stats: cpu hierarchy must be 'cpu' or 'unified'; got '",
                     options_.cpu_hierarchy, "'"));
  }
  absl::StatusOr<std::string> cpu_mount = options_.mounts.MountOf(options_.cpu_hierarchy);
  if (!cpu_mount.ok()) {
    state_ = CollectorState::kFailed;
    return Annotate(cpu_mount.status(), "cgroup_stats: finding the cpu hierarchy");
  }
  cpu_mount_ = *cpu_mount;
  absl::StatusOr<std::string> unified = options_.mounts.MountOf("unified");
  // Without a cgroup2 mount there is no PSI per cgroup: pressure stays absent.
  if (unified.ok()) unified_mount_ = *unified;
  buf_.resize(kReadChunk);
  state_ = CollectorState::kRunning;
  FW_LOG(Info, "cgroup_stats: pressure from ",
         unified_mount_.empty() ? "(no cgroup2 mount)" : unified_mount_, ", throttling from ",
         cpu_mount_, options_.read_cpu_time ? ", CPU time from the kernel's cgroup counters" : "");
  return absl::OkStatus();
}

void CgroupStatsCollector::Open(StatFile* file, std::string path) {
  Close(file);
  file->path = std::move(path);
  file->fd = open(file->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd < 0 && errno != ENOENT) {
    FW_LOG(Warning, "cgroup_stats: opening ", file->path, ": ", strerror(errno));
  }
}

void CgroupStatsCollector::Close(StatFile* file) {
  if (file->fd >= 0) close(file->fd);
  file->fd = -1;
}

void CgroupStatsCollector::CloseAll() {
  for (auto& [id, f] : files_) {
    Close(&f.cpu_pressure);
    Close(&f.io_pressure);
    Close(&f.cpu_stat);
    Close(&f.cpu_time);
  }
  files_.clear();
}

bool CgroupStatsCollector::Read(StatFile* file) {
  if (file->fd < 0) return false;
  size_t used = 0;
  while (true) {
    if (buf_.size() - used < kReadChunk / 2) buf_.resize(buf_.size() * 2);
    // cgroup files are seq_files: a read at offset 0 regenerates the text.
    ssize_t n = pread(file->fd, buf_.data() + used, buf_.size() - used, used);
    if (n < 0) {
      if (errno == EINTR) continue;
      // ENODEV: the cgroup was removed; discovery drops the tenant next scan.
      FW_LOG(Debug, "cgroup_stats: reading ", file->path, ": ", strerror(errno));
      Close(file);
      return false;
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  read_len_ = used;
  return true;
}

absl::Status CgroupStatsCollector::SyncTenants(absl::Span<const TenantEntry> tenants) {
  if (state_ != CollectorState::kRunning) {
    return absl::FailedPreconditionError("cgroup_stats collector is not running");
  }
  absl::flat_hash_map<std::string, TenantFiles> next;
  for (const auto& t : tenants) {
    const v1::CgroupRef* unified = nullptr;
    const v1::CgroupRef* cpu = nullptr;
    for (const auto& ref : t.tenant.cgroups()) {
      if (ref.hierarchy() == "unified") unified = &ref;
      if (ref.hierarchy() == options_.cpu_hierarchy) cpu = &ref;
    }
    TenantFiles files;
    auto old = files_.find(t.tenant.id());
    if (old != files_.end()) {
      files = std::move(old->second);
      files_.erase(old);
    }
    if (options_.read_pressure && unified && !unified_mount_.empty()) {
      // Reopen when the directory was recreated (new id) or a file was missing.
      if (files.unified_id != unified->id() || files.cpu_pressure.fd < 0 ||
          files.io_pressure.fd < 0) {
        const std::string dir = absl::StrCat(unified_mount_, "/", unified->path());
        Open(&files.cpu_pressure, dir + "/cpu.pressure");
        Open(&files.io_pressure, dir + "/io.pressure");
        files.unified_id = unified->id();
      }
    } else {
      Close(&files.cpu_pressure);
      Close(&files.io_pressure);
      files.unified_id = 0;
    }
    if (options_.read_throttling && cpu) {
      if (files.cpu_id != cpu->id() || files.cpu_stat.fd < 0) {
        Open(&files.cpu_stat, absl::StrCat(cpu_mount_, "/", cpu->path(), "/cpu.stat"));
        files.cpu_id = cpu->id();
      }
    } else {
      Close(&files.cpu_stat);
      files.cpu_id = 0;
    }
    std::optional<CpuTimeFile> cpu_time;
    if (options_.read_cpu_time) {
      cpu_time = KernelCpuTimeFile(t.tenant, options_.cpu_hierarchy, options_.mounts);
    }
    files.cpu_time_in_cpu_stat = cpu_time && files.cpu_stat.path == cpu_time->path;
    files.cpu_time_usec = cpu_time && cpu_time->microseconds;
    if (!cpu_time || files.cpu_time_in_cpu_stat) {
      Close(&files.cpu_time);
      files.cpu_time_id = 0;
    } else if (files.cpu_time.fd < 0 || files.cpu_time.path != cpu_time->path ||
               files.cpu_time_id != cpu_time->cgroup_id) {
      // A directory recreated at the same path comes with a new id, and the
      // old descriptor reads ENODEV.
      Open(&files.cpu_time, cpu_time->path);
      files.cpu_time_id = cpu_time->cgroup_id;
    }
    if (cpu_time && !files.cpu_time_in_cpu_stat && files.cpu_time.fd < 0) {
      FW_LOG(Warning, "cgroup_stats: tenant ", t.tenant.id(), ": no CPU time counter at ",
             cpu_time->path);
    }
    next.emplace(t.tenant.id(), std::move(files));
  }
  CloseAll();  // what is left belongs to removed tenants
  files_ = std::move(next);
  return absl::OkStatus();
}

absl::Status CgroupStatsCollector::Collect(absl::Span<const TenantEntry> tenants,
                                           v1::UsageReport* report) {
  for (size_t i = 0; i < tenants.size(); ++i) {
    auto it = files_.find(tenants[i].tenant.id());
    if (it == files_.end()) continue;
    TenantFiles& files = it->second;
    v1::TenantCounters* out = report->mutable_tenants(static_cast<int>(i));
    struct {
      StatFile* file;
      v1::PsiCounters* psi;
    } pressures[] = {{&files.cpu_pressure, out->mutable_cpu_pressure()},
                     {&files.io_pressure, out->mutable_io_pressure()}};
    for (auto& p : pressures) {
      p.psi->set_present(false);
      if (!Read(p.file)) continue;
      absl::StatusOr<PressureTotals> totals =
          ParsePressure(absl::string_view(buf_.data(), read_len_));
      if (!totals.ok()) {
        FW_LOG(Debug, "cgroup_stats: ", p.file->path, ": ", totals.status().message());
        continue;
      }
      p.psi->set_present(true);
      p.psi->set_some_total_us(totals->some_total_us);
      p.psi->set_full_total_us(totals->full_total_us);
    }
    if (Read(&files.cpu_stat)) {
      const absl::string_view text(buf_.data(), read_len_);
      absl::StatusOr<CfsThrottling> cfs = ParseCpuStatThrottling(text);
      if (cfs.ok() && cfs->present) {
        v1::CpuCounters* cpu = out->mutable_cpu();
        cpu->set_nr_periods(cfs->nr_periods);
        cpu->set_nr_throttled(cfs->nr_throttled);
        cpu->set_throttled_ns(cfs->throttled_ns);
      }
      if (files.cpu_time_in_cpu_stat) SetCpuTime(files.cpu_stat, text, true, out);
    }
    if (!files.cpu_time_in_cpu_stat && Read(&files.cpu_time)) {
      SetCpuTime(files.cpu_time, absl::string_view(buf_.data(), read_len_), files.cpu_time_usec,
                 out);
    }
  }
  return absl::OkStatus();
}

void CgroupStatsCollector::SetCpuTime(const StatFile& file, absl::string_view text,
                                      bool microseconds, v1::TenantCounters* out) {
  absl::StatusOr<uint64_t> ns = ParseCpuTime(text, microseconds);
  if (!ns.ok()) {
    FW_LOG(Debug, "cgroup_stats: ", file.path, ": ", ns.status().message());
    return;
  }
  out->mutable_cpu()->set_usage_ns(*ns);
}

size_t CgroupStatsCollector::open_files() const {
  size_t n = 0;
  for (const auto& [id, f] : files_) {
    n += (f.cpu_pressure.fd >= 0) + (f.io_pressure.fd >= 0) + (f.cpu_stat.fd >= 0) +
         (f.cpu_time.fd >= 0);
  }
  return n;
}

absl::Status CgroupStatsCollector::Stop() {
  CloseAll();
  if (state_ == CollectorState::kRunning) state_ = CollectorState::kStopped;
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
