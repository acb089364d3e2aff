// Per-tenant figures the kernel already keeps in cgroup files, read every
// interval: CPU time (cpuacct.usage or the unified cpu.stat: KernelCpuTimeFile),
// pressure stall totals (cpu.pressure, io.pressure in the tenant's unified
// directory) and CFS bandwidth throttling (cpu.stat in the directory of the
// hierarchy CPU is attributed in). File descriptors stay open across
// intervals; each read is one pread.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/cgroup_layout.h"
#include "agent/collector.h"

namespace fairwatch::agent {

// "some avg10=.. avg60=.. avg300=.. total=<us>" and the same for "full".
struct PressureTotals {
  bool has_some = false;
  uint64_t some_total_us = 0;
  bool has_full = false;  // cpu "full" exists for cgroups since 5.13
  uint64_t full_total_us = 0;
};
// Fails on text with neither line, or a line without a valid total.
absl::StatusOr<PressureTotals> ParsePressure(absl::string_view text);

// CFS bandwidth counters of cpu.stat: v1 (nr_periods, nr_throttled,
// throttled_time in ns) or v2 (nr_periods, nr_throttled, throttled_usec).
struct CfsThrottling {
  bool present = false;  // false: no bandwidth fields (v2 without the cpu controller)
  uint64_t nr_periods = 0;
  uint64_t nr_throttled = 0;
  uint64_t throttled_ns = 0;
};
absl::StatusOr<CfsThrottling> ParseCpuStatThrottling(absl::string_view text);

// A CPU time counter's text in ns: cpu.stat's usage_usec (microseconds) or
// cpuacct.usage (one number, ns). Fails when the field is missing or not a number.
absl::StatusOr<uint64_t> ParseCpuTime(absl::string_view text, bool microseconds);

struct CgroupStatsOptions {
  CgroupMounts mounts;        // resolves each tenant's CgroupRef paths
  std::string cpu_hierarchy;  // "cpu" (v1) or "unified": where cpu.stat is read
  bool read_pressure = true;
  bool read_throttling = true;
  // CPU time from the kernel's per-cgroup counter, for the tenants that have
  // one (the others are the CPU program's: CpuCollectorOptions::fallback_only).
  bool read_cpu_time = true;
};

class CgroupStatsCollector : public Collector {
 public:
  explicit CgroupStatsCollector(CgroupStatsOptions options);
  ~CgroupStatsCollector() override;
  CgroupStatsCollector(const CgroupStatsCollector&) = delete;
  CgroupStatsCollector& operator=(const CgroupStatsCollector&) = delete;

  absl::string_view name() const override { return "cgroup_stats"; }
  absl::Status Init() override;
  // Opens the files of new tenants and closes those of removed ones.
  absl::Status SyncTenants(absl::Span<const TenantEntry> tenants) override;
  // Fills cpu.usage_ns (tenants with a kernel CPU time file), cpu_pressure,
  // io_pressure and cpu.{nr_periods,nr_throttled,throttled_ns}.
  // A tenant whose files are missing or whose cgroup vanished gets
  // present=false / zero throttling, and does not fail the collection.
  absl::Status Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) override;
  absl::Status Stop() override;

  size_t open_files() const;

 private:
  // One cgroup file, kept open. fd < 0: missing (retried at the next sync).
  struct StatFile {
    std::string path;
    int fd = -1;
  };
  struct TenantFiles {
    uint64_t unified_id = 0;  // the CgroupRef ids the files were opened for
    uint64_t cpu_id = 0;
    StatFile cpu_pressure;
    StatFile io_pressure;
    StatFile cpu_stat;
    // The CPU time counter: its own file, or cpu_stat itself (v2, where
    // usage_usec and the throttling share one file, read once).
    StatFile cpu_time;
    uint64_t cpu_time_id = 0;
    bool cpu_time_in_cpu_stat = false;
    bool cpu_time_usec = false;
  };

  void Open(StatFile* file, std::string path);
  static void Close(StatFile* file);
  // Reads the whole file into buf_; false if the file is missing or gone.
  bool Read(StatFile* file);
  static void SetCpuTime(const StatFile& file, absl::string_view text, bool microseconds,
                         v1::TenantCounters* out);
  void CloseAll();

  CgroupStatsOptions options_;
  std::string unified_mount_;
  std::string cpu_mount_;
  absl::flat_hash_map<std::string, TenantFiles> files_;  // by tenant id
  std::string buf_;
  size_t read_len_ = 0;  // bytes of buf_ filled by the last Read
};

}  // namespace fairwatch::agent
