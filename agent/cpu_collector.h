// Per-tenant CPU time from the cpu.bpf.c program (sched_stat_runtime): for
// every tenant ("bpf"), or only for the tenants whose cgroups keep no CPU
// time counter of the kernel's (fallback_only; the others are read from
// their cgroup files by CgroupStatsCollector): attached while there is one,
// detached when there is none, so that a host where the kernel counts every
// tenant runs no program on the scheduler's path for CPU time (docs/architecture.md, "measure:
// CPU").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "agent/cgroup_layout.h"
#include "agent/collector.h"

struct cpu_bpf;  // the generated skeleton

namespace fairwatch::agent {

struct CpuCollectorOptions {
  bool use_v1_cpu = false;  // attribute in the v1 cpu hierarchy
  uint32_t max_tenants = 4096;
  // "auto" tries tp_btf and falls back to raw_tp; "tp_btf" or "raw_tp" force one.
  std::string attach_mode = "auto";
  // Measure only the tenants without a kernel CPU time file
  // (KernelCpuTimeFile over `mounts` and `cpu_hierarchy`).
  bool fallback_only = false;
  CgroupMounts mounts;
  std::string cpu_hierarchy;
};

class CpuCollector : public Collector {
 public:
  explicit CpuCollector(CpuCollectorOptions options);
  ~CpuCollector() override;

  absl::string_view name() const override { return "cpu"; }
  absl::Status Init() override;
  absl::Status SyncTenants(absl::Span<const TenantEntry> tenants) override;
  absl::Status Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) override;
  void AddSelfCounters(v1::AgentSelfCounters* self) const override;
  absl::Status Stop() override;

  // Which attach point was used: "tp_btf" or "raw_tp"; empty while detached.
  const std::string& attach_kind() const { return attach_kind_; }
  // Whether the program is attached (fallback_only: while a tenant needs it).
  bool attached() const { return skel_ != nullptr; }
  // Reads one slot's counters summed over CPUs (tests and tools).
  absl::Status ReadSlot(uint32_t slot, uint64_t* usage_ns, uint64_t* events) const;

 private:
  absl::Status LoadAndAttach(bool use_btf);
  // LoadAndAttach in the configured mode, tp_btf falling back to raw_tp.
  absl::Status Attach();
  void Detach();

  CpuCollectorOptions options_;
  struct cpu_bpf* skel_ = nullptr;
  std::string attach_kind_;
  int num_cpus_ = 0;
  // What the kernel maps hold now: root cgroup id -> slot, slot -> tenant id.
  absl::flat_hash_map<uint64_t, uint32_t> installed_roots_;
  absl::flat_hash_map<uint32_t, std::string> slot_owner_;
  absl::flat_hash_set<std::string> measured_;  // tenant ids the program counts
};

}  // namespace fairwatch::agent
