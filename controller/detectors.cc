#include "controller/detectors.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fairwatch::controller {
namespace {

std::string Ms(double ns) { return absl::StrFormat("%.1f ms", ns / 1e6); }
std::string Pct(double fraction) { return absl::StrFormat("%.0f%%", 100 * fraction); }
std::string Rate(double per_s) { return absl::StrFormat("%.1f/s", per_s); }

constexpr uint8_t kCpu = static_cast<uint8_t>(HarmGroup::kCpu);
constexpr uint8_t kDisk = static_cast<uint8_t>(HarmGroup::kDisk);
constexpr uint8_t kNetRx = static_cast<uint8_t>(HarmGroup::kNetRx);
constexpr uint8_t kNetTx = static_cast<uint8_t>(HarmGroup::kNetTx);

const std::array<HarmDetector, kHarmDetectorCount> kDetectors = {{
    {"runq_wait_p99", "run-queue wait p99",
     "99th percentile of the time its threads wait runnable for a CPU (eBPF sched probes)", kCpu,
     [](const v1::HarmSignals& s) { return s.runq_wait_p99_ns(); },
     [](const v1::HarmSignals& s) { return !s.runq_untraced(); },
     [](const HarmParams& p) { return p.runq_p99_floor_ns; }, Ms},
    {"cpu_psi", "CPU pressure",
     "share of wall time some of its tasks stalled for CPU (cgroup cpu.pressure)", kCpu,
     [](const v1::HarmSignals& s) { return s.cpu_psi_some_fraction(); },
     [](const v1::HarmSignals& s) { return s.cpu_psi_present(); },
     [](const HarmParams& p) { return p.psi_floor; }, Pct},
    {"io_latency_p99", "I/O latency p99",
     "99th percentile of its block requests' issue-to-completion time (eBPF block probes)", kDisk,
     [](const v1::HarmSignals& s) { return s.io_latency_p99_ns(); }, nullptr,
     [](const HarmParams& p) { return p.io_latency_p99_floor_ns; }, Ms},
    {"io_psi", "I/O pressure",
     "share of wall time some of its tasks stalled on I/O (cgroup io.pressure)", kDisk,
     [](const v1::HarmSignals& s) { return s.io_psi_some_fraction(); },
     [](const v1::HarmSignals& s) { return s.io_psi_present(); },
     [](const HarmParams& p) { return p.psi_floor; }, Pct},
    {"net_drops", "drops", "packets dropped on its interfaces per second (interface counters)",
     kNetRx | kNetTx, [](const v1::HarmSignals& s) { return s.net_drops_per_s(); }, nullptr,
     [](const HarmParams& p) { return p.drops_floor_per_s; }, Rate},
    {"tcp_retransmits", "TCP retransmits",
     "TCP segments its sockets retransmitted per second: losses on the path of what it sends "
     "(its network namespace's counters; tenants in a namespace of their own)",
     kNetTx, [](const v1::HarmSignals& s) { return s.tcp_retransmits_per_s(); },
     [](const v1::HarmSignals& s) { return s.tcp_present(); },
     [](const HarmParams& p) { return p.retransmits_floor_per_s; }, Rate},
}};

}  // namespace

std::optional<HarmGroup> HarmGroupOf(v1::Resource resource) {
  switch (resource) {
    case v1::RESOURCE_CPU:
      return HarmGroup::kCpu;
    case v1::RESOURCE_DISK_BANDWIDTH:
    case v1::RESOURCE_DISK_IOPS:
      return HarmGroup::kDisk;
    case v1::RESOURCE_NET_RX:
      return HarmGroup::kNetRx;
    case v1::RESOURCE_NET_TX:
      return HarmGroup::kNetTx;
    default:
      return std::nullopt;
  }
}

const std::array<HarmDetector, kHarmDetectorCount>& HarmDetectors() { return kDetectors; }

std::optional<size_t> FindHarmDetector(absl::string_view name) {
  for (size_t i = 0; i < kDetectors.size(); ++i) {
    if (kDetectors[i].name == name) return i;
  }
  return std::nullopt;
}

std::string HarmDetectorNames() {
  return absl::StrJoin(kDetectors, ", ", [](std::string* out, const HarmDetector& d) {
    out->append(d.name.data(), d.name.size());
  });
}

}  // namespace fairwatch::controller
