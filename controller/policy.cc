#include "controller/policy.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "controller/detectors.h"

namespace fairwatch::controller {
namespace {

absl::Status InRange(const char* field, double value, double low, double high) {
  if (value >= low && value <= high) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("fairness.", field, " is ", value, "; must be within [", low, ", ", high, "]"));
}

}  // namespace

void ApplyPolicyDefaults(v1::FairnessPolicy* policy) {
  auto set = [](double current, double fallback) { return current == 0 ? fallback : current; };
  const FairnessParams d;
  policy->set_tolerance(set(policy->tolerance(), d.tolerance));
  policy->set_contention(set(policy->contention(), d.contention));
  if (policy->window_intervals() == 0) policy->set_window_intervals(d.window);
  if (policy->required_intervals() == 0) policy->set_required_intervals(d.required);
  policy->set_idle_fraction(set(policy->idle_fraction(), d.idle_fraction));
  policy->set_min_neighbour_share(set(policy->min_neighbour_share(), d.min_neighbour_share));
  policy->set_min_blame(set(policy->min_blame(), d.min_blame));
  policy->set_dominant_blame(set(policy->dominant_blame(), d.dominant_blame));

  v1::HarmPolicy* h = policy->mutable_harm();
  const HarmParams hd;
  h->set_ratio(set(h->ratio(), hd.ratio));
  h->set_runq_p99_floor_ms(set(h->runq_p99_floor_ms(), hd.runq_p99_floor_ns / 1e6));
  h->set_psi_floor(set(h->psi_floor(), hd.psi_floor));
  h->set_io_latency_p99_floor_ms(
      set(h->io_latency_p99_floor_ms(), hd.io_latency_p99_floor_ns / 1e6));
  h->set_drops_floor_per_s(set(h->drops_floor_per_s(), hd.drops_floor_per_s));
  h->set_retransmits_floor_per_s(set(h->retransmits_floor_per_s(), hd.retransmits_floor_per_s));
  h->set_self_throttled_fraction(set(h->self_throttled_fraction(), hd.self_throttled_fraction));
  h->set_baseline_alpha(set(h->baseline_alpha(), hd.baseline_alpha));

  v1::ActionPolicy* a = policy->mutable_actions();
  const PlannerParams pd;
  auto ms = [](uint32_t current, absl::Duration fallback) {
    return current == 0 ? static_cast<uint32_t>(absl::ToInt64Milliseconds(fallback)) : current;
  };
  a->set_headroom(set(a->headroom(), pd.headroom));
  a->set_step_down(set(a->step_down(), pd.step_down));
  a->set_step_up(set(a->step_up(), pd.step_up));
  a->set_floor_fraction(set(a->floor_fraction(), pd.floor_fraction));
  a->set_step_interval_ms(ms(a->step_interval_ms(), pd.step_interval));
  a->set_quiet_period_ms(ms(a->quiet_period_ms(), pd.quiet_period));
  a->set_lease_ms(ms(a->lease_ms(), pd.lease));
  a->set_cooldown_ms(ms(a->cooldown_ms(), pd.cooldown));
  a->set_max_limited_fraction(set(a->max_limited_fraction(), pd.max_limited_fraction));
  a->set_release_below_fraction(set(a->release_below_fraction(), pd.release_below_fraction));
  a->set_step_down_harmed_fraction(
      set(a->step_down_harmed_fraction(), pd.step_down_harmed_fraction));
  a->set_weight_fraction(set(a->weight_fraction(), pd.weight_fraction));
  a->set_co_offender_blame(set(a->co_offender_blame(), pd.co_offender_blame));
  a->set_min_improvement(set(a->min_improvement(), pd.min_improvement));
  a->set_resize_margin(set(a->resize_margin(), pd.resize_margin));
  a->set_shortfall_fraction(set(a->shortfall_fraction(), pd.shortfall_fraction));
  a->set_busy_fraction(set(a->busy_fraction(), pd.busy_fraction));
  if (a->need_window_intervals() == 0) a->set_need_window_intervals(pd.need_window);
}

absl::Status ValidatePolicy(const v1::FairnessPolicy& p) {
  RETURN_IF_ERROR(InRange("tolerance", p.tolerance(), 0, 10));
  RETURN_IF_ERROR(InRange("contention", p.contention(), 0.01, 1));
  RETURN_IF_ERROR(InRange("window_intervals", p.window_intervals(), 1, 32));
  if (p.required_intervals() < 1 || p.required_intervals() > p.window_intervals()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fairness.required_intervals is ", p.required_intervals(),
                     "; must be within [1, ", "window_intervals = ", p.window_intervals(), "]"));
  }
  RETURN_IF_ERROR(InRange("idle_fraction", p.idle_fraction(), 0, 0.5));
  RETURN_IF_ERROR(InRange("min_neighbour_share", p.min_neighbour_share(), 0.01, 1));
  RETURN_IF_ERROR(InRange("min_blame", p.min_blame(), 0.01, 1));
  RETURN_IF_ERROR(InRange("dominant_blame", p.dominant_blame(), 0.01, 1));
  const v1::HarmPolicy& h = p.harm();
  RETURN_IF_ERROR(InRange("harm.ratio", h.ratio(), 1, 1000));
  RETURN_IF_ERROR(InRange("harm.runq_p99_floor_ms", h.runq_p99_floor_ms(), 0, 60000));
  RETURN_IF_ERROR(InRange("harm.psi_floor", h.psi_floor(), 0, 1));
  RETURN_IF_ERROR(InRange("harm.io_latency_p99_floor_ms", h.io_latency_p99_floor_ms(), 0, 60000));
  RETURN_IF_ERROR(InRange("harm.drops_floor_per_s", h.drops_floor_per_s(), 0, 1e9));
  RETURN_IF_ERROR(InRange("harm.retransmits_floor_per_s", h.retransmits_floor_per_s(), 0, 1e9));
  RETURN_IF_ERROR(InRange("harm.self_throttled_fraction", h.self_throttled_fraction(), 0, 1));
  RETURN_IF_ERROR(InRange("harm.baseline_alpha", h.baseline_alpha(), 1e-6, 1));
  for (int i = 0; i < h.disabled_detectors_size(); ++i) {
    const std::string& name = h.disabled_detectors(i);
    if (!FindHarmDetector(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("fairness.harm.disabled_detectors has an unknown detector \"", name,
                       "\"; the detectors are ", HarmDetectorNames()));
    }
    for (int j = 0; j < i; ++j) {
      if (h.disabled_detectors(j) == name) {
        return absl::InvalidArgumentError(
            absl::StrCat("fairness.harm.disabled_detectors names \"", name, "\" twice"));
      }
    }
  }
  const v1::ActionPolicy& a = p.actions();
  RETURN_IF_ERROR(InRange("actions.headroom", a.headroom(), 0, 10));
  RETURN_IF_ERROR(InRange("actions.step_down", a.step_down(), 0.1, 0.99));
  RETURN_IF_ERROR(InRange("actions.step_up", a.step_up(), 1.01, 10));
  RETURN_IF_ERROR(InRange("actions.floor_fraction", a.floor_fraction(), 0.01, 1));
  RETURN_IF_ERROR(InRange("actions.step_interval_ms", a.step_interval_ms(), 100, 3600000));
  RETURN_IF_ERROR(InRange("actions.quiet_period_ms", a.quiet_period_ms(), 100, 3600000));
  RETURN_IF_ERROR(InRange("actions.lease_ms", a.lease_ms(), 1000, 3600000));
  RETURN_IF_ERROR(InRange("actions.cooldown_ms", a.cooldown_ms(), 100, 86400000));
  RETURN_IF_ERROR(InRange("actions.max_limited_fraction", a.max_limited_fraction(), 0.01, 1));
  // Below 1: a tenant at its quota never uses more than its limit, so at 1
  // every case would look stopped.
  RETURN_IF_ERROR(InRange("actions.release_below_fraction", a.release_below_fraction(), 0.01, 0.9));
  RETURN_IF_ERROR(
      InRange("actions.step_down_harmed_fraction", a.step_down_harmed_fraction(), 0.01, 1));
  RETURN_IF_ERROR(InRange("actions.weight_fraction", a.weight_fraction(), 0.0001, 1));
  RETURN_IF_ERROR(InRange("actions.co_offender_blame", a.co_offender_blame(), 0.01, 1));
  RETURN_IF_ERROR(InRange("actions.min_improvement", a.min_improvement(), 0.01, 0.99));
  RETURN_IF_ERROR(InRange("actions.resize_margin", a.resize_margin(), 0.01, 1));
  RETURN_IF_ERROR(InRange("actions.shortfall_fraction", a.shortfall_fraction(), 0.1, 1));
  RETURN_IF_ERROR(InRange("actions.busy_fraction", a.busy_fraction(), 0.1, 1));
  RETURN_IF_ERROR(InRange("actions.need_window_intervals", a.need_window_intervals(), 1, 600));
  for (int r : p.dry_run_resources()) {
    if (r == v1::RESOURCE_UNSPECIFIED || !v1::Resource_IsValid(r)) {
      return absl::InvalidArgumentError(
          absl::StrCat("fairness.dry_run_resources has an unknown resource (", r, ")"));
    }
  }
  for (const std::string& t : p.exempt_tenants()) {
    if (t.empty()) return absl::InvalidArgumentError("fairness.exempt_tenants has an empty entry");
  }
  for (const std::string& t : p.exempt_accounts()) {
    if (t.empty()) return absl::InvalidArgumentError("fairness.exempt_accounts has an empty entry");
  }
  return absl::OkStatus();
}

absl::StatusOr<FairnessParams> FairnessParamsFromPolicy(v1::FairnessPolicy policy) {
  ApplyPolicyDefaults(&policy);
  RETURN_IF_ERROR(ValidatePolicy(policy));
  FairnessParams params;
  params.tolerance = policy.tolerance();
  params.contention = policy.contention();
  params.window = policy.window_intervals();
  params.required = policy.required_intervals();
  params.idle_fraction = policy.idle_fraction();
  params.min_neighbour_share = policy.min_neighbour_share();
  params.min_blame = policy.min_blame();
  params.dominant_blame = policy.dominant_blame();
  const v1::HarmPolicy& h = policy.harm();
  params.harm.ratio = h.ratio();
  params.harm.runq_p99_floor_ns = h.runq_p99_floor_ms() * 1e6;
  params.harm.psi_floor = h.psi_floor();
  params.harm.io_latency_p99_floor_ns = h.io_latency_p99_floor_ms() * 1e6;
  params.harm.drops_floor_per_s = h.drops_floor_per_s();
  params.harm.retransmits_floor_per_s = h.retransmits_floor_per_s();
  params.harm.self_throttled_fraction = h.self_throttled_fraction();
  params.harm.baseline_alpha = h.baseline_alpha();
  for (const std::string& name : h.disabled_detectors()) {
    params.harm.enabled[*FindHarmDetector(name)] = false;
  }
  return params;
}

absl::StatusOr<PlannerParams> PlannerParamsFromPolicy(v1::FairnessPolicy policy) {
  ApplyPolicyDefaults(&policy);
  RETURN_IF_ERROR(ValidatePolicy(policy));
  const v1::ActionPolicy& a = policy.actions();
  PlannerParams params;
  params.headroom = a.headroom();
  params.step_down = a.step_down();
  params.step_up = a.step_up();
  params.floor_fraction = a.floor_fraction();
  params.step_interval = absl::Milliseconds(a.step_interval_ms());
  params.quiet_period = absl::Milliseconds(a.quiet_period_ms());
  params.lease = absl::Milliseconds(a.lease_ms());
  params.cooldown = absl::Milliseconds(a.cooldown_ms());
  params.max_limited_fraction = a.max_limited_fraction();
  params.release_below_fraction = a.release_below_fraction();
  params.step_down_harmed_fraction = a.step_down_harmed_fraction();
  params.weight_fraction = a.weight_fraction();
  params.co_offender_blame = a.co_offender_blame();
  params.min_improvement = a.min_improvement();
  params.resize_margin = a.resize_margin();
  params.shortfall_fraction = a.shortfall_fraction();
  params.busy_fraction = a.busy_fraction();
  params.need_window = a.need_window_intervals();
  params.dry_run = policy.dry_run();
  for (int r : policy.dry_run_resources()) {
    params.dry_run_resources.push_back(static_cast<v1::Resource>(r));
  }
  return params;
}

}  // namespace fairwatch::controller
