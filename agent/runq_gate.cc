#include "agent/runq_gate.h"

#include <algorithm>

namespace fairwatch::agent {

const char* RunqGateReasonName(RunqGateReason reason) {
  switch (reason) {
    case RunqGateReason::kQuiet:
      return "quiet";
    case RunqGateReason::kContended:
      return "host contended";
    case RunqGateReason::kNewTenant:
      return "new tenant";
    case RunqGateReason::kLimitInForce:
      return "CPU limit in force";
    case RunqGateReason::kSample:
      return "sampled interval";
  }
  return "?";
}

RunqGate::RunqGate(RunqGateParams params, int cpus) : params_(params), cpus_(std::max(cpus, 1)) {}

void RunqGate::ObserveIdle(absl::Time now, double idle_seconds) {
  // Readings back to one at least `window` old: the busy share spans it.
  readings_.emplace_back(now, idle_seconds);
  while (readings_.size() > 2 && readings_[1].first <= now - params_.window) {
    readings_.pop_front();
  }
  const auto& [first_at, first_idle] = readings_.front();
  const double span = absl::ToDoubleSeconds(now - first_at);
  if (span < absl::ToDoubleSeconds(params_.window) / 2) return;  // too short to judge
  const double idle_share = (idle_seconds - first_idle) / (span * cpus_);
  busy_ = std::clamp(1 - idle_share, 0.0, 1.0);
  if (busy_ >= params_.contended_busy) contended_until_ = now + params_.linger;
}

void RunqGate::NoteNewTenant(absl::Time now) {
  new_tenant_until_ = std::max(new_tenant_until_, now + params_.new_tenant);
}

void RunqGate::NoteInterval() {
  ++intervals_;
  sampling_ = params_.sample_every > 0 && intervals_ % params_.sample_every == 0;
}

RunqGateReason RunqGate::Decide(absl::Time now) const {
  if (now < contended_until_) return RunqGateReason::kContended;
  if (now < new_tenant_until_) return RunqGateReason::kNewTenant;
  if (limit_in_force_) return RunqGateReason::kLimitInForce;
  if (sampling_) return RunqGateReason::kSample;
  return RunqGateReason::kQuiet;
}

}  // namespace fairwatch::agent
