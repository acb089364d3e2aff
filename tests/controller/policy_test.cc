#include "controller/policy.h"

#include <gtest/gtest.h>

#include "common/config_file.h"
#include "controller/config.h"

namespace fairwatch::controller {
namespace {

TEST(Policy, EmptyPolicyGetsTheDocumentedDefaults) {
  absl::StatusOr<FairnessParams> params = FairnessParamsFromPolicy(v1::FairnessPolicy());
  ASSERT_TRUE(params.ok()) << params.status();
  const FairnessParams d;
  EXPECT_DOUBLE_EQ(params->tolerance, d.tolerance);
  EXPECT_DOUBLE_EQ(params->contention, 0.9);
  EXPECT_EQ(params->window, 5u);
  EXPECT_EQ(params->required, 2u);
  EXPECT_DOUBLE_EQ(params->harm.runq_p99_floor_ns, 1e6);
  EXPECT_DOUBLE_EQ(params->harm.io_latency_p99_floor_ns, 5e6);
}

TEST(Policy, ValuesFromAConfigFileReachTheEngine) {
  v1::ControllerConfig config;
  ASSERT_TRUE(ParseTextConfig("fairness { tolerance: 0.25 window_intervals: 10 "
                              "required_intervals: 7 harm { runq_p99_floor_ms: 2.5 } }\n",
                              "controller.textproto", &config)
                  .ok());
  absl::StatusOr<FairnessParams> params = FairnessParamsFromPolicy(config.fairness());
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_DOUBLE_EQ(params->tolerance, 0.25);
  EXPECT_EQ(params->window, 10u);
  EXPECT_EQ(params->required, 7u);
  EXPECT_DOUBLE_EQ(params->harm.runq_p99_floor_ns, 2.5e6);
  EXPECT_DOUBLE_EQ(params->contention, 0.9) << "unset fields keep their default";
}

TEST(Policy, OutOfRangeValuesNameTheFieldAndItsRange) {
  struct Case {
    const char* text;
    const char* field;
  };
  const Case cases[] = {
      {"window_intervals: 40", "window_intervals"},
      {"window_intervals: 4 required_intervals: 5", "required_intervals"},
      {"contention: 1.5", "contention"},
      {"tolerance: -0.1", "tolerance"},
      {"harm { ratio: 0.5 }", "harm.ratio"},
      {"harm { psi_floor: 2 }", "harm.psi_floor"},
      {"idle_fraction: 0.9", "idle_fraction"},
      {"actions { step_down: 1.5 }", "actions.step_down"},
      {"actions { lease_ms: 10 }", "actions.lease_ms"},
      {"actions { max_limited_fraction: 2 }", "actions.max_limited_fraction"},
      {"dry_run_resources: RESOURCE_UNSPECIFIED", "dry_run_resources"},
      {"exempt_tenants: ''", "exempt_tenants"},
      {"harm { disabled_detectors: 'runq_p99' }",
       "unknown detector \"runq_p99\"; the detectors are runq_wait_p99, cpu_psi"},
      {"harm { disabled_detectors: 'cpu_psi' disabled_detectors: 'cpu_psi' }", "\"cpu_psi\" twice"},
  };
  for (const Case& c : cases) {
    v1::FairnessPolicy policy;
    ASSERT_TRUE(ParseTextConfig(c.text, "policy", &policy).ok()) << c.text;
    absl::StatusOr<FairnessParams> params = FairnessParamsFromPolicy(policy);
    ASSERT_FALSE(params.ok()) << c.text;
    EXPECT_NE(params.status().message().find(c.field), std::string::npos)
        << c.text << ": " << params.status();
  }
}

TEST(Policy, DisabledDetectorsAreTurnedOffByName) {
  v1::FairnessPolicy policy;
  ASSERT_TRUE(
      ParseTextConfig("harm { disabled_detectors: ['cpu_psi', 'net_drops'] }", "policy", &policy)
          .ok());
  absl::StatusOr<FairnessParams> params = FairnessParamsFromPolicy(policy);
  ASSERT_TRUE(params.ok()) << params.status();
  const auto& detectors = HarmDetectors();
  for (size_t d = 0; d < detectors.size(); ++d) {
    const bool off = detectors[d].name == "cpu_psi" || detectors[d].name == "net_drops";
    EXPECT_EQ(params->harm.enabled[d], !off) << detectors[d].name;
  }
}

TEST(Policy, ActionsFromAConfigFileReachThePlanner) {
  v1::FairnessPolicy policy;
  ASSERT_TRUE(ParseTextConfig("actions { headroom: 0.2 lease_ms: 60000 cooldown_ms: 120000 } "
                              "dry_run_resources: RESOURCE_NET_TX",
                              "policy", &policy)
                  .ok());
  absl::StatusOr<PlannerParams> params = PlannerParamsFromPolicy(policy);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_DOUBLE_EQ(params->headroom, 0.2);
  EXPECT_EQ(params->lease, absl::Minutes(1));
  EXPECT_EQ(params->cooldown, absl::Minutes(2));
  EXPECT_DOUBLE_EQ(params->step_down, 0.8) << "defaults for the rest";
  EXPECT_EQ(params->quiet_period, absl::Seconds(10));
  EXPECT_FALSE(params->dry_run);
  ASSERT_EQ(params->dry_run_resources.size(), 1u);
  EXPECT_EQ(params->dry_run_resources[0], v1::RESOURCE_NET_TX);
}

TEST(Policy, ControllerConfigValidationChecksThePolicy) {
  v1::ControllerConfig config;
  config.mutable_fairness()->set_window_intervals(99);
  ApplyControllerDefaults(&config);
  absl::Status status = ValidateControllerConfig(config);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("fairness.window_intervals"), std::string::npos) << status;
}

}  // namespace
}  // namespace fairwatch::controller
