// When the run-queue programs run. sched_wakeup and sched_switch fire on
// every context switch of the host, tenant or not: traced always, they cost
// a ping-pong between two tasks about 6 % (docs/performance.md). What they
// measure — a tenant waiting for a CPU its neighbours hold — needs CPUs that
// are all taken: a task that wakes while a CPU is idle is placed there and
// waits microseconds. So the gate attaches them:
//   - while the host is contended: its CPUs were busy (not idle, from the
//     idle time of /proc/uptime) for at least `contended_busy` of `window`;
//     and `linger` after, so that a host going in and out of contention is
//     traced throughout rather than toggled. Not the runnable count or PSI:
//     a ping-pong between two tasks keeps both near "two runnable" and 50 %
//     CPU pressure (6.6+ kernels keep a task that just blocked on the queue,
//     delayed dequeue) while waiting only microseconds, on one CPU of two;
//   - for a new tenant's first `new_tenant` (its quiet baseline is learned
//     from traced intervals, and the controller judges no tenant a victim
//     before it has been seen for its 10-interval window);
//   - while a CPU limit of ours is in force (the controller judges by these
//     signals whether the neighbours recovered and when to release);
//   - one report interval in `sample_every` otherwise, so baselines keep
//     learning on a quiet host.
// The gate decides only; RunqCollector attaches and detaches, and reports for
// how long it traced so the controller judges untraced intervals as unknown.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "absl/time/time.h"

namespace fairwatch::agent {

struct RunqGateParams {
  double contended_busy = 0.9;  // share of all CPUs' time not idle
  absl::Duration window = absl::Milliseconds(300);
  absl::Duration linger = absl::Seconds(10);
  absl::Duration new_tenant = absl::Seconds(15);
  uint32_t sample_every = 10;  // 0: no sampled intervals
  // How often the agent reads the idle time (Collector::tick_period).
  absl::Duration tick = absl::Milliseconds(100);
};

enum class RunqGateReason {
  kQuiet,         // detached
  kContended,     // the host's CPUs are queued for (or were, within `linger`)
  kNewTenant,     // a tenant appeared within `new_tenant`
  kLimitInForce,  // a CPU limit of ours holds
  kSample,        // this report interval is one in `sample_every`
};
const char* RunqGateReasonName(RunqGateReason reason);

class RunqGate {
 public:
  RunqGate(RunqGateParams params, int cpus);

  // A reading of the time all CPUs have been idle, cumulative, in seconds.
  void ObserveIdle(absl::Time now, double idle_seconds);
  void NoteNewTenant(absl::Time now);
  // The idle time could not be read: counted as contended (traced, not blind).
  void AssumeContended(absl::Time now) { contended_until_ = now + params_.linger; }
  void SetLimitInForce(bool in_force) { limit_in_force_ = in_force; }
  // At every report: the interval that starts now is a sampled one or not.
  void NoteInterval();

  // Whether the programs should be attached at `now`, and why (the first
  // reason that holds, in the order of RunqGateReason).
  RunqGateReason Decide(absl::Time now) const;
  // The CPUs' busy share over the latest window (for logs).
  double busy() const { return busy_; }
  const RunqGateParams& params() const { return params_; }

 private:
  RunqGateParams params_;
  int cpus_;
  std::deque<std::pair<absl::Time, double>> readings_;  // over `window`
  double busy_ = 0;
  absl::Time contended_until_ = absl::InfinitePast();
  absl::Time new_tenant_until_ = absl::InfinitePast();
  bool limit_in_force_ = false;
  uint64_t intervals_ = 0;
  bool sampling_ = false;
};

}  // namespace fairwatch::agent
