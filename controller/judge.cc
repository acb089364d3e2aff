#include "controller/judge.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/status.h"

namespace fairwatch::controller {
namespace {

// Command id of the weight lever sent beside a cap for the same action.
constexpr absl::string_view kWeightSuffix = "/weight";

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
    out->set_caused_share(h.caused);
    out->set_measured(h.measured);
  }
  return e;
}

// One line per resource with a victim or a flagged tenant (--log-level debug):
// how each interval was judged, for whoever asks why a case opened or not.
void LogVerdicts(const Evaluation& evaluation) {
  for (const ResourceVerdict& v : evaluation.verdicts) {
    std::vector<std::string> parts;
    for (const TenantShare& s : v.judgement.tenants) {
      if (!s.harmed && !s.flagged && !s.harm_signal && s.caused_max == 0) continue;
      parts.push_back(absl::StrFormat("%s[u %.3g e %.3g f %.3g d %.3g%s%s%s caused %.2f]", s.id,
                                      s.usage, s.entitled, s.fair, s.demand,
                                      s.harm_signal ? " signal" : "", s.harmed ? " VICTIM" : "",
                                      s.flagged ? " FLAGGED" : "", s.caused_max));
    }
    if (parts.empty()) continue;
    FW_LOG(Debug, "host ", evaluation.host_id, " seq ", evaluation.seq, " ",
           v1::Resource_Name(v.resource), ": ", absl::StrJoin(parts, " "));
  }
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
  if (absl::Status loaded = LoadOperatorState(); !loaded.ok()) {
    FW_LOG(Error, "loading exemptions and policy changes: ", loaded.message());
  }
  absl::StatusOr<size_t> orphans = CloseOrphanedCases(absl::Now());
  if (!orphans.ok()) {
    FW_LOG(Error, "closing the cases of a previous run: ", orphans.status().message());
  } else if (*orphans > 0) {
    FW_LOG(Info, *orphans,
           " case(s) of a previous run closed: their limits lapse with their leases");
  }
  thread_ = std::thread([this] {
    absl::Time next = absl::Now() + options_.period;
    while (!stop_.HasBeenNotified()) {
      {
        absl::MutexLock lock(&wake_mu_);
        wake_mu_.AwaitWithDeadline(absl::Condition(&wake_), next);
        wake_ = false;
      }
      if (stop_.HasBeenNotified()) break;
      RunOnce(absl::Now());
      next = absl::Now() + options_.period;
      // Reports of a burst that arrive meanwhile are judged together.
      if (stop_.WaitForNotificationWithTimeout(options_.min_gap)) break;
    }
  });
}

void Judge::Wake() {
  absl::MutexLock lock(&wake_mu_);
  wake_ = true;
}

void Judge::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  Wake();
  if (thread_.joinable()) thread_.join();
}

JudgeStats Judge::stats() const {
  absl::MutexLock lock(&mu_);
  JudgeStats stats = stats_;
  for (const auto& [key, open] : open_cases_) ++stats.open_cases[std::get<2>(key)];
  return stats;
}

std::vector<OpenCaseInfo> Judge::OpenCases() const {
  std::vector<OpenCaseInfo> cases;
  {
    absl::MutexLock lock(&mu_);
    cases.reserve(open_cases_.size());
    for (const auto& [key, open] : open_cases_) {
      const auto& [host_id, tenant_id, resource] = key;
      cases.push_back({open.case_id, host_id, tenant_id, open.tenant_name, resource, open.opened});
    }
  }
  std::sort(cases.begin(), cases.end(),
            [](const OpenCaseInfo& a, const OpenCaseInfo& b) { return a.case_id < b.case_id; });
  return cases;
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
  const std::vector<std::string> host_ids = fleet_->HostIds();
  // Hosts the fleet dropped (stale after a disconnect): their cases end, as
  // their limits do with their leases, and the engine forgets them.
  absl::flat_hash_set<std::string> present(host_ids.begin(), host_ids.end());
  for (auto it = judged_hosts_.begin(); it != judged_hosts_.end();) {
    if (present.contains(*it)) {
      ++it;
      continue;
    }
    const std::string gone = *it;
    engine_.ForgetHost(gone);
    judged_seq_.erase(gone);
    skips_.erase(skips_.lower_bound(Key(gone, "", v1::RESOURCE_UNSPECIFIED)),
                 skips_.lower_bound(Key(gone + '\0', "", v1::RESOURCE_UNSPECIFIED)));
    for (const Planner::CaseRef& ref : planner_.Cases()) {
      if (ref.host_id != gone) continue;
      PlannedAction release;
      if (planner_.Lift(now, ref.host_id, ref.tenant_id, ref.resource, std::string(kByPolicy),
                        absl::StrCat("host ", gone,
                                     " is gone from the fleet; its limits lapse with their leases"),
                        false, &release)) {
        Commit(release, nullptr, now).IgnoreError();  // logged and counted there
      }
    }
    judged_hosts_.erase(it++);
  }
  for (const std::string& host_id : host_ids) {
    // Nothing new since this host was last judged: skip it before copying its interval.
    const uint64_t seq = fleet_->LastReportSeq(host_id);
    auto judged = judged_seq_.find(host_id);
    if (judged != judged_seq_.end() && judged->second == seq) continue;
    absl::StatusOr<HostInterval> interval = fleet_->LastInterval(host_id);
    if (!interval.ok()) continue;  // fewer than two reports yet, or gone meanwhile
    const Evaluation evaluation = engine_.Evaluate(*interval, planner_.LimitsOn(host_id));
    judged_seq_[host_id] = interval->seq;
    if (evaluation.seq == 0) continue;  // judged already
    judged_hosts_.insert(host_id);
    ++stats_.intervals_judged;
    if (GetLogLevel() <= LogLevel::kDebug) LogVerdicts(evaluation);
    auto exempt = [&](const std::string& host, const std::string& tenant_id) {
      std::string name;
      for (const TenantInterval& t : interval->tenants) {
        if (t.id == tenant_id) name = t.name;
      }
      return ExemptionOf(host, tenant_id, name, AccountOf(host, tenant_id));
    };
    for (const PlannedAction& action :
         planner_.Plan(now, evaluation, interval->tenants.size(), exempt)) {
      Handle(action, evaluation, *interval, now);
    }
  }
}

v1::AckState Judge::Send(const PlannedAction& action, uint64_t action_id, std::string* message) {
  if (action.dry_run) {
    *message = "dry run: not sent";
    return v1::ACK_STATE_NOT_SENT;
  }
  // One command per lever: a release clears them all (no lever named); any
  // other action sets the weight and the cap that stand, each with a lease.
  std::vector<v1::ControllerMessage> out;
  auto command = [&](v1::LimitCommand::Kind kind, v1::Lever lever, double value,
                     absl::string_view suffix) {
    v1::LimitCommand* c = out.emplace_back().mutable_limit();
    c->set_command_id(absl::StrCat(action_id, suffix));
    c->set_kind(kind);
    c->mutable_limit()->set_tenant_id(action.tenant_id);
    c->mutable_limit()->set_resource(action.resource);
    c->mutable_limit()->set_value(value);
    c->mutable_limit()->set_lever(lever);
    c->set_lease_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(options_.planner.lease)));
  };
  if (action.kind == v1::ACTION_KIND_RELEASE) {
    command(v1::LimitCommand::KIND_CLEAR, v1::LEVER_UNSPECIFIED, 0, "");
  } else {
    if (action.weight > 0) {
      command(v1::LimitCommand::KIND_APPLY, v1::LEVER_WEIGHT, action.weight,
              action.limit > 0 ? kWeightSuffix : "");
    }
    if (action.limit > 0) command(v1::LimitCommand::KIND_APPLY, v1::LEVER_CAP, action.limit, "");
  }
  for (const v1::ControllerMessage& message_out : out) {
    absl::Status sent = send_(action.host_id, message_out);
    if (!sent.ok()) {
      ++stats_.commands_failed_to_send;
      *message = absl::StrCat("not sent: ", sent.message());
      return v1::ACK_STATE_NOT_SENT;
    }
    ++stats_.commands_sent;
  }
  return v1::ACK_STATE_PENDING;
}

void Judge::Handle(const PlannedAction& action, const Evaluation& evaluation,
                   const HostInterval& interval, absl::Time now) {
  const Key key(action.host_id, action.tenant_id, action.resource);
  if (action.kind == v1::ACTION_KIND_SKIP) {
    // One record per episode: the same reason again within a cool-down of
    // the last is the same story, not a new case.
    std::string kind = SkipKind(action.reason);
    SkipEpisode& episode = skips_[key];
    const bool same_episode =
        episode.kind == kind && now - episode.last_seen < options_.planner.cooldown;
    episode.kind = std::move(kind);
    episode.last_seen = now;
    if (same_episode) return;
    FW_LOG(Info, "host ", action.host_id, ": offender ", action.tenant_id, " (",
           v1::Resource_Name(action.resource), ") left alone: ", action.reason);
  } else if (action.kind != v1::ACTION_KIND_LIMIT) {
    Commit(action, nullptr, now).IgnoreError();  // logged and counted there
    return;
  }
  v1::Case c;
  for (const TenantInterval& t : interval.tenants) {
    if (t.id == action.tenant_id) c.set_tenant_name(t.name);
  }
  for (const Finding& f : evaluation.findings) {
    if (f.offender.id == action.tenant_id && f.resource == action.resource) {
      *c.mutable_opening() = Evidence(f);
    }
  }
  Commit(action, &c, now).IgnoreError();
}

absl::StatusOr<uint64_t> Judge::Commit(const PlannedAction& action, v1::Case* opening,
                                       absl::Time now) {
  const Key key(action.host_id, action.tenant_id, action.resource);
  v1::CaseAction record;
  record.set_kind(action.kind);
  record.set_limit(action.limit);
  record.set_weight(action.weight);
  record.set_at_unix_ns(absl::ToUnixNanos(now));
  record.set_lease_expires_unix_ns(
      action.kind == v1::ACTION_KIND_RELEASE ? 0 : absl::ToUnixNanos(action.lease_expires));
  record.set_dry_run(action.dry_run);
  record.set_reason(action.reason);
  record.set_decided_by(action.decided_by);
  record.set_ack(action.dry_run ? v1::ACK_STATE_NOT_SENT : v1::ACK_STATE_PENDING);
  if (action.seen.report_seq() != 0) *record.mutable_seen() = action.seen;

  uint64_t case_id = 0;
  uint64_t action_id = 0;
  if (opening != nullptr) {
    v1::Case& c = *opening;
    c.set_host_id(action.host_id);
    c.set_tenant_id(action.tenant_id);
    c.set_resource(action.resource);
    c.set_opened_unix_ns(absl::ToUnixNanos(now));
    c.set_opened_by(action.decided_by);
    c.set_dry_run(action.dry_run);
    *c.add_actions() = record;
    absl::StatusOr<v1::Case> stored = store_->OpenCase(std::move(c));
    if (!stored.ok()) {
      // Nothing is sent that is not on record.
      ++stats_.store_errors;
      ++stats_.actions[{std::string(ActionKindName(action.kind)), "store_error"}];
      FW_LOG(Error, "opening a case: ", stored.status().message());
      return stored.status();
    }
    case_id = stored->case_id();
    action_id = stored->actions(0).action_id();
    ++stats_.cases_opened;
    if (action.kind == v1::ACTION_KIND_SKIP) {
      // On record, as a case an operator can read; nothing is sent.
      ++stats_.actions[{std::string(ActionKindName(action.kind)), "not_sent"}];
      absl::Status status = store_->RecordAck(action_id, v1::ACK_STATE_NOT_SENT,
                                              "left alone: nothing sent", std::nullopt, now);
      if (status.ok()) {
        status = store_->CloseCase(case_id, absl::StrCat("left alone: ", action.reason), now);
      }
      if (!status.ok()) {
        ++stats_.store_errors;
        FW_LOG(Error, "recording case ", case_id, " (left alone): ", status.message());
      }
      ++stats_.cases_closed;
      return case_id;
    }
    open_cases_[key] = OpenCase{case_id, stored->tenant_name(), now};
    skips_.erase(key);
    FW_LOG(Info, "case ", case_id, " opened by ", action.decided_by, ": host ", action.host_id,
           ", tenant ", action.tenant_id, ", ", v1::Resource_Name(action.resource),
           action.dry_run ? " (dry run)" : "", ": ", action.reason);
  } else {
    auto open = open_cases_.find(key);
    if (open == open_cases_.end()) {
      FW_LOG(Warning, "no open case for ", action.tenant_id, " on ", action.host_id, "; ",
             ActionKindName(action.kind), " not recorded");
      return absl::FailedPreconditionError(
          absl::StrCat("no open case for ", action.tenant_id, " on ", action.host_id));
    }
    case_id = open->second.case_id;
    absl::StatusOr<v1::CaseAction> stored = store_->AddAction(case_id, record);
    if (!stored.ok()) {
      ++stats_.store_errors;
      ++stats_.actions[{std::string(ActionKindName(action.kind)), "store_error"}];
      FW_LOG(Error, "recording an action of case ", case_id, ": ", stored.status().message());
      return stored.status();
    }
    action_id = stored->action_id();
  }

  std::string message;
  const v1::AckState state = Send(action, action_id, &message);
  ++stats_.actions[{std::string(ActionKindName(action.kind)), action.dry_run ? "dry_run"
                                                              : state == v1::ACK_STATE_NOT_SENT
                                                                  ? "not_sent"
                                                                  : "sent"}];
  if (state == v1::ACK_STATE_NOT_SENT && !action.dry_run) {
    absl::Status status = store_->RecordAck(action_id, state, message, std::nullopt, now);
    if (!status.ok()) ++stats_.store_errors;
  }
  if (action.kind == v1::ACTION_KIND_RELEASE) {
    absl::Status status = store_->CloseCase(case_id, action.reason, now);
    if (!status.ok()) {
      ++stats_.store_errors;
      FW_LOG(Error, "closing case ", case_id, ": ", status.message());
    }
    open_cases_.erase(key);
    ++stats_.cases_closed;
    FW_LOG(Info, "case ", case_id, " closed by ", action.decided_by, ": ", action.reason);
  }
  return case_id;
}

void Judge::OnAck(const std::string& host_id, const v1::LimitAck& ack, absl::Time now) {
  uint64_t action_id = 0;
  absl::string_view id = ack.command_id();
  // The weight's command beside a cap: its failure is the action's, its
  // success says nothing the cap's ack will not (that one carries the value).
  const bool weight_beside_cap = absl::ConsumeSuffix(&id, kWeightSuffix);
  if (!absl::SimpleAtoi(id, &action_id)) {
    FW_LOG(Warning, "host ", host_id, " acknowledged unknown command '", ack.command_id(), "'");
    return;
  }
  if (weight_beside_cap && ack.status_code() == 0) return;
  const bool applied = ack.status_code() == 0;
  absl::Status status = store_->RecordAck(
      action_id, applied ? v1::ACK_STATE_APPLIED : v1::ACK_STATE_FAILED, ack.status_message(),
      applied && ack.has_in_effect() ? std::optional<double>(ack.in_effect().value())
                                     : std::nullopt,
      now);
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

absl::Status Judge::LoadOperatorState() {
  ASSIGN_OR_RETURN(std::vector<v1::Exemption> exemptions, store_->ListExemptions(false));
  absl::StatusOr<v1::PolicyChange> change = store_->LatestPolicyChange();
  if (!change.ok() && !absl::IsNotFound(change.status())) return change.status();
  absl::MutexLock lock(&mu_);
  exemptions_ = std::move(exemptions);
  if (change.ok()) {
    last_change_ = *change;
    std::vector<v1::Resource> resources;
    for (int r : change->dry_run_resources()) resources.push_back(static_cast<v1::Resource>(r));
    planner_.SetDryRun(change->dry_run(), std::move(resources));
    FW_LOG(Info, "dry run ",
           change->dry_run() || change->dry_run_resources_size() > 0 ? "on" : "off", " as set by ",
           change->changed_by(), " (", change->reason(), ")");
  }
  return absl::OkStatus();
}

std::string Judge::AccountOf(const std::string& host_id, const std::string& tenant_id) const {
  absl::StatusOr<std::vector<v1::TenantInfo>> tenants = fleet_->ListTenants(host_id);
  if (!tenants.ok()) return "";
  for (const v1::TenantInfo& info : *tenants) {
    if (info.tenant().id() == tenant_id) return info.tenant().account();
  }
  return "";
}

std::optional<std::string> Judge::ExemptionOf(const std::string& host_id,
                                              const std::string& tenant_id, const std::string& name,
                                              const std::string& account) const {
  for (const v1::Exemption& e : exemptions_) {
    const bool by_account = !e.account().empty() && e.account() == account;
    const bool by_tenant = !e.tenant_id().empty() && e.tenant_id() == tenant_id &&
                           (e.host_id().empty() || e.host_id() == host_id);
    if (by_account || by_tenant) {
      return absl::StrCat(by_account ? absl::StrCat("account ", account) : std::string("tenant"),
                          " exempted by ", e.created_by(), " (exemption ", e.exemption_id(), ": ",
                          e.reason(), ")");
    }
  }
  for (const std::string& t : options_.exempt_tenants) {
    if (t == tenant_id || (!name.empty() && t == name)) {
      return std::string("tenant exempt in the controller's config (fairness.exempt_tenants)");
    }
  }
  for (const std::string& a : options_.exempt_accounts) {
    if (!account.empty() && a == account) {
      return absl::StrCat("account ", account,
                          " exempt in the controller's config (fairness.exempt_accounts)");
    }
  }
  return std::nullopt;
}

absl::StatusOr<ResolvedTenant> Judge::Resolve(const std::string& host_id,
                                              const std::string& tenant) const {
  if (tenant.empty()) return absl::InvalidArgumentError("no tenant named");
  ASSIGN_OR_RETURN(std::vector<v1::TenantInfo> tenants, fleet_->ListTenants(host_id));
  std::vector<ResolvedTenant> found;
  for (const v1::TenantInfo& info : tenants) {
    if (info.tenant().id() != tenant && info.tenant().name() != tenant) continue;
    found.push_back(
        {info.host_id(), info.tenant().id(), info.tenant().name(), info.tenant().account()});
  }
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no tenant '", tenant, "'", host_id.empty() ? "" : absl::StrCat(" on host ", host_id),
        " (an id or a name, as `fairwatch tenants` lists)"));
  }
  if (found.size() > 1) {
    std::vector<std::string> where;
    for (const ResolvedTenant& r : found)
      where.push_back(absl::StrCat(r.host_id, "/", r.tenant_id));
    return absl::FailedPreconditionError(absl::StrCat("'", tenant, "' names ", found.size(),
                                                      " tenants (", absl::StrJoin(where, ", "),
                                                      "); give the host, or the tenant's id"));
  }
  return found.front();
}

absl::StatusOr<std::vector<v1::Case>> Judge::CasesById(const std::vector<uint64_t>& case_ids) {
  std::vector<v1::Case> cases;
  for (uint64_t id : case_ids) {
    ASSIGN_OR_RETURN(v1::Case c, store_->GetCase(id));
    cases.push_back(std::move(c));
  }
  return cases;
}

absl::StatusOr<std::vector<v1::Case>> Judge::Throttle(
    const ResolvedTenant& tenant, const std::vector<std::pair<v1::Resource, double>>& limits,
    const std::string& by, const std::string& reason, absl::Time now) {
  if (limits.empty()) return absl::InvalidArgumentError("no limit given");
  for (const auto& [resource, value] : limits) {
    if (resource == v1::RESOURCE_UNSPECIFIED || !v1::Resource_IsValid(resource)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown resource ", resource));
    }
    if (!(value > 0) || !std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the ", v1::Resource_Name(resource), " limit must be a positive number, not ", value));
    }
  }
  absl::StatusOr<HostInterval> interval = fleet_->LastInterval(tenant.host_id);
  std::vector<uint64_t> case_ids;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [resource, value] : limits) {
      PlannedAction action =
          planner_.Impose(now, tenant.host_id, tenant.tenant_id, resource, value, by, reason);
      const bool have_case = open_cases_.contains(Key(tenant.host_id, tenant.tenant_id, resource));
      absl::StatusOr<uint64_t> case_id;
      if (have_case) {
        case_id = Commit(action, nullptr, now);
      } else {
        v1::Case c;
        c.set_tenant_name(tenant.name);
        if (interval.ok()) {
          for (const TenantInterval& t : interval->tenants) {
            if (t.id == tenant.tenant_id)
              c.mutable_opening()->set_usage(ResourceUsage(t.rates, resource));
          }
          c.mutable_opening()->set_report_seq(interval->seq);
          c.mutable_opening()->set_capacity(ResourceCapacity(interval->capacity, resource));
        }
        case_id = Commit(action, &c, now);
      }
      if (!case_id.ok()) {
        // Not on record, so not in force either.
        PlannedAction dropped;
        if (!have_case) {
          planner_.Lift(now, tenant.host_id, tenant.tenant_id, resource, by, reason, false,
                        &dropped);
        }
        return case_id.status();
      }
      case_ids.push_back(*case_id);
    }
  }
  return CasesById(case_ids);
}

absl::StatusOr<std::vector<v1::Case>> Judge::Release(const std::string& host_id,
                                                     const std::string& tenant_id,
                                                     const std::vector<v1::Resource>& resources,
                                                     const std::string& by,
                                                     const std::string& reason, absl::Time now) {
  std::vector<uint64_t> case_ids;
  {
    absl::MutexLock lock(&mu_);
    for (const Planner::CaseRef& ref : planner_.Cases()) {
      if (ref.host_id != host_id || ref.tenant_id != tenant_id) continue;
      if (!resources.empty() &&
          std::find(resources.begin(), resources.end(), ref.resource) == resources.end()) {
        continue;
      }
      PlannedAction release;
      if (!planner_.Lift(now, host_id, tenant_id, ref.resource, by, reason, true, &release)) {
        continue;
      }
      absl::StatusOr<uint64_t> case_id = Commit(release, nullptr, now);
      if (!case_id.ok()) return case_id.status();
      case_ids.push_back(*case_id);
    }
  }
  if (case_ids.empty()) {
    return absl::NotFoundError(absl::StrCat("no limit in force on tenant ", tenant_id, " of host ",
                                            host_id,
                                            resources.empty() ? "" : " for those resources"));
  }
  return CasesById(case_ids);
}

void Judge::ReleasePolicyCases(const std::function<bool(const Planner::CaseRef&)>& covered,
                               const std::string& by, const std::string& reason, bool cooldown,
                               absl::Time now) {
  for (const Planner::CaseRef& ref : planner_.Cases()) {
    if (ref.manual || !covered(ref)) continue;
    PlannedAction release;
    if (planner_.Lift(now, ref.host_id, ref.tenant_id, ref.resource, by, reason, cooldown,
                      &release)) {
      Commit(release, nullptr, now).IgnoreError();  // logged and counted there
    }
  }
}

absl::StatusOr<v1::Exemption> Judge::Exempt(v1::Exemption exemption, absl::Time now) {
  exemption.set_created_unix_ns(absl::ToUnixNanos(now));
  ASSIGN_OR_RETURN(v1::Exemption stored, store_->AddExemption(std::move(exemption)));
  // Accounts of the tenants with cases, looked up before taking the lock.
  std::map<std::pair<std::string, std::string>, std::string> accounts;
  if (!stored.account().empty()) {
    std::vector<Planner::CaseRef> refs;
    {
      absl::MutexLock lock(&mu_);
      refs = planner_.Cases();
    }
    for (const Planner::CaseRef& ref : refs) {
      accounts[{ref.host_id, ref.tenant_id}] = AccountOf(ref.host_id, ref.tenant_id);
    }
  }
  absl::MutexLock lock(&mu_);
  exemptions_.push_back(stored);
  ReleasePolicyCases(
      [&](const Planner::CaseRef& ref) {
        if (!stored.account().empty()) {
          auto it = accounts.find({ref.host_id, ref.tenant_id});
          return it != accounts.end() && it->second == stored.account();
        }
        return ref.tenant_id == stored.tenant_id() &&
               (stored.host_id().empty() || ref.host_id == stored.host_id());
      },
      stored.created_by(), absl::StrCat("exempted by ", stored.created_by(), ": ", stored.reason()),
      false, now);
  return stored;
}

absl::StatusOr<v1::Exemption> Judge::Unexempt(uint64_t exemption_id, const std::string& by,
                                              const std::string& reason, absl::Time now) {
  ASSIGN_OR_RETURN(v1::Exemption removed, store_->RemoveExemption(exemption_id, by, reason, now));
  absl::MutexLock lock(&mu_);
  std::erase_if(exemptions_,
                [&](const v1::Exemption& e) { return e.exemption_id() == exemption_id; });
  return removed;
}

std::vector<v1::Exemption> Judge::Exemptions() const {
  std::vector<v1::Exemption> out;
  for (const std::string& t : options_.exempt_tenants) {
    v1::Exemption& e = out.emplace_back();
    e.set_tenant_id(t);
    e.set_created_by("config");
    e.set_reason("fairness.exempt_tenants in the controller's config");
  }
  for (const std::string& a : options_.exempt_accounts) {
    v1::Exemption& e = out.emplace_back();
    e.set_account(a);
    e.set_created_by("config");
    e.set_reason("fairness.exempt_accounts in the controller's config");
  }
  absl::MutexLock lock(&mu_);
  out.insert(out.end(), exemptions_.begin(), exemptions_.end());
  return out;
}

absl::StatusOr<DryRunState> Judge::SetDryRun(bool enabled, std::vector<v1::Resource> resources,
                                             const std::string& by, const std::string& reason,
                                             absl::Time now) {
  for (v1::Resource r : resources) {
    if (r == v1::RESOURCE_UNSPECIFIED || !v1::Resource_IsValid(r)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown resource ", r));
    }
  }
  if (!enabled) resources.clear();
  v1::PolicyChange change;
  change.set_at_unix_ns(absl::ToUnixNanos(now));
  change.set_changed_by(by);
  change.set_reason(reason);
  change.set_dry_run(enabled && resources.empty());
  for (v1::Resource r : resources) change.add_dry_run_resources(r);
  ASSIGN_OR_RETURN(change, store_->AddPolicyChange(std::move(change)));
  absl::MutexLock lock(&mu_);
  last_change_ = change;
  planner_.SetDryRun(change.dry_run(), resources);
  if (enabled) {
    ReleasePolicyCases(
        [&](const Planner::CaseRef& ref) { return !ref.dry_run && planner_.DryRun(ref.resource); },
        by, absl::StrCat("dry run turned on by ", by, ": ", reason), false, now);
  } else {
    ReleasePolicyCases(
        [](const Planner::CaseRef& ref) { return ref.dry_run; }, by,
        absl::StrCat("dry run turned off by ", by, ": ", reason, "; the policy judges afresh"),
        false, now);
  }
  return DryRunState{planner_.dry_run(), planner_.dry_run_resources(), last_change_};
}

DryRunState Judge::dry_run() const {
  absl::MutexLock lock(&mu_);
  return DryRunState{planner_.dry_run(), planner_.dry_run_resources(), last_change_};
}

}  // namespace fairwatch::controller
