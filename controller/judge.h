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
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

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
  // A pass runs when a report arrives (Wake), at least `min_gap` after the
  // last one so a burst of reports is judged in one pass, and at the latest
  // `period` after it.
  absl::Duration period = absl::Seconds(1);
  absl::Duration min_gap = absl::Milliseconds(50);
  // From the policy file: never limited by the policy (tenant id or name; account).
  std::vector<std::string> exempt_tenants;
  std::vector<std::string> exempt_accounts;
};

// A tenant an operator named, found in the fleet.
struct ResolvedTenant {
  std::string host_id;
  std::string tenant_id;
  std::string name;
  std::string account;
};

// The dry-run settings in force and the operator change that set them.
struct DryRunState {
  bool all = false;
  std::vector<v1::Resource> resources;
  v1::PolicyChange last_change;  // change_id 0: none, the configured settings hold
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
  // Recorded actions by (kind, what became of it: "sent", "dry_run",
  // "not_sent", "store_error").
  std::map<std::pair<std::string, std::string>, uint64_t> actions;
  std::map<v1::Resource, uint64_t> open_cases;  // by resource, now
};

// A case the judge holds open (its limit in force, or recorded in dry run).
struct OpenCaseInfo {
  uint64_t case_id = 0;
  std::string host_id;
  std::string tenant_id;
  std::string tenant_name;
  v1::Resource resource = v1::RESOURCE_UNSPECIFIED;
  absl::Time opened = absl::InfinitePast();
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
  // A host sent a new report: judge soon (from any thread; cheap).
  void Wake();

  // An agent's answer to a command (command_id is the action id).
  void OnAck(const std::string& host_id, const v1::LimitAck& ack, absl::Time now);

  JudgeStats stats() const;
  // Oldest case first; at most one per tenant and resource.
  std::vector<OpenCaseInfo> OpenCases() const;

  // Operator actions. `by` is "operator:<name>"; every change is recorded in
  // the store (cases, exemptions, policy changes) before anything is sent.
  //
  // Loads exemptions and the latest dry-run change from the store (Start
  // does this).
  absl::Status LoadOperatorState();
  // Finds a tenant by id or name, on `host_id` or the one host it is on.
  absl::StatusOr<ResolvedTenant> Resolve(const std::string& host_id,
                                         const std::string& tenant) const;
  // Limits per resource; returns the cases opened or taken over.
  absl::StatusOr<std::vector<v1::Case>> Throttle(
      const ResolvedTenant& tenant, const std::vector<std::pair<v1::Resource, double>>& limits,
      const std::string& by, const std::string& reason, absl::Time now);
  // Lifts the limits on `resources` (empty: all); returns the closed cases.
  // NotFound when none is in force.
  absl::StatusOr<std::vector<v1::Case>> Release(const std::string& host_id,
                                                const std::string& tenant_id,
                                                const std::vector<v1::Resource>& resources,
                                                const std::string& by, const std::string& reason,
                                                absl::Time now);
  // Stores the exemption and releases the policy's cases it covers.
  absl::StatusOr<v1::Exemption> Exempt(v1::Exemption exemption, absl::Time now);
  absl::StatusOr<v1::Exemption> Unexempt(uint64_t exemption_id, const std::string& by,
                                         const std::string& reason, absl::Time now);
  // In force: the store's and the policy file's (exemption_id 0, by "config").
  std::vector<v1::Exemption> Exemptions() const;
  // Turning dry run on releases the policy's limits it covers; turning it off
  // closes dry-run cases, so the policy judges afresh and acts for real.
  absl::StatusOr<DryRunState> SetDryRun(bool enabled, std::vector<v1::Resource> resources,
                                        const std::string& by, const std::string& reason,
                                        absl::Time now);
  DryRunState dry_run() const;

 private:
  using Key = std::tuple<std::string, std::string, v1::Resource>;

  void Handle(const PlannedAction& action, const Evaluation& evaluation,
              const HostInterval& interval, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records `action` (opening the case `opening` when given), sends it and,
  // for a release, closes its case. Returns the case id.
  absl::StatusOr<uint64_t> Commit(const PlannedAction& action, v1::Case* opening, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The stored cases, in the order given.
  absl::StatusOr<std::vector<v1::Case>> CasesById(const std::vector<uint64_t>& case_ids);
  // Why the tenant is exempt (who exempted it and their reason); nullopt when it is not.
  std::optional<std::string> ExemptionOf(const std::string& host_id, const std::string& tenant_id,
                                         const std::string& name, const std::string& account) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The account of a tenant the fleet knows; empty otherwise.
  std::string AccountOf(const std::string& host_id, const std::string& tenant_id) const;
  // Releases the policy's (not operators') cases `covered` selects.
  void ReleasePolicyCases(const std::function<bool(const Planner::CaseRef&)>& covered,
                          const std::string& by, const std::string& reason, bool cooldown,
                          absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  struct OpenCase {
    uint64_t case_id = 0;
    std::string tenant_name;
    absl::Time opened;
  };
  std::map<Key, OpenCase> open_cases_ ABSL_GUARDED_BY(mu_);
  // The last time each offender was left alone, and why (one case per episode).
  struct SkipEpisode {
    std::string kind;
    absl::Time last_seen = absl::InfinitePast();
  };
  std::map<Key, SkipEpisode> skips_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> judged_hosts_ ABSL_GUARDED_BY(mu_);  // the engine holds state for these
  JudgeStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Exemption> exemptions_ ABSL_GUARDED_BY(mu_);  // the store's, in force
  v1::PolicyChange last_change_ ABSL_GUARDED_BY(mu_);

  std::map<std::string, uint64_t> judged_seq_ ABSL_GUARDED_BY(mu_);  // host -> last report judged

  absl::Notification stop_;
  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;  // a report arrived, or stopping
  std::thread thread_;
};

}  // namespace fairwatch::controller
