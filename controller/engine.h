// The fairness engine over the fleet: every new interval of a host is judged
// once per resource (controller/fairness.h), with each tenant's harm baseline
// and each (host, resource)'s N-of-M history kept here. Its findings are what
// cases are opened and updated from.
//
// Not thread-safe: one caller (the controller's evaluation loop) owns it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "controller/fairness.h"
#include "controller/fleet_state.h"

namespace fairwatch::controller {

inline constexpr v1::Resource kJudgedResources[] = {v1::RESOURCE_CPU, v1::RESOURCE_DISK_BANDWIDTH,
                                                    v1::RESOURCE_DISK_IOPS, v1::RESOURCE_NET_RX,
                                                    v1::RESOURCE_NET_TX};

struct HarmedNeighbour {
  std::string id;
  std::vector<std::string> evidence;
  // The share of its waiting the offender caused; `measured`: who held the
  // CPU while it waited (the kernel's answer), else the offender's part of
  // the resource's use.
  double caused = 0;
  bool measured = false;
};

// An offender on one resource of one host, with the evidence a case keeps.
struct Finding {
  std::string host_id;
  uint64_t seq = 0;  // the report that closed the interval
  v1::Resource resource = v1::RESOURCE_UNSPECIFIED;
  Offender offender;
  double capacity = 0;
  double total_usage = 0;
  bool contended = false;
  std::vector<HarmedNeighbour> harmed;
};

// One resource of one host in one interval: every tenant's shares and flags.
struct ResourceVerdict {
  v1::Resource resource = v1::RESOURCE_UNSPECIFIED;
  IntervalJudgement judgement;
};

// What one interval of one host showed.
struct Evaluation {
  std::string host_id;
  uint64_t seq = 0;
  std::vector<Finding> findings;
  std::vector<ResourceVerdict> verdicts;  // one per judged resource
};

// Cases of ours: tenant id -> resource -> the cap in force (resource units;
// 0: only the weight lowered). A tenant listed is held back on the resource.
using LimitsInForce = absl::flat_hash_map<std::string, std::map<v1::Resource, double>>;

class FairnessEngine {
 public:
  explicit FairnessEngine(FairnessParams params) : params_(params) {}

  // Judges `interval` if it is newer than the last one judged for its host;
  // returns the offenders it shows and every resource's shares (nothing for
  // an interval already judged: then `seq` is 0).
  Evaluation Evaluate(const HostInterval& interval, const LimitsInForce& limits = {});
  // Drops what is kept for a host that is gone.
  void ForgetHost(const std::string& host_id) { hosts_.erase(host_id); }
  const FairnessParams& params() const { return params_; }

 private:
  // Everything kept for one tenant of a host: one lookup per interval.
  struct TenantState {
    HarmBaseline baseline;
    std::array<FlagHistory, std::size(kJudgedResources)> flags;  // N-of-M per resource
    // Its usage in quiet intervals, per resource (TenantShare::quiet_usage);
    // negative until the first.
    std::array<double, std::size(kJudgedResources)> quiet_usage;
    TenantState() { quiet_usage.fill(-1); }
    uint64_t round = 0;  // the last evaluation that saw the tenant
    // Intervals in a row it has been seen (capped): a tenant seen for fewer
    // than `window` cannot be a victim yet.
    uint32_t seen = 0;
  };
  struct HostState {
    uint64_t last_seq = 0;
    uint64_t round = 0;  // evaluations of this host
    absl::flat_hash_map<std::string, TenantState> tenants;
  };

  FairnessParams params_;
  absl::flat_hash_map<std::string, HostState> hosts_;
};

}  // namespace fairwatch::controller
