// The fairness engine fed by a real FleetState: reports in, offenders out.
#include "controller/engine.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/controller/report_builder.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::Host;
using ::fairwatch::controller::testing::MakeTenant;
using ::fairwatch::controller::testing::Second;

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : fleet_(FleetOptions{}), engine_(FairnessParams{}), host_(&fleet_, "hv", 2) {
    host_.Inventory({MakeTenant("hog", "hog"), MakeTenant("victim", "victim")});
  }
  std::vector<Finding> Step(const std::map<std::string, Second>& seconds) {
    host_.Tick(seconds);
    absl::StatusOr<HostInterval> interval = fleet_.LastInterval("hv");
    if (!interval.ok()) return {};
    return engine_.Evaluate(*interval).findings;
  }
  FleetState fleet_;
  FairnessEngine engine_;
  Host host_;
};

TEST_F(EngineTest, AHogIsFoundAfterNofMIntervalsWithItsVictimAsEvidence) {
  // Quiet: the victim waits under 0.52 ms (below the 1 ms floor); the hog is idle.
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(Step({{"hog", {0.05, 0, 18}}, {"victim", {0.4, 0.01, 18}}}).empty());
  }
  // The hog wakes up with 4 busy threads on 2 cores; the victim now waits ~8 ms.
  const std::map<std::string, Second> contended = {{"hog", {1.6, 2.4, 23}},
                                                   {"victim", {0.4, 0.6, 23}}};
  EXPECT_TRUE(Step(contended).empty()) << "1 of 5";
  std::vector<Finding> findings = Step(contended);
  ASSERT_EQ(findings.size(), 1u) << "2 of 5 (the default): an offender";
  const Finding& f = findings[0];
  EXPECT_EQ(f.host_id, "hv");
  EXPECT_EQ(f.resource, v1::RESOURCE_CPU);
  EXPECT_EQ(f.offender.id, "hog");
  EXPECT_EQ(f.offender.flagged_intervals, 2u);
  EXPECT_NEAR(f.offender.share.usage, 1.6, 0.01);
  EXPECT_NEAR(f.offender.share.fair, 1.0, 0.01) << "the victim wants 1.0 core (0.4 + 0.6 waiting)";
  EXPECT_NEAR(f.offender.share.entitled, 1.0, 0.01);
  EXPECT_TRUE(f.contended);
  ASSERT_EQ(f.harmed.size(), 1u);
  EXPECT_EQ(f.harmed[0].id, "victim");
  ASSERT_FALSE(f.harmed[0].evidence.empty());
  EXPECT_NE(f.harmed[0].evidence[0].find("run-queue wait p99"), std::string::npos);
  EXPECT_EQ(f.harmed[0].evidence[0].find("baseline 0.0 ms"), std::string::npos)
      << "the quiet intervals taught a baseline: " << f.harmed[0].evidence[0];

  // The same interval judged again adds nothing.
  absl::StatusOr<HostInterval> again = fleet_.LastInterval("hv");
  ASSERT_TRUE(again.ok());
  Evaluation repeat = engine_.Evaluate(*again);
  EXPECT_EQ(repeat.seq, 0u);
  EXPECT_TRUE(repeat.findings.empty());
}

// Each tenant's quiet use, what the planner sizes caps from: learned while
// the resource is far from full, kept while it is squeezed; its severity and
// evidence come with its share.
TEST_F(EngineTest, QuietUseIsLearnedOnAQuietHostAndKeptWhileSqueezed) {
  auto victim = [&](const std::map<std::string, Second>& seconds) {
    host_.Tick(seconds);
    absl::StatusOr<HostInterval> interval = fleet_.LastInterval("hv");
    if (!interval.ok()) return TenantShare{};  // the first report: no interval yet
    Evaluation e = engine_.Evaluate(*interval);
    for (const ResourceVerdict& v : e.verdicts) {
      if (v.resource != v1::RESOURCE_CPU) continue;
      for (const TenantShare& t : v.judgement.tenants) {
        if (t.id == "victim") return t;
      }
    }
    return TenantShare{};
  };
  for (int i = 0; i < 20; ++i) victim({{"hog", {0.05, 0, 18}}, {"victim", {0.4, 0.01, 18}}});
  TenantShare quiet = victim({{"hog", {0.05, 0, 18}}, {"victim", {0.4, 0.01, 18}}});
  EXPECT_NEAR(quiet.quiet_usage, 0.4, 0.01);
  EXPECT_LT(quiet.severity, 1);
  EXPECT_TRUE(quiet.evidence.empty());
  TenantShare squeezed;
  for (int i = 0; i < 5; ++i) {
    squeezed = victim({{"hog", {1.8, 2.4, 23}}, {"victim", {0.2, 0.6, 23}}});
  }
  EXPECT_NEAR(squeezed.usage, 0.2, 0.01);
  EXPECT_NEAR(squeezed.quiet_usage, 0.4, 0.01) << "a squeeze does not teach its quiet use";
  EXPECT_GT(squeezed.severity, 1);
  EXPECT_FALSE(squeezed.evidence.empty());
}

TEST_F(EngineTest, ABusyTenantNextToAnIdleOneIsNeverAnOffender) {
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(Step({{"hog", {1.9, 0.5, 20}}, {"victim", {0.0, 0, 10}}}).empty()) << i;
  }
}

TEST_F(EngineTest, AVictimThrottledByItsOwnQuotaIsNotHarmed) {
  for (int i = 0; i < 10; ++i) Step({{"hog", {0.05, 0, 18}}, {"victim", {0.2, 0.01, 18}}});
  // Not contended (1.2 of 2 cores); the victim waits because its own quota ran out.
  for (int i = 0; i < 6; ++i) {
    std::vector<Finding> findings =
        Step({{"hog", {1.0, 0.2, 20}}, {"victim", {0.2, 0.8, 24, 0.5}}});
    EXPECT_TRUE(findings.empty()) << "interval " << i;
  }
}

// Who held the CPU while a tenant waited, as the agent measures it, decides
// whose doing the waiting was.
TEST_F(EngineTest, WaitingBehindItsOwnThreadsIsNoNeighboursDoing) {
  for (int i = 0; i < 10; ++i) {
    Step({{"hog", {0.05, 0, 18, 0, {{"victim", 1.0}}}},
          {"victim", {0.4, 0.01, 18, 0, {{"self", 1.0}}}}});
  }
  // The "victim" runs many threads that queue behind each other; the other
  // tenant is busy too, but the waiting is 85 % the victim's own.
  for (int i = 0; i < 6; ++i) {
    std::vector<Finding> findings =
        Step({{"hog", {1.3, 0.1, 19, 0, {{"victim", 1.0}}}},
              {"victim", {0.7, 2.0, 23, 0, {{"self", 0.85}, {"hog", 0.15}}}}});
    EXPECT_TRUE(findings.empty()) << "interval " << i;
  }
  // The same waiting, but behind the other tenant: it is the cause.
  std::vector<Finding> findings;
  for (int i = 0; i < 3 && findings.empty(); ++i) {
    findings = Step({{"hog", {1.3, 0.1, 19, 0, {{"victim", 1.0}}}},
                     {"victim", {0.7, 2.0, 23, 0, {{"self", 0.2}, {"hog", 0.8}}}}});
  }
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].offender.id, "hog");
  ASSERT_EQ(findings[0].harmed.size(), 1u);
  EXPECT_TRUE(findings[0].harmed[0].measured);
  EXPECT_NEAR(findings[0].harmed[0].caused, 0.8, 0.01) << "80 % of the victim's run-queue wait";
  EXPECT_DOUBLE_EQ(findings[0].offender.blame, 1.0);
}

// A tenant that just appeared has no history to be harmed against: however
// long it waits, it is no victim until it has been seen for a whole window.
TEST_F(EngineTest, ATenantThatJustAppearedIsNoVictimYet) {
  for (int i = 0; i < 10; ++i) Step({{"hog", {1.6, 0.4, 20}}});
  // The "victim" appears next to the busy hog and waits behind it at once.
  const std::map<std::string, Second> both = {{"hog", {1.6, 0.4, 20, 0, {{"victim", 1.0}}}},
                                              {"victim", {0.3, 0.5, 23, 0, {{"hog", 0.9}}}}};
  int first_finding = -1;
  for (int i = 0; i < 10 && first_finding < 0; ++i) {
    if (!Step(both).empty()) first_finding = i;
  }
  // Seen in its 2nd report first (rates need two), a victim from its 5th,
  // the hog flagged in that interval and the next (2 of 5).
  EXPECT_EQ(first_finding, 5);
}

TEST(FleetLastInterval, RatesAndHarmOverTheTwoNewestReports) {
  FleetState fleet{FleetOptions{}};
  Host host(&fleet, "hv", 4);
  host.Inventory({MakeTenant("a", "alpha")});
  EXPECT_EQ(fleet.LastInterval("hv").status().code(), absl::StatusCode::kFailedPrecondition);
  host.Tick({{"a", {0.5, 0.1, 20}}});
  host.Tick({{"a", {1.5, 0.3, 22}}});
  absl::StatusOr<HostInterval> interval = fleet.LastInterval("hv");
  ASSERT_TRUE(interval.ok()) << interval.status();
  EXPECT_EQ(interval->seq, 2u);
  EXPECT_DOUBLE_EQ(interval->seconds, 1.0);
  EXPECT_EQ(interval->capacity.cpus(), 4u);
  ASSERT_EQ(interval->tenants.size(), 1u);
  const TenantInterval& t = interval->tenants[0];
  EXPECT_EQ(t.name, "alpha");
  EXPECT_NEAR(t.rates.cpu_cores, 1.5, 1e-9) << "the last interval only";
  EXPECT_TRUE(t.has_harm);
  EXPECT_NEAR(t.harm.runq_wait_ns_per_s(), 0.3e9, 1);
  EXPECT_GE(t.harm.runq_wait_p99_ns(), 4e6) << "bucket 22: [4.2, 8.4) ms";
  EXPECT_EQ(fleet.LastInterval("nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fairwatch::controller

namespace fairwatch::controller {
namespace {

TEST(EngineSeq, AnIntervalIsJudgedOnceAndAnAgentsNewRunIsJudgedFromItsFirstSeq) {
  FairnessEngine engine{FairnessParams{}};
  HostInterval interval;
  interval.host_id = "hv";
  interval.seconds = 1;
  interval.capacity.set_cpus(2);
  interval.tenants.push_back(TenantInterval{"t", "t", 1, {}, {}, false});
  interval.seq = 86'400;  // a day of reports
  EXPECT_EQ(engine.Evaluate(interval, {}).seq, 86'400u);
  EXPECT_EQ(engine.Evaluate(interval, {}).seq, 0u) << "judged already";
  // The agent restarted: its seqs start again at 1. Not a day of silence.
  interval.seq = 2;
  EXPECT_EQ(engine.Evaluate(interval, {}).seq, 2u);
  interval.seq = 3;
  EXPECT_EQ(engine.Evaluate(interval, {}).seq, 3u);
}

}  // namespace
}  // namespace fairwatch::controller
