#include "controller/fleet_state.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fairwatch::controller {
namespace {

struct ReportSlot {
  uint64_t seq = 0;
  uint64_t monotonic_ns = 0;
  int64_t timestamp_unix_ns = 0;
};

// One tenant's counters, aligned with Host::reports: report index i lives in
// slot i % history. Values are only meaningful in [first_index, last_index].
struct TenantSeries {
  std::vector<uint64_t> cpu_usage_ns;
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

CpuRate ComputeCpu(const FleetState::Host& host, const TenantSeries& series, uint32_t window)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  CpuRate rate;
  const uint64_t newest = host.report_count;
  if (newest == 0 || series.last_index != newest) return rate;
  const size_t history = host.reports.size();
  rate.usage_ns = series.cpu_usage_ns[newest % history];
  uint64_t start = newest > window ? newest - window : 1;
  start = std::max({start, series.first_index, host.floor_index});
  if (start >= newest) return rate;
  const ReportSlot& from = host.reports[start % history];
  const ReportSlot& to = host.reports[newest % history];
  if (to.monotonic_ns <= from.monotonic_ns) return rate;
  // Non-negative: a run only continues while the counter does not decrease.
  const uint64_t delta_usage_ns = rate.usage_ns - series.cpu_usage_ns[start % history];
  const double delta_ns = static_cast<double>(to.monotonic_ns - from.monotonic_ns);
  rate.cores = static_cast<double>(delta_usage_ns) / delta_ns;
  rate.window_s = delta_ns / 1e9;
  return rate;
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
  }
  host->reports[index % history] =
      ReportSlot{report.seq(), report.monotonic_ns(), report.timestamp_unix_ns()};
  host->report_count = index;
  host->last_seq = report.seq();

  for (const v1::TenantCounters& counters : report.tenants()) {
    auto [it, inserted] = host->series.try_emplace(counters.tenant_id());
    TenantSeries& series = it->second;
    const uint64_t usage_ns = counters.cpu().usage_ns();
    if (inserted) {
      series.cpu_usage_ns.resize(history);
      series.first_index = index;
    } else if (series.last_index == index) {
      continue;  // listed twice in one report: the first entry counts
    } else if (series.last_index + 1 != index ||
               usage_ns < series.cpu_usage_ns[(index - 1) % history]) {
      // Missing from a report, or its counter went backwards (cgroup
      // recreated): the old values say nothing about the new run.
      series.first_index = index;
    }
    series.cpu_usage_ns[index % history] = usage_ns;
    series.last_index = index;
  }
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

absl::StatusOr<std::vector<v1::TopRow>> FleetState::TopCpu(absl::string_view host_id,
                                                           uint32_t window_intervals) const {
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
    const uint32_t cpus = host->hello.capacity().cpus();
    auto add_row = [&](const std::string& tenant_id, const CpuRate& rate) {
      v1::TopRow& row = rows.emplace_back();
      row.set_host_id(host->hello.host_id());
      row.set_tenant_id(tenant_id);
      auto entry = host->inventory.find(tenant_id);
      if (entry != host->inventory.end()) row.set_tenant_name(entry->second.tenant.name());
      row.set_cpu_cores(rate.cores);
      row.set_cpu_host_fraction(cpus > 0 ? rate.cores / cpus : 0);
      row.set_window_s(rate.window_s);
      row.set_cpu_usage_ns(rate.usage_ns);
    };
    for (const auto& [id, series] : host->series) {
      if (series.last_index != host->report_count) continue;
      add_row(id, ComputeCpu(*host, series, *window));
    }
    for (const auto& [id, entry] : host->inventory) {
      auto series = host->series.find(id);
      if (series != host->series.end() && series->second.last_index == host->report_count) {
        continue;
      }
      add_row(id, CpuRate{});
    }
  }
  return rows;
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

size_t FleetState::host_count() const {
  absl::ReaderMutexLock lock(&hosts_mu_);
  return hosts_.size();
}

}  // namespace fairwatch::controller
