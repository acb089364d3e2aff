// Per-tenant run-queue wait from runq.bpf.c (sched_wakeup, sched_wakeup_new,
// sched_switch): total ns, number of waits and a log2 histogram of each wait.
// Adaptive (the agent's default), the programs are attached only while the
// gate says it can matter (agent/runq_gate.h) and the report says for how
// long they were (HostCounters.runq_traced_ns).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/collector.h"
#include "agent/runq_gate.h"

struct runq_bpf;  // the generated skeleton

namespace fairwatch::agent {

struct RunqCollectorOptions {
  bool use_v1_cpu = false;  // attribute in the v1 cpu hierarchy (as CpuCollector)
  uint32_t max_tenants = 4096;
  // "auto" tries tp_btf and falls back to raw_tp; "tp_btf" or "raw_tp" force one.
  std::string attach_mode = "auto";
  // raw_tp only: tenant tasks that can be queued at once (pid -> stamp map).
  uint32_t max_queued_tasks = 65536;
  // (waiter, holder) pairs whose interference is kept; 0: 8 x max_tenants.
  uint32_t max_wait_causes = 0;
  // Attach only when the gate says so; false: always attached.
  bool adaptive = false;
  RunqGateParams gate;
};

// Part of one slot's wait: who held the CPU (a slot, FW_HOLDER_HOST or
// FW_HOLDER_IDLE), summed over CPUs.
struct RunqCause {
  uint32_t holder = 0;
  uint64_t wait_ns = 0;
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
  // Fills cpu.runq_wait_ns, cpu.runq_waits, cpu.runq_wait_hist and
  // cpu.runq_wait_by (who held the CPU while it waited).
  absl::Status Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) override;
  // Programs' run time, lost events (added to the report's total) and map fill.
  void AddSelfCounters(v1::AgentSelfCounters* self) const override;
  absl::Status Stop() override;
  // Adaptive: reads the CPUs' idle time and attaches or detaches.
  absl::Duration tick_period() const override;
  void Tick(absl::Time now) override;

  // Adaptive: whether a CPU limit of the agent's is in force (traced while so).
  void SetCpuLimitInForce(bool in_force);
  bool attached() const { return attached_; }
  // How long the programs have been attached in all, now included (ns).
  uint64_t traced_ns() const;

  // Which attach point was used: "tp_btf" or "raw_tp".
  const std::string& attach_kind() const { return attach_kind_; }
  absl::StatusOr<RunqSlotCounters> ReadSlot(uint32_t slot) const;
  // Every slot's wait by holder: waiter slot -> causes.
  absl::StatusOr<absl::flat_hash_map<uint32_t, std::vector<RunqCause>>> ReadCauses() const;
  // Enqueues or causes that could not be recorded (a map full).
  uint64_t lost_events() const;

 private:
  absl::Status LoadAndAttach(bool use_btf);
  // Attaches the loaded programs (stamps of an earlier attachment ignored)
  // or detaches them, counting the time traced.
  absl::Status AttachPrograms();
  void DetachPrograms();
  // Adaptive: follows the gate's decision at `now`.
  void FollowGate(absl::Time now);
  // Deletes the causes where `slots` wait or hold (their owner changed).
  absl::Status ForgetCauses(const absl::flat_hash_map<uint32_t, bool>& slots);
  uint32_t max_wait_causes() const;

  RunqCollectorOptions options_;
  struct runq_bpf* skel_ = nullptr;
  std::string attach_kind_;
  int num_cpus_ = 0;
  absl::flat_hash_map<uint64_t, uint32_t> installed_roots_;
  absl::flat_hash_map<uint32_t, std::string> slot_owner_;
  size_t cause_pairs_ = 0;        // entries of runq_causes at the last Collect
  std::optional<RunqGate> gate_;  // adaptive only
  RunqGateReason reason_ = RunqGateReason::kQuiet;
  bool attached_ = false;
  uint64_t attached_since_ns_ = 0;  // CLOCK_MONOTONIC
  uint64_t traced_ns_ = 0;          // closed attachments
  uint64_t attaches_ = 0;
};

}  // namespace fairwatch::agent
