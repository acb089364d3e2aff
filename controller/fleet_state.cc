#include "controller/fleet_state.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/histogram.h"
#include "common/log.h"
#include "controller/disk_capacity.h"
#include "controller/uplink_capacity.h"

namespace fairwatch::controller {
namespace {

struct ReportSlot {
  uint64_t seq = 0;
  uint64_t monotonic_ns = 0;
  int64_t timestamp_unix_ns = 0;
  bool runq_traced_present = false;  // HostCounters.runq_traced_ns
  uint64_t runq_traced_ns = 0;
};

// A tenant's usage counters in one report, summed over devices and interfaces.
// No member initializers: the ring below is allocated without being written.
struct Sample {
  uint64_t cpu_usage_ns;
  uint64_t disk_read_bytes;
  uint64_t disk_write_bytes;
  uint64_t disk_read_ops;
  uint64_t disk_write_ops;
  uint64_t net_rx_bytes;
  uint64_t net_tx_bytes;
  uint64_t net_rx_packets;
  uint64_t net_tx_packets;
  uint64_t net_drops;

  static Sample From(const v1::TenantCounters& c) {
    Sample s{};
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

// Copies `from` into `to`, reusing its capacity and leaving out trailing
// zero buckets (a delta treats missing buckets as zero).
void AssignBuckets(const google::protobuf::RepeatedField<uint64_t>& from,
                   std::vector<uint64_t>* to) {
  int n = from.size();
  while (n > 0 && from.Get(n - 1) == 0) --n;
  to->assign(from.begin(), from.begin() + n);
}

// What the harm over an interval needs from the report that opens it. Kept
// per tenant, so harm is computed as the report that closes the interval is
// ingested, without keeping that report whole.
struct HarmCounters {
  struct Disk {
    uint32_t major = 0;
    uint32_t minor = 0;
    std::vector<uint64_t> latency;
  };
  struct Net {
    std::string interface;
    uint64_t rx_drops = 0;
    uint64_t tx_drops = 0;
  };
  uint64_t runq_wait_ns = 0;
  uint64_t runq_waits = 0;
  std::vector<uint64_t> runq_hist;
  bool cpu_psi_present = false;
  uint64_t cpu_psi_some_us = 0;
  bool io_psi_present = false;
  uint64_t io_psi_some_us = 0;
  uint64_t throttled_ns = 0;
  uint64_t nr_throttled = 0;
  uint64_t nr_periods = 0;
  std::vector<Disk> disks;
  std::vector<Net> net;
  bool tcp_present = false;
  uint64_t tcp_retransmits = 0;
  struct Cause {
    v1::RunqWaitCause::Holder holder = v1::RunqWaitCause::HOLDER_UNSPECIFIED;
    std::string tenant_id;
    uint64_t wait_ns = 0;
  };
  std::vector<Cause> runq_causes;

  void Assign(const v1::TenantCounters& c) {
    runq_wait_ns = c.cpu().runq_wait_ns();
    runq_waits = c.cpu().runq_waits();
    AssignBuckets(c.cpu().runq_wait_hist().buckets(), &runq_hist);
    cpu_psi_present = c.cpu_pressure().present();
    cpu_psi_some_us = c.cpu_pressure().some_total_us();
    io_psi_present = c.io_pressure().present();
    io_psi_some_us = c.io_pressure().some_total_us();
    throttled_ns = c.cpu().throttled_ns();
    nr_throttled = c.cpu().nr_throttled();
    nr_periods = c.cpu().nr_periods();
    disks.resize(c.disks_size());
    for (int i = 0; i < c.disks_size(); ++i) {
      const v1::DiskCounters& d = c.disks(i);
      disks[i].major = d.device().major();
      disks[i].minor = d.device().minor();
      AssignBuckets(d.latency().buckets(), &disks[i].latency);
    }
    tcp_present = c.tcp().present();
    tcp_retransmits = c.tcp().retransmitted_segments();
    runq_causes.resize(c.cpu().runq_wait_by_size());
    for (int i = 0; i < c.cpu().runq_wait_by_size(); ++i) {
      const v1::RunqWaitCause& w = c.cpu().runq_wait_by(i);
      runq_causes[i].holder = w.holder();
      runq_causes[i].tenant_id = w.tenant_id();
      runq_causes[i].wait_ns = w.wait_ns();
    }
    net.resize(c.net_size());
    for (int i = 0; i < c.net_size(); ++i) {
      const v1::NetCounters& n = c.net(i);
      net[i].interface = n.interface();
      net[i].rx_drops = n.rx_drops();
      net[i].tx_drops = n.tx_drops();
    }
  }
};

// The samples of every tenant of a host in one block: a row per report slot
// (report index i in row i % rows, as in Host::reports) and a column per
// tenant. A report writes one contiguous row, so the block's pages are
// touched a few at a time as reports arrive instead of one page per tenant
// at its first report (page faults are what a fleet's first reports cost).
class SampleRing {
 public:
  explicit SampleRing(uint32_t rows) : rows_(rows) {}

  // A column for a new tenant; `expected` sizes the block when it is made.
  uint32_t Acquire(size_t expected) {
    if (!free_.empty()) {
      const uint32_t column = free_.back();
      free_.pop_back();
      return column;
    }
    if (used_ == columns_) {
      Widen(columns_ == 0 ? std::max<size_t>(expected, 1)
                          : columns_ + std::max<size_t>(columns_ / 4, 4));
    }
    return used_++;
  }
  void Release(uint32_t column) { free_.push_back(column); }
  // Every column free again; the block is kept.
  void Clear() {
    free_.clear();
    used_ = 0;
  }
  Sample& at(uint64_t index, uint32_t column) {
    written_ = std::max(written_, index);
    return block_[(index % rows_) * columns_ + column];
  }
  const Sample& at(uint64_t index, uint32_t column) const {
    return block_[(index % rows_) * columns_ + column];
  }

 private:
  void Widen(size_t columns) {
    auto block = std::make_unique_for_overwrite<Sample[]>(rows_ * columns);
    // Only rows written so far: copying the others would touch their pages.
    const uint64_t rows = std::min<uint64_t>(rows_, written_ + 1);
    for (uint64_t r = 0; r < rows && columns_ > 0; ++r) {
      std::copy_n(&block_[r * columns_], columns_, &block[r * columns]);
    }
    block_ = std::move(block);
    columns_ = static_cast<uint32_t>(columns);
  }

  const uint64_t rows_;
  uint32_t columns_ = 0;
  uint32_t used_ = 0;     // columns handed out at least once
  uint64_t written_ = 0;  // highest report index written
  std::vector<uint32_t> free_;
  std::unique_ptr<Sample[]> block_;
};

// One tenant's counters: its column of Host::ring. Values are only
// meaningful for report indices in [first_index, last_index].
struct TenantSeries {
  uint32_t column = 0;
  uint64_t first_index = 0;  // start of the current unbroken, non-decreasing run
  uint64_t last_index = 0;   // newest report index that carried this tenant
  HarmCounters counters;     // of report last_index
  // Over (last_index - 1, last_index], when both reports carried the tenant
  // and are in Host::recent.
  v1::HarmSignals harm;
  bool has_harm = false;
};

struct InventoryEntry {
  v1::Tenant tenant;
  int64_t first_seen_unix_ns = 0;
};

}  // namespace

struct FleetState::Host {
  explicit Host(uint32_t history) : reports(history), ring(history) {}

  absl::Mutex mu;
  v1::Hello hello ABSL_GUARDED_BY(mu);
  uint64_t connection_id ABSL_GUARDED_BY(mu) = 0;
  bool connected ABSL_GUARDED_BY(mu) = false;
  int64_t first_seen_unix_ns ABSL_GUARDED_BY(mu) = 0;
  absl::Time disconnected_at ABSL_GUARDED_BY(mu);
  // Report indices count reports ingested in the current epoch, from 1.
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;
  uint64_t first_seq ABSL_GUARDED_BY(mu) = 0;     // the first received in this epoch
  uint64_t missing_seqs ABSL_GUARDED_BY(mu) = 0;  // skipped seqs since first_seq
  uint64_t report_count ABSL_GUARDED_BY(mu) = 0;
  // Controller clock, unlike the reports' timestamps: kept across epochs.
  absl::Time last_report_ingested ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  // Rates never reach back before this index (set when the monotonic clock
  // went backwards inside an epoch).
  uint64_t floor_index ABSL_GUARDED_BY(mu) = 1;
  std::vector<ReportSlot> reports ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, TenantSeries> series ABSL_GUARDED_BY(mu);
  SampleRing ring ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, InventoryEntry> inventory ABSL_GUARDED_BY(mu);
  uint64_t inventory_generation ABSL_GUARDED_BY(mu) = 0;  // bumped by every change
  // The newest interval's tenants as LastInterval returns them, by id, with
  // names and weights as of inventory `interval_generation`. Made at ingest,
  // where the data is at hand and streams run in parallel, rather than by the
  // one thread that judges every host.
  std::vector<TenantInterval> interval ABSL_GUARDED_BY(mu);
  uint64_t interval_generation ABSL_GUARDED_BY(mu) = 0;
  // The last window_intervals + 1 reports in wire form, for per-device
  // detail; oldest first, consecutive, all of the current epoch. Serialized
  // reports take several times less memory than parsed ones, and only
  // operator queries read them.
  std::deque<std::string> recent ABSL_GUARDED_BY(mu);
  // Disk capacity learned from the devices' own counters, uplink capacity
  // from what the uplinks sent while saturated (where not configured).
  DiskCapacityLearner disks ABSL_GUARDED_BY(mu);
  UplinkCapacityLearner uplinks ABSL_GUARDED_BY(mu);
};

namespace {

using Host = FleetState::Host;

// The host's capacity as known now: what its agent announced, with the disk
// and uplink capacity nobody configured (nor a driver reported) filled in
// from what the disks and uplinks delivered.
v1::HostCapacity CapacityNow(const Host& host) ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  v1::HostCapacity capacity = host.hello.capacity();
  host.disks.Fill(&capacity);
  host.uplinks.Fill(&capacity);
  return capacity;
}

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

// newer - older as a rate, 0 when the counter restarted.
double Rate(uint64_t newer, uint64_t older, double seconds) {
  return newer >= older && seconds > 0 ? static_cast<double>(newer - older) / seconds : 0;
}

// Histograms on the stack: the agent sends 34 buckets.
using Buckets = absl::InlinedVector<uint64_t, 48>;

// Adds later - earlier per bucket to `out`, as Log2Delta computes it.
void AddDelta(const google::protobuf::RepeatedField<uint64_t>& later,
              const std::vector<uint64_t>& earlier, Buckets* out) {
  const size_t n = static_cast<size_t>(later.size());
  if (out->size() < n) out->resize(n);
  const uint64_t* now = later.data();
  uint64_t* sum = out->data();
  const size_t common = std::min(n, earlier.size());
  for (size_t i = 0; i < common; ++i) {
    sum[i] += now[i] >= earlier[i] ? now[i] - earlier[i] : now[i];
  }
  for (size_t i = common; i < n; ++i) sum[i] += now[i];
}

// Log2Quantile at 0.5 and 0.99 in one pass, with the same arithmetic.
void Log2P50P99(const Buckets& buckets, double* p50, double* p99) {
  *p50 = 0;
  *p99 = 0;
  const uint64_t total = Log2Count(buckets);
  if (total == 0) return;
  const double ranks[2] = {std::max(0.5 * static_cast<double>(total), 1.0),
                           std::max(0.99 * static_cast<double>(total), 1.0)};
  double* out[2] = {p50, p99};
  size_t next = 0;
  double seen = 0;
  for (size_t i = 0; i < buckets.size() && next < 2; ++i) {
    if (buckets[i] == 0) continue;
    const double count = static_cast<double>(buckets[i]);
    while (next < 2 && seen + count >= ranks[next]) {
      const double lower = i == 0 ? 0.0 : std::ldexp(1.0, static_cast<int>(i));
      const double upper = std::ldexp(1.0, static_cast<int>(i) + 1);
      *out[next] = lower + (upper - lower) * (ranks[next] - seen) / count;
      ++next;
    }
    seen += count;
  }
}

// Who held the CPU while the tenant waited, per second, over the interval.
// A cause new since the interval began counts from zero (a pair seen for the
// first time, or one whose slot changed hands and started again).
void ComputeWaitCauses(const v1::CpuCounters& to, const HarmCounters& from, double seconds,
                       v1::HarmSignals* harm) {
  harm->set_runq_attributed(to.runq_wait_attributed());
  harm->set_runq_self_wait_ns_per_s(0);
  harm->set_runq_host_wait_ns_per_s(0);
  harm->set_runq_idle_wait_ns_per_s(0);
  harm->clear_runq_wait_by_tenant();
  for (const v1::RunqWaitCause& c : to.runq_wait_by()) {
    uint64_t before = 0;
    for (const HarmCounters::Cause& f : from.runq_causes) {
      if (f.holder == c.holder() && f.tenant_id == c.tenant_id()) before = f.wait_ns;
    }
    const double rate = Rate(c.wait_ns(), before <= c.wait_ns() ? before : 0, seconds);
    if (rate <= 0) continue;
    switch (c.holder()) {
      case v1::RunqWaitCause::HOLDER_SELF:
        harm->set_runq_self_wait_ns_per_s(harm->runq_self_wait_ns_per_s() + rate);
        break;
      case v1::RunqWaitCause::HOLDER_IDLE:
        harm->set_runq_idle_wait_ns_per_s(harm->runq_idle_wait_ns_per_s() + rate);
        break;
      case v1::RunqWaitCause::HOLDER_TENANT: {
        v1::TenantWait* w = harm->add_runq_wait_by_tenant();
        w->set_tenant_id(c.tenant_id());
        w->set_wait_ns_per_s(rate);
        break;
      }
      default:
        harm->set_runq_host_wait_ns_per_s(harm->runq_host_wait_ns_per_s() + rate);
    }
  }
}

// An interval's run-queue signals are judged only when the programs were
// attached for at least this share of it (agent/runq_gate.h): a shorter
// window's rates and percentiles rest on too few waits.
constexpr double kMinRunqTracedShare = 0.25;

// How much of an interval of `seconds` the run-queue programs were attached,
// from the host's cumulative traced time at its two ends; an agent that does
// not say traced all of it.
double RunqTracedSeconds(bool to_present, uint64_t to_ns, bool from_present, uint64_t from_ns,
                         double seconds) {
  if (!to_present || !from_present) return seconds;
  if (to_ns < from_ns) return 0;  // a new run of the agent: nothing known
  return std::min(seconds, static_cast<double>(to_ns - from_ns) / 1e9);
}

double RunqTracedSeconds(const v1::HostCounters& to, const v1::HostCounters& from, double seconds) {
  return RunqTracedSeconds(to.has_runq_traced_ns(), to.runq_traced_ns(), from.has_runq_traced_ns(),
                           from.runq_traced_ns(), seconds);
}

// The harm signals of a tenant over an interval from its counters at both
// ends; the run-queue ones over the `runq_seconds` of it that were traced.
// Per-device rates are left to FillDeviceRates: the engine needs none.
void ComputeHarm(const v1::TenantCounters& to, const HarmCounters& from, double seconds,
                 double runq_seconds, v1::HarmSignals* harm) {
  const bool traced = runq_seconds > 0 && runq_seconds >= kMinRunqTracedShare * seconds;
  harm->set_runq_untraced(!traced);
  double p50 = 0, p99 = 0;
  if (traced) {
    Buckets runq;
    AddDelta(to.cpu().runq_wait_hist().buckets(), from.runq_hist, &runq);
    Log2P50P99(runq, &p50, &p99);
  }
  harm->set_runq_wait_p50_ns(p50);
  harm->set_runq_wait_p99_ns(p99);
  harm->set_runq_wait_ns_per_s(
      traced ? Rate(to.cpu().runq_wait_ns(), from.runq_wait_ns, runq_seconds) : 0);
  harm->set_runq_waits_per_s(traced ? Rate(to.cpu().runq_waits(), from.runq_waits, runq_seconds)
                                    : 0);
  harm->set_cpu_psi_present(to.cpu_pressure().present());
  harm->set_cpu_psi_some_fraction(
      to.cpu_pressure().present() && from.cpu_psi_present
          ? Rate(to.cpu_pressure().some_total_us(), from.cpu_psi_some_us, seconds) / 1e6
          : 0);
  harm->set_io_psi_present(to.io_pressure().present());
  harm->set_io_psi_some_fraction(
      to.io_pressure().present() && from.io_psi_present
          ? Rate(to.io_pressure().some_total_us(), from.io_psi_some_us, seconds) / 1e6
          : 0);
  harm->set_throttled_ns_per_s(Rate(to.cpu().throttled_ns(), from.throttled_ns, seconds));
  harm->set_throttled_periods_fraction(
      to.cpu().nr_periods() > from.nr_periods && to.cpu().nr_throttled() >= from.nr_throttled
          ? static_cast<double>(to.cpu().nr_throttled() - from.nr_throttled) /
                static_cast<double>(to.cpu().nr_periods() - from.nr_periods)
          : 0);

  static const std::vector<uint64_t> kNoBuckets;
  Buckets io_latency;
  for (const auto& disk : to.disks()) {
    const HarmCounters::Disk* before = nullptr;
    for (const auto& d : from.disks) {
      if (d.major == disk.device().major() && d.minor == disk.device().minor()) before = &d;
    }
    AddDelta(disk.latency().buckets(), before ? before->latency : kNoBuckets, &io_latency);
  }
  Log2P50P99(io_latency, &p50, &p99);
  harm->set_io_latency_p50_ns(p50);
  harm->set_io_latency_p99_ns(p99);

  double drops_per_s = 0;
  for (const auto& net : to.net()) {
    const HarmCounters::Net* before = nullptr;
    for (const auto& n : from.net) {
      if (n.interface == net.interface()) before = &n;
    }
    drops_per_s += Rate(net.rx_drops(), before ? before->rx_drops : 0, seconds) +
                   Rate(net.tx_drops(), before ? before->tx_drops : 0, seconds);
  }
  harm->set_net_drops_per_s(drops_per_s);
  harm->set_tcp_present(to.tcp().present());
  harm->set_tcp_retransmits_per_s(
      to.tcp().present() && from.tcp_present
          ? Rate(to.tcp().retransmitted_segments(), from.tcp_retransmits, seconds)
          : 0);
  if (traced) {
    ComputeWaitCauses(to.cpu(), from, runq_seconds, harm);
  } else {
    ComputeWaitCauses(v1::CpuCounters(), from, seconds, harm);  // all cleared
  }
}

TenantRates ComputeRates(const FleetState::Host& host, const TenantSeries& series, uint32_t window)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  TenantRates rates;
  const uint64_t newest = host.report_count;
  if (newest == 0 || series.last_index != newest) return rates;
  const size_t history = host.reports.size();
  const Sample& to_sample = host.ring.at(newest, series.column);
  rates.cpu_usage_ns = to_sample.cpu_usage_ns;
  uint64_t start = newest > window ? newest - window : 1;
  start = std::max({start, series.first_index, host.floor_index});
  if (start >= newest) return rates;
  const ReportSlot& from = host.reports[start % history];
  const ReportSlot& to = host.reports[newest % history];
  if (to.monotonic_ns <= from.monotonic_ns) return rates;
  const Sample& from_sample = host.ring.at(start, series.column);
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
  *info->mutable_capacity() = CapacityNow(host);
  info->set_interval_ms(hello.interval_ms());
  info->set_connected(host.connected);
  info->set_first_seen_unix_ns(host.first_seen_unix_ns);
  info->set_last_report_seq(host.last_seq);
  info->set_first_report_seq(host.first_seq);
  info->set_reports_missing(host.missing_seqs);
  if (host.report_count > 0) {
    info->set_last_report_unix_ns(
        host.reports[host.report_count % host.reports.size()].timestamp_unix_ns);
  }
  info->set_tenant_count(static_cast<uint32_t>(host.inventory.size()));
  double cores = 0;
  for (const auto& [id, series] : host.series) cores += ComputeCpu(host, series, window).cores;
  info->set_cpu_used_cores(cores);
}

// A tenant's name and weight from the inventory (none and 1 when not listed).
void NameAndWeight(const FleetState::Host& host, TenantInterval* t)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  auto entry = host.inventory.find(t->id);
  if (entry == host.inventory.end()) {
    t->name.clear();
    t->weight = 1.0;
    return;
  }
  t->name = entry->second.tenant.name();
  t->weight = entry->second.tenant.weight() > 0 ? entry->second.tenant.weight() : 1.0;
}

// Fills host.interval from the tenants in report `newest`, reusing its
// strings; names and weights are looked up only for tenants that moved or
// when the inventory changed.
void BuildInterval(FleetState::Host& host, uint64_t newest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  thread_local std::vector<std::pair<const std::string*, const TenantSeries*>> present;
  present.clear();
  for (const auto& [id, series] : host.series) {
    if (series.last_index == newest) present.emplace_back(&id, &series);
  }
  std::sort(present.begin(), present.end(),
            [](const auto& a, const auto& b) { return *a.first < *b.first; });
  const bool names_current = host.interval_generation == host.inventory_generation;
  const size_t before = host.interval.size();
  host.interval.resize(present.size());
  for (size_t i = 0; i < present.size(); ++i) {
    TenantInterval& t = host.interval[i];
    const TenantSeries& series = *present[i].second;
    if (!names_current || i >= before || t.id != *present[i].first) {
      t.id = *present[i].first;
      NameAndWeight(host, &t);
    }
    t.rates = ComputeRates(host, series, 1);
    t.has_harm = series.has_harm;
    if (series.has_harm) {
      t.harm = series.harm;
    } else {
      t.harm.Clear();
    }
  }
  host.interval_generation = host.inventory_generation;
}

void ResetHistory(FleetState::Host& host) ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
  host.interval.clear();
  host.last_seq = 0;
  host.first_seq = 0;
  host.missing_seqs = 0;
  host.report_count = 0;
  host.floor_index = 1;
  std::fill(host.reports.begin(), host.reports.end(), ReportSlot{});
  host.series.clear();
  host.ring.Clear();
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
  ++host->inventory_generation;
  return absl::OkStatus();
}

absl::StatusOr<ReportOutcome> FleetState::IngestReport(absl::string_view host_id,
                                                       const v1::UsageReport& report) {
  return Ingest(host_id, report, nullptr);
}

absl::StatusOr<ReportOutcome> FleetState::IngestReport(absl::string_view host_id,
                                                       const v1::UsageReport& report,
                                                       std::string serialized) {
  return Ingest(host_id, report, &serialized);
}

absl::StatusOr<ReportOutcome> FleetState::Ingest(absl::string_view host_id,
                                                 const v1::UsageReport& report,
                                                 std::string* serialized) {
  if (report.seq() == 0) {
    ingest_.reports_rejected.fetch_add(1, std::memory_order_relaxed);
    return absl::InvalidArgumentError(
        absl::StrCat("report from host ", host_id, " has seq 0; seqs start at 1"));
  }
  for (int i = 0; i < report.tenants_size(); ++i) {
    if (report.tenants(i).tenant_id().empty()) {
      ingest_.reports_rejected.fetch_add(1, std::memory_order_relaxed);
      return absl::InvalidArgumentError(absl::StrCat("report seq ", report.seq(), " from host ",
                                                     host_id, ": tenant #", i,
                                                     " has an empty tenant_id"));
    }
  }
  std::shared_ptr<Host> host = FindHost(host_id);
  if (host == nullptr) {
    ingest_.reports_rejected.fetch_add(1, std::memory_order_relaxed);
    return absl::FailedPreconditionError(absl::StrCat(
        "report seq ", report.seq(), " for unknown host ", host_id, " (no Hello yet)"));
  }
  absl::MutexLock lock(&host->mu);
  if (report.seq() <= host->last_seq) {
    ingest_.reports_duplicate.fetch_add(1, std::memory_order_relaxed);
    return ReportOutcome::kDuplicate;
  }

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
  // Harm needs the previous report in `recent`: consecutive, clock moving on.
  const bool has_previous = !host->recent.empty();
  const double seconds =
      has_previous ? static_cast<double>(report.monotonic_ns() -
                                         host->reports[(index - 1) % history].monotonic_ns) /
                         1e9
                   : 0;
  double runq_seconds = 0;
  if (has_previous) {
    const ReportSlot& previous = host->reports[(index - 1) % history];
    runq_seconds =
        RunqTracedSeconds(report.host().has_runq_traced_ns(), report.host().runq_traced_ns(),
                          previous.runq_traced_present, previous.runq_traced_ns, seconds);
  }
  host->reports[index % history] =
      ReportSlot{report.seq(), report.monotonic_ns(), report.timestamp_unix_ns(),
                 report.host().has_runq_traced_ns(), report.host().runq_traced_ns()};
  host->report_count = index;
  host->disks.Observe(report.host().disks(), report.monotonic_ns());
  host->uplinks.Observe(report.host().net(), report.monotonic_ns());
  host->last_report_ingested = absl::Now();
  if (host->last_seq == 0) {
    host->first_seq = report.seq();
  } else {
    host->missing_seqs += report.seq() - host->last_seq - 1;
  }
  host->last_seq = report.seq();

  uint64_t samples = 0;
  for (const v1::TenantCounters& counters : report.tenants()) {
    auto [it, inserted] = host->series.try_emplace(counters.tenant_id());
    TenantSeries& series = it->second;
    const Sample sample = Sample::From(counters);
    if (inserted) {
      series.column = host->ring.Acquire(report.tenants_size());
      series.first_index = index;
    } else if (series.last_index == index) {
      continue;  // listed twice in one report: the first entry counts
    } else if (series.last_index + 1 != index ||
               !sample.Follows(host->ring.at(index - 1, series.column))) {
      // Missing from a report, or a counter went backwards (cgroup
      // recreated): the old values say nothing about the new run.
      series.first_index = index;
    }
    series.has_harm = has_previous && !inserted && series.last_index + 1 == index;
    if (series.has_harm) {
      ComputeHarm(counters, series.counters, seconds, runq_seconds, &series.harm);
    }
    series.counters.Assign(counters);
    host->ring.at(index, series.column) = sample;
    series.last_index = index;
    ++samples;
  }
  host->recent.push_back(serialized != nullptr ? std::move(*serialized)
                                               : report.SerializeAsString());
  while (host->recent.size() > options_.window_intervals + 1) host->recent.pop_front();
  // Once per ring turn, forget tenants that left the whole history.
  if (index % history == 0) {
    absl::erase_if(host->series, [&](const auto& entry) {
      if (entry.second.last_index + history > index) return false;
      host->ring.Release(entry.second.column);
      return true;
    });
  }
  BuildInterval(*host, index);
  ingest_.reports_ingested.fetch_add(1, std::memory_order_relaxed);
  ingest_.tenant_samples_ingested.fetch_add(samples, std::memory_order_relaxed);
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

// `capacity`: the host's for `resource` (CapacityNow), worked out once per host.
void FillRow(const FleetState::Host& host, const std::string& tenant_id, const TenantRates& rates,
             v1::Resource resource, double capacity, v1::TopRow* row)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(host.mu) {
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
    const double capacity = ResourceCapacity(CapacityNow(*host), resource);
    for (const auto& [id, series] : host->series) {
      if (series.last_index != host->report_count) continue;
      FillRow(*host, id, ComputeRates(*host, series, *window), resource, capacity,
              &rows.emplace_back());
    }
    for (const auto& [id, entry] : host->inventory) {
      auto series = host->series.find(id);
      if (series != host->series.end() && series->second.last_index == host->report_count) {
        continue;
      }
      FillRow(*host, id, TenantRates{}, resource, capacity, &rows.emplace_back());
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

// Per-device and per-interface rates for the operator's tenant detail.
void FillDeviceRates(const v1::TenantCounters& to, const v1::TenantCounters& from, double seconds,
                     v1::TenantDetail* detail) {
  for (const auto& disk : to.disks()) {
    const v1::DiskCounters* before = nullptr;
    for (const auto& d : from.disks()) {
      if (d.device().major() == disk.device().major() &&
          d.device().minor() == disk.device().minor()) {
        before = &d;
      }
    }
    const v1::DiskCounters& old = before ? *before : v1::DiskCounters::default_instance();
    const v1::Log2Histogram latency = Log2Delta(disk.latency(), old.latency());
    v1::DiskDeviceRates* rates = detail->add_disks();
    *rates->mutable_device() = disk.device();
    rates->set_read_bytes_per_s(Rate(disk.read_bytes(), old.read_bytes(), seconds));
    rates->set_write_bytes_per_s(Rate(disk.write_bytes(), old.write_bytes(), seconds));
    rates->set_read_ops_per_s(Rate(disk.read_ops(), old.read_ops(), seconds));
    rates->set_write_ops_per_s(Rate(disk.write_ops(), old.write_ops(), seconds));
    rates->set_latency_p50_ns(Log2Quantile(latency, 0.5));
    rates->set_latency_p99_ns(Log2Quantile(latency, 0.99));
  }
  for (const auto& net : to.net()) {
    const v1::NetCounters* before = nullptr;
    for (const auto& n : from.net()) {
      if (n.interface() == net.interface()) before = &n;
    }
    const v1::NetCounters& old = before ? *before : v1::NetCounters::default_instance();
    v1::InterfaceRates* rates = detail->add_interfaces();
    rates->set_interface(net.interface());
    rates->set_rx_bytes_per_s(Rate(net.rx_bytes(), old.rx_bytes(), seconds));
    rates->set_tx_bytes_per_s(Rate(net.tx_bytes(), old.tx_bytes(), seconds));
    rates->set_rx_packets_per_s(Rate(net.rx_packets(), old.rx_packets(), seconds));
    rates->set_tx_packets_per_s(Rate(net.tx_packets(), old.tx_packets(), seconds));
    rates->set_rx_drops_per_s(Rate(net.rx_drops(), old.rx_drops(), seconds));
    rates->set_tx_drops_per_s(Rate(net.tx_drops(), old.tx_drops(), seconds));
  }
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
      v1::RESOURCE_CPU, host->hello.capacity().cpus(), detail.mutable_usage());
  // Detail needs the tenant in the newest report and in an older one.
  if (host->recent.size() < 2) return detail;
  v1::UsageReport newest;
  if (!newest.ParseFromString(host->recent.back())) return detail;  // held reports parse
  const v1::TenantCounters* to = FindCounters(newest, id);
  if (to == nullptr) return detail;
  const size_t back = std::min<size_t>(*window, host->recent.size() - 1);
  for (size_t k = back; k > 0; --k) {
    v1::UsageReport older;
    if (!older.ParseFromString(host->recent[host->recent.size() - 1 - k])) continue;
    const v1::TenantCounters* from = FindCounters(older, id);
    if (from == nullptr || newest.monotonic_ns() <= older.monotonic_ns()) continue;
    const double seconds = static_cast<double>(newest.monotonic_ns() - older.monotonic_ns()) / 1e9;
    detail.set_window_s(seconds);
    HarmCounters counters;
    counters.Assign(*from);
    ComputeHarm(*to, counters, seconds, RunqTracedSeconds(newest.host(), older.host(), seconds),
                detail.mutable_harm());
    FillDeviceRates(*to, *from, seconds, &detail);
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

uint64_t FleetState::LastReportSeq(absl::string_view host_id) const {
  std::shared_ptr<Host> host = FindHost(host_id);
  if (!host) return 0;
  absl::MutexLock lock(&host->mu);
  return host->last_seq;
}

absl::StatusOr<HostInterval> FleetState::LastInterval(absl::string_view host_id) const {
  std::shared_ptr<Host> host = FindHost(host_id);
  if (!host) return absl::NotFoundError(absl::StrCat("host '", host_id, "' is not known"));
  absl::MutexLock lock(&host->mu);
  if (host->recent.size() < 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("host '", host_id, "' has fewer than two reports in this epoch"));
  }
  // The two newest reports are consecutive, their monotonic clock moving on.
  const size_t history = host->reports.size();
  const uint64_t newest = host->report_count;
  const ReportSlot& to = host->reports[newest % history];
  const ReportSlot& from = host->reports[(newest - 1) % history];
  HostInterval interval;
  interval.host_id = host->hello.host_id();
  interval.seq = to.seq;
  interval.capacity = CapacityNow(*host);
  if (to.monotonic_ns > from.monotonic_ns) {
    interval.seconds = static_cast<double>(to.monotonic_ns - from.monotonic_ns) / 1e9;
  }
  interval.tenants = host->interval;
  if (host->interval_generation != host->inventory_generation) {
    for (TenantInterval& t : interval.tenants) NameAndWeight(*host, &t);
  }
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

std::vector<HostStatus> FleetState::HostStatuses() const {
  std::vector<std::shared_ptr<Host>> hosts;
  {
    absl::ReaderMutexLock lock(&hosts_mu_);
    hosts.reserve(hosts_.size());
    for (const auto& [id, host] : hosts_) hosts.push_back(host);
  }
  std::vector<HostStatus> statuses(hosts.size());
  for (size_t i = 0; i < hosts.size(); ++i) {
    absl::MutexLock lock(&hosts[i]->mu);
    statuses[i].host_id = hosts[i]->hello.host_id();
    statuses[i].connected = hosts[i]->connected;
    statuses[i].tenants = hosts[i]->inventory.size();
    statuses[i].last_report_ingested = hosts[i]->last_report_ingested;
  }
  std::sort(statuses.begin(), statuses.end(),
            [](const HostStatus& a, const HostStatus& b) { return a.host_id < b.host_id; });
  return statuses;
}

FleetIngestStats FleetState::ingest_stats() const {
  FleetIngestStats stats;
  stats.reports_ingested = ingest_.reports_ingested.load(std::memory_order_relaxed);
  stats.reports_duplicate = ingest_.reports_duplicate.load(std::memory_order_relaxed);
  stats.reports_rejected = ingest_.reports_rejected.load(std::memory_order_relaxed);
  stats.tenant_samples_ingested = ingest_.tenant_samples_ingested.load(std::memory_order_relaxed);
  return stats;
}

size_t FleetState::host_count() const {
  absl::ReaderMutexLock lock(&hosts_mu_);
  return hosts_.size();
}

}  // namespace fairwatch::controller
