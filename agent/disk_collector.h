// Per-tenant disk bytes, ops and latency per device from disk.bpf.c: counted at
// block_rq_complete and charged to the request's owning blkcg.
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
  // Requests of tenants in flight at once (issue timestamps).
  uint32_t max_inflight = 16384;
};

// The hierarchy the kernel charges block I/O in: "blkio" where the v1 blkio
// controller is mounted, else "unified".
absl::StatusOr<std::string> ChooseDiskHierarchy(const CgroupMounts& mounts);

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
    uint64_t lost_events = 0;    // counters or issue time not recorded: a map was full
    uint64_t other_ops = 0;      // flush, discard, write-zeroes: not counted per tenant
    uint64_t no_issue_time = 0;  // tenant requests completed without a latency sample
    // Events the kernel did not run a program for: it was already running on
    // that CPU (a completion interrupting a completion). Lost bytes and ops.
    uint64_t recursion_misses = 0;
    // Data requests the block layer counted as completed (/sys/block/<dev>/stat)
    // since Init but the completion program never saw, summed over devices. An
    // estimate: also counts write-zeroes, which the programs do not count as data.
    uint64_t unobserved_completions = 0;
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
  // Per whole disk (MKDEV-style key): reads + writes completed per sysfs at Init.
  absl::flat_hash_map<uint32_t, uint64_t> completed_at_init_;
  // Counter entries found by the last Collect (map fill without another walk).
  mutable uint64_t counter_entries_ = 0;
};

}  // namespace fairwatch::agent
