#include "controller/metrics.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/prometheus.h"
#include "controller/server.h"

namespace fairwatch::controller {
namespace {

// "cpu", "disk_bandwidth", ...: the enum name without its prefix, lower case.
std::string ResourceLabel(v1::Resource resource) {
  std::string name = v1::Resource_Name(resource);
  constexpr absl::string_view kPrefix = "RESOURCE_";
  if (absl::StartsWith(name, kPrefix)) name.erase(0, kPrefix.size());
  absl::AsciiStrToLower(&name);
  return name;
}

// Microseconds are exact in a double until the year 2255.
double UnixSeconds(absl::Time t) { return static_cast<double>(absl::ToUnixMicros(t)) / 1e6; }

}  // namespace

ControllerMetrics CollectControllerMetrics(ControllerServer& server, const Store* store,
                                           int tenant_series) {
  ControllerMetrics m;
  FleetState& fleet = server.fleet();
  m.hosts = fleet.HostStatuses();
  for (const HostStatus& host : m.hosts) {
    (host.connected ? m.hosts_connected : m.hosts_disconnected) += 1;
    m.tenants += host.tenants;
  }
  if (tenant_series >= 0) {
    for (const std::string& host_id : fleet.HostIds()) {
      absl::StatusOr<HostInterval> interval = fleet.LastInterval(host_id);
      if (!interval.ok()) continue;
      for (v1::Resource resource : kJudgedResources) {
        const double capacity = ResourceCapacity(interval->capacity, resource);
        if (capacity <= 0) continue;
        for (const TenantInterval& t : interval->tenants) {
          m.shares.push_back(
              {host_id, t.id, t.name, resource, ResourceUsage(t.rates, resource) / capacity});
        }
      }
    }
    const size_t keep = std::min(m.shares.size(), static_cast<size_t>(tenant_series));
    auto larger = [](const UsageShare& a, const UsageShare& b) { return a.share > b.share; };
    std::partial_sort(m.shares.begin(), m.shares.begin() + static_cast<ptrdiff_t>(keep),
                      m.shares.end(), larger);
    m.shares_dropped = m.shares.size() - keep;
    m.shares.resize(keep);
  }
  if (Judge* judge = server.judge(); judge != nullptr) {
    m.judging = true;
    m.judge = judge->stats();
    m.open_cases = judge->OpenCases();
    m.dry_run = judge->dry_run();
    m.exemptions = judge->Exemptions().size();
  }
  if (store != nullptr) m.store = store->stats();
  m.ingest = fleet.ingest_stats();
  m.link = server.agent_link().stats();
  return m;
}

std::string RenderControllerMetrics(const ControllerMetrics& m) {
  PrometheusWriter w;
  w.Family("fairwatch_controller_info", "gauge", "Controller build.");
  w.Sample("fairwatch_controller_info", {{"version", FAIRWATCH_VERSION}}, 1);

  w.Family("fairwatch_controller_hosts", "gauge", "Hosts known, by agent connection state.");
  w.Sample("fairwatch_controller_hosts", {{"state", "connected"}},
           static_cast<double>(m.hosts_connected));
  w.Sample("fairwatch_controller_hosts", {{"state", "disconnected"}},
           static_cast<double>(m.hosts_disconnected));
  w.Family("fairwatch_controller_host_connected", "gauge",
           "1 while the host's agent stream is up, 0 after it ended (until the host expires).");
  for (const HostStatus& host : m.hosts) {
    w.Sample("fairwatch_controller_host_connected", {{"host", host.host_id}},
             host.connected ? 1 : 0);
  }
  w.Family("fairwatch_controller_host_last_report_timestamp_seconds", "gauge",
           "Unix time (controller clock) the host's newest report was ingested.");
  for (const HostStatus& host : m.hosts) {
    if (host.last_report_ingested == absl::InfinitePast()) continue;
    w.Sample("fairwatch_controller_host_last_report_timestamp_seconds", {{"host", host.host_id}},
             UnixSeconds(host.last_report_ingested));
  }
  w.Family("fairwatch_controller_tenants", "gauge", "Tenants on the known hosts.");
  w.Sample("fairwatch_controller_tenants", {}, static_cast<double>(m.tenants));

  w.Family("fairwatch_controller_tenant_usage_share", "gauge",
           "A tenant's use of a resource over its host's capacity, last interval.");
  for (const UsageShare& s : m.shares) {
    w.Sample("fairwatch_controller_tenant_usage_share",
             {{"host", s.host_id},
              {"tenant", s.tenant_id},
              {"name", s.tenant_name},
              {"resource", ResourceLabel(s.resource)}},
             s.share);
  }
  w.Family("fairwatch_controller_tenant_usage_share_dropped", "gauge",
           "Usage-share series left out by metrics_tenant_series (the smallest shares).");
  w.Sample("fairwatch_controller_tenant_usage_share_dropped", {},
           static_cast<double>(m.shares_dropped));

  w.Family("fairwatch_controller_agent_streams_opened_total", "counter",
           "Agent streams opened since start.");
  w.Sample("fairwatch_controller_agent_streams_opened_total", {},
           static_cast<double>(m.link.streams_opened));
  w.Family("fairwatch_controller_agent_bytes_received_total", "counter",
           "Bytes of agent messages received.");
  w.Sample("fairwatch_controller_agent_bytes_received_total", {},
           static_cast<double>(m.link.bytes_received));
  w.Family("fairwatch_controller_reports_total", "counter",
           "Usage reports by outcome: ingested, duplicate (a resend), rejected.");
  w.Sample("fairwatch_controller_reports_total", {{"outcome", "ingested"}},
           static_cast<double>(m.ingest.reports_ingested));
  w.Sample("fairwatch_controller_reports_total", {{"outcome", "duplicate"}},
           static_cast<double>(m.ingest.reports_duplicate));
  w.Sample("fairwatch_controller_reports_total", {{"outcome", "rejected"}},
           static_cast<double>(m.ingest.reports_rejected));
  w.Family("fairwatch_controller_tenant_samples_total", "counter",
           "Tenant entries of ingested reports (the ingest rate, in tenant-samples).");
  w.Sample("fairwatch_controller_tenant_samples_total", {},
           static_cast<double>(m.ingest.tenant_samples_ingested));
  // Log2 buckets of ns: bucket i holds lags in [2^i, 2^(i+1)) ns.
  w.Family("fairwatch_controller_ingest_lag_seconds", "histogram",
           "A report's ingest time minus its timestamp (agent clock; <= 0 counts in the first "
           "bucket).");
  uint64_t lag_cumulative = 0;
  uint64_t lag_count = 0;
  for (uint64_t n : m.link.ingest_lag_hist) lag_count += n;
  for (size_t i = 0; i < m.link.ingest_lag_hist.size(); ++i) {
    lag_cumulative += m.link.ingest_lag_hist[i];
    // Bounds from ~1 ms to ~34 s are worth a series; the rest fold into them.
    if (i < 19 || i > 34) continue;
    w.Sample("fairwatch_controller_ingest_lag_seconds_bucket",
             {{"le", absl::StrCat(static_cast<double>(uint64_t{1} << (i + 1)) / 1e9)}},
             static_cast<double>(lag_cumulative));
  }
  w.Sample("fairwatch_controller_ingest_lag_seconds_bucket", {{"le", "+Inf"}},
           static_cast<double>(lag_count));
  w.Sample("fairwatch_controller_ingest_lag_seconds_sum", {},
           static_cast<double>(m.link.ingest_lag_sum_ns) / 1e9);
  w.Sample("fairwatch_controller_ingest_lag_seconds_count", {}, static_cast<double>(lag_count));

  w.Family("fairwatch_controller_judging", "gauge",
           "1 when the fairness engine runs (the controller has a store).");
  w.Sample("fairwatch_controller_judging", {}, m.judging ? 1 : 0);
  w.Family("fairwatch_controller_cases_open", "gauge", "Open fairness cases, by resource.");
  for (v1::Resource resource : kJudgedResources) {
    auto it = m.judge.open_cases.find(resource);
    w.Sample("fairwatch_controller_cases_open", {{"resource", ResourceLabel(resource)}},
             it == m.judge.open_cases.end() ? 0 : static_cast<double>(it->second));
  }
  w.Family("fairwatch_controller_case_open_since_timestamp_seconds", "gauge",
           "Unix time each open case was opened (one series per open case).");
  for (const OpenCaseInfo& c : m.open_cases) {
    w.Sample("fairwatch_controller_case_open_since_timestamp_seconds",
             {{"case", absl::StrCat(c.case_id)},
              {"host", c.host_id},
              {"tenant", c.tenant_id},
              {"name", c.tenant_name},
              {"resource", ResourceLabel(c.resource)}},
             UnixSeconds(c.opened));
  }
  w.Family("fairwatch_controller_cases_opened_total", "counter", "Cases opened since start.");
  w.Sample("fairwatch_controller_cases_opened_total", {},
           static_cast<double>(m.judge.cases_opened));
  w.Family("fairwatch_controller_cases_closed_total", "counter", "Cases closed since start.");
  w.Sample("fairwatch_controller_cases_closed_total", {},
           static_cast<double>(m.judge.cases_closed));
  w.Family("fairwatch_controller_actions_total", "counter",
           "Recorded actions by kind and what became of them (sent, dry_run, not_sent, "
           "store_error).");
  for (const auto& [key, count] : m.judge.actions) {
    w.Sample("fairwatch_controller_actions_total", {{"kind", key.first}, {"result", key.second}},
             static_cast<double>(count));
  }
  w.Family("fairwatch_controller_acks_total", "counter",
           "Agents' answers to limit commands, by result.");
  w.Sample("fairwatch_controller_acks_total", {{"result", "applied"}},
           static_cast<double>(m.judge.acks_applied));
  w.Sample("fairwatch_controller_acks_total", {{"result", "failed"}},
           static_cast<double>(m.judge.acks_failed));
  w.Family("fairwatch_controller_intervals_judged_total", "counter",
           "Host intervals the fairness engine judged.");
  w.Sample("fairwatch_controller_intervals_judged_total", {},
           static_cast<double>(m.judge.intervals_judged));
  w.Family("fairwatch_controller_dry_run", "gauge",
           "1 for each resource the policy only records (sends no limit).");
  for (v1::Resource resource : kJudgedResources) {
    const bool dry = m.dry_run.all ||
                     std::find(m.dry_run.resources.begin(), m.dry_run.resources.end(), resource) !=
                         m.dry_run.resources.end();
    w.Sample("fairwatch_controller_dry_run", {{"resource", ResourceLabel(resource)}}, dry ? 1 : 0);
  }
  w.Family("fairwatch_controller_exemptions", "gauge", "Exemptions in force (config and store).");
  w.Sample("fairwatch_controller_exemptions", {}, static_cast<double>(m.exemptions));

  w.Family("fairwatch_controller_store_write_seconds", "histogram",
           "Time of each committed store write (a transaction, fsync included).");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < std::size(StoreStats::kBucketSeconds); ++i) {
    cumulative += m.store.buckets[i];
    w.Sample("fairwatch_controller_store_write_seconds_bucket",
             {{"le", absl::StrCat(StoreStats::kBucketSeconds[i])}},
             static_cast<double>(cumulative));
  }
  w.Sample("fairwatch_controller_store_write_seconds_bucket", {{"le", "+Inf"}},
           static_cast<double>(m.store.writes));
  w.Sample("fairwatch_controller_store_write_seconds_sum", {}, m.store.write_seconds);
  w.Sample("fairwatch_controller_store_write_seconds_count", {},
           static_cast<double>(m.store.writes));
  w.Family("fairwatch_controller_store_write_errors_total", "counter", "Store writes that failed.");
  w.Sample("fairwatch_controller_store_write_errors_total", {},
           static_cast<double>(m.store.write_errors));
  w.Family("fairwatch_controller_store_errors_total", "counter",
           "Judge decisions not recorded because the store failed (nothing was sent for them).");
  w.Sample("fairwatch_controller_store_errors_total", {},
           static_cast<double>(m.judge.store_errors));
  return w.Take();
}

}  // namespace fairwatch::controller
