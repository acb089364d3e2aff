// Per-tenant disk bytes, ops and latency per device from disk.bpf.c: bytes and
// ops counted at block_rq_issue, latency at block_rq_complete, both charged to
// the tenant of the request's owning blkcg as resolved at issue.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "agent/cgroup_layout.h"
#include "agent/collector.h"

struct disk_bpf;  // the generated skeleton
struct bpf_program;
struct bpf_prog_info;

namespace fairwatch::agent {

struct DiskCollectorOptions {
  // Hierarchy whose cgroup ids key the tenants: the one the blkcg (io/blkio
  // controller) lives in. "blkio" on v1 and hybrid hosts, "unified" on pure v2.
  std::string hierarchy = "blkio";
  uint32_t max_tenants = 4096;
  // "auto" tries tp_btf and falls back to raw_tp; "tp_btf" or "raw_tp" force one.
  std::string attach_mode = "auto";
  // (tenant, device) counter entries; 0 means 4 per tenant.
  uint32_t max_counter_entries = 0;
  // Requests of tenants in flight at once (in-flight records).
  uint32_t max_inflight = 16384;
  // An in-flight record this old is a completion the kernel never delivered
  // whose request struct was not reused since: Collect removes it and counts it
  // in completions_unseen. Far above any request timeout.
  uint32_t stale_inflight_ms = 600000;
};

// The hierarchy the kernel charges block I/O in: "blkio" where the v1 blkio
// controller is mounted, else "unified".
absl::StatusOr<std::string> ChooseDiskHierarchy(const CgroupMounts& mounts);

// Removes the records of the in-flight map `fd` (disk.bpf.c `inflight`) issued
// before `before_ns` (CLOCK_MONOTONIC ns) and returns how many it removed.
absl::StatusOr<uint64_t> RemoveStaleInflight(int fd, uint64_t before_ns);

class DiskCollector : public Collector {
 public:
  explicit DiskCollector(DiskCollectorOptions options);
  ~DiskCollector() override;

  absl::string_view name() const override { return "disk"; }
  absl::Status Init() override;
  absl::Status SyncTenants(absl::Span<const TenantEntry> tenants) override;
  absl::Status Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) override;
  void AddSelfCounters(v1::AgentSelfCounters* self) const override;
  absl::Status Stop() override;

  // Which attach point was used: "tp_btf" or "raw_tp".
  const std::string& attach_kind() const { return attach_kind_; }
  // One slot's counters per device, summed over CPUs, sorted by device (tests and tools).
  absl::StatusOr<std::vector<v1::DiskCounters>> ReadSlot(uint32_t slot) const;

  struct EventStats {
    // A map was full: requests not counted (no room for their counters or
    // in-flight record), latency samples not stored.
    uint64_t lost_events = 0;
    uint64_t other_ops = 0;  // flush, discard, write-zeroes: not counted per tenant
    // Tenant requests whose completion event never ran the completion program
    // (it happens on this kernel, docs/disk.md): bytes and ops were counted at
    // issue, the latency sample is lost. Found when the request struct is issued
    // again, or when its record goes stale.
    uint64_t completions_unseen = 0;
    // Tenant requests in flight when the programs attached: not counted.
    uint64_t issued_before_attach = 0;
    // Tenant empty PREFLUSH writes (fsync): write ops without bytes or latency.
    uint64_t empty_flushes = 0;
    // Events the kernel did not run a program for because it was already
    // running on that CPU.
    uint64_t recursion_misses = 0;
    // Tenant requests issued and not yet seen completing, as of this read: in
    // flight, or completed unseen and not yet found.
    uint64_t inflight = 0;
  };
  absl::StatusOr<EventStats> ReadEventStats() const;

 private:
  absl::Status LoadAndAttach(bool use_btf);
  // Every (slot, device) counter entry, summed over CPUs.
  absl::StatusOr<absl::flat_hash_map<uint32_t, std::vector<v1::DiskCounters>>> ReadAll() const;
  absl::Status ClearSlot(uint32_t slot);
  // The loaded programs (one attach kind) and the kernel's info on each.
  std::vector<std::pair<struct bpf_program*, struct bpf_prog_info>> ProgramInfos() const;

  DiskCollectorOptions options_;
  struct disk_bpf* skel_ = nullptr;
  std::string attach_kind_;
  int num_cpus_ = 0;
  // What the kernel maps hold now: root cgroup id -> slot, slot -> tenant id.
  absl::flat_hash_map<uint64_t, uint32_t> installed_roots_;
  absl::flat_hash_map<uint32_t, std::string> slot_owner_;
  // Stale in-flight records removed by Collect, and when it last looked.
  uint64_t stale_removed_ = 0;
  uint64_t last_stale_check_ns_ = 0;
  // Counter entries found by the last Collect (map fill without another walk).
  mutable uint64_t counter_entries_ = 0;
};

}  // namespace fairwatch::agent
