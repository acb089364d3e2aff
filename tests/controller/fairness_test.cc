// Table-driven tests of the fairness arithmetic (docs/policy.md).
#include "controller/fairness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"

namespace fairwatch::controller {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(WeightedMaxMin, SatisfiesSmallDemandsAndSplitsTheRestByWeight) {
  struct Case {
    const char* name;
    double capacity;
    std::vector<double> demands, weights, want;
  };
  const Case cases[] = {
      {"all fit: each gets its demand", 4, {1, 0.5, 2}, {1, 1, 1}, {1, 0.5, 2}},
      {"equal split of a shortage", 2, {3, 3}, {1, 1}, {1, 1}},
      {"small demand satisfied, rest to the big one", 2, {0.4, 3}, {1, 1}, {0.4, 1.6}},
      {"weights 3:1", 2, {5, 5}, {3, 1}, {1.5, 0.5}},
      {"weight 3 but small demand", 2, {0.3, 5}, {3, 1}, {0.3, 1.7}},
      {"elastic demands, the finite one above the level",
       3,
       {kInf, 1, kInf},
       {1, 1, 2},
       {0.75, 0.75, 1.5}},
      {"elastic demands, the finite one satisfied",
       4,
       {kInf, 0.5, kInf},
       {1, 1, 2},
       {3.5 / 3, 0.5, 7.0 / 3}},
      {"nothing to share", 0, {1, 1}, {1, 1}, {0, 0}},
  };
  for (const Case& c : cases) {
    const std::vector<double> got = WeightedMaxMin(c.capacity, c.demands, c.weights);
    ASSERT_EQ(got.size(), c.want.size()) << c.name;
    double sum = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i], c.want[i], 1e-9) << c.name << " tenant " << i;
      EXPECT_LE(got[i], c.demands[i] + 1e-12) << c.name << ": never above demand";
      sum += got[i];
    }
    EXPECT_LE(sum, c.capacity + 1e-9) << c.name;
  }
}

TenantSample T(const std::string& id, double usage, double wanted = 0, double weight = 1,
               bool harmed = false) {
  TenantSample t;
  t.id = id;
  t.usage = usage;
  t.wanted = wanted;
  t.weight = weight;
  t.harmed = harmed;
  t.elastic_when_harmed = false;  // CPU: demand is measured (run-queue wait)
  return t;
}

// A harmed tenant whose waiting the kernel attributed: `self` its own,
// `by` the neighbours' (index in the sample list, share).
TenantSample Measured(TenantSample t, std::vector<std::pair<uint32_t, double>> by) {
  t.harmed = true;
  t.causes_measured = true;
  t.caused_by = std::move(by);
  for (const auto& [k, share] : t.caused_by) t.neighbour_share += share;
  return t;
}

// A hog (index 0) and a modest steady tenant (1) next to eight small ones,
// each waiting, 70 % of it behind the hog and 15 % behind the steady one.
std::vector<TenantSample> SmallCrowd() {
  std::vector<TenantSample> t = {T("hog", 1.0, 0.5), T("web", 0.4, 0.01)};
  for (int i = 0; i < 8; ++i) {
    t.push_back(Measured(T(absl::StrCat("small-", i), 0.05, 0.01), {{0, 0.7}, {1, 0.15}}));
  }
  return t;
}

// JudgeInterval with the harmed tenants' causes from the use where not measured.
IntervalJudgement Judge(const FairnessParams& params, double capacity,
                        std::vector<TenantSample> tenants) {
  AttributeByUse(&tenants);
  return JudgeInterval(params, capacity, tenants);
}

const TenantShare& Find(const IntervalJudgement& j, const std::string& id) {
  for (const auto& t : j.tenants) {
    if (t.id == id) return t;
  }
  static const TenantShare kNone;
  ADD_FAILURE() << "no tenant " << id;
  return kNone;
}

// One interval on a 2-core host; which tenants end up flagged.
TEST(JudgeInterval, TheOffenderRule) {
  struct Case {
    const char* name;
    double capacity;
    std::vector<TenantSample> tenants;
    std::vector<std::string> flagged;
  };
  const Case cases[] = {
      {"an idle tenant lends its share", 2, {T("busy", 1.85), T("idle", 0.001)}, {}},
      {"a lone tenant on an idle host is not an offender", 2, {T("alone", 1.95, 3.0)}, {}},
      {"weight 3 may use 3x", 2, {T("gold", 1.5, 1.0, 3), T("std", 0.5, 0.5, 1, true)}, {}},
      {"equal weights, the one over its share while the other suffers",
       2,
       {T("hog", 1.5, 1.0), T("victim", 0.5, 0.5, 1, true)},
       {"hog"}},
      {"above its share of an uncontended host, nobody harmed: not an offender",
       2,
       {T("big", 1.3), T("small", 0.2)},
       {}},
      {"contended host, nobody harmed: not a case, however big the share (a victim is needed)",
       2,
       {T("hog", 1.6, 2.0), T("meek", 0.4, 0.6)},
       {}},
      {"harmed neighbour on an uncontended host still makes an over-user flagged",
       4,
       {T("hog", 2.5, 1.0), T("victim", 0.5, 1.5, 1, true), T("other", 0.1)},
       {"hog"}},
      {"two offenders",
       3,
       {T("a", 1.35, 1.0), T("b", 1.2, 1.0), T("v", 0.45, 0.6, 1, true)},
       {"a", "b"}},
      {"one modest neighbour harmed by a hog within its max-min fair share: interference",
       2,
       {T("hog", 1.5, 0.5), Measured(T("web", 0.4, 0.05), {{0, 0.9}})},
       {"hog"}},
      {"a victim's waiting mostly its own doing (own threads): nobody flagged",
       2,
       {T("big", 1.4, 0.2), Measured(T("web", 0.4, 0.3), {{0, 0.3}})},
       {}},
      {"the consumer queued behind its own threads gets its entitlement: no victim, the "
       "single-threaded neighbour at its share is innocent",
       2,
       {Measured(T("many", 0.97, 3.0), {{1, 0.5}}), T("single", 1.03, 0.2)},
       {}},
      {"a tenant barely over its entitlement that caused a little: not flagged",
       3,
       {T("hog", 1.6, 0.5), T("mild", 1.05, 0.1),
        Measured(T("web", 0.3, 0.1), {{0, 0.8}, {1, 0.05}})},
       {"hog"}},
      {"ten small tenants shrink everyone's entitlement: a modest steady tenant that caused a "
       "little of their waiting is not blamed; the hog that caused most of it is",
       2,
       SmallCrowd(),
       {"hog"}},
      {"three takers next to a small tenant, each just above its entitlement with what the "
       "small one lends, together the cause of its waiting: all three",
       2,
       {T("a", 0.53, 1.4), T("b", 0.57, 1.4), T("c", 0.55, 1.4),
        Measured(T("web", 0.1, 0.01), {{0, 0.3}, {1, 0.35}, {2, 0.3}})},
       {"a", "b", "c"}},
      {"one of three takers a little below the others in an interval: the scheduler's noise, "
       "no victim among them",
       2,
       {T("a", 0.7, 1.3), Measured(T("b", 0.5, 1.5), {{0, 0.5}, {2, 0.5}}), T("c", 0.7, 1.3)},
       {}},
      {"a single-threaded tenant at about its entitlement waits behind a many-threaded one a "
       "few per cent above its own: the scheduler's rounding, nobody flagged",
       2,
       {T("many", 1.05, 6.95), Measured(T("single", 0.94, 0.06), {{0, 0.95}})},
       {}},
      {"a single-threaded tenant that wants its whole entitlement gets less in an interval "
       "(0.88, the host's tasks taking some): it lends nothing, and the many-threaded one at "
       "1.06 is within the tolerance of its own",
       2,
       {T("many", 1.06, 6.9), Measured(T("single", 0.88, 0.12), {{0, 0.95}})},
       {}},
      {"the same, held to its entitlement by a quota of its own, measured a little over it",
       2,
       {T("many", 1.03, 7.0), Measured(T("single", 0.87, 0.1), {{0, 0.97}})},
       {}},
      {"a neighbour that wants half its entitlement lends the rest: a hog just above its own "
       "that caused most of its waiting is flagged",
       2,
       {T("hog", 1.06, 6.9), Measured(T("web", 0.4, 0.05), {{0, 0.95}})},
       {"hog"}},
      {"a taker far below its fair share while another takes three times it: a victim",
       2,
       {T("hog", 1.5, 0.5), Measured(T("small", 0.45, 1.5), {{0, 0.9}})},
       {"hog"}},
  };
  FairnessParams params;
  for (const Case& c : cases) {
    IntervalJudgement j = Judge(params, c.capacity, c.tenants);
    std::vector<std::string> flagged;
    for (const auto& t : j.tenants) {
      if (t.flagged) flagged.push_back(t.id);
    }
    EXPECT_EQ(flagged, c.flagged) << c.name;
  }
}

TEST(JudgeInterval, ATenantWeHoldBackIsNoVictim) {
  // Its weight lowered by a case, it yields to everyone by design.
  TenantSample held = Measured(T("held", 0.1, 1.9), {{0, 0.95}});
  held.held_back = true;
  IntervalJudgement j = JudgeInterval(FairnessParams{}, 2, {T("free", 1.8, 0.2), held});
  EXPECT_FALSE(Find(j, "held").harmed);
  EXPECT_FALSE(Find(j, "free").flagged);
}

TEST(OffenderTracker, CoOffendersFlaggedAnIntervalApartAreActedOnTogether) {
  FairnessParams params;  // 2 of 5
  OffenderTracker tracker(params);
  auto interval = [](bool a_flagged, bool b_flagged, bool b_above) {
    IntervalJudgement j;
    for (const char* id : {"a", "b"}) {
      TenantShare s;
      s.id = id;
      s.usage = 0.6;
      s.entitled = 0.5;
      s.above = true;
      j.tenants.push_back(s);
    }
    j.tenants[0].flagged = a_flagged;
    j.tenants[1].flagged = b_flagged;
    j.tenants[1].above = b_above;
    return j;
  };
  EXPECT_TRUE(tracker.Record(interval(true, true, true)).empty());
  std::vector<Offender> now = tracker.Record(interval(true, false, true));
  ASSERT_EQ(now.size(), 2u) << "b was flagged the interval before and is above its entitlement";

  OffenderTracker other(params);
  EXPECT_TRUE(other.Record(interval(true, true, true)).empty());
  now = other.Record(interval(true, false, false));
  ASSERT_EQ(now.size(), 1u) << "b is back within its entitlement";
  EXPECT_EQ(now[0].id, "a");
}

TEST(JudgeInterval, SharesOfAnIdleAndABusyTenant) {
  IntervalJudgement j =
      JudgeInterval(FairnessParams{}, 2, {T("busy", 1.8, 1.0), T("idle", 0.0001)});
  EXPECT_FALSE(Find(j, "idle").active);
  EXPECT_DOUBLE_EQ(Find(j, "busy").entitled, 2.0) << "the idle tenant lends its entitlement";
  EXPECT_NEAR(Find(j, "idle").entitled, 1.0, 1e-12) << "what it gets the moment it wakes";
  EXPECT_NEAR(Find(j, "busy").fair, 2.0 - 0.0001, 1e-9);
  EXPECT_TRUE(j.contended);
}

TEST(JudgeInterval, ALimitOfOursCountsAsDemandAtLeastTheLimit) {
  TenantSample limited = T("limited", 0.6);
  limited.limit = 0.8;
  IntervalJudgement j = JudgeInterval(FairnessParams{}, 2, {limited, T("other", 1.4)});
  EXPECT_DOUBLE_EQ(Find(j, "limited").demand, 0.8);
}

TEST(JudgeInterval, HarmedTenantWithoutMeasuredDemandIsElastic) {
  TenantSample victim = T("victim", 20e6, 0, 1, true);
  victim.elastic_when_harmed = true;  // disk: no measure of unmet demand
  IntervalJudgement j = Judge(FairnessParams{}, 100e6, {T("hog", 80e6), victim});
  EXPECT_TRUE(std::isinf(Find(j, "victim").demand));
  EXPECT_NEAR(Find(j, "hog").fair, 50e6, 1) << "the victim would take its half";
  EXPECT_TRUE(Find(j, "hog").flagged);
}

TEST(OffenderTracker, TheDefaultTakesTwoFlaggedIntervalsOfFive) {
  OffenderTracker tracker{FairnessParams{}};
  IntervalJudgement flagged;
  TenantShare s;
  s.id = "hog";
  s.usage = 1.5;
  s.fair = 1.0;
  s.flagged = true;
  flagged.tenants.push_back(s);
  IntervalJudgement quiet = flagged;
  quiet.tenants[0].flagged = false;
  EXPECT_TRUE(tracker.Record(flagged).empty()) << "one interval is a blip";
  EXPECT_TRUE(tracker.Record(quiet).empty());
  EXPECT_FALSE(tracker.Record(flagged).empty()) << "two of the last five";
}

TEST(OffenderTracker, NofMIntervals) {
  FairnessParams params;
  EXPECT_EQ(params.required, 2u) << "the default: 2 of 5 (docs/policy.md)";
  params.required = 3;  // the rule at its most telling: 3 of 5
  struct Case {
    const char* name;
    std::vector<bool> flags;  // per interval, oldest first
    std::vector<bool> offender_after;
  };
  const Case cases[] = {
      {"a burst of two intervals is not enough",
       {true, true, false, false, false},
       {false, false, false, false, false}},
      {"three in a row", {true, true, true, true}, {false, false, true, true}},
      {"three of five with gaps",
       {true, false, true, false, true},
       {false, false, false, false, true}},
      {"only counts the last five",
       {true, true, false, false, false, true, false, true},
       {false, false, false, false, false, false, false, false}},
      {"flagged intervals make it; an unflagged interval ends it for now",
       {true, true, true, false, true},
       {false, false, true, false, true}},
  };
  for (const Case& c : cases) {
    OffenderTracker tracker(params);
    for (size_t i = 0; i < c.flags.size(); ++i) {
      IntervalJudgement j;
      TenantShare s;
      s.id = "hog";
      s.usage = 1.5;
      s.fair = 1.0;
      s.flagged = c.flags[i];
      j.tenants.push_back(s);
      const bool offender = !tracker.Record(j).empty();
      EXPECT_EQ(offender, c.offender_after[i]) << c.name << " interval " << i;
    }
  }
}

TEST(OffenderTracker, SeveralOffendersShareTheBlameByTheWaitingEachCaused) {
  FairnessParams params;
  params.required = 1;
  OffenderTracker tracker(params);
  IntervalJudgement j = JudgeInterval(
      params, 3,
      {T("a", 1.35, 1.0), T("b", 1.2, 1.0), Measured(T("v", 0.45, 0.6), {{0, 0.6}, {1, 0.3}})});
  std::vector<Offender> offenders = tracker.Record(j);
  ASSERT_EQ(offenders.size(), 2u);
  std::map<std::string, double> blame;
  for (const auto& o : offenders) blame[o.id] = o.blame;
  EXPECT_NEAR(blame["a"], 0.6 / 0.9, 1e-9) << "a caused 60 % of v's waiting, b 30 %";
  EXPECT_NEAR(blame["b"], 0.3 / 0.9, 1e-9);
  EXPECT_EQ(offenders.front().id, "a") << "largest blame first";
}

TEST(OffenderTracker, ATenantThatLeavesIsForgotten) {
  FairnessParams params;
  params.required = 2;
  OffenderTracker tracker(params);
  IntervalJudgement flagged;
  TenantShare s;
  s.id = "hog";
  s.flagged = true;
  flagged.tenants.push_back(s);
  tracker.Record(flagged);
  EXPECT_EQ(tracker.FlaggedIntervals("hog"), 1u);
  for (int i = 0; i < 5; ++i) tracker.Record(IntervalJudgement{});
  EXPECT_EQ(tracker.FlaggedIntervals("hog"), 0u);
  EXPECT_TRUE(tracker.Record(flagged).empty()) << "history restarts from nothing";
}

v1::HarmSignals Cpu(double runq_p99_ms, double throttled_fraction = 0) {
  v1::HarmSignals s;
  s.set_runq_wait_p99_ns(runq_p99_ms * 1e6);
  s.set_throttled_ns_per_s(throttled_fraction * 1e9);
  return s;
}

TEST(HarmBaseline, JudgedAgainstTheTenantsOwnBaseline) {
  HarmParams params;
  HarmBaseline quiet_tenant;
  for (int i = 0; i < 20; ++i) quiet_tenant.Learn(Cpu(0.3), params);
  EXPECT_FALSE(quiet_tenant.Judge(v1::RESOURCE_CPU, Cpu(0.9), params).harmed)
      << "3x its baseline but under the 1 ms floor";
  HarmVerdict v = quiet_tenant.Judge(v1::RESOURCE_CPU, Cpu(8), params);
  EXPECT_TRUE(v.harmed);
  ASSERT_EQ(v.evidence.size(), 1u);
  EXPECT_NE(v.evidence[0].find("run-queue wait p99 8.0 ms"), std::string::npos) << v.evidence[0];

  HarmBaseline busy_tenant;  // normally waits 4 ms at p99
  for (int i = 0; i < 20; ++i) busy_tenant.Learn(Cpu(4), params);
  EXPECT_FALSE(busy_tenant.Judge(v1::RESOURCE_CPU, Cpu(6), params).harmed);
  EXPECT_TRUE(busy_tenant.Judge(v1::RESOURCE_CPU, Cpu(9), params).harmed);
}

TEST(HarmBaseline, AVictimSlowedByItsOwnQuotaIsNotHarmed) {
  HarmParams params;
  HarmBaseline b;
  b.Learn(Cpu(0.3), params);
  EXPECT_TRUE(b.Judge(v1::RESOURCE_CPU, Cpu(12), params).harmed);
  EXPECT_FALSE(b.Judge(v1::RESOURCE_CPU, Cpu(12, 0.4), params).harmed)
      << "throttled by its own quota 40% of the time";
}

TEST(HarmBaseline, EachResourceLooksAtItsOwnSignals) {
  HarmParams params;
  HarmBaseline b;
  v1::HarmSignals quiet;
  quiet.set_io_latency_p99_ns(1e6);
  b.Learn(quiet, params);
  v1::HarmSignals bad = Cpu(20);
  bad.set_io_latency_p99_ns(30e6);
  bad.set_net_drops_per_s(50);
  EXPECT_TRUE(b.Judge(v1::RESOURCE_CPU, bad, params).harmed);
  EXPECT_TRUE(b.Judge(v1::RESOURCE_DISK_BANDWIDTH, bad, params).harmed);
  EXPECT_TRUE(b.Judge(v1::RESOURCE_NET_TX, bad, params).harmed);
  v1::HarmSignals only_cpu = Cpu(20);
  only_cpu.set_io_latency_p99_ns(1e6);
  EXPECT_FALSE(b.Judge(v1::RESOURCE_DISK_IOPS, only_cpu, params).harmed);
  EXPECT_FALSE(b.Judge(v1::RESOURCE_NET_RX, only_cpu, params).harmed);
}

TEST(HarmBaseline, AnUntracedIntervalNeitherJudgesNorTeachesRunqWaits) {
  HarmParams params;
  const size_t runq = *FindHarmDetector("runq_wait_p99");
  HarmBaseline b;
  v1::HarmSignals untraced = Cpu(0);
  untraced.set_runq_untraced(true);
  untraced.set_cpu_psi_present(true);
  b.Learn(untraced, params);
  EXPECT_FALSE(b.seeded(runq)) << "a 0 read while not tracing is no level";
  EXPECT_TRUE(b.seeded(*FindHarmDetector("cpu_psi")));
  b.Learn(Cpu(3), params);  // the first traced quiet interval seeds it
  ASSERT_TRUE(b.seeded(runq));
  EXPECT_FALSE(b.Judge(v1::RESOURCE_CPU, Cpu(5), params).harmed) << "under 2x its 3 ms";
  v1::HarmSignals high_untraced = Cpu(50);
  high_untraced.set_runq_untraced(true);
  EXPECT_FALSE(b.Judge(v1::RESOURCE_CPU, high_untraced, params).harmed);
  EXPECT_TRUE(b.Judge(v1::RESOURCE_CPU, Cpu(50), params).harmed);
}

TEST(HarmBaseline, ADisabledDetectorNeverHarms) {
  HarmParams params;
  HarmBaseline b;
  v1::HarmSignals quiet = Cpu(0.3);
  quiet.set_cpu_psi_present(true);
  b.Learn(quiet, params);
  v1::HarmSignals psi_only = Cpu(0.3);
  psi_only.set_cpu_psi_present(true);
  psi_only.set_cpu_psi_some_fraction(0.5);
  HarmVerdict on = b.Judge(v1::RESOURCE_CPU, psi_only, params);
  ASSERT_TRUE(on.harmed);
  ASSERT_EQ(on.evidence.size(), 1u);
  EXPECT_NE(on.evidence[0].find("CPU pressure 50%"), std::string::npos) << on.evidence[0];

  params.enabled[*FindHarmDetector("cpu_psi")] = false;
  EXPECT_FALSE(b.Judge(v1::RESOURCE_CPU, psi_only, params).harmed);
  EXPECT_TRUE(b.Judge(v1::RESOURCE_CPU, Cpu(12), params).harmed)
      << "the run-queue detector still judges CPU";
  psi_only.set_cpu_psi_present(false);
  params.enabled.fill(true);
  EXPECT_FALSE(b.Judge(v1::RESOURCE_CPU, psi_only, params).harmed)
      << "a signal the agent could not read is not judged";
}

TEST(HarmDetectors, NamesAreUniqueAndEveryJudgedResourceHasOne) {
  const auto& detectors = HarmDetectors();
  for (size_t d = 0; d < detectors.size(); ++d) {
    EXPECT_EQ(FindHarmDetector(detectors[d].name), d) << detectors[d].name;
    EXPECT_FALSE(detectors[d].label.empty());
    EXPECT_FALSE(detectors[d].help.empty());
  }
  for (v1::Resource r : {v1::RESOURCE_CPU, v1::RESOURCE_DISK_BANDWIDTH, v1::RESOURCE_DISK_IOPS,
                         v1::RESOURCE_NET_RX, v1::RESOURCE_NET_TX}) {
    bool judged = false;
    for (const HarmDetector& d : detectors)
      judged = judged || (HarmGroupOf(r) && Judges(d, *HarmGroupOf(r)));
    EXPECT_TRUE(judged) << v1::Resource_Name(r);
  }
  EXPECT_FALSE(FindHarmDetector("no_such_detector"));
}

}  // namespace
}  // namespace fairwatch::controller
