// The planner's state machine on a simulated clock.
#include "controller/planner.h"

#include <gtest/gtest.h>

#include <map>

namespace fairwatch::controller {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

absl::Time At(int seconds) { return kT0 + absl::Seconds(seconds); }

// A resource whose cases open with a cap (CPU's open by lowering the weight).
constexpr v1::Resource kCapped = v1::RESOURCE_DISK_BANDWIDTH;

// One interval of host "hv": `hog` with the given shares, `victim` harmed or
// not; the hog is an offender when `offender` is set.
Evaluation Interval(uint64_t seq, bool offender, bool victim_harmed, double usage = 1.6,
                    v1::Resource resource = kCapped, const std::string& hog = "hog",
                    double blame = 0) {
  Evaluation e;
  e.host_id = "hv";
  e.seq = seq;
  ResourceVerdict v;
  v.resource = resource;
  TenantShare h;
  h.id = hog;
  h.usage = usage;
  h.demand = usage;
  h.fair = 1.0;
  h.entitled = 1.0;
  h.active = true;
  TenantShare victim;
  victim.id = "victim";
  victim.usage = 0.4;
  victim.demand = 0.4;
  victim.quiet_usage = 0.4;
  victim.fair = 1.0;
  victim.active = true;
  victim.entitled = 1.0;
  victim.harmed = victim_harmed;
  v.judgement.capacity = 2;
  v.judgement.total_usage = usage + victim.usage;
  v.judgement.harmed = victim_harmed ? 1 : 0;
  v.judgement.tenants = {h, victim};
  e.verdicts.push_back(v);
  if (offender) {
    Finding f;
    f.host_id = "hv";
    f.seq = seq;
    f.resource = resource;
    f.capacity = 2;
    f.contended = true;
    f.offender.id = hog;
    f.offender.share = h;
    f.offender.flagged_intervals = 3;
    f.offender.blame = blame;
    if (victim_harmed) f.harmed.push_back({"victim", {"run-queue wait p99 8.4 ms"}, 0.8, false});
    e.findings.push_back(f);
  }
  return e;
}

// The defaults, with 10 % headroom for round numbers: on 2 units next to a
// victim wanting 0.4, the sized cap is 2 x 0.9 - 0.4 = 1.4.
PlannerParams Params() {
  PlannerParams p;
  p.headroom = 0.10;
  return p;
}

// The victim's share in an interval made by Interval().
TenantShare& Victim(Evaluation& e) { return e.verdicts[0].judgement.tenants[1]; }

// Plans the interval at second t, appending its actions and, for each, t.
void PlanAt(Planner& planner, int t, const Evaluation& e, std::vector<PlannedAction>* got,
            std::vector<int>* at) {
  for (PlannedAction& a : planner.Plan(At(t), e, 2)) {
    got->push_back(std::move(a));
    at->push_back(t);
  }
}

struct Step {
  int t;
  v1::ActionKind kind;
  double limit;
};

// The worked example of docs/policy.md ("Actions"): on 2 units, a hog at 1.6
// next to a victim that wants 0.4. Its cap leaves the victim what it needs
// plus 10 % headroom; while the victim's harm persists and each step lowers
// it, the cap steps down to the floor; once the harm ends it goes back up to
// the sized cap, and holds there while the hog uses it.
TEST(Planner, LimitSizedFromTheNeighboursStepDownWhileItHelpsBackUpHoldReleaseCoolDown) {
  Planner planner{Params()};
  std::vector<Step> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 160; ++t) {
    // Harm until t=40, the less the lower the cap; the hog stops from 80 to
    // 95 and is flagged again from 95 on.
    const bool harm = t < 40;
    const double usage = t >= 80 && t < 95 ? 0.02 : 1.6;
    const bool offender = t == 0 || t >= 95;
    Evaluation e = Interval(++seq, offender, harm, usage);
    const double cap = planner.LimitOf("hv", "hog", kCapped);
    Victim(e).severity = harm ? 4 * cap * cap : 0.5;
    for (const PlannedAction& a : planner.Plan(At(t), e, 2)) {
      EXPECT_EQ(a.tenant_id, "hog");
      EXPECT_FALSE(a.dry_run);
      EXPECT_FALSE(a.reason.empty());
      if (a.kind != v1::ACTION_KIND_SKIP) {
        EXPECT_EQ(a.seen.report_seq(), seq) << "every policy action records what it answered";
        EXPECT_DOUBLE_EQ(a.seen.capacity(), 2);
      }
      got.push_back({t, a.kind, a.limit});
    }
  }
  const std::vector<Step> want = {
      {0, v1::ACTION_KIND_LIMIT, 1.4},       // 2 x (1 - 10 %) - the victim's 0.4
      {5, v1::ACTION_KIND_STEP_DOWN, 1.12},  // harm persists: x0.8 every 5 s while it helps
      {10, v1::ACTION_KIND_STEP_DOWN, 0.896},
      {15, v1::ACTION_KIND_STEP_DOWN, 0.7168},
      {20, v1::ACTION_KIND_STEP_DOWN, 0.57344},
      {25, v1::ACTION_KIND_STEP_DOWN, 0.5},  // floor: half its entitlement
      {30, v1::ACTION_KIND_RENEW, 0.5},  // at its floor, harm persists: says who did not recover
      {45, v1::ACTION_KIND_RENEW, 0.5},  // lease (30 s) half gone
      {50, v1::ACTION_KIND_STEP_UP, 0.625},  // quiet since 40, for 10 s
      {55, v1::ACTION_KIND_STEP_UP, 0.78125},
      {60, v1::ACTION_KIND_STEP_UP, 0.9765625},
      {65, v1::ACTION_KIND_STEP_UP, 1.220703125},
      {70, v1::ACTION_KIND_STEP_UP, 1.4},  // what the victim leaves: held there
      {85, v1::ACTION_KIND_RENEW, 1.4},
      {90, v1::ACTION_KIND_RELEASE, 0},  // stopped at 80: under half its cap for 10 s
  };
  ASSERT_GE(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].t, want[i].t) << "step " << i;
    EXPECT_EQ(got[i].kind, want[i].kind) << "step " << i << " at t=" << got[i].t;
    EXPECT_NEAR(got[i].limit, want[i].limit, 1e-9) << "step " << i;
  }
  // Flagged again at 95: cooling down (60 s after the release at 90) until 150.
  ASSERT_GT(got.size(), want.size());
  EXPECT_EQ(got[want.size()].t, 95);
  EXPECT_EQ(got[want.size()].kind, v1::ACTION_KIND_SKIP);
  const auto relimit = std::find_if(got.begin(), got.end(), [](const Step& s) {
    return s.t > 90 && s.kind == v1::ACTION_KIND_LIMIT;
  });
  ASSERT_NE(relimit, got.end());
  EXPECT_EQ(relimit->t, 150);
}

TEST(Planner, AnOffenderThatStoppedIsReleasedAfterTheQuietPeriodNotSteppedBackUp) {
  Planner planner{Params()};
  std::vector<Step> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 60; ++t) {
    // Limited at 0; the hog stops at 20 (a trickle of 0.02 cores) while its
    // neighbours stay harmed until 40, by something else: its limit binds
    // nothing, so it is neither stepped down nor kept.
    const double usage = t < 20 ? 1.6 : 0.02;
    for (const PlannedAction& a : planner.Plan(At(t), Interval(++seq, t == 0, t < 40, usage), 2)) {
      got.push_back({t, a.kind, a.limit});
      if (a.kind == v1::ACTION_KIND_RELEASE) {
        EXPECT_NE(a.reason.find("no longer needs one"), std::string::npos) << a.reason;
      }
    }
  }
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().kind, v1::ACTION_KIND_RELEASE);
  EXPECT_EQ(got.back().t, 30);  // idle since 20, for the quiet period (10 s)
  for (const Step& s : got) {
    if (s.t >= 20) {
      EXPECT_NE(s.kind, v1::ACTION_KIND_STEP_UP) << "at t=" << s.t;
      EXPECT_NE(s.kind, v1::ACTION_KIND_STEP_DOWN) << "at t=" << s.t;
    }
  }
}

TEST(Planner, HarmThatComesAndGoesWithBurstsIsNotSteppedDown) {
  Planner planner{Params()};
  std::vector<Step> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 60; ++t) {
    // Bursts: two intervals busy, two idle; limited at 0. Its neighbours,
    // behind on their work after each burst, stay harmed throughout.
    const bool on = t % 4 < 2;
    for (const PlannedAction& a :
         planner.Plan(At(t), Interval(++seq, t == 0, true, on ? 1.6 : 0.01), 2)) {
      got.push_back({t, a.kind, a.limit});
    }
  }
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0].kind, v1::ACTION_KIND_LIMIT);
  for (size_t i = 1; i < got.size(); ++i) {
    EXPECT_EQ(got[i].kind, v1::ACTION_KIND_RENEW) << "at t=" << got[i].t;
  }
}

TEST(Planner, ABriefLullIsNotAStop) {
  Planner planner{Params()};
  uint64_t seq = 0;
  std::vector<Step> got;
  for (int t = 0; t <= 40; ++t) {
    // No harm after 0; idle from 1 to 8, busy again at 9 and after, up to
    // its cap: held, renewed, not released as stopped.
    const double usage = t == 0 ? 1.6 : t <= 8 ? 0.01 : 1.4;
    for (const PlannedAction& a : planner.Plan(At(t), Interval(++seq, t == 0, t == 0, usage), 2)) {
      got.push_back({t, a.kind, a.limit});
    }
  }
  ASSERT_GE(got.size(), 2u);
  for (size_t i = 1; i < got.size(); ++i) {
    EXPECT_EQ(got[i].kind, v1::ACTION_KIND_RENEW) << "at t=" << got[i].t;
    EXPECT_DOUBLE_EQ(got[i].limit, 1.4);
  }
}

// A step down that did not lower the neighbours' harm is undone: a lower cap
// that does not help only idles the host. The case says what did not recover.
TEST(Planner, AStepDownThatDidNotHelpIsUndoneAndNotTriedAgainWhileTheHarmLasts) {
  Planner planner{Params()};
  std::vector<PlannedAction> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 60; ++t) {
    Evaluation e = Interval(++seq, t == 0, true);
    Victim(e).severity = 3;  // whatever the cap
    Victim(e).evidence = {"I/O latency p99 8.1 ms (baseline 0.6 ms)"};
    for (PlannedAction& a : planner.Plan(At(t), e, 2)) got.push_back(std::move(a));
  }
  ASSERT_GE(got.size(), 4u);
  EXPECT_EQ(got[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_DOUBLE_EQ(got[0].limit, 1.4);
  EXPECT_EQ(got[1].kind, v1::ACTION_KIND_STEP_DOWN);
  EXPECT_DOUBLE_EQ(got[1].limit, 1.12);
  EXPECT_EQ(got[2].kind, v1::ACTION_KIND_STEP_UP);
  EXPECT_DOUBLE_EQ(got[2].limit, 1.4);
  EXPECT_NE(got[2].reason.find("did not lower its neighbours' harm"), std::string::npos)
      << got[2].reason;
  EXPECT_NE(got[2].reason.find("not recovered: victim (I/O latency p99 8.1 ms"), std::string::npos)
      << got[2].reason;
  for (size_t i = 3; i < got.size(); ++i) {
    EXPECT_EQ(got[i].kind, v1::ACTION_KIND_RENEW);
    EXPECT_DOUBLE_EQ(got[i].limit, 1.4);
    EXPECT_NE(got[i].reason.find("not recovered"), std::string::npos) << got[i].reason;
  }
  ASSERT_EQ(got[2].seen.neighbours_size(), 1);
  EXPECT_TRUE(got[2].seen.neighbours(0).suffering());
}

// Once a lower cap was shown not to help, a capacity that falls under it (a
// disk's operations per busy second, learned from what the device does now,
// drop as its writer is capped) does not step it down to the new sized cap:
// that is a lower cap too.
TEST(Planner, AnExhaustedCapDoesNotChaseAFallingCapacity) {
  Planner planner{Params()};
  std::vector<PlannedAction> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 60; ++t) {
    Evaluation e = Interval(++seq, t == 0, true);
    Victim(e).severity = 3;  // whatever the cap
    Victim(e).evidence = {"I/O latency p99 8.1 ms (baseline 0.6 ms)"};
    // From t = 20 the capacity it is judged against shrinks: sized 1.8 x 0.9 - 0.4.
    if (t >= 20) e.verdicts[0].judgement.capacity = 1.8;
    for (PlannedAction& a : planner.Plan(At(t), e, 2)) got.push_back(std::move(a));
  }
  ASSERT_GE(got.size(), 3u);
  EXPECT_EQ(got[2].kind, v1::ACTION_KIND_STEP_UP) << "the undone step";
  for (size_t i = 3; i < got.size(); ++i) {
    EXPECT_EQ(got[i].kind, v1::ACTION_KIND_RENEW) << got[i].reason;
    EXPECT_DOUBLE_EQ(got[i].limit, 1.4);
  }
}

// A disk that delivers less under the mixed load than the capacity it is
// judged against: the sized cap would not bind, so the first cap is a step
// below the offender's usage, judged like any other: undone when the harm
// did not fall.
TEST(Planner, AFirstCapBelowItsUsageWhenTheSizedOneWouldNotBindIsJudgedLikeAStep) {
  Planner planner{Params()};
  std::vector<PlannedAction> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 12; ++t) {
    Evaluation e = Interval(++seq, t == 0, true, 1.3);  // sized: 1.8 - 0.4 = 1.4
    Victim(e).severity = 3;
    for (PlannedAction& a : planner.Plan(At(t), e, 2)) got.push_back(std::move(a));
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_DOUBLE_EQ(got[0].limit, 1.3 * 0.8);
  EXPECT_NE(got[0].reason.find("would not bind"), std::string::npos) << got[0].reason;
  EXPECT_EQ(got[1].kind, v1::ACTION_KIND_STEP_UP);
  EXPECT_DOUBLE_EQ(got[1].limit, 1.3) << "back to its usage: the cap did not help";
  EXPECT_NE(got[1].reason.find("did not lower its neighbours' harm"), std::string::npos);
}

// On the network, a neighbour that gets less than its quiet rate while the
// uplink is busy is short of it, retransmits or not: the cap steps down, and
// does not go back up to where it was short for a cool-down.
TEST(Planner, ANeighbourShortOfItsQuietRateCountsAsHarmOnTheNetwork) {
  Planner planner{Params()};
  std::vector<PlannedAction> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 90; ++t) {
    Evaluation e = Interval(++seq, t == 0, t == 0, 1.6, v1::RESOURCE_NET_TX);
    const double cap = planner.LimitOf("hv", "hog", v1::RESOURCE_NET_TX);
    if (t >= 1 && cap > 1.2) {
      Victim(e).usage = 0.25;  // of its quiet 0.4, with no retransmit
      e.verdicts[0].judgement.total_usage = cap + 0.25;
    }
    for (PlannedAction& a : planner.Plan(At(t), e, 2)) got.push_back(std::move(a));
  }
  ASSERT_GE(got.size(), 3u);
  EXPECT_EQ(got[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_DOUBLE_EQ(got[0].limit, 1.4);
  EXPECT_EQ(got[1].kind, v1::ACTION_KIND_STEP_DOWN);
  EXPECT_DOUBLE_EQ(got[1].limit, 1.12);
  ASSERT_EQ(got[1].seen.neighbours_size(), 1);
  EXPECT_TRUE(got[1].seen.neighbours(0).suffering());
  EXPECT_DOUBLE_EQ(got[1].seen.neighbours(0).wants(), 0.4);
  ASSERT_EQ(got[1].seen.neighbours(0).evidence_size(), 1);
  EXPECT_NE(got[1].seen.neighbours(0).evidence(0).find("getting 62 % of its quiet rate"),
            std::string::npos);
  // Fine under 1.12 from t=6: back up to 1.4 after the quiet period, short
  // there again, down again; then held at 1.12 (renewed) for a cool-down
  // (60 s) after the harm came back at 1.4, and only then tried again.
  ASSERT_GE(got.size(), 6u);
  EXPECT_EQ(got[2].kind, v1::ACTION_KIND_STEP_UP);
  EXPECT_EQ(got[2].seen.report_seq(), 17u);  // t=16
  EXPECT_EQ(got[3].kind, v1::ACTION_KIND_STEP_DOWN);
  EXPECT_EQ(got[3].seen.report_seq(), 22u);  // t=21
  size_t i = 4;
  for (; i < got.size() && got[i].kind == v1::ACTION_KIND_RENEW; ++i) {
    EXPECT_DOUBLE_EQ(got[i].limit, 1.12);
  }
  ASSERT_LT(i, got.size());
  EXPECT_EQ(got[i].kind, v1::ACTION_KIND_STEP_UP);
  EXPECT_EQ(got[i].seen.report_seq(), 82u);  // t=81
}

// The cap follows what the neighbours need, with a margin against flapping:
// lowered when they want more, raised when they want less, released when
// they want nothing.
TEST(Planner, TheCapFollowsTheNeighboursNeed) {
  Planner planner{Params()};
  std::vector<Step> got;
  uint64_t seq = 0;
  for (int t = 0; t <= 60; ++t) {
    Evaluation e = Interval(++seq, t == 0, t == 0);
    // The victim wants 0.4, then 0.8 from 5 (not harmed: the cap leaves room),
    // 0.42 from 20 (within the margin), nothing from 40.
    const double wants = t < 5 ? 0.4 : t < 20 ? 0.8 : t < 40 ? 0.42 : 0;
    Victim(e).usage = Victim(e).demand = wants;
    Victim(e).active = wants > 0;
    for (const PlannedAction& a : planner.Plan(At(t), e, 2)) got.push_back({t, a.kind, a.limit});
  }

  const std::vector<Step> want = {
      {0, v1::ACTION_KIND_LIMIT, 1.4},
      {5, v1::ACTION_KIND_STEP_DOWN, 1.0},  // 1.8 - 0.8, as soon as a step is due
      {20, v1::ACTION_KIND_RENEW, 1.0},
      // The need is the largest of the last 10 intervals: 0.8 until 28, then 0.42.
      {29, v1::ACTION_KIND_STEP_UP, 1.25},  // x1.25 at most per step
      {34, v1::ACTION_KIND_STEP_UP, 1.38},
      // Wanting nothing from 40: the largest of 10 intervals is 0 from 49.
      {49, v1::ACTION_KIND_RELEASE, 0},
  };
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].t, want[i].t) << "step " << i;
    EXPECT_EQ(got[i].kind, want[i].kind) << "step " << i << " at t=" << got[i].t;
    EXPECT_NEAR(got[i].limit, want[i].limit, 1e-9) << "step " << i;
  }
}

TEST(Planner, ALeaseIsRenewedBeforeItExpiresAndTheLimitIsKnownToTheEngine) {
  Planner planner{Params()};
  std::vector<PlannedAction> first = planner.Plan(At(0), Interval(1, true, true), 2);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].lease_expires, At(30));
  EXPECT_DOUBLE_EQ(planner.LimitOf("hv", "hog", kCapped), 1.4);
  EXPECT_DOUBLE_EQ(planner.LimitsOn("hv").at("hog").at(kCapped), 1.4);
  // Harm persists but the floor is reached after a few steps; the lease never lapses.
  absl::Time lease = first[0].lease_expires;
  for (int t = 1; t <= 200; ++t) {
    for (const PlannedAction& a : planner.Plan(At(t), Interval(1 + t, false, true), 2)) {
      EXPECT_LE(At(t), lease) << "acted after the lease expired at t=" << t;
      lease = a.lease_expires;
    }
    EXPECT_GT(lease, At(t)) << "lease lapsed at t=" << t;
  }
}

TEST(Planner, AtMostAShareOfTheHostsTenantsAreLimitedAtOnce) {
  Planner planner{Params()};  // 25 % of 4 tenants: one
  Evaluation e = Interval(1, true, true);
  Evaluation other = Interval(1, true, true, 1.6, kCapped, "hog2");
  e.findings.push_back(other.findings[0]);
  e.verdicts[0].judgement.tenants.push_back(other.verdicts[0].judgement.tenants[0]);
  std::vector<PlannedAction> actions = planner.Plan(At(0), e, 4);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_EQ(actions[1].kind, v1::ACTION_KIND_SKIP);
  EXPECT_NE(actions[1].reason.find("cap reached: 1 of 4"), std::string::npos) << actions[1].reason;
  EXPECT_EQ(planner.active_cases(), 1u);
}

TEST(Planner, ExemptTenantsAreRecordedButNeverLimited) {
  Planner planner{Params()};
  auto exempt = [](const std::string&, const std::string& tenant) -> std::optional<std::string> {
    if (tenant == "hog") return "tenant exempted by operator:alice (exemption 1: backup window)";
    return std::nullopt;
  };
  std::vector<PlannedAction> actions = planner.Plan(At(0), Interval(1, true, true), 2, exempt);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_SKIP);
  EXPECT_EQ(actions[0].reason,
            "exempt: tenant exempted by operator:alice (exemption 1: backup window)");
  EXPECT_EQ(planner.active_cases(), 0u);
}

TEST(Planner, DryRunPerResourceDecidesTheSameButMarksItsActions) {
  PlannerParams params = Params();
  params.dry_run_resources = {v1::RESOURCE_CPU};
  Planner planner(params);
  std::vector<PlannedAction> cpu =
      planner.Plan(At(0), Interval(1, true, true, 1.6, v1::RESOURCE_CPU), 2);
  ASSERT_EQ(cpu.size(), 1u);
  EXPECT_EQ(cpu[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_TRUE(cpu[0].dry_run);
  // Next interval: the CPU case goes on (nothing due yet) and a disk offender appears.
  Evaluation next = Interval(2, false, true, 1.6, v1::RESOURCE_CPU);
  Evaluation disk = Interval(2, true, true, 160e6, v1::RESOURCE_DISK_BANDWIDTH, "hog2");
  next.verdicts.push_back(disk.verdicts[0]);
  next.findings.push_back(disk.findings[0]);
  std::vector<PlannedAction> actions = planner.Plan(At(1), next, 8);  // cap: 2 of 8
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].resource, v1::RESOURCE_DISK_BANDWIDTH);
  EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_FALSE(actions[0].dry_run);
}

TEST(Planner, ACaseOfATenantThatLeftIsReleased) {
  Planner planner{Params()};
  ASSERT_EQ(planner.Plan(At(0), Interval(1, true, true), 2).size(), 1u);
  Evaluation gone = Interval(2, false, true);
  gone.verdicts[0].judgement.tenants.erase(gone.verdicts[0].judgement.tenants.begin());
  std::vector<PlannedAction> actions = planner.Plan(At(1), gone, 1);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_RELEASE);
  EXPECT_EQ(planner.active_cases(), 0u);
  EXPECT_TRUE(planner.Plan(At(2), Evaluation{}, 1).empty()) << "an already-judged interval";
}

TEST(Planner, ALimitOnAResourceNotJudgedOnTheHostIsKeptWhileTheTenantIsThere) {
  // A disk limit on a host whose disk capacity is unknown: intervals carry
  // only CPU verdicts. The tenant is there, so the case stays and is renewed.
  Planner planner{Params()};
  planner.Impose(At(0), "hv", "hog", v1::RESOURCE_DISK_BANDWIDTH, 4e6, "operator:alice", "t");
  std::vector<v1::ActionKind> kinds;
  for (int t = 1; t <= 40; ++t) {
    for (const PlannedAction& a :
         planner.Plan(At(t), Interval(t, false, false, 0.3, v1::RESOURCE_CPU), 2)) {
      kinds.push_back(a.kind);
    }
  }
  ASSERT_FALSE(kinds.empty());
  for (v1::ActionKind k : kinds) EXPECT_EQ(k, v1::ACTION_KIND_RENEW);
  EXPECT_EQ(planner.active_cases(), 1u);
  // Gone from every verdict: gone from the host.
  Evaluation gone = Interval(41, false, false, 0.3, v1::RESOURCE_CPU);
  gone.verdicts[0].judgement.tenants.erase(gone.verdicts[0].judgement.tenants.begin());
  std::vector<PlannedAction> actions = planner.Plan(At(41), gone, 1);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_RELEASE);
}

TEST(Planner, AnOperatorsLimitIsRenewedButNeverSteppedOrReleasedByPolicy) {
  PlannerParams params = Params();
  params.dry_run = true;  // operators' limits are sent regardless
  Planner planner(params);
  PlannedAction imposed =
      planner.Impose(At(0), "hv", "hog", kCapped, 0.3, "operator:alice", "ticket 1");
  EXPECT_EQ(imposed.kind, v1::ACTION_KIND_LIMIT);
  EXPECT_TRUE(imposed.new_case);
  EXPECT_FALSE(imposed.dry_run);
  EXPECT_EQ(imposed.decided_by, "operator:alice");
  EXPECT_DOUBLE_EQ(planner.LimitOf("hv", "hog", kCapped), 0.3);
  // Harm then quiet for two minutes: the policy would step down, up and
  // release its own case; it only renews this one.
  std::vector<v1::ActionKind> kinds;
  for (int t = 1; t <= 120; ++t) {
    for (const PlannedAction& a : planner.Plan(At(t), Interval(t, false, t < 30, 0.3), 2)) {
      kinds.push_back(a.kind);
      EXPECT_DOUBLE_EQ(a.limit, 0.3);
    }
  }
  ASSERT_FALSE(kinds.empty());
  for (v1::ActionKind k : kinds) EXPECT_EQ(k, v1::ACTION_KIND_RENEW);
  EXPECT_EQ(planner.Cases().size(), 1u);
  EXPECT_TRUE(planner.Cases()[0].manual);

  // Taken over by a second Impose: same case, new value.
  PlannedAction changed =
      planner.Impose(At(121), "hv", "hog", kCapped, 0.6, "operator:bob", "more");
  EXPECT_FALSE(changed.new_case);
  PlannedAction release;
  EXPECT_TRUE(planner.Lift(At(122), "hv", "hog", kCapped, "operator:bob", "done", true, &release));
  EXPECT_EQ(release.kind, v1::ACTION_KIND_RELEASE);
  EXPECT_EQ(release.decided_by, "operator:bob");
  EXPECT_FALSE(
      planner.Lift(At(123), "hv", "hog", kCapped, "operator:bob", "again", true, &release));
  // Cooling down: the policy leaves the offender alone for a minute.
  std::vector<PlannedAction> after = planner.Plan(At(124), Interval(200, true, true), 2);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].kind, v1::ACTION_KIND_SKIP);
  EXPECT_NE(after[0].reason.find("cooling down"), std::string::npos) << after[0].reason;
}

TEST(Planner, ATakenOverPolicyCaseStopsStepping) {
  Planner planner{Params()};
  ASSERT_EQ(planner.Plan(At(0), Interval(1, true, true), 2).size(), 1u);
  EXPECT_FALSE(planner.Cases()[0].manual);
  PlannedAction imposed =
      planner.Impose(At(1), "hv", "hog", kCapped, 1.5, "operator:alice", "let it run");
  EXPECT_FALSE(imposed.new_case);
  EXPECT_TRUE(planner.Cases()[0].manual);
  for (int t = 2; t <= 40; ++t) {
    for (const PlannedAction& a : planner.Plan(At(t), Interval(t, false, true), 2)) {
      EXPECT_EQ(a.kind, v1::ACTION_KIND_RENEW) << "t=" << t;
    }
  }
  EXPECT_DOUBLE_EQ(planner.LimitOf("hv", "hog", kCapped), 1.5);
}

// CPU: the weight first, a cap only when the harm persists under it; the
// weight stays with the cap, both renewed together.
TEST(Planner, ACpuCaseLowersTheWeightFirstAndCapsOnlyWhenHarmPersists) {
  Planner planner{Params()};
  std::vector<PlannedAction> opened =
      planner.Plan(At(0), Interval(1, true, true, 1.6, v1::RESOURCE_CPU), 2);
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_DOUBLE_EQ(opened[0].weight, 0.01);
  EXPECT_DOUBLE_EQ(opened[0].limit, 0) << "no cap yet";
  EXPECT_NE(opened[0].reason.find("weight lowered to 1 % of its own"), std::string::npos)
      << opened[0].reason;
  EXPECT_DOUBLE_EQ(planner.LimitsOn("hv").at("hog").at(v1::RESOURCE_CPU), 0)
      << "held back, but a weight bounds nobody's demand";
  std::vector<PlannedAction> later;
  for (int t = 1; t <= 6; ++t) {
    for (PlannedAction& a :
         planner.Plan(At(t), Interval(t + 1, false, true, 1.6, v1::RESOURCE_CPU), 2)) {
      later.push_back(std::move(a));
    }
  }
  ASSERT_EQ(later.size(), 1u) << "the harm persisted a step interval under the lowered weight";
  EXPECT_EQ(later[0].kind, v1::ACTION_KIND_STEP_DOWN);
  EXPECT_DOUBLE_EQ(later[0].limit, 1.4) << "what the victim (0.4) leaves, with 10 % headroom";
  EXPECT_DOUBLE_EQ(later[0].weight, 0.01) << "the weight stays lowered beside the cap";
  EXPECT_NE(later[0].reason.find("lowered weight did not end the harm"), std::string::npos);
  EXPECT_DOUBLE_EQ(planner.LimitOf("hv", "hog", v1::RESOURCE_CPU), 1.4);
}

// Under its lowered weight the neighbours get the CPU they want (a cap
// leaving them that would not bind) yet their run-queue wait stays up: no
// cap below what they leave, which would idle the host and not remove
// tick-long turns; the case says what did not recover and why.
TEST(Planner, ACpuCapThatWouldNotBindIsNotSetForLatencyAlone) {
  Planner planner{Params()};
  ASSERT_EQ(planner.Plan(At(0), Interval(1, true, true, 1.2, v1::RESOURCE_CPU), 2).size(), 1u);
  std::vector<PlannedAction> later;
  std::vector<int> at;
  for (int t = 1; t <= 20; ++t) {
    Evaluation e = Interval(t + 1, false, true, 1.2, v1::RESOURCE_CPU);
    Victim(e).evidence = {"run-queue wait p99 4.1 ms (baseline 0.3 ms)"};
    PlanAt(planner, t, e, &later, &at);
  }
  // Said when it found that no cap would help (at once, not at the next
  // half-lease), then renewed as usual, each renewal saying it again.
  ASSERT_EQ(later.size(), 2u);
  EXPECT_EQ(later[0].kind, v1::ACTION_KIND_RENEW);
  EXPECT_LE(at[0], 8) << "said when found, not half a lease later";
  EXPECT_EQ(later[1].kind, v1::ACTION_KIND_RENEW);
  EXPECT_NE(later[1].reason.find("a scheduler tick each"), std::string::npos)
      << "every renewal while it lasts says why: " << later[1].reason;
  EXPECT_DOUBLE_EQ(later[0].limit, 0) << "2 x 0.9 - 0.4 = 1.4 would not bind at 1.2";
  EXPECT_NE(later[0].reason.find("not recovered: victim (run-queue wait p99 4.1 ms"),
            std::string::npos)
      << later[0].reason;
  EXPECT_NE(later[0].reason.find("a scheduler tick each"), std::string::npos) << later[0].reason;
}

// The same when the harm comes and goes (2 intervals in 5, under the 3 that
// make a step): no cap could help, and the case says what did not recover
// once a step interval has passed, not only at the next half-lease.
TEST(Planner, ACpuCaseSaysWhatDidNotRecoverWhenTheHarmComesAndGoes) {
  Planner planner{Params()};
  ASSERT_EQ(planner.Plan(At(0), Interval(1, true, true, 1.2, v1::RESOURCE_CPU), 2).size(), 1u);
  std::vector<PlannedAction> later;
  std::vector<int> at;
  for (int t = 1; t <= 12; ++t) {
    const bool harmed = t % 5 == 1 || t % 5 == 3;
    Evaluation e = Interval(t + 1, false, harmed, 1.2, v1::RESOURCE_CPU);
    if (harmed) Victim(e).evidence = {"run-queue wait p99 3.1 ms (baseline 0.1 ms)"};
    PlanAt(planner, t, e, &later, &at);
  }
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].kind, v1::ACTION_KIND_RENEW);
  EXPECT_DOUBLE_EQ(later[0].limit, 0) << "no cap";
  EXPECT_LE(at[0], 8);
  EXPECT_NE(later[0].reason.find("not recovered: victim (run-queue wait p99 3.1 ms"),
            std::string::npos)
      << later[0].reason;
}

// Capped at what the neighbours leave (the sized cap bound), and the harm
// then comes and goes: no lower cap, and the case names who did not recover.
TEST(Planner, ACappedCpuCaseSaysWhatDidNotRecoverWhenTheHarmComesAndGoes) {
  Planner planner{Params()};
  std::vector<PlannedAction> got;
  std::vector<int> at;
  for (int t = 0; t <= 20; ++t) {
    const bool harmed = t < 6 || t % 5 == 1 || t % 5 == 3;
    Evaluation e = Interval(t + 1, t == 0, harmed, 1.6, v1::RESOURCE_CPU);
    if (harmed) Victim(e).evidence = {"run-queue wait p99 3.3 ms (baseline 0.1 ms)"};
    PlanAt(planner, t, e, &got, &at);
  }
  ASSERT_GE(got.size(), 3u);
  EXPECT_EQ(got[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_EQ(got[1].kind, v1::ACTION_KIND_STEP_DOWN);
  EXPECT_DOUBLE_EQ(got[1].limit, 1.4) << "the sized cap";
  EXPECT_EQ(got[2].kind, v1::ACTION_KIND_RENEW);
  EXPECT_DOUBLE_EQ(got[2].limit, 1.4) << "no lower cap";
  EXPECT_LE(at[2], at[1] + 8);
  EXPECT_NE(got[2].reason.find("not recovered: victim (run-queue wait p99 3.3 ms"),
            std::string::npos)
      << got[2].reason;
}

// On the network, harm that comes and goes (2 intervals in 5, under the 3
// that make a step) leaves the cap where it is, and the case names the
// neighbour and says why nothing more is done, without waiting for a
// half-lease renewal.
TEST(Planner, HarmTooSeldomForAStepIsNamedAtOnce) {
  Planner planner{Params()};
  std::vector<PlannedAction> got;
  std::vector<int> at;
  for (int t = 0; t <= 12; ++t) {
    const bool harmed = t == 0 || t % 5 == 1 || t % 5 == 3;
    Evaluation e = Interval(t + 1, t == 0, harmed, 1.6, v1::RESOURCE_NET_TX);
    if (harmed) Victim(e).evidence = {"TCP retransmits 35/s (baseline 0/s)"};
    PlanAt(planner, t, e, &got, &at);
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].kind, v1::ACTION_KIND_LIMIT);
  EXPECT_EQ(got[1].kind, v1::ACTION_KIND_RENEW);
  EXPECT_DOUBLE_EQ(got[1].limit, 1.4);
  EXPECT_LE(at[1], 8);
  EXPECT_NE(got[1].reason.find("not recovered: victim (TCP retransmits 35/s"), std::string::npos)
      << got[1].reason;
  EXPECT_NE(got[1].reason.find("harmed too seldom for a lower cap"), std::string::npos)
      << got[1].reason;
}

// A neighbour that starts suffering after the case said who had not
// recovered is named at once too, not at the next half-lease.
TEST(Planner, ANeighbourHarmedLaterIsNamedWhenItJoins) {
  Planner planner{Params()};
  ASSERT_EQ(planner.Plan(At(0), Interval(1, true, true, 1.2, v1::RESOURCE_CPU), 2).size(), 1u);
  std::vector<PlannedAction> later;
  for (int t = 1; t <= 12; ++t) {
    Evaluation e = Interval(t + 1, false, true, 1.2, v1::RESOURCE_CPU);
    Victim(e).evidence = {"run-queue wait p99 3.1 ms (baseline 0.1 ms)"};
    if (t >= 9) {
      TenantShare other = Victim(e);
      other.id = "other";
      other.usage = other.demand = other.quiet_usage = 0.05;  // the cap would still not bind
      other.evidence = {"run-queue wait p99 2.2 ms (baseline 0.2 ms)"};
      e.verdicts[0].judgement.tenants.push_back(other);
      e.verdicts[0].judgement.harmed = 2;
    }
    for (PlannedAction& a : planner.Plan(At(t), e, 2)) later.push_back(std::move(a));
  }
  ASSERT_EQ(later.size(), 2u);
  EXPECT_EQ(later[0].reason.find("other ("), std::string::npos) << later[0].reason;
  EXPECT_NE(later[1].reason.find("other (run-queue wait p99 2.2 ms"), std::string::npos)
      << later[1].reason;
  EXPECT_NE(later[1].reason.find("victim (run-queue wait p99 3.1 ms"), std::string::npos)
      << later[1].reason;
}

// Under its lowered weight the neighbours are fine, but it still takes more
// than its entitlement: the weight stays (it costs nothing); once it keeps
// within its entitlement for the quiet period, its weight is its own again.
TEST(Planner, ALoweredWeightStaysWhileItTakesMoreAndGoesWhenItStops) {
  Planner planner{Params()};
  ASSERT_EQ(planner.Plan(At(0), Interval(1, true, true, 1.6, v1::RESOURCE_CPU), 2).size(), 1u);
  std::vector<v1::ActionKind> kinds;
  for (int t = 1; t <= 60; ++t) {
    const double usage = t < 40 ? 1.6 : 0.8;  // stops hogging at t=40
    for (const PlannedAction& a :
         planner.Plan(At(t), Interval(t + 1, false, false, usage, v1::RESOURCE_CPU), 2)) {
      kinds.push_back(a.kind);
      if (a.kind == v1::ACTION_KIND_RENEW) {
        EXPECT_DOUBLE_EQ(a.weight, 0.01);
      }
      if (a.kind == v1::ACTION_KIND_RELEASE) {
        EXPECT_EQ(t, 50) << "10 s within its entitlement";
        EXPECT_NE(a.reason.find("wanting no more than its entitlement"), std::string::npos)
            << a.reason;
      }
    }
  }
  ASSERT_FALSE(kinds.empty());
  EXPECT_EQ(kinds.back(), v1::ACTION_KIND_RELEASE);
  for (size_t i = 0; i + 1 < kinds.size(); ++i) EXPECT_EQ(kinds[i], v1::ACTION_KIND_RENEW);
}

// Two offenders that each caused a large part of the victims' waiting are
// both acted on, whatever the cap on capped tenants; weak suspects beyond the
// cap are not.
TEST(Planner, EveryMeasuredCoOffenderIsActedOn) {
  auto two = [](v1::Resource resource, double blame_a, double blame_b) {
    Evaluation e = Interval(1, true, true, 1.6, resource, "a", blame_a);
    Evaluation b = Interval(1, true, true, 1.4, resource, "b", blame_b);
    e.findings.push_back(b.findings[0]);
    e.verdicts[0].judgement.tenants.push_back(b.verdicts[0].judgement.tenants[0]);
    return e;
  };
  {
    Planner planner{Params()};  // 25 % of 4 tenants: one cap
    std::vector<PlannedAction> actions = planner.Plan(At(0), two(kCapped, 0.6, 0.4), 4);
    ASSERT_EQ(actions.size(), 2u);
    EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_LIMIT);
    EXPECT_EQ(actions[1].kind, v1::ACTION_KIND_LIMIT) << actions[1].reason;
  }
  {
    Planner planner{Params()};
    std::vector<PlannedAction> actions = planner.Plan(At(0), two(kCapped, 0.15, 0.1), 4);
    ASSERT_EQ(actions.size(), 2u);
    EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_LIMIT);
    EXPECT_EQ(actions[1].kind, v1::ACTION_KIND_SKIP) << "a weak suspect beyond the cap";
  }
  {
    Planner planner{Params()};
    std::vector<PlannedAction> actions = planner.Plan(At(0), two(v1::RESOURCE_CPU, 0.15, 0.1), 4);
    ASSERT_EQ(actions.size(), 2u) << "lowered weights are not capped";
    EXPECT_EQ(actions[0].kind, v1::ACTION_KIND_LIMIT);
    EXPECT_EQ(actions[1].kind, v1::ACTION_KIND_LIMIT);
  }
}

TEST(Planner, DryRunCanBeChangedWhileRunning) {
  Planner planner{Params()};
  planner.SetDryRun(false, {v1::RESOURCE_DISK_BANDWIDTH});
  EXPECT_TRUE(planner.DryRun(v1::RESOURCE_DISK_BANDWIDTH));
  EXPECT_FALSE(planner.DryRun(v1::RESOURCE_CPU));
  std::vector<PlannedAction> cpu =
      planner.Plan(At(0), Interval(1, true, true, 1.6, v1::RESOURCE_CPU), 2);
  ASSERT_EQ(cpu.size(), 1u);
  EXPECT_FALSE(cpu[0].dry_run);
  planner.SetDryRun(true, {});
  EXPECT_TRUE(planner.DryRun(v1::RESOURCE_CPU));
  EXPECT_TRUE(planner.dry_run());
}

}  // namespace
}  // namespace fairwatch::controller
