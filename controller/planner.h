// The planner: what to do about offenders, graduated, bounded and reversible
// (docs/policy.md, "Actions"). It turns each interval's evaluation of a host
// into limit actions for the agent: on CPU the offender's weight first; a cap
// sized to leave the neighbours what they need plus headroom, moved as their
// need moves; below it, steps down only while harm persists and each step
// lowers it (a step that did not help is undone); back up once quiet, then
// release. Every limit carries a lease that is renewed while the case lives,
// and every action records what the interval it answered showed.
//
// Pure: the caller passes the time, so the state machine runs on a simulated
// clock in tests. Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/time/time.h"
#include "common/case_names.h"
#include "controller/engine.h"
#include "fairwatch/v1/cases.pb.h"

namespace fairwatch::controller {

struct PlannerParams {
  // A cap leaves the neighbours what they need plus this share of the
  // capacity: capacity x (1 - headroom) - their need (docs/policy.md).
  double headroom = 0.05;
  double step_down = 0.80;                          // below that, cap x this while harm persists
  double step_up = 1.25;                            // cap x this once quiet, up to the sized cap
  double floor_fraction = 0.5;                      // never below this share of the entitlement
  absl::Duration step_interval = absl::Seconds(5);  // between two steps
  absl::Duration quiet_period = absl::Seconds(10);  // no harm this long before stepping up
  absl::Duration lease = absl::Seconds(30);         // the agent reverts an unrenewed limit
  absl::Duration cooldown = absl::Seconds(60);      // after a release, before a new limit
  // At most this share of a host's tenants capped at once (at least one), but
  // never fewer than the offenders that each caused co_offender_blame of the
  // victims' waiting: a measured co-offender is never left free. The weight
  // lever does not count: it costs nothing the neighbours do not need.
  double max_limited_fraction = 0.25;
  double co_offender_blame = 0.2;
  // CPU cases open by lowering the offender's scheduling weight to this
  // fraction of its own (the kernel's floor at most: cpu.shares 2, cpu.weight
  // 1); a cap follows only if the harm persists.
  double weight_fraction = 0.01;
  // Released when its usage stayed below this share of its limit for the
  // quiet period: it stopped, so the limit binds nothing and whatever harm
  // remains is not its doing (nor is such harm a reason to step down).
  double release_below_fraction = 0.5;
  // Stepped down only when a neighbour was harmed in at least this share of
  // the latest 5 intervals since the last step (harm that persists, not a
  // spike), and the tenant used its limit in 9 of the latest 10 (not a
  // tenant that bursts).
  double step_down_harmed_fraction = 0.6;
  // A step down below the sized cap that did not lower the neighbours' harm
  // (its severity, averaged over the intervals after it) by at least this
  // share is undone: a lower cap that does not help only idles the host.
  double min_improvement = 0.2;
  // The sized cap moves only when it differs from the cap in force by more
  // than this share of it (hysteresis).
  double resize_margin = 0.10;
  // On disk and network (no measured demand), a neighbour getting under this
  // share of its quiet rate while the resource is at least `busy_fraction`
  // used is short of what it wants: harm for stepping and relaxing.
  double shortfall_fraction = 0.9;
  double busy_fraction = 0.8;
  // The neighbours' need is the largest of this many recent intervals.
  uint32_t need_window = 10;
  bool dry_run = false;                         // decide and record, send nothing
  std::vector<v1::Resource> dry_run_resources;  // dry run for these only
};

using ::fairwatch::ActionKindName;  // "limit", "step-down", ... (common/case_names.h)

// Who decided: the policy, or an operator ("operator:<name>").
inline constexpr absl::string_view kByPolicy = "policy";

struct PlannedAction {
  std::string host_id;
  std::string tenant_id;
  v1::Resource resource = v1::RESOURCE_UNSPECIFIED;
  v1::ActionKind kind = v1::ACTION_KIND_SKIP;
  double limit = 0;   // the cap, resource units; 0: none (release, skip, weight only)
  double weight = 0;  // the weight lever, a fraction of its own; 0: none
  absl::Time lease_expires = absl::InfinitePast();
  bool dry_run = false;
  std::string reason;  // why, in words a customer could read
  std::string decided_by = std::string(kByPolicy);
  bool new_case = false;   // an operator's limit that opens a case
  v1::ActionContext seen;  // the interval it answered (policy actions)
};

// Neighbours whose harm has not ended, by tenant id: their signals when last
// harmed, and that interval's report seq.
using UnrecoveredNeighbours = std::map<std::string, std::pair<std::string, uint64_t>>;

class Planner {
 public:
  explicit Planner(PlannerParams params) : params_(std::move(params)) {}

  // Whether a tenant is exempt (by its id or its account), and why; default: none.
  using ExemptFn = std::function<std::optional<std::string>(const std::string& host_id,
                                                            const std::string& tenant_id)>;

  // Plans for one host at `now` from its latest evaluation. `host_tenants`:
  // how many tenants the host has (for the cap on limited tenants).
  std::vector<PlannedAction> Plan(absl::Time now, const Evaluation& evaluation, size_t host_tenants,
                                  const ExemptFn& exempt = nullptr);

  // The limit in force for (host, tenant, resource); 0 when none.
  double LimitOf(const std::string& host_id, const std::string& tenant_id,
                 v1::Resource resource) const;
  // Every case on a host, for the engine: its cap (demand is at least the cap),
  // 0 with only the weight lowered. Either way the tenant is held back there
  // and cannot be a victim on that resource.
  LimitsInForce LimitsOn(const std::string& host_id) const;
  size_t active_cases() const { return cases_.size(); }

  // An operator's limit: opens a case, or takes over the one in progress,
  // that the policy renews but neither steps nor releases; only Lift ends
  // it. Always sent, whatever the dry-run settings.
  PlannedAction Impose(absl::Time now, const std::string& host_id, const std::string& tenant_id,
                       v1::Resource resource, double limit, std::string decided_by,
                       std::string reason);
  // Ends the case of (host, tenant, resource), manual or not, with a cool-down
  // before the policy may limit again when `cooldown`. False when there is none.
  bool Lift(absl::Time now, const std::string& host_id, const std::string& tenant_id,
            v1::Resource resource, std::string decided_by, std::string reason, bool cooldown,
            PlannedAction* release);
  // Cases in progress: (tenant, resource, manual) of a host, or of every host.
  struct CaseRef {
    std::string host_id;
    std::string tenant_id;
    v1::Resource resource;
    bool manual;
    bool dry_run;
  };
  std::vector<CaseRef> Cases() const;

  // Dry run in force (the operator may change the configured one).
  void SetDryRun(bool all, std::vector<v1::Resource> resources);
  bool dry_run() const { return params_.dry_run; }
  const std::vector<v1::Resource>& dry_run_resources() const { return params_.dry_run_resources; }
  bool DryRun(v1::Resource resource) const;

 private:
  using Key = std::tuple<std::string, std::string, v1::Resource>;  // host, tenant, resource
  struct Case {
    double limit = 0;   // the cap; 0 while only the weight is lowered
    double weight = 0;  // the weight lever in force; 0: none
    double floor = 0;
    double opening_usage = 0;
    absl::Time last_step;
    absl::Time quiet_since = absl::InfinitePast();  // InfinitePast: harm now
    // Since when its usage has stayed below release_below_fraction of the
    // cap, or, with only the weight lowered, within its entitlement
    // (InfinitePast: it is using its limit, or taking more).
    absl::Time idle_since = absl::InfinitePast();
    // Intervals since the last step; of the latest ones (bit 0 the newest),
    // those with a neighbour harmed and those in which it used its limit (at
    // least release_below_fraction of it).
    uint32_t intervals_since_step = 0;
    uint32_t harmed_bits = 0;
    uint32_t binding_bits = 0;
    double severity_since_step = 0;  // the neighbours' worst severity, summed
    // Set by a step down below the sized cap: the cap before it and the
    // neighbours' mean severity under that cap, to judge whether it helped.
    double limit_before_step = 0;
    double severity_before_step = -1;  // < 0: the last step was not one
    // A lower cap did not help: no step below this one until the harm ends.
    bool exhausted = false;
    // The neighbours the case last said had not recovered while exhausted
    // (a renewal with the reason at once rather than at the next half-lease,
    // again when another one joins them).
    std::set<std::string> said_unrecovered;
    // Each neighbour harmed in the latest kPersistWindow intervals.
    UnrecoveredNeighbours unrecovered;
    // The last cap it was raised to under which harm came back, and when: no
    // step back up to it within a cool-down of that (a cap that moves up and
    // down with the harm it causes flaps).
    bool stepped_up = false;  // the last step raised the cap
    double harmful_cap = 0;
    absl::Time harmful_when = absl::InfinitePast();
    std::vector<double> need;          // the neighbours' need, last need_window intervals
    std::vector<std::string> victims;  // harmed when it opened (its record shows them)
    absl::Time lease_expires;
    bool dry_run = false;
    bool manual = false;  // an operator's: renewed, never stepped or released by policy
  };

  PlannerParams params_;
  std::map<Key, Case> cases_;
  std::map<Key, absl::Time> cooldown_until_;
};

}  // namespace fairwatch::controller
