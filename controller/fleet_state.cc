#include "controller/fleet_state.h"

#include <algorithm>
#include <deque>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/histogram.h"
#include "common/log.h"

namespace fairwatch::controller {
namespace {

struct ReportSlot {
  uint64_t seq = 0;
  uint64_t monotonic_ns = 0;
  int64_t timestamp_unix_ns = 0;
};

// A tenant's usage counters in one report, summed over devices and interfaces.
struct Sample {
  uint64_t cpu_usage_ns = 0;
  uint64_t disk_read_bytes = 0;
  uint64_t disk_write_bytes = 0;
  uint64_t disk_read_ops = 0;
  uint64_t disk_write_ops = 0;
  uint64_t net_rx_bytes = 0;
  uint64_t net_tx_bytes = 0;
  uint64_t net_rx_packets = 0;
  uint64_t net_tx_packets = 0;
  uint64_t net_drops = 0;

  static Sample From(const v1::TenantCounters& c) {
    Sample s;
    s.cpu_usage_ns = c.cpu().usage_ns();
    for (const auto& d : c.disks()) {
      s.disk_read_bytes += d.read_bytes();
      s.disk_write_bytes += d.write_bytes();
      s.disk_read_ops += d.read_ops();
      s.disk_write_ops += d.write_ops();
    }
    for (const auto& n : c.net()) {
      s.net_rx_bytes += n.rx_bytes();
      s.net_tx_bytes += n.tx_bytes();
      s.net_rx_packets += n.rx_packets();
      s.net_tx_packets += n.tx_packets();
      s.net_drops += n.rx_drops() + n.tx_drops();
    }
    return s;
  }

  // True when no counter went backwards from `before`.
  bool Follows(const Sample& before) const {
    return cpu_usage_ns >= before.cpu_usage_ns && disk_read_bytes >= before.disk_read_bytes &&
           disk_write_bytes >= before.disk_write_bytes && disk_read_ops >= before.disk_read_ops &&
           disk_write_ops >= before.disk_write_ops && net_rx_bytes >= before.net_rx_bytes &&
           net_tx_bytes >= before.net_tx_bytes && net_rx_packets >= before.net_rx_packets &&
           net_tx_packets >= before.net_tx_packets && net_drops >= before.net_drops;
  }
};

// One tenant's counters, aligned with Host::reports: report index i lives in
// slot i % history. Values are only meaningful in [first_index, last_index].
struct TenantSeries {
  std::vector<Sample> samples;
  uint64_t first_index = 0;  // start of the current unbroken, non-decreasing run
  uint64_t last_index = 0;   // newest report index that carried this tenant
};

struct InventoryEntry {
  v1::Tenant tenant;
  int64_t first_seen_unix_ns = 0;
};

}  // namespace

struct FleetState::Host {
  explicit Host(uint32_t history) : reports(history) {}

  absl::Mutex mu;
  v1::Hello hello ABSL_GUARDED_BY(mu);
  uint64_t connection_id ABSL_GUARDED_BY(mu) = 0;
  bool connected ABSL_GUARDED_BY(mu) = false;
  int64_t first_seen_unix_ns ABSL_GUARDED_BY(mu) = 0;
  absl::Time disconnected_at ABSL_GUARDED_BY(mu);
  // Report indices count reports ingested in the current epoch, from 1.
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;
  uint64_t report_count ABSL_GUARDED_BY(mu) = 0;
  // Rates never reach back before this index (set when the monotonic clock
  // went backwards inside an epoch).
  uint64_t floor_index ABSL_GUARDED_BY(mu) = 1;
  std::vector<ReportSlot> reports ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, TenantSeries> series ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, InventoryEntry> inventory ABSL_GUARDED_BY(mu);
  // The last window_intervals + 1 reports whole, for per-device detail,
  // histograms and pressure; oldest first, all of the current epoch.
  std::deque<std::shared_ptr<const v1::UsageReport>> recent ABSL_GUARDED_BY(mu);
};

namespace {

using Host = FleetState::Host;

}  // namespace

FleetOptions FleetOptions::FromConfig(const v1::ControllerConfig& config) {
  FleetOptions options;
  options.window_intervals = config.window_intervals();
  options.history_reports = config.history_reports();
  options.host_stale = absl::Milliseconds(config.host_stale_ms());
  return options;
}

FleetState::FleetState(FleetOptions options) : options_(options) {}
FleetState::~FleetState() = default;

namespace {

TenantRates ComputeRates(const FleetState::Host& host, const TenantSeries& series, uint32_t window)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  TenantRates rates;
  const uint64_t newest = host.report_count;
  if (newest == 0 || series.last_index != newest) return rates;
  const size_t history = host.reports.size();
  const Sample& to_sample = series.samples[newest % history];
  rates.cpu_usage_ns = to_sample.cpu_usage_ns;
  uint64_t start = newest > window ? newest - window : 1;
  start = std::max({start, series.first_index, host.floor_index});
  if (start >= newest) return rates;
  const ReportSlot& from = host.reports[start % history];
  const ReportSlot& to = host.reports[newest % history];
  if (to.monotonic_ns <= from.monotonic_ns) return rates;
  const Sample& from_sample = series.samples[start % history];
  const double seconds = static_cast<double>(to.monotonic_ns - from.monotonic_ns) / 1e9;
  // Non-negative: a run only continues while no counter decreases.
  auto per_s = [seconds](uint64_t newer, uint64_t older) {
    return static_cast<double>(newer - older) / seconds;
  };
  rates.cpu_cores = per_s(to_sample.cpu_usage_ns, from_sample.cpu_usage_ns) / 1e9;
  rates.disk_read_bytes_per_s = per_s(to_sample.disk_read_bytes, from_sample.disk_read_bytes);
  rates.disk_write_bytes_per_s = per_s(to_sample.disk_write_bytes, from_sample.disk_write_bytes);
  rates.disk_read_ops_per_s = per_s(to_sample.disk_read_ops, from_sample.disk_read_ops);
  rates.disk_write_ops_per_s = per_s(to_sample.disk_write_ops, from_sample.disk_write_ops);
  rates.net_rx_bytes_per_s = per_s(to_sample.net_rx_bytes, from_sample.net_rx_bytes);
  rates.net_tx_bytes_per_s = per_s(to_sample.net_tx_bytes, from_sample.net_tx_bytes);
  rates.net_rx_packets_per_s = per_s(to_sample.net_rx_packets, from_sample.net_rx_packets);
  rates.net_tx_packets_per_s = per_s(to_sample.net_tx_packets, from_sample.net_tx_packets);
  rates.net_drops_per_s = per_s(to_sample.net_drops, from_sample.net_drops);
  rates.window_s = seconds;
  return rates;
}

CpuRate ComputeCpu(const FleetState::Host& host, const TenantSeries& series, uint32_t window)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  const TenantRates rates = ComputeRates(host, series, window);
  return CpuRate{rates.cpu_cores, rates.window_s, rates.cpu_usage_ns};
}

void FillHostInfo(const FleetState::Host& host, uint32_t window, v1::HostInfo* info)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  const v1::Hello& hello = host.hello;
  info->set_host_id(hello.host_id());
  info->set_hostname(hello.hostname());
  info->set_agent_version(hello.agent_version());
  info->set_layout(hello.layout());
  info->set_cpu_hierarchy(hello.cpu_hierarchy());
  *info->mutable_capacity() = hello.capacity();
  info->set_interval_ms(hello.interval_ms());
  info->set_connected(host.connected);
  info->set_first_seen_unix_ns(host.first_seen_unix_ns);
  info->set_last_report_seq(host.last_seq);
  if (host.report_count > 0) {
    info->set_last_report_unix_ns(
        host.reports[host.report_count % host.reports.size()].timestamp_unix_ns);
  }
  info->set_tenant_count(static_cast<uint32_t>(host.inventory.size()));
  double cores = 0;
  for (const auto& [id, series] : host.series) cores += ComputeCpu(host, series, window).cores;
  info->set_cpu_used_cores(cores);
}

void ResetHistory(FleetState::Host& host) ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  host.last_seq = 0;
  host.report_count = 0;
  host.floor_index = 1;
  std::fill(host.reports.begin(), host.reports.end(), ReportSlot{});
  host.series.clear();
  host.recent.clear();
}

}  // namespace

std::shared_ptr<FleetState::Host> FleetState::FindHost(absl::string_view host_id) const {
  absl::ReaderMutexLock lock(&hosts_mu_);
  auto it = hosts_.find(host_id);
  return it == hosts_.end() ? nullptr : it->second;
}

absl::StatusOr<uint32_t> FleetState::ResolveWindow(uint32_t window_intervals) const {
  if (window_intervals == 0) return options_.window_intervals;
  if (window_intervals >= options_.history_reports) {
    return absl::InvalidArgumentError(absl::StrCat(
        "window_intervals ", window_intervals, " exceeds the ", options_.history_reports - 1,
        " intervals of history kept (history_reports ", options_.history_reports, ")"));
  }
  return window_intervals;
}

absl::StatusOr<HelloResult> FleetState::OnHello(const v1::Hello& hello, uint64_t connection_id,
                                                absl::Time now) {
  if (hello.host_id().empty()) {
    return absl::InvalidArgumentError("Hello has an empty host_id");
  }
  HelloResult result;
  std::shared_ptr<Host> host;
  {
    absl::MutexLock lock(&hosts_mu_);
    auto [it, inserted] = hosts_.try_emplace(hello.host_id());
    if (inserted) it->second = std::make_shared<Host>(options_.history_reports);
    host = it->second;
    result.new_host = inserted;
  }
  absl::MutexLock lock(&host->mu);
  if (result.new_host) {
    host->first_seen_unix_ns = absl::ToUnixNanos(now);
  } else {
    if (host->hello.epoch_unix_ns() != hello.epoch_unix_ns()) {
      result.epoch_changed = true;
      ResetHistory(*host);
    }
    result.replaced_connection = host->connected && host->connection_id != connection_id;
  }
  host->hello = hello;
  host->connection_id = connection_id;
  host->connected = true;
  result.last_report_seq = host->last_seq;
  return result;
}

bool FleetState::OnDisconnect(absl::string_view host_id, uint64_t connection_id, absl::Time now) {
  std::shared_ptr<Host> host = FindHost(host_id);
  if (host == nullptr) return false;
  absl::MutexLock lock(&host->mu);
  if (!host->connected || host->connection_id != connection_id) return false;
  host->connected = false;
  host->disconnected_at = now;
  return true;
}

absl::Status FleetState::ApplyInventory(absl::string_view host_id,
                                        const v1::TenantInventory& inventory, absl::Time now) {
  for (int i = 0; i < inventory.upserted_size(); ++i) {
    if (inventory.upserted(i).id().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("inventory for host ", host_id, ": upserted tenant #", i, " (name \"",
                       inventory.upserted(i).name(), "\") has an empty id"));
    }
  }
  std::shared_ptr<Host> host = FindHost(host_id);
  if (host == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("inventory for unknown host ", host_id, " (no Hello yet)"));
  }
  const int64_t now_ns = absl::ToUnixNanos(now);
  absl::MutexLock lock(&host->mu);
  auto& known = host->inventory;
  if (inventory.full()) {
    absl::flat_hash_map<std::string, InventoryEntry> replacement;
    replacement.reserve(inventory.upserted_size());
    for (const v1::Tenant& tenant : inventory.upserted()) {
      auto old = known.find(tenant.id());
      InventoryEntry& entry = replacement[tenant.id()];
      entry.tenant = tenant;
      entry.first_seen_unix_ns = old == known.end() ? now_ns : old->second.first_seen_unix_ns;
    }
    known.swap(replacement);
  } else {
    for (const v1::Tenant& tenant : inventory.upserted()) {
      auto [it, inserted] = known.try_emplace(tenant.id());
      if (inserted) it->second.first_seen_unix_ns = now_ns;
      it->second.tenant = tenant;
    }
  }
  for (const std::string& id : inventory.removed_ids()) known.erase(id);
  return absl::OkStatus();
}

absl::StatusOr<ReportOutcome> FleetState::IngestReport(absl::string_view host_id,
                                                       const v1::UsageReport& report) {
  return IngestReport(host_id, std::make_shared<const v1::UsageReport>(report));
}

absl::StatusOr<ReportOutcome> FleetState::IngestReport(
    absl::string_view host_id, std::shared_ptr<const v1::UsageReport> shared_report) {
  const v1::UsageReport& report = *shared_report;
  if (report.seq() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("report from host ", host_id, " has seq 0; seqs start at 1"));
  }
  for (int i = 0; i < report.tenants_size(); ++i) {
    if (report.tenants(i).tenant_id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("report seq ", report.seq(), " from host ",
                                                     host_id, ": tenant #", i,
                                                     " has an empty tenant_id"));
    }
  }
  std::shared_ptr<Host> host = FindHost(host_id);
  if (host == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "report seq ", report.seq(), " for unknown host ", host_id, " (no Hello yet)"));
  }
  absl::MutexLock lock(&host->mu);
  if (report.seq() <= host->last_seq) return ReportOutcome::kDuplicate;

  const size_t history = host->reports.size();
  const uint64_t index = host->report_count + 1;
  if (index > 1 && report.monotonic_ns() <= host->reports[(index - 1) % history].monotonic_ns) {
    // The agent's clock went backwards without a new epoch: no rate may span it.
    FW_LOG(Warning, "host ", host_id, " report seq ", report.seq(), " has monotonic_ns ",
           report.monotonic_ns(), " not after the previous report's ",
           host->reports[(index - 1) % history].monotonic_ns, "; restarting its rate windows");
    host->floor_index = index;
    host->recent.clear();
  }
  host->reports[index % history] =
      ReportSlot{report.seq(), report.monotonic_ns(), report.timestamp_unix_ns()};
  host->report_count = index;
  host->last_seq = report.seq();

  for (const v1::TenantCounters& counters : report.tenants()) {
    auto [it, inserted] = host->series.try_emplace(counters.tenant_id());
    TenantSeries& series = it->second;
    const Sample sample = Sample::From(counters);
    if (inserted) {
      series.samples.resize(history);
      series.first_index = index;
    } else if (series.last_index == index) {
      continue;  // listed twice in one report: the first entry counts
    } else if (series.last_index + 1 != index ||
               !sample.Follows(series.samples[(index - 1) % history])) {
      // Missing from a report, or a counter went backwards (cgroup
      // recreated): the old values say nothing about the new run.
      series.first_index = index;
    }
    series.samples[index % history] = sample;
    series.last_index = index;
  }
  host->recent.push_back(std::move(shared_report));
  while (host->recent.size() > options_.window_intervals + 1) host->recent.pop_front();
  // Once per ring turn, forget tenants that left the whole history.
  if (index % history == 0) {
    absl::erase_if(host->series,
                   [&](const auto& entry) { return entry.second.last_index + history <= index; });
  }
  return ReportOutcome::kIngested;
}

std::vector<std::string> FleetState::ExpireStaleHosts(absl::Time now) {
  std::vector<std::string> expired;
  absl::MutexLock lock(&hosts_mu_);
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    Host& host = *it->second;
    bool stale;
    {
      absl::MutexLock host_lock(&host.mu);
      stale = !host.connected && now - host.disconnected_at >= options_.host_stale;
    }
    if (stale) {
      expired.push_back(it->first);
      hosts_.erase(it++);
    } else {
      ++it;
    }
  }
  return expired;
}

std::vector<v1::HostInfo> FleetState::ListHosts() const {
  std::vector<std::shared_ptr<Host>> hosts;
  {
    absl::ReaderMutexLock lock(&hosts_mu_);
    hosts.reserve(hosts_.size());
    for (const auto& [id, host] : hosts_) hosts.push_back(host);
  }
  std::vector<v1::HostInfo> infos(hosts.size());
  for (size_t i = 0; i < hosts.size(); ++i) {
    absl::MutexLock lock(&hosts[i]->mu);
    FillHostInfo(*hosts[i], options_.window_intervals, &infos[i]);
  }
  std::sort(infos.begin(), infos.end(),
            [](const v1::HostInfo& a, const v1::HostInfo& b) { return a.host_id() < b.host_id(); });
  return infos;
}

absl::StatusOr<v1::HostInfo> FleetState::GetHost(absl::string_view host_id) const {
  std::shared_ptr<Host> host = FindHost(host_id);
  if (host == nullptr) return absl::NotFoundError(absl::StrCat("host ", host_id, " is not known"));
  v1::HostInfo info;
  absl::MutexLock lock(&host->mu);
  FillHostInfo(*host, options_.window_intervals, &info);
  return info;
}

namespace {

// Hosts matching a filter (empty: all), NotFound for an unknown one.
template <typename Map>
absl::StatusOr<std::vector<std::shared_ptr<Host>>> SelectHosts(const Map& hosts,
                                                               absl::string_view host_id) {
  std::vector<std::shared_ptr<Host>> selected;
  if (host_id.empty()) {
    selected.reserve(hosts.size());
    for (const auto& [id, host] : hosts) selected.push_back(host);
    return selected;
  }
  auto it = hosts.find(host_id);
  if (it == hosts.end())
    return absl::NotFoundError(absl::StrCat("host ", host_id, " is not known"));
  selected.push_back(it->second);
  return selected;
}

}  // namespace

absl::StatusOr<std::vector<v1::TenantInfo>> FleetState::ListTenants(
    absl::string_view host_id) const {
  std::vector<std::shared_ptr<Host>> hosts;
  {
    absl::ReaderMutexLock lock(&hosts_mu_);
    auto selected = SelectHosts(hosts_, host_id);
    if (!selected.ok()) return selected.status();
    hosts = std::move(*selected);
  }
  std::vector<v1::TenantInfo> tenants;
  for (const auto& host : hosts) {
    absl::MutexLock lock(&host->mu);
    for (const auto& [id, entry] : host->inventory) {
      v1::TenantInfo& info = tenants.emplace_back();
      info.set_host_id(host->hello.host_id());
      *info.mutable_tenant() = entry.tenant;
      info.set_first_seen_unix_ns(entry.first_seen_unix_ns);
    }
  }
  std::sort(tenants.begin(), tenants.end(), [](const v1::TenantInfo& a, const v1::TenantInfo& b) {
    return std::tie(a.host_id(), a.tenant().id()) < std::tie(b.host_id(), b.tenant().id());
  });
  return tenants;
}

double ResourceCapacity(const v1::HostCapacity& capacity, v1::Resource resource) {
  double total = 0;
  switch (resource) {
    case v1::RESOURCE_CPU:
      return capacity.cpus();
    case v1::RESOURCE_DISK_BANDWIDTH:
      for (const auto& d : capacity.disks()) total += d.bandwidth_bytes_per_s();
      return total;
    case v1::RESOURCE_DISK_IOPS:
      for (const auto& d : capacity.disks()) total += d.ops_per_s();
      return total;
    case v1::RESOURCE_NET_RX:
      for (const auto& i : capacity.interfaces()) total += i.rx_bytes_per_s();
      return total;
    case v1::RESOURCE_NET_TX:
      for (const auto& i : capacity.interfaces()) total += i.tx_bytes_per_s();
      return total;
    default:
      return 0;
  }
}

double ResourceUsage(const TenantRates& r, v1::Resource resource) {
  switch (resource) {
    case v1::RESOURCE_CPU:
      return r.cpu_cores;
    case v1::RESOURCE_DISK_BANDWIDTH:
      return r.disk_read_bytes_per_s + r.disk_write_bytes_per_s;
    case v1::RESOURCE_DISK_IOPS:
      return r.disk_read_ops_per_s + r.disk_write_ops_per_s;
    case v1::RESOURCE_NET_RX:
      return r.net_rx_bytes_per_s;
    case v1::RESOURCE_NET_TX:
      return r.net_tx_bytes_per_s;
    default:
      return 0;
  }
}

namespace {

void FillRow(const FleetState::Host& host, const std::string& tenant_id, const TenantRates& rates,
             v1::Resource resource, v1::TopRow* row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  row->set_host_id(host.hello.host_id());
  row->set_tenant_id(tenant_id);
  auto entry = host.inventory.find(tenant_id);
  if (entry != host.inventory.end()) {
    row->set_tenant_name(entry->second.tenant.name());
    row->set_account(entry->second.tenant.account());
  }
  const uint32_t cpus = host.hello.capacity().cpus();
  row->set_cpu_cores(rates.cpu_cores);
  row->set_cpu_host_fraction(cpus > 0 ? rates.cpu_cores / cpus : 0);
  row->set_window_s(rates.window_s);
  row->set_cpu_usage_ns(rates.cpu_usage_ns);
  row->set_disk_read_bytes_per_s(rates.disk_read_bytes_per_s);
  row->set_disk_write_bytes_per_s(rates.disk_write_bytes_per_s);
  row->set_disk_read_ops_per_s(rates.disk_read_ops_per_s);
  row->set_disk_write_ops_per_s(rates.disk_write_ops_per_s);
  row->set_net_rx_bytes_per_s(rates.net_rx_bytes_per_s);
  row->set_net_tx_bytes_per_s(rates.net_tx_bytes_per_s);
  row->set_net_rx_packets_per_s(rates.net_rx_packets_per_s);
  row->set_net_tx_packets_per_s(rates.net_tx_packets_per_s);
  row->set_net_drops_per_s(rates.net_drops_per_s);
  const double value = ResourceUsage(rates, resource);
  const double capacity = ResourceCapacity(host.hello.capacity(), resource);
  row->set_value(value);
  row->set_host_fraction(capacity > 0 ? value / capacity : 0);
}

}  // namespace

absl::StatusOr<std::vector<v1::TopRow>> FleetState::TopCpu(absl::string_view host_id,
                                                           uint32_t window_intervals) const {
  return Top(host_id, window_intervals, v1::RESOURCE_CPU);
}

absl::StatusOr<std::vector<v1::TopRow>> FleetState::Top(absl::string_view host_id,
                                                        uint32_t window_intervals,
                                                        v1::Resource resource) const {
  absl::StatusOr<uint32_t> window = ResolveWindow(window_intervals);
  if (!window.ok()) return window.status();
  std::vector<std::shared_ptr<Host>> hosts;
  {
    absl::ReaderMutexLock lock(&hosts_mu_);
    auto selected = SelectHosts(hosts_, host_id);
    if (!selected.ok()) return selected.status();
    hosts = std::move(*selected);
  }
  std::vector<v1::TopRow> rows;
  for (const auto& host : hosts) {
    absl::MutexLock lock(&host->mu);
    for (const auto& [id, series] : host->series) {
      if (series.last_index != host->report_count) continue;
      FillRow(*host, id, ComputeRates(*host, series, *window), resource, &rows.emplace_back());
    }
    for (const auto& [id, entry] : host->inventory) {
      auto series = host->series.find(id);
      if (series != host->series.end() && series->second.last_index == host->report_count) {
        continue;
      }
      FillRow(*host, id, TenantRates{}, resource, &rows.emplace_back());
    }
  }
  return rows;
}

namespace {

const v1::TenantCounters* FindCounters(const v1::UsageReport& report, absl::string_view id) {
  for (const auto& t : report.tenants()) {
    if (t.tenant_id() == id) return &t;
  }
  return nullptr;
}

// newer - older as a rate, 0 when the counter restarted.
double Rate(uint64_t newer, uint64_t older, double seconds) {
  return newer >= older && seconds > 0 ? static_cast<double>(newer - older) / seconds : 0;
}

void FillHarm(const v1::TenantCounters& to, const v1::TenantCounters& from, double seconds,
              v1::TenantDetail* detail) {
  v1::HarmSignals* harm = detail->mutable_harm();
  const v1::Log2Histogram runq = Log2Delta(to.cpu().runq_wait_hist(), from.cpu().runq_wait_hist());
  harm->set_runq_wait_p50_ns(Log2Quantile(runq, 0.5));
  harm->set_runq_wait_p99_ns(Log2Quantile(runq, 0.99));
  harm->set_runq_wait_ns_per_s(Rate(to.cpu().runq_wait_ns(), from.cpu().runq_wait_ns(), seconds));
  harm->set_runq_waits_per_s(Rate(to.cpu().runq_waits(), from.cpu().runq_waits(), seconds));
  harm->set_cpu_psi_present(to.cpu_pressure().present());
  if (to.cpu_pressure().present() && from.cpu_pressure().present()) {
    harm->set_cpu_psi_some_fraction(
        Rate(to.cpu_pressure().some_total_us(), from.cpu_pressure().some_total_us(), seconds) /
        1e6);
  }
  harm->set_io_psi_present(to.io_pressure().present());
  if (to.io_pressure().present() && from.io_pressure().present()) {
    harm->set_io_psi_some_fraction(
        Rate(to.io_pressure().some_total_us(), from.io_pressure().some_total_us(), seconds) / 1e6);
  }
  harm->set_throttled_ns_per_s(Rate(to.cpu().throttled_ns(), from.cpu().throttled_ns(), seconds));
  if (to.cpu().nr_periods() > from.cpu().nr_periods() &&
      to.cpu().nr_throttled() >= from.cpu().nr_throttled()) {
    harm->set_throttled_periods_fraction(
        static_cast<double>(to.cpu().nr_throttled() - from.cpu().nr_throttled()) /
        static_cast<double>(to.cpu().nr_periods() - from.cpu().nr_periods()));
  }

  std::vector<uint64_t> io_latency;
  for (const auto& disk : to.disks()) {
    const v1::DiskCounters* before = nullptr;
    for (const auto& d : from.disks()) {
      if (d.device().major() == disk.device().major() &&
          d.device().minor() == disk.device().minor()) {
        before = &d;
      }
    }
    const v1::DiskCounters empty;
    const v1::DiskCounters& old = before ? *before : empty;
    const v1::Log2Histogram latency = Log2Delta(disk.latency(), old.latency());
    AddHistogram(latency, &io_latency);
    v1::DiskDeviceRates* rates = detail->add_disks();
    *rates->mutable_device() = disk.device();
    rates->set_read_bytes_per_s(Rate(disk.read_bytes(), old.read_bytes(), seconds));
    rates->set_write_bytes_per_s(Rate(disk.write_bytes(), old.write_bytes(), seconds));
    rates->set_read_ops_per_s(Rate(disk.read_ops(), old.read_ops(), seconds));
    rates->set_write_ops_per_s(Rate(disk.write_ops(), old.write_ops(), seconds));
    rates->set_latency_p50_ns(Log2Quantile(latency, 0.5));
    rates->set_latency_p99_ns(Log2Quantile(latency, 0.99));
  }
  harm->set_io_latency_p50_ns(Log2Quantile(io_latency, 0.5));
  harm->set_io_latency_p99_ns(Log2Quantile(io_latency, 0.99));

  double drops_per_s = 0;
  for (const auto& net : to.net()) {
    const v1::NetCounters* before = nullptr;
    for (const auto& n : from.net()) {
      if (n.interface() == net.interface()) before = &n;
    }
    const v1::NetCounters empty;
    const v1::NetCounters& old = before ? *before : empty;
    v1::InterfaceRates* rates = detail->add_interfaces();
    rates->set_interface(net.interface());
    rates->set_rx_bytes_per_s(Rate(net.rx_bytes(), old.rx_bytes(), seconds));
    rates->set_tx_bytes_per_s(Rate(net.tx_bytes(), old.tx_bytes(), seconds));
    rates->set_rx_packets_per_s(Rate(net.rx_packets(), old.rx_packets(), seconds));
    rates->set_tx_packets_per_s(Rate(net.tx_packets(), old.tx_packets(), seconds));
    rates->set_rx_drops_per_s(Rate(net.rx_drops(), old.rx_drops(), seconds));
    rates->set_tx_drops_per_s(Rate(net.tx_drops(), old.tx_drops(), seconds));
    drops_per_s += rates->rx_drops_per_s() + rates->tx_drops_per_s();
  }
  harm->set_net_drops_per_s(drops_per_s);
}

}  // namespace

absl::StatusOr<v1::TenantDetail> FleetState::GetTenant(absl::string_view host_id,
                                                       absl::string_view tenant,
                                                       uint32_t window_intervals) const {
  if (tenant.empty()) return absl::InvalidArgumentError("tenant id is empty");
  absl::StatusOr<uint32_t> window = ResolveWindow(window_intervals);
  if (!window.ok()) return window.status();
  std::vector<std::shared_ptr<Host>> hosts;
  {
    absl::ReaderMutexLock lock(&hosts_mu_);
    auto selected = SelectHosts(hosts_, host_id);
    if (!selected.ok()) return selected.status();
    hosts = std::move(*selected);
  }
  // Exact ids first; names only when no id matched anywhere.
  std::vector<std::pair<std::shared_ptr<Host>, std::string>> by_id, by_name;
  for (const auto& host : hosts) {
    absl::MutexLock lock(&host->mu);
    if (host->inventory.contains(tenant) || host->series.contains(tenant)) {
      by_id.emplace_back(host, std::string(tenant));
    }
    for (const auto& [id, entry] : host->inventory) {
      if (entry.tenant.name() == tenant && id != tenant) by_name.emplace_back(host, id);
    }
  }
  const auto& matches = by_id.empty() ? by_name : by_id;
  if (matches.empty()) {
    return absl::NotFoundError(absl::StrCat("tenant '", tenant, "' is not known",
                                            host_id.empty() ? "" : " on host ", host_id));
  }
  if (matches.size() > 1) {
    std::vector<std::string> where;
    for (const auto& [host, id] : matches) {
      absl::MutexLock lock(&host->mu);
      where.push_back(absl::StrCat(host->hello.host_id(), "/", id));
    }
    return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant,
                                                   "' is ambiguous: ", absl::StrJoin(where, ", "),
                                                   "; give the host or the full id"));
  }
  const auto& [host, id] = matches.front();
  v1::TenantDetail detail;
  absl::MutexLock lock(&host->mu);
  v1::TenantInfo* info = detail.mutable_info();
  info->set_host_id(host->hello.host_id());
  auto entry = host->inventory.find(id);
  if (entry != host->inventory.end()) {
    *info->mutable_tenant() = entry->second.tenant;
    info->set_first_seen_unix_ns(entry->second.first_seen_unix_ns);
  } else {
    info->mutable_tenant()->set_id(id);
  }
  auto series = host->series.find(id);
  FillRow(
      *host, id,
      series == host->series.end() ? TenantRates{} : ComputeRates(*host, series->second, *window),
      v1::RESOURCE_CPU, detail.mutable_usage());
  // Detail needs the tenant in the newest report and in an older one.
  if (host->recent.size() < 2) return detail;
  const v1::UsageReport& newest = *host->recent.back();
  const v1::TenantCounters* to = FindCounters(newest, id);
  if (to == nullptr) return detail;
  const size_t back = std::min<size_t>(*window, host->recent.size() - 1);
  for (size_t k = back; k > 0; --k) {
    const v1::UsageReport& older = *host->recent[host->recent.size() - 1 - k];
    const v1::TenantCounters* from = FindCounters(older, id);
    if (from == nullptr || newest.monotonic_ns() <= older.monotonic_ns()) continue;
    const double seconds = static_cast<double>(newest.monotonic_ns() - older.monotonic_ns()) / 1e9;
    detail.set_window_s(seconds);
    FillHarm(*to, *from, seconds, &detail);
    break;
  }
  return detail;
}

absl::StatusOr<CpuRate> FleetState::TenantCpu(absl::string_view host_id,
                                              absl::string_view tenant_id,
                                              uint32_t window_intervals) const {
  absl::StatusOr<uint32_t> window = ResolveWindow(window_intervals);
  if (!window.ok()) return window.status();
  std::shared_ptr<Host> host = FindHost(host_id);
  if (host == nullptr) return absl::NotFoundError(absl::StrCat("host ", host_id, " is not known"));
  absl::MutexLock lock(&host->mu);
  auto it = host->series.find(tenant_id);
  if (it == host->series.end()) {
    if (host->inventory.contains(tenant_id)) return CpuRate{};
    return absl::NotFoundError(
        absl::StrCat("tenant ", tenant_id, " is not known on host ", host_id));
  }
  return ComputeCpu(*host, it->second, *window);
}

absl::StatusOr<HostInterval> FleetState::LastInterval(absl::string_view host_id) const {
  std::shared_ptr<Host> host = FindHost(host_id);
  if (!host) return absl::NotFoundError(absl::StrCat("host '", host_id, "' is not known"));
  absl::MutexLock lock(&host->mu);
  if (host->recent.size() < 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("host '", host_id, "' has fewer than two reports in this epoch"));
  }
  const v1::UsageReport& newest = *host->recent.back();
  const v1::UsageReport& older = *host->recent[host->recent.size() - 2];
  HostInterval interval;
  interval.host_id = host->hello.host_id();
  interval.seq = newest.seq();
  interval.capacity = host->hello.capacity();
  if (newest.monotonic_ns() > older.monotonic_ns()) {
    interval.seconds = static_cast<double>(newest.monotonic_ns() - older.monotonic_ns()) / 1e9;
  }
  // Both reports are consecutive in one epoch: index of `older` -> newest.
  absl::flat_hash_map<absl::string_view, const v1::TenantCounters*> before;
  for (const auto& t : older.tenants()) before[t.tenant_id()] = &t;
  for (const auto& counters : newest.tenants()) {
    TenantInterval t;
    t.id = counters.tenant_id();
    auto entry = host->inventory.find(t.id);
    if (entry != host->inventory.end()) {
      t.name = entry->second.tenant.name();
      t.weight = entry->second.tenant.weight() > 0 ? entry->second.tenant.weight() : 1.0;
    }
    auto series = host->series.find(t.id);
    if (series != host->series.end()) t.rates = ComputeRates(*host, series->second, 1);
    auto from = before.find(counters.tenant_id());
    if (from != before.end() && interval.seconds > 0) {
      v1::TenantDetail scratch;
      FillHarm(counters, *from->second, interval.seconds, &scratch);
      t.harm = std::move(*scratch.mutable_harm());
      t.has_harm = true;
    }
    interval.tenants.push_back(std::move(t));
  }
  std::sort(interval.tenants.begin(), interval.tenants.end(),
            [](const TenantInterval& a, const TenantInterval& b) { return a.id < b.id; });
  return interval;
}

std::vector<std::string> FleetState::HostIds() const {
  absl::ReaderMutexLock lock(&hosts_mu_);
  std::vector<std::string> ids;
  ids.reserve(hosts_.size());
  for (const auto& [id, host] : hosts_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

size_t FleetState::host_count() const {
  absl::ReaderMutexLock lock(&hosts_mu_);
  return hosts_.size();
}

}  // namespace fairwatch::controller
