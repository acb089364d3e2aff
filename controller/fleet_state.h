// What the controller knows about every host: its Hello, connection, tenant
// inventory and a short history of cumulative usage counters, from which it
// computes rates. Pure logic (no gRPC, no I/O) so it is testable and cheap.
//
// Locking: `hosts_mu_` guards the host map; each host has its own mutex, so
// ingest from many agent streams only contends per host.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fairwatch/v1/agent.pb.h"
#include "fairwatch/v1/config.pb.h"
#include "fairwatch/v1/operator.pb.h"

namespace fairwatch::controller {

struct FleetOptions {
  uint32_t window_intervals = 5;                  // default rate window, in reports
  uint32_t history_reports = 120;                 // ring size per host; > window_intervals
  absl::Duration host_stale = absl::Minutes(10);  // kept listed after disconnect

  static FleetOptions FromConfig(const v1::ControllerConfig& config);
};

// A tenant's CPU rate over a window. window_s == 0 means no rate yet.
struct CpuRate {
  double cores = 0;
  double window_s = 0;
  uint64_t usage_ns = 0;  // cumulative, newest report
};

// All of a tenant's usage rates over one window. window_s == 0: no rate yet.
struct TenantRates {
  double cpu_cores = 0;
  double disk_read_bytes_per_s = 0;
  double disk_write_bytes_per_s = 0;
  double disk_read_ops_per_s = 0;
  double disk_write_ops_per_s = 0;
  double net_rx_bytes_per_s = 0;
  double net_tx_bytes_per_s = 0;
  double net_rx_packets_per_s = 0;
  double net_tx_packets_per_s = 0;
  double net_drops_per_s = 0;
  double window_s = 0;
  uint64_t cpu_usage_ns = 0;  // cumulative, newest report
};

// Usage of a resource in its unit (cores, B/s, ops/s), and the host's
// capacity for it (0: unknown).
double ResourceUsage(const TenantRates& rates, v1::Resource resource);
double ResourceCapacity(const v1::HostCapacity& capacity, v1::Resource resource);

// One tenant over a host's last interval (the two newest reports).
struct TenantInterval {
  std::string id;
  std::string name;
  double weight = 1;
  TenantRates rates;
  v1::HarmSignals harm;
  bool has_harm = false;  // false when the older report did not carry it
};

// A host's last interval, as the fairness engine reads it.
struct HostInterval {
  std::string host_id;
  uint64_t seq = 0;  // the newest report's; the engine judges each interval once
  double seconds = 0;
  v1::HostCapacity capacity;
  std::vector<TenantInterval> tenants;  // those in the newest report, by id
};

struct HelloResult {
  // Highest seq held for this host in the Hello's epoch; 0 if none.
  uint64_t last_report_seq = 0;
  bool new_host = false;
  bool epoch_changed = false;
  bool replaced_connection = false;  // the host was connected on another stream
};

enum class ReportOutcome { kIngested, kDuplicate };

// A host's connection and freshness: what /metrics shows per host at every
// scrape, so it computes no rates.
struct HostStatus {
  std::string host_id;
  bool connected = false;
  size_t tenants = 0;  // in the inventory
  // Controller clock when its newest report was ingested; InfinitePast: none yet.
  absl::Time last_report_ingested = absl::InfinitePast();
};

// Ingest counters since the fleet was made (for /metrics and benchmarks).
struct FleetIngestStats {
  uint64_t reports_ingested = 0;
  uint64_t reports_duplicate = 0;
  uint64_t reports_rejected = 0;         // invalid, or for a host without Hello
  uint64_t tenant_samples_ingested = 0;  // tenant entries held from ingested reports
};

class FleetState {
 public:
  explicit FleetState(FleetOptions options);
  FleetState(const FleetState&) = delete;
  FleetState& operator=(const FleetState&) = delete;
  ~FleetState();

  const FleetOptions& options() const { return options_; }

  // Registers (or refreshes) a host on a new stream `connection_id`. A new
  // epoch drops the counter history, since counters restarted from zero.
  absl::StatusOr<HelloResult> OnHello(const v1::Hello& hello, uint64_t connection_id,
                                      absl::Time now);

  // Marks the host disconnected if `connection_id` is still its stream (a
  // replaced stream ending late must not disconnect its successor). Returns
  // whether it did.
  bool OnDisconnect(absl::string_view host_id, uint64_t connection_id, absl::Time now);

  absl::Status ApplyInventory(absl::string_view host_id, const v1::TenantInventory& inventory,
                              absl::Time now);

  // A report with a seq at or below the newest held in this epoch is a resend
  // and changes nothing (kDuplicate).
  absl::StatusOr<ReportOutcome> IngestReport(absl::string_view host_id,
                                             const v1::UsageReport& report);
  // The same with `report`'s wire form, which the fleet keeps for per-tenant
  // detail: passing it saves serializing the report again.
  absl::StatusOr<ReportOutcome> IngestReport(absl::string_view host_id,
                                             const v1::UsageReport& report, std::string serialized);

  // Forgets hosts disconnected for at least host_stale; returns their ids.
  std::vector<std::string> ExpireStaleHosts(absl::Time now);

  // Queries. `window_intervals` 0 means the default; more than
  // history_reports - 1 is InvalidArgument.
  std::vector<v1::HostInfo> ListHosts() const;
  absl::StatusOr<v1::HostInfo> GetHost(absl::string_view host_id) const;
  // Empty host_id: all hosts. An unknown host is NotFound.
  absl::StatusOr<std::vector<v1::TenantInfo>> ListTenants(absl::string_view host_id) const;
  // Unsorted rows for tenants in the newest report or the inventory.
  absl::StatusOr<std::vector<v1::TopRow>> TopCpu(absl::string_view host_id,
                                                 uint32_t window_intervals) const;
  // Rows carry every resource's rate; value and host_fraction are `resource`'s.
  absl::StatusOr<std::vector<v1::TopRow>> Top(absl::string_view host_id, uint32_t window_intervals,
                                              v1::Resource resource) const;
  // One tenant, by id or unambiguous name; host_id may be empty when the
  // tenant is unique in the fleet. Harm signals and per-device detail come
  // from the last min(window, window_intervals) reports.
  absl::StatusOr<v1::TenantDetail> GetTenant(absl::string_view host_id, absl::string_view tenant,
                                             uint32_t window_intervals) const;
  absl::StatusOr<CpuRate> TenantCpu(absl::string_view host_id, absl::string_view tenant_id,
                                    uint32_t window_intervals) const;

  // The last interval of a host (NotFound: unknown host; FailedPrecondition:
  // fewer than two reports in this epoch).
  absl::StatusOr<HostInterval> LastInterval(absl::string_view host_id) const;
  // The seq of the host's newest report (0: none, or unknown host); cheap, so
  // a caller can skip hosts with nothing new before asking for LastInterval.
  uint64_t LastReportSeq(absl::string_view host_id) const;
  // Ids of every known host.
  std::vector<std::string> HostIds() const;
  // Every known host, by id.
  std::vector<HostStatus> HostStatuses() const;

  size_t host_count() const;

  // Lock-free; each field is exact, the set is not one atomic snapshot.
  FleetIngestStats ingest_stats() const;

  struct Host;  // opaque; defined in fleet_state.cc

 private:
  std::shared_ptr<Host> FindHost(absl::string_view host_id) const;
  // `serialized`: the report's wire form, or null to serialize it here.
  absl::StatusOr<ReportOutcome> Ingest(absl::string_view host_id, const v1::UsageReport& report,
                                       std::string* serialized);
  absl::StatusOr<uint32_t> ResolveWindow(uint32_t window_intervals) const;

  const FleetOptions options_;
  struct IngestCounters {
    std::atomic<uint64_t> reports_ingested{0};
    std::atomic<uint64_t> reports_duplicate{0};
    std::atomic<uint64_t> reports_rejected{0};
    std::atomic<uint64_t> tenant_samples_ingested{0};
  };
  IngestCounters ingest_;
  mutable absl::Mutex hosts_mu_;
  // shared_ptr so a query can keep working on a host while it is expired.
  absl::flat_hash_map<std::string, std::shared_ptr<Host>> hosts_ ABSL_GUARDED_BY(hosts_mu_);
};

}  // namespace fairwatch::controller
