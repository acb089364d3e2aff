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

RunqGate::RunqGate(RunqGateParams params, int cpus)
    : params_(std::move(params)), cpus_(std::max(cpus, 1)) {}

void RunqGate::ObserveRunnable(absl::Time now, double runnable) {
  readings_.emplace_back(now, std::max(runnable, 0.0));
  while (!readings_.empty() && readings_.front().first <= now - params_.window) {
    readings_.pop_front();
  }
  double sum = 0;
  for (const auto& [at, value] : readings_) sum += value;
  mean_per_cpu_ = sum / static_cast<double>(readings_.size()) / cpus_;
  if (mean_per_cpu_ >= params_.contended_per_cpu) contended_until_ = now + params_.linger;
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
