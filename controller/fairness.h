// The fairness engine's arithmetic (docs/policy.md): entitled and fair shares
// per host and resource, harm judged against each tenant's own baseline, and
// the offender rule over N of the last M intervals.
//
// Pure and deterministic: no clock, no I/O, no locks. The controller feeds it
// one interval at a time per (host, resource); everything it decides can be
// replayed from its inputs, which is what a case's evidence records.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "controller/detectors.h"
#include "fairwatch/v1/operator.pb.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::controller {

struct FairnessParams {
  double tolerance = 0.10;   // over when usage > fair share x (1 + tolerance)
  double contention = 0.90;  // contended when total usage >= contention x capacity
  uint32_t window = 5;       // M intervals
  uint32_t required = 2;     // N of them flagged make an offender (docs/policy.md)
  // Tenants using less than this share of capacity (and not harmed) are idle:
  // they lend their entitlement.
  double idle_fraction = 0.005;
  // A tenant whose harm signals are up is a victim of its neighbours only when
  // at least this share of its waiting was caused by other tenants (not its
  // own threads, quota or I/O, not the host), and it wants no more than its
  // fair share or gets less than it (beyond that, waiting is what wanting
  // more costs).
  double min_neighbour_share = 0.5;
  // A taker (above its entitlement, wanting more than its fair share) is
  // flagged when it caused at least min_blame of a victim's waiting and is
  // over its fair share, or takers together caused at least dominant_blame
  // of that victim's waiting (docs/policy.md, "Blame").
  double min_blame = 0.1;
  double dominant_blame = 0.5;
  HarmParams harm;
};

// An exponential moving average's next value.
double Ewma(double old_value, double sample, double alpha);

// Whether a tenant is harmed on a resource in one interval, and why.
struct HarmVerdict {
  bool harmed = false;
  std::vector<std::string> evidence;  // "run-queue p99 8.2 ms (baseline 0.9 ms)"
  // How far its worst signal is from harm: the largest value / threshold of
  // its detectors (above 1 when harmed). The planner compares it before and
  // after a step to see whether the step helped.
  double severity = 0;
};

// One tenant's quiet-time levels of the harm signals, one per detector.
class HarmBaseline {
 public:
  // Judges `signals` for `resource` with the enabled detectors of its group
  // (controller/detectors.h) against the baseline. CPU is never harmed while
  // the tenant is throttled by its own quota.
  HarmVerdict Judge(v1::Resource resource, const v1::HarmSignals& signals,
                    const HarmParams& params) const;
  // Folds a quiet interval (host not contended, tenant not harmed) into the
  // baseline, signal by signal where present. The first one seeds each.
  void Learn(const v1::HarmSignals& signals, const HarmParams& params);
  // Whether `detector` (an index of HarmDetectors()) has a level yet.
  bool seeded(size_t detector) const { return seeded_[detector]; }

 private:
  std::array<bool, kHarmDetectorCount> seeded_{};
  std::array<double, kHarmDetectorCount> level_{};
};

// One tenant on one (host, resource) in one interval.
struct TenantSample {
  std::string id;
  double weight = 1.0;
  double usage = 0;  // rate in the resource's unit
  // Demand seen beyond usage, in the same unit (CPU: run-queue wait in cores).
  double wanted = 0;
  // When `wanted` cannot be measured (disk, network), a harmed tenant is
  // taken to want as much as it may get.
  bool elastic_when_harmed = true;
  double limit = 0;  // a fairwatch cap in force on this resource; 0: none
  // Held back by a case of ours on this resource (a cap or a lowered weight):
  // its waiting is then our doing, not its neighbours'.
  bool held_back = false;
  bool harmed = false;  // its harm signals are above its baseline (the detectors)
  // Who caused its waiting, as shares of it, for a harmed tenant: on CPU who
  // held the CPU while it waited (the kernel's answer, `measured`), else each
  // neighbour's part of the resource's use. (index in the sample list, share)
  bool causes_measured = false;
  double neighbour_share = 0;  // all other tenants together
  std::vector<std::pair<uint32_t, double>> caused_by;
};

struct TenantShare {
  std::string id;
  double weight = 1.0;
  double usage = 0;
  double demand = 0;  // +inf: elastic
  double entitled = 0;
  double fair = 0;
  bool active = false;
  bool harm_signal = false;  // its harm signals are up (it may be its own doing)
  bool harmed = false;       // a victim: harm signals up, mostly its neighbours' doing,
                             // wanting no more than its fair share (or getting less)
  // Its harm severity (HarmVerdict::severity) and, when its signals are up,
  // their evidence; filled by the engine.
  double severity = 0;
  std::vector<std::string> evidence;
  // What it used in its quiet intervals on this resource (not contended, not
  // held back, not harmed), a moving average: the rate it wants when it
  // cannot show a demand (disk, network); 0 until learned. Filled by the engine.
  double quiet_usage = 0;
  bool above = false;     // active and using more than its entitlement
  bool over = false;      // above its fair share (with tolerance) and its entitlement
  double caused_max = 0;  // the largest share of one victim's waiting it caused
  double caused = 0;      // the shares of victims' waiting it caused, summed
  // A taker (above its entitlement, wanting more than its fair share) that
  // caused at least min_blame of a victim's waiting, over its fair share or
  // with takers together the main cause of it.
  bool flagged = false;
};

struct IntervalJudgement {
  double capacity = 0;
  double total_usage = 0;
  bool contended = false;
  uint32_t harmed = 0;
  std::vector<TenantShare> tenants;  // in input order
};

// Weighted max-min fair allocation of `capacity` over `demands` (water-filling):
// nobody gets more than its demand, and what is left is split by weight among
// the tenants still wanting. Demands may be +inf. Weights must be > 0.
std::vector<double> WeightedMaxMin(double capacity, const std::vector<double>& demands,
                                   const std::vector<double>& weights);

// Who caused each harmed tenant's waiting, from each tenant's part of the
// resource's use in the interval (whoever uses the device, the uplink or the
// CPUs is who the others queue behind): fills caused_by and neighbour_share
// of every harmed sample whose causes were not measured.
void AttributeByUse(std::vector<TenantSample>* samples);

// Entitled and fair shares and flags for one interval of one (host, resource).
// A harmed sample's causes must be filled (AttributeByUse, or measured).
IntervalJudgement JudgeInterval(const FairnessParams& params, double capacity,
                                const std::vector<TenantSample>& tenants);

struct Offender {
  std::string id;
  uint32_t flagged_intervals = 0;  // of the last `window`
  double excess = 0;               // usage - fair share, this interval
  // Its part of the victims' waiting caused by all offenders on the host.
  double blame = 0;
  TenantShare share;  // this interval's figures
};

// Which of one tenant's last intervals on one (host, resource) flagged it.
struct FlagHistory {
  uint32_t bits = 0;    // bit 0: the latest interval; `window` bits kept
  uint32_t absent = 0;  // intervals in a row without the tenant
};

// Records one interval in every tenant's history (`histories[i]` is that of
// judgement.tenants[i]) and returns the offenders now (flagged in this
// interval and in at least `required` of the last `window`; with one such,
// every tenant flagged in this interval, or in the one before and above its
// entitlement now, as co-offenders), largest blame first.
std::vector<Offender> RecordOffenders(const FairnessParams& params,
                                      const IntervalJudgement& judgement,
                                      absl::Span<FlagHistory* const> histories);
// Records an interval without the tenant (not flagged); true once `window`
// such intervals in a row have passed and the history can be dropped.
bool RecordAbsent(const FairnessParams& params, FlagHistory* history);

// The N-of-M rule for one (host, resource): remembers which intervals flagged
// each tenant.
class OffenderTracker {
 public:
  explicit OffenderTracker(FairnessParams params) : params_(params) {}
  // Records one interval; returns the offenders now (flagged in this interval
  // and in at least `required` of the last `window`), largest blame first.
  std::vector<Offender> Record(const IntervalJudgement& judgement);
  // Flagged intervals of a tenant among the last `window`.
  uint32_t FlaggedIntervals(const std::string& id) const;

 private:
  struct Entry {
    FlagHistory flags;
    uint32_t round = 0;  // the last Record that saw the tenant
  };
  FairnessParams params_;
  uint32_t round_ = 0;
  absl::flat_hash_map<std::string, Entry> history_;
};

}  // namespace fairwatch::controller
