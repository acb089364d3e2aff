// The fairness policy as configured (fairwatch.v1.FairnessPolicy in the
// controller config): defaults for unset fields, bounds checked, turned into
// the engine's parameters.
#pragma once

#include "absl/status/statusor.h"
#include "controller/fairness.h"
#include "controller/planner.h"
#include "fairwatch/v1/config.pb.h"

namespace fairwatch::controller {

// Fills every zero field of `policy` with its default (the FairnessParams and
// HarmParams defaults).
void ApplyPolicyDefaults(v1::FairnessPolicy* policy);

// Checks a policy with defaults applied; errors name the field and its range.
absl::Status ValidatePolicy(const v1::FairnessPolicy& policy);

// Defaults, validation and conversion in one.
absl::StatusOr<FairnessParams> FairnessParamsFromPolicy(v1::FairnessPolicy policy);
// The planner's part (fairness.actions, dry_run, dry_run_resources).
absl::StatusOr<PlannerParams> PlannerParamsFromPolicy(v1::FairnessPolicy policy);

}  // namespace fairwatch::controller
