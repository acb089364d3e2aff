#include "controller/judge.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fairwatch::controller {
namespace {

v1::ActionKind ToProto(ActionKind kind) {
  switch (kind) {
    case ActionKind::kLimit:
      return v1::ACTION_KIND_LIMIT;
    case ActionKind::kStepDown:
      return v1::ACTION_KIND_STEP_DOWN;
    case ActionKind::kStepUp:
      return v1::ACTION_KIND_STEP_UP;
    case ActionKind::kRenew:
      return v1::ACTION_KIND_RENEW;
    case ActionKind::kRelease:
      return v1::ACTION_KIND_RELEASE;
    case ActionKind::kSkip:
      return v1::ACTION_KIND_SKIP;
  }
  return v1::ACTION_KIND_UNSPECIFIED;
}

v1::CaseEvidence Evidence(const Finding& f) {
  v1::CaseEvidence e;
  e.set_report_seq(f.seq);
  e.set_usage(f.offender.share.usage);
  e.set_fair_share(f.offender.share.fair);
  e.set_entitled_share(f.offender.share.entitled);
  e.set_capacity(f.capacity);
  e.set_host_usage(f.total_usage);
  e.set_contended(f.contended);
  e.set_flagged_intervals(f.offender.flagged_intervals);
  e.set_blame(f.offender.blame);
  for (const HarmedNeighbour& h : f.harmed) {
    v1::HarmedTenant* out = e.add_harmed();
    out->set_tenant_id(h.id);
    for (const std::string& line : h.evidence) out->add_evidence(line);
  }
  return e;
}

// The part of a skip reason that does not change every second.
std::string SkipKind(const std::string& reason) {
  return reason.substr(0, reason.find_first_of("0123456789"));
}

}  // namespace

Judge::Judge(FleetState* fleet, Store* store, SendFn send, const JudgeOptions& options)
    : fleet_(fleet),
      store_(store),
      send_(std::move(send)),
      options_(options),
      engine_(options.fairness),
      planner_(options.planner) {}

Judge::~Judge() { Stop(); }

void Judge::Start() {
  absl::StatusOr<size_t> orphans = CloseOrphanedCases(absl::Now());
  if (!orphans.ok()) {
    FW_LOG(Error, "closing the cases of a previous run: ", orphans.status().message());
  } else if (*orphans > 0) {
    FW_LOG(Info, *orphans,
           " case(s) of a previous run closed: their limits lapse with their leases");
  }
  thread_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(options_.period)) RunOnce(absl::Now());
  });
}

void Judge::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

JudgeStats Judge::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::StatusOr<size_t> Judge::CloseOrphanedCases(absl::Time now) {
  CaseFilter open;
  open.open_only = true;
  open.limit = 0;
  absl::StatusOr<std::vector<v1::Case>> cases = store_->ListCases(open);
  if (!cases.ok()) return cases.status();
  absl::MutexLock lock(&mu_);
  size_t closed = 0;
  for (const v1::Case& c : *cases) {
    if (open_cases_.contains(Key(c.host_id(), c.tenant_id(), c.resource()))) continue;
    absl::Status status = store_->CloseCase(
        c.case_id(), "controller restarted: its limits lapse with their leases", now);
    if (!status.ok()) return status;
    ++closed;
  }
  stats_.cases_closed += closed;
  return closed;
}

void Judge::RunOnce(absl::Time now) {
  absl::MutexLock lock(&mu_);
  for (const std::string& host_id : fleet_->HostIds()) {
    absl::StatusOr<HostInterval> interval = fleet_->LastInterval(host_id);
    if (!interval.ok()) continue;  // fewer than two reports yet, or gone meanwhile
    const Evaluation evaluation = engine_.Evaluate(*interval, planner_.LimitsOn(host_id));
    if (evaluation.seq == 0) continue;  // judged already
    ++stats_.intervals_judged;
    for (const PlannedAction& action :
         planner_.Plan(now, evaluation, interval->tenants.size(), nullptr)) {
      Handle(action, evaluation, *interval, now);
    }
  }
}

v1::AckState Judge::Send(const PlannedAction& action, uint64_t action_id, std::string* message) {
  if (action.dry_run) {
    *message = "dry run: not sent";
    return v1::ACK_STATE_NOT_SENT;
  }
  v1::ControllerMessage out;
  v1::LimitCommand* command = out.mutable_limit();
  command->set_command_id(absl::StrCat(action_id));
  const bool clear = action.kind == ActionKind::kRelease;
  command->set_kind(clear ? v1::LimitCommand::KIND_CLEAR : v1::LimitCommand::KIND_APPLY);
  command->mutable_limit()->set_tenant_id(action.tenant_id);
  command->mutable_limit()->set_resource(action.resource);
  command->mutable_limit()->set_value(action.limit);
  command->set_lease_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(options_.planner.lease)));
  absl::Status sent = send_(action.host_id, out);
  if (!sent.ok()) {
    ++stats_.commands_failed_to_send;
    *message = absl::StrCat("not sent: ", sent.message());
    return v1::ACK_STATE_NOT_SENT;
  }
  ++stats_.commands_sent;
  return v1::ACK_STATE_PENDING;
}

void Judge::Handle(const PlannedAction& action, const Evaluation& evaluation,
                   const HostInterval& interval, absl::Time now) {
  const Key key(action.host_id, action.tenant_id, action.resource);
  if (action.kind == ActionKind::kSkip) {
    std::string kind = SkipKind(action.reason);
    if (skip_logged_[key] != kind) {
      FW_LOG(Info, "host ", action.host_id, ": offender ", action.tenant_id, " (",
             v1::Resource_Name(action.resource), ") left alone: ", action.reason);
      skip_logged_[key] = std::move(kind);
    }
    return;
  }
  v1::CaseAction record;
  record.set_kind(ToProto(action.kind));
  record.set_limit(action.limit);
  record.set_at_unix_ns(absl::ToUnixNanos(now));
  record.set_lease_expires_unix_ns(
      action.kind == ActionKind::kRelease ? 0 : absl::ToUnixNanos(action.lease_expires));
  record.set_dry_run(action.dry_run);
  record.set_reason(action.reason);
  record.set_decided_by("policy");
  record.set_ack(action.dry_run ? v1::ACK_STATE_NOT_SENT : v1::ACK_STATE_PENDING);

  uint64_t case_id = 0;
  uint64_t action_id = 0;
  if (action.kind == ActionKind::kLimit) {
    v1::Case c;
    c.set_host_id(action.host_id);
    c.set_tenant_id(action.tenant_id);
    for (const TenantInterval& t : interval.tenants) {
      if (t.id == action.tenant_id) c.set_tenant_name(t.name);
    }
    c.set_resource(action.resource);
    c.set_opened_unix_ns(absl::ToUnixNanos(now));
    c.set_opened_by("policy");
    c.set_dry_run(action.dry_run);
    for (const Finding& f : evaluation.findings) {
      if (f.offender.id == action.tenant_id && f.resource == action.resource) {
        *c.mutable_opening() = Evidence(f);
      }
    }
    *c.add_actions() = record;
    absl::StatusOr<v1::Case> stored = store_->OpenCase(std::move(c));
    if (!stored.ok()) {
      // Nothing is sent that is not on record.
      ++stats_.store_errors;
      FW_LOG(Error, "opening a case: ", stored.status().message());
      return;
    }
    case_id = stored->case_id();
    action_id = stored->actions(0).action_id();
    open_cases_[key] = case_id;
    skip_logged_.erase(key);
    ++stats_.cases_opened;
    FW_LOG(Info, "case ", case_id, " opened: host ", action.host_id, ", tenant ", action.tenant_id,
           ", ", v1::Resource_Name(action.resource), action.dry_run ? " (dry run)" : "", ": ",
           action.reason);
  } else {
    auto open = open_cases_.find(key);
    if (open == open_cases_.end()) {
      FW_LOG(Warning, "no open case for ", action.tenant_id, " on ", action.host_id, "; ",
             ActionKindName(action.kind), " not recorded");
      return;
    }
    case_id = open->second;
    absl::StatusOr<v1::CaseAction> stored = store_->AddAction(case_id, record);
    if (!stored.ok()) {
      ++stats_.store_errors;
      FW_LOG(Error, "recording an action of case ", case_id, ": ", stored.status().message());
      return;
    }
    action_id = stored->action_id();
  }

  std::string message;
  const v1::AckState state = Send(action, action_id, &message);
  if (state == v1::ACK_STATE_NOT_SENT && !action.dry_run) {
    absl::Status status = store_->RecordAck(action_id, state, message, now);
    if (!status.ok()) ++stats_.store_errors;
  }
  if (action.kind == ActionKind::kRelease) {
    absl::Status status = store_->CloseCase(case_id, action.reason, now);
    if (!status.ok()) {
      ++stats_.store_errors;
      FW_LOG(Error, "closing case ", case_id, ": ", status.message());
    }
    open_cases_.erase(key);
    ++stats_.cases_closed;
    FW_LOG(Info, "case ", case_id, " closed: ", action.reason);
  }
}

void Judge::OnAck(const std::string& host_id, const v1::LimitAck& ack, absl::Time now) {
  uint64_t action_id = 0;
  if (!absl::SimpleAtoi(ack.command_id(), &action_id)) {
    FW_LOG(Warning, "host ", host_id, " acknowledged unknown command '", ack.command_id(), "'");
    return;
  }
  const bool applied = ack.status_code() == 0;
  absl::Status status =
      store_->RecordAck(action_id, applied ? v1::ACK_STATE_APPLIED : v1::ACK_STATE_FAILED,
                        applied ? ack.in_effect().ShortDebugString() : ack.status_message(), now);
  absl::MutexLock lock(&mu_);
  if (applied) {
    ++stats_.acks_applied;
  } else {
    ++stats_.acks_failed;
  }
  if (!status.ok()) {
    ++stats_.store_errors;
    FW_LOG(Warning, "recording the acknowledgement of action ", action_id, " from host ", host_id,
           ": ", status.message());
  }
}

}  // namespace fairwatch::controller
