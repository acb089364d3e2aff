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
  HarmParams harm;
};

// Whether a tenant is harmed on a resource in one interval, and why.
struct HarmVerdict {
  bool harmed = false;
  std::vector<std::string> evidence;  // "run-queue p99 8.2 ms (baseline 0.9 ms)"
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
  // baseline. The first one seeds it.
  void Learn(const v1::HarmSignals& signals, const HarmParams& params);
  bool seeded() const { return seeded_; }

 private:
  bool seeded_ = false;
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
  double limit = 0;  // a fairwatch limit in force on this resource; 0: none
  bool harmed = false;
};

struct TenantShare {
  std::string id;
  double weight = 1.0;
  double usage = 0;
  double demand = 0;  // +inf: elastic
  double entitled = 0;
  double fair = 0;
  bool active = false;
  bool harmed = false;
  bool over = false;     // above its fair share (with tolerance) and its entitlement
  bool flagged = false;  // over while the host is contended or a neighbour is harmed
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

// Entitled and fair shares and flags for one interval of one (host, resource).
IntervalJudgement JudgeInterval(const FairnessParams& params, double capacity,
                                const std::vector<TenantSample>& tenants);

struct Offender {
  std::string id;
  uint32_t flagged_intervals = 0;  // of the last `window`
  double excess = 0;               // usage - fair share, this interval
  double blame = 0;                // its part of all offenders' excess on the host
  TenantShare share;               // this interval's figures
};

// Which of one tenant's last intervals on one (host, resource) flagged it.
struct FlagHistory {
  uint32_t bits = 0;    // bit 0: the latest interval; `window` bits kept
  uint32_t absent = 0;  // intervals in a row without the tenant
};

// Records one interval in every tenant's history (`histories[i]` is that of
// judgement.tenants[i]) and returns the offenders now (flagged in this
// interval and in at least `required` of the last `window`), largest blame
// first.
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
