#include "agent/runq_gate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

namespace fairwatch::agent {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

// `seconds` after kT0, to the millisecond (readings fall on exact ticks).
absl::Time At(double seconds) { return kT0 + absl::Milliseconds(std::llround(seconds * 1000)); }

// The idle time of a host whose `cpus` CPUs are `busy` (a share) over ticks
// of 100 ms from `from` to `to` (seconds), read at the end of every tick.
class Host {
 public:
  explicit Host(int cpus) : cpus_(cpus) {}
  void Run(RunqGate* gate, double from, double to, double busy) {
    for (int64_t ms = std::llround(from * 1000); ms < std::llround(to * 1000); ms += 100) {
      idle_ += 0.1 * cpus_ * (1 - busy);
      gate->ObserveIdle(kT0 + absl::Milliseconds(ms + 100), idle_);
    }
  }

 private:
  int cpus_;
  double idle_ = 1000;
};

TEST(RunqGate, QuietUntilTheCpusAreNearlyAllBusy) {
  RunqGate gate(RunqGateParams{}, 2);
  Host host(2);
  EXPECT_EQ(gate.Decide(kT0), RunqGateReason::kQuiet);
  // A ping-pong pinned to one CPU of two: half the host's CPU time.
  host.Run(&gate, 0, 3, 0.5);
  EXPECT_EQ(gate.Decide(At(3)), RunqGateReason::kQuiet);
  EXPECT_NEAR(gate.busy(), 0.5, 1e-9);
  host.Run(&gate, 3, 5, 0.85);
  EXPECT_EQ(gate.Decide(At(5)), RunqGateReason::kQuiet);
  // A hog on both CPUs next to neighbours.
  host.Run(&gate, 5, 5.5, 1.0);
  EXPECT_EQ(gate.Decide(At(5.5)), RunqGateReason::kContended);
  EXPECT_NEAR(gate.busy(), 1.0, 1e-9);
}

TEST(RunqGate, JudgesTheWholeWindowNotOneTick) {
  RunqGate gate(RunqGateParams{}, 2);
  Host host(2);
  host.Run(&gate, 0, 1, 0.5);
  host.Run(&gate, 1, 1.1, 1.0);  // one busy tick in 300 ms: (0.5 + 0.5 + 1) / 3
  EXPECT_EQ(gate.Decide(At(1.1)), RunqGateReason::kQuiet);
  EXPECT_NEAR(gate.busy(), 2.0 / 3, 1e-9);
  host.Run(&gate, 1.1, 1.4, 1.0);
  EXPECT_EQ(gate.Decide(At(1.4)), RunqGateReason::kContended);
}

TEST(RunqGate, TheFirstReadingAloneDecidesNothing) {
  RunqGate gate(RunqGateParams{}, 2);
  gate.ObserveIdle(kT0, 5);
  gate.ObserveIdle(kT0 + absl::Milliseconds(10), 5);  // 10 ms, no idle: too short to say
  EXPECT_EQ(gate.Decide(kT0 + absl::Milliseconds(10)), RunqGateReason::kQuiet);
}

TEST(RunqGate, LingersAfterContentionEnds) {
  RunqGate gate(RunqGateParams{}, 2);
  Host host(2);
  host.Run(&gate, 0, 1, 1.0);
  ASSERT_EQ(gate.Decide(At(1)), RunqGateReason::kContended);
  host.Run(&gate, 1, 5, 0.2);
  EXPECT_EQ(gate.Decide(At(5)), RunqGateReason::kContended) << "within the 10 s linger";
  host.Run(&gate, 5, 12, 0.2);
  EXPECT_EQ(gate.Decide(At(12)), RunqGateReason::kQuiet);
  // Contention again restarts the linger from its last contended window.
  host.Run(&gate, 12, 13, 1.0);
  host.Run(&gate, 13, 14, 0.2);
  EXPECT_EQ(gate.Decide(At(22.5)), RunqGateReason::kContended);
  EXPECT_EQ(gate.Decide(At(23.5)), RunqGateReason::kQuiet);
}

TEST(RunqGate, AnUnreadableHostCountsAsContended) {
  RunqGate gate(RunqGateParams{}, 2);
  gate.AssumeContended(At(0));
  EXPECT_EQ(gate.Decide(At(9)), RunqGateReason::kContended);
  EXPECT_EQ(gate.Decide(At(10)), RunqGateReason::kQuiet);
}

TEST(RunqGate, NewTenantsAreTracedForTheirFirstSeconds) {
  RunqGate gate(RunqGateParams{}, 2);
  gate.NoteNewTenant(At(0));
  EXPECT_EQ(gate.Decide(At(14.9)), RunqGateReason::kNewTenant);
  gate.NoteNewTenant(At(3));  // a second one extends it
  EXPECT_EQ(gate.Decide(At(17.9)), RunqGateReason::kNewTenant);
  EXPECT_EQ(gate.Decide(At(18)), RunqGateReason::kQuiet);
}

TEST(RunqGate, HeldWhileACpuLimitIsInForce) {
  RunqGate gate(RunqGateParams{}, 2);
  gate.SetLimitInForce(true);
  EXPECT_EQ(gate.Decide(At(100)), RunqGateReason::kLimitInForce);
  gate.SetLimitInForce(false);
  EXPECT_EQ(gate.Decide(At(100)), RunqGateReason::kQuiet);
}

TEST(RunqGate, OneIntervalInTenIsSampled) {
  RunqGate gate(RunqGateParams{}, 2);
  int sampled = 0;
  for (int i = 1; i <= 30; ++i) {
    gate.NoteInterval();
    const bool on = gate.Decide(At(i)) == RunqGateReason::kSample;
    sampled += on;
    EXPECT_EQ(on, i % 10 == 0) << "interval " << i;
  }
  EXPECT_EQ(sampled, 3);
  RunqGateParams never;
  never.sample_every = 0;
  RunqGate off(never, 2);
  for (int i = 1; i <= 30; ++i) {
    off.NoteInterval();
    EXPECT_EQ(off.Decide(At(i)), RunqGateReason::kQuiet);
  }
}

TEST(RunqGate, ReasonsHaveNames) {
  EXPECT_STREQ(RunqGateReasonName(RunqGateReason::kContended), "host contended");
  EXPECT_STREQ(RunqGateReasonName(RunqGateReason::kQuiet), "quiet");
}

}  // namespace
}  // namespace fairwatch::agent
