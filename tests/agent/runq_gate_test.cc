#include "agent/runq_gate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

namespace fairwatch::agent {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

// `seconds` after kT0, to the millisecond (readings fall on exact ticks).
absl::Time At(double seconds) { return kT0 + absl::Milliseconds(std::llround(seconds * 1000)); }

// Feeds one reading per 100 ms from `from` to before `to` (seconds), `runnable` each.
void Feed(RunqGate* gate, double from, double to, double runnable) {
  for (int64_t ms = std::llround(from * 1000); ms < std::llround(to * 1000); ms += 100) {
    gate->ObserveRunnable(kT0 + absl::Milliseconds(ms), runnable);
  }
}

TEST(RunqGate, QuietUntilAsManyRunnableTasksAsCpus) {
  RunqGate gate(RunqGateParams{}, 2);
  EXPECT_EQ(gate.Decide(kT0), RunqGateReason::kQuiet);
  // A ping-pong pinned to one CPU of two: one or two runnable at a time.
  for (int i = 0; i < 30; ++i) gate.ObserveRunnable(At(i * 0.1), i % 2 == 0 ? 1 : 2);
  EXPECT_EQ(gate.Decide(At(3)), RunqGateReason::kQuiet);
  EXPECT_NEAR(gate.runnable_per_cpu(), 0.75, 0.2);
  // A hog on both CPUs and a neighbour waking: more runnable than CPUs.
  Feed(&gate, 3, 3.3, 3);
  EXPECT_EQ(gate.Decide(At(3.3)), RunqGateReason::kContended);
}

TEST(RunqGate, OneBusyReadingInAQuietWindowIsNotContention) {
  RunqGate gate(RunqGateParams{}, 2);
  Feed(&gate, 0, 1, 0);
  gate.ObserveRunnable(At(1), 4);  // mean of 0, 0, 4 over 300 ms: 0.67 per CPU
  EXPECT_EQ(gate.Decide(At(1)), RunqGateReason::kQuiet);
}

TEST(RunqGate, LingersAfterContentionEnds) {
  RunqGate gate(RunqGateParams{}, 2);
  Feed(&gate, 0, 1, 4);
  ASSERT_EQ(gate.Decide(At(1)), RunqGateReason::kContended);
  Feed(&gate, 1, 5, 0);
  EXPECT_EQ(gate.Decide(At(5)), RunqGateReason::kContended) << "within the 10 s linger";
  Feed(&gate, 5, 11, 0);
  EXPECT_EQ(gate.Decide(At(11)), RunqGateReason::kQuiet);
  // Contention again restarts the linger from its last contended window.
  Feed(&gate, 11, 11.5, 3);
  EXPECT_EQ(gate.Decide(At(21.3)), RunqGateReason::kContended);
  EXPECT_EQ(gate.Decide(At(21.5)), RunqGateReason::kQuiet);
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
