// Per-tenant run-queue wait from runq.bpf.c (sched_wakeup, sched_wakeup_new,
// sched_switch): total ns, number of waits and a log2 histogram of each wait.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/collector.h"

struct runq_bpf;  // the generated skeleton

namespace fairwatch::agent {

struct RunqCollectorOptions {
  bool use_v1_cpu = false;  // attribute in the v1 cpu hierarchy (as CpuCollector)
  uint32_t max_tenants = 4096;
  // "auto" tries tp_btf and falls back to raw_tp; "tp_btf" or "raw_tp" force one.
  std::string attach_mode = "auto";
  // raw_tp only: tenant tasks that can be queued at once (pid -> stamp map).
  uint32_t max_queued_tasks = 65536;
};

// One tenant slot's counters summed over CPUs.
struct RunqSlotCounters {
  uint64_t wait_ns = 0;
  uint64_t waits = 0;
  // Wire layout: hist[i] counts waits in [2^i, 2^(i+1)) ns. Shorter and longer
  // waits than the kernel's range land in its first and last bucket.
  std::vector<uint64_t> hist;
};

class RunqCollector : public Collector {
 public:
  explicit RunqCollector(RunqCollectorOptions options);
  ~RunqCollector() override;

  absl::string_view name() const override { return "runq"; }
  absl::Status Init() override;
  absl::Status SyncTenants(absl::Span<const TenantEntry> tenants) override;
  // Fills cpu.runq_wait_ns, cpu.runq_waits and cpu.runq_wait_hist.
  absl::Status Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) override;
  // Programs' run time, lost events (added to the report's total) and map fill.
  void AddSelfCounters(v1::AgentSelfCounters* self) const override;
  absl::Status Stop() override;

  // Which attach point was used: "tp_btf" or "raw_tp".
  const std::string& attach_kind() const { return attach_kind_; }
  absl::StatusOr<RunqSlotCounters> ReadSlot(uint32_t slot) const;
  // Enqueues that could not be recorded (task storage or pid map full).
  uint64_t lost_events() const;

 private:
  absl::Status LoadAndAttach(bool use_btf);

  RunqCollectorOptions options_;
  struct runq_bpf* skel_ = nullptr;
  std::string attach_kind_;
  int num_cpus_ = 0;
  absl::flat_hash_map<uint64_t, uint32_t> installed_roots_;
  absl::flat_hash_map<uint32_t, std::string> slot_owner_;
};

}  // namespace fairwatch::agent
