// The controller's decision loop: every period, for every host with a new
// interval, the fairness engine judges it, the planner decides, cases and
// their actions are written to the store, and limit commands go to the
// host's agent. Acknowledgements from agents are recorded on their actions.
//
// RunOnce takes the time, so tests drive it on a simulated clock; Start runs
// it on its own thread in the daemon.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "controller/engine.h"
#include "controller/fleet_state.h"
#include "controller/planner.h"
#include "controller/store.h"
#include "fairwatch/v1/agent.pb.h"

namespace fairwatch::controller {

struct JudgeOptions {
  FairnessParams fairness;
  PlannerParams planner;
  absl::Duration period = absl::Seconds(1);
};

struct JudgeStats {
  uint64_t intervals_judged = 0;
  uint64_t cases_opened = 0;
  uint64_t cases_closed = 0;
  uint64_t commands_sent = 0;
  uint64_t commands_failed_to_send = 0;
  uint64_t acks_applied = 0;
  uint64_t acks_failed = 0;
  uint64_t store_errors = 0;
};

class Judge {
 public:
  // Queues a message on a host's agent stream (AgentLinkService::SendToHost).
  using SendFn =
      std::function<absl::Status(const std::string& host_id, const v1::ControllerMessage& message)>;

  // `fleet` and `store` must outlive the judge; `store` must not be null.
  Judge(FleetState* fleet, Store* store, SendFn send, const JudgeOptions& options);
  ~Judge();
  Judge(const Judge&) = delete;
  Judge& operator=(const Judge&) = delete;

  // Closes the cases a previous controller left open: their limits lapse
  // with their leases, and the planner starts afresh. Returns how many.
  absl::StatusOr<size_t> CloseOrphanedCases(absl::Time now);
  // One pass over every host at `now`.
  void RunOnce(absl::Time now);
  void Start();
  void Stop();

  // An agent's answer to a command (command_id is the action id).
  void OnAck(const std::string& host_id, const v1::LimitAck& ack, absl::Time now);

  JudgeStats stats() const;

 private:
  using Key = std::tuple<std::string, std::string, v1::Resource>;

  void Handle(const PlannedAction& action, const Evaluation& evaluation,
              const HostInterval& interval, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends APPLY (limit > 0) or CLEAR for `action`; returns the ack state to record.
  v1::AckState Send(const PlannedAction& action, uint64_t action_id, std::string* message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  FleetState* const fleet_;
  Store* const store_;
  const SendFn send_;
  const JudgeOptions options_;

  mutable absl::Mutex mu_;
  FairnessEngine engine_ ABSL_GUARDED_BY(mu_);
  Planner planner_ ABSL_GUARDED_BY(mu_);
  std::map<Key, uint64_t> open_cases_ ABSL_GUARDED_BY(mu_);  // -> case id
  std::map<Key, std::string> skip_logged_ ABSL_GUARDED_BY(mu_);
  JudgeStats stats_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace fairwatch::controller
