#include "controller/operator_service.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "controller/detectors.h"
#include "controller/engine.h"
#include "controller/policy.h"

namespace fairwatch::controller {
namespace {

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

absl::Status ComputeListHosts(FleetState& fleet, v1::ListHostsResponse* response) {
  // Listing is when staleness is visible, so expire here as well as on the
  // periodic sweep.
  fleet.ExpireStaleHosts(absl::Now());
  for (v1::HostInfo& info : fleet.ListHosts()) *response->add_hosts() = std::move(info);
  return absl::OkStatus();
}

absl::Status ComputeListTenants(const FleetState& fleet, const v1::ListTenantsRequest& request,
                                v1::ListTenantsResponse* response) {
  absl::StatusOr<std::vector<v1::TenantInfo>> tenants = fleet.ListTenants(request.host_id());
  if (!tenants.ok()) return tenants.status();
  response->mutable_tenants()->Reserve(static_cast<int>(tenants->size()));
  for (v1::TenantInfo& info : *tenants) *response->add_tenants() = std::move(info);
  return absl::OkStatus();
}

absl::Status ComputeTop(const FleetState& fleet, const v1::TopRequest& request,
                        v1::TopResponse* response) {
  const v1::Resource resource =
      request.resource() == v1::RESOURCE_UNSPECIFIED ? v1::RESOURCE_CPU : request.resource();
  if (!v1::Resource_IsValid(resource)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown resource ", resource));
  }
  absl::StatusOr<std::vector<v1::TopRow>> rows =
      fleet.Top(request.host_id(), request.window_intervals(), resource);
  if (!rows.ok()) return rows.status();
  auto by_cores_desc = [](const v1::TopRow& a, const v1::TopRow& b) {
    if (a.value() != b.value()) return a.value() > b.value();
    return std::tie(a.host_id(), a.tenant_id()) < std::tie(b.host_id(), b.tenant_id());
  };
  size_t count = rows->size();
  if (request.limit() > 0 && request.limit() < count) {
    count = request.limit();
    std::partial_sort(rows->begin(), rows->begin() + static_cast<ptrdiff_t>(count), rows->end(),
                      by_cores_desc);
  } else {
    std::sort(rows->begin(), rows->end(), by_cores_desc);
  }
  response->set_resource(resource);
  response->set_computed_unix_ns(absl::ToUnixNanos(absl::Now()));
  response->mutable_rows()->Reserve(static_cast<int>(count));
  for (size_t i = 0; i < count; ++i) *response->add_rows() = std::move((*rows)[i]);
  return absl::OkStatus();
}

absl::Status ComputeGetTenant(const FleetState& fleet, const v1::GetTenantRequest& request,
                              v1::TenantDetail* response) {
  absl::StatusOr<v1::TenantDetail> detail =
      fleet.GetTenant(request.host_id(), request.tenant_id(), request.window_intervals());
  if (!detail.ok()) return detail.status();
  *response = std::move(*detail);
  return absl::OkStatus();
}

namespace {

absl::Status NeedStore(const Store* store) {
  if (store != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError("this controller runs without a store: no cases are kept");
}

}  // namespace

absl::Status ComputeListCases(Store* store, const v1::ListCasesRequest& request,
                              v1::ListCasesResponse* response) {
  RETURN_IF_ERROR(NeedStore(store));
  if (request.limit() > kMaxCaseLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit ", request.limit(), " is above the maximum of ", kMaxCaseLimit));
  }
  CaseFilter filter;
  filter.open_only = request.open_only();
  filter.host_id = request.host_id();
  filter.tenant_id = request.tenant_id();
  filter.limit = request.limit() == 0 ? kDefaultCaseLimit : request.limit();
  ASSIGN_OR_RETURN(std::vector<v1::Case> cases, store->ListCases(filter));
  for (auto& c : cases) *response->add_cases() = std::move(c);
  return absl::OkStatus();
}

absl::Status ComputeGetCase(Store* store, const v1::GetCaseRequest& request, v1::Case* response) {
  RETURN_IF_ERROR(NeedStore(store));
  if (request.case_id() == 0) return absl::InvalidArgumentError("case id is missing (0)");
  ASSIGN_OR_RETURN(*response, store->GetCase(request.case_id()));
  return absl::OkStatus();
}

namespace {

absl::Status NeedJudge(const Judge* judge) {
  if (judge != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "this controller runs without a store: operator actions need somewhere to be recorded");
}

// Writes the audit entry of an operator action; a failure to write is logged,
// not returned: the action itself is already on record (or refused).
void Audit(const ActionContext& ctx, const v1::OperatorReason& why, absl::string_view action,
           absl::string_view target, const google::protobuf::Message& request,
           const absl::Status& status, absl::string_view result) {
  if (ctx.store == nullptr) return;
  v1::AuditEntry entry;
  entry.set_at_unix_ns(absl::ToUnixNanos(ctx.now));
  entry.set_operator_name(why.operator_name().substr(0, kMaxOperatorName));
  entry.set_peer(ctx.peer);
  entry.set_action(std::string(action));
  entry.set_target(std::string(target));
  entry.set_reason(why.reason().substr(0, kMaxReason));
  std::string text = request.ShortDebugString();
  if (text.size() > 4096) text.resize(4096);
  entry.set_request(std::move(text));
  entry.set_ok(status.ok());
  entry.set_result(status.ok() ? std::string(result) : status.ToString());
  absl::StatusOr<v1::AuditEntry> written = ctx.store->AddAudit(std::move(entry));
  if (!written.ok()) {
    FW_LOG(Error, "writing the audit log (", action, " ", target, " by ", why.operator_name(),
           "): ", written.status().message());
  } else {
    FW_LOG(Info, "operator ", why.operator_name(), " from ", ctx.peer, ": ", action, " ", target,
           status.ok() ? ": " : " refused: ", status.ok() ? result : status.message());
  }
}

std::string CaseList(const v1::OperatorActionResponse& response) {
  std::vector<std::string> ids;
  for (const v1::Case& c : response.cases()) {
    ids.push_back(absl::StrCat(c.case_id(), " (", v1::Resource_Name(c.resource()), ")"));
  }
  return absl::StrCat("cases ", absl::StrJoin(ids, ", "));
}

}  // namespace

absl::StatusOr<std::string> CheckOperatorReason(const v1::OperatorReason& why) {
  const std::string& name = why.operator_name();
  if (name.empty()) return absl::InvalidArgumentError("the operator's name is missing");
  if (name.size() > kMaxOperatorName) {
    return absl::InvalidArgumentError(
        absl::StrCat("the operator's name is longer than ", kMaxOperatorName, " characters"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        c != '@') {
      return absl::InvalidArgumentError(
          absl::StrCat("the operator's name '", absl::CHexEscape(name),
                       "' may only have letters, digits and . _ - @"));
    }
  }
  const absl::string_view reason = absl::StripAsciiWhitespace(why.reason());
  if (reason.empty()) {
    return absl::InvalidArgumentError("a reason is required (--reason): it goes on the record");
  }
  if (why.reason().size() > kMaxReason) {
    return absl::InvalidArgumentError(absl::StrCat("the reason is longer than ", kMaxReason,
                                                   " characters (", why.reason().size(), ")"));
  }
  for (char c : why.reason()) {
    if (static_cast<unsigned char>(c) < 0x20 && c != '\t') {
      return absl::InvalidArgumentError("the reason has control characters");
    }
  }
  return absl::StrCat("operator:", name);
}

absl::Status ComputeThrottle(const ActionContext& ctx, const v1::ThrottleRequest& request,
                             v1::OperatorActionResponse* response) {
  std::string target = absl::StrCat(request.host_id(), "/", request.tenant());
  absl::Status status = [&]() -> absl::Status {
    RETURN_IF_ERROR(NeedJudge(ctx.judge));
    ASSIGN_OR_RETURN(std::string by, CheckOperatorReason(request.why()));
    if (request.limits().empty()) {
      return absl::InvalidArgumentError("no limit given (--cpu, --disk-bps, --disk-iops, ...)");
    }
    std::vector<std::pair<v1::Resource, double>> limits;
    for (const v1::Limit& limit : request.limits()) {
      for (const auto& [resource, value] : limits) {
        if (resource == limit.resource()) {
          return absl::InvalidArgumentError(
              absl::StrCat(v1::Resource_Name(resource), " is limited twice in one request"));
        }
      }
      limits.emplace_back(limit.resource(), limit.value());
    }
    ASSIGN_OR_RETURN(ResolvedTenant tenant,
                     ctx.judge->Resolve(request.host_id(), request.tenant()));
    target = absl::StrCat(tenant.host_id, "/", tenant.tenant_id);
    ASSIGN_OR_RETURN(std::vector<v1::Case> cases,
                     ctx.judge->Throttle(tenant, limits, by, request.why().reason(), ctx.now));
    for (v1::Case& c : cases) *response->add_cases() = std::move(c);
    return absl::OkStatus();
  }();
  Audit(ctx, request.why(), "throttle", target, request, status, CaseList(*response));
  return status;
}

absl::Status ComputeRelease(const ActionContext& ctx, const v1::ReleaseRequest& request,
                            v1::OperatorActionResponse* response) {
  std::string target = absl::StrCat(request.host_id(), "/", request.tenant());
  absl::Status status = [&]() -> absl::Status {
    RETURN_IF_ERROR(NeedJudge(ctx.judge));
    ASSIGN_OR_RETURN(std::string by, CheckOperatorReason(request.why()));
    std::vector<v1::Resource> resources;
    for (int r : request.resources()) {
      if (r == v1::RESOURCE_UNSPECIFIED || !v1::Resource_IsValid(r)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown resource ", r));
      }
      resources.push_back(static_cast<v1::Resource>(r));
    }
    ASSIGN_OR_RETURN(ResolvedTenant tenant,
                     ctx.judge->Resolve(request.host_id(), request.tenant()));
    target = absl::StrCat(tenant.host_id, "/", tenant.tenant_id);
    ASSIGN_OR_RETURN(std::vector<v1::Case> cases,
                     ctx.judge->Release(
                         tenant.host_id, tenant.tenant_id, resources, by,
                         absl::StrCat("released by ", by, ": ", request.why().reason()), ctx.now));
    for (v1::Case& c : cases) *response->add_cases() = std::move(c);
    return absl::OkStatus();
  }();
  Audit(ctx, request.why(), "release", target, request, status, CaseList(*response));
  return status;
}

namespace {

bool SameTarget(const v1::Exemption& e, const v1::Exemption& other) {
  return e.tenant_id() == other.tenant_id() && e.account() == other.account() &&
         e.host_id() == other.host_id();
}

std::string ExemptionTarget(const v1::Exemption& e) {
  if (!e.account().empty()) return absl::StrCat("account:", e.account());
  return absl::StrCat(e.host_id(), "/", e.tenant_id());
}

// The exemption an Exempt or Unexempt request names (tenant resolved).
absl::StatusOr<v1::Exemption> ExemptionOf(Judge* judge, const std::string& host_id,
                                          const std::string& tenant, const std::string& account) {
  v1::Exemption e;
  if (!account.empty()) {
    if (!host_id.empty()) {
      return absl::InvalidArgumentError("an account's exemption holds on every host: drop --host");
    }
    e.set_account(account);
    return e;
  }
  if (tenant.empty()) return absl::InvalidArgumentError("name a tenant or an account");
  ASSIGN_OR_RETURN(ResolvedTenant t, judge->Resolve(host_id, tenant));
  e.set_tenant_id(t.tenant_id);
  e.set_host_id(t.host_id);
  e.set_tenant_name(t.name);
  return e;
}

}  // namespace

absl::Status ComputeExempt(const ActionContext& ctx, const v1::ExemptRequest& request,
                           v1::Exemption* response) {
  std::string target = request.has_account()
                           ? absl::StrCat("account:", request.account())
                           : absl::StrCat(request.host_id(), "/", request.tenant());
  absl::Status status = [&]() -> absl::Status {
    RETURN_IF_ERROR(NeedJudge(ctx.judge));
    ASSIGN_OR_RETURN(std::string by, CheckOperatorReason(request.why()));
    ASSIGN_OR_RETURN(v1::Exemption e, ExemptionOf(ctx.judge, request.host_id(), request.tenant(),
                                                  request.account()));
    target = ExemptionTarget(e);
    for (const v1::Exemption& in_force : ctx.judge->Exemptions()) {
      if (SameTarget(in_force, e)) {
        return absl::AlreadyExistsError(absl::StrCat(target, " is already exempt (exemption ",
                                                     in_force.exemption_id(), " by ",
                                                     in_force.created_by(), ")"));
      }
    }
    e.set_created_by(by);
    e.set_reason(request.why().reason());
    ASSIGN_OR_RETURN(*response, ctx.judge->Exempt(std::move(e), ctx.now));
    return absl::OkStatus();
  }();
  Audit(ctx, request.why(), "exempt", target, request, status,
        absl::StrCat("exemption ", response->exemption_id()));
  return status;
}

absl::Status ComputeUnexempt(const ActionContext& ctx, const v1::UnexemptRequest& request,
                             v1::Exemption* response) {
  std::string target =
      request.exemption_id() != 0 ? absl::StrCat("exemption ", request.exemption_id())
      : request.has_account()     ? absl::StrCat("account:", request.account())
                                  : absl::StrCat(request.host_id(), "/", request.tenant());
  absl::Status status = [&]() -> absl::Status {
    RETURN_IF_ERROR(NeedJudge(ctx.judge));
    ASSIGN_OR_RETURN(std::string by, CheckOperatorReason(request.why()));
    uint64_t id = request.exemption_id();
    if (id == 0) {
      ASSIGN_OR_RETURN(v1::Exemption wanted, ExemptionOf(ctx.judge, request.host_id(),
                                                         request.tenant(), request.account()));
      target = ExemptionTarget(wanted);
      for (const v1::Exemption& in_force : ctx.judge->Exemptions()) {
        if (!SameTarget(in_force, wanted)) continue;
        if (in_force.exemption_id() == 0) {
          return absl::FailedPreconditionError(
              absl::StrCat(target, " is exempt by the controller's config file; remove it there"));
        }
        id = in_force.exemption_id();
      }
      if (id == 0) return absl::NotFoundError(absl::StrCat(target, " is not exempt"));
    }
    ASSIGN_OR_RETURN(*response, ctx.judge->Unexempt(id, by, request.why().reason(), ctx.now));
    return absl::OkStatus();
  }();
  Audit(ctx, request.why(), "unexempt", target, request, status,
        absl::StrCat("exemption ", response->exemption_id(), " removed"));
  return status;
}

absl::Status ComputeGetPolicy(Judge* judge, const v1::FairnessPolicy& configured,
                              v1::PolicyView* response) {
  RETURN_IF_ERROR(NeedJudge(judge));
  *response->mutable_configured() = configured;
  const DryRunState state = judge->dry_run();
  response->set_dry_run(state.all);
  for (v1::Resource r : state.resources) response->add_dry_run_resources(r);
  if (state.last_change.change_id() != 0) *response->mutable_last_change() = state.last_change;
  for (v1::Exemption& e : judge->Exemptions()) *response->add_exemptions() = std::move(e);
  ASSIGN_OR_RETURN(const FairnessParams params, FairnessParamsFromPolicy(configured));
  const auto& detectors = HarmDetectors();
  for (size_t d = 0; d < detectors.size(); ++d) {
    const HarmDetector& detector = detectors[d];
    v1::HarmDetectorView* view = response->add_detectors();
    view->set_name(std::string(detector.name));
    view->set_label(std::string(detector.label));
    view->set_help(std::string(detector.help));
    for (v1::Resource r : kJudgedResources) {
      if (std::optional<HarmGroup> g = HarmGroupOf(r); g && Judges(detector, *g)) {
        view->add_resources(r);
      }
    }
    view->set_floor(detector.floor(params.harm));
    view->set_floor_text(detector.format(view->floor()));
    view->set_enabled(params.harm.enabled[d]);
  }
  return absl::OkStatus();
}

absl::Status ComputeSetDryRun(const ActionContext& ctx, const v1::FairnessPolicy& configured,
                              const v1::SetDryRunRequest& request, v1::PolicyView* response) {
  absl::Status status = [&]() -> absl::Status {
    RETURN_IF_ERROR(NeedJudge(ctx.judge));
    ASSIGN_OR_RETURN(std::string by, CheckOperatorReason(request.why()));
    std::vector<v1::Resource> resources;
    for (int r : request.resources()) resources.push_back(static_cast<v1::Resource>(r));
    RETURN_IF_ERROR(
        ctx.judge->SetDryRun(request.enabled(), resources, by, request.why().reason(), ctx.now)
            .status());
    return ComputeGetPolicy(ctx.judge, configured, response);
  }();
  std::vector<std::string> names;
  for (int r : response->dry_run_resources()) {
    names.push_back(v1::Resource_Name(static_cast<v1::Resource>(r)));
  }
  Audit(ctx, request.why(), "dry-run", "policy", request, status,
        response->dry_run() ? "dry run on for every resource"
        : names.empty()     ? "dry run off"
                            : absl::StrCat("dry run on for ", absl::StrJoin(names, ", ")));
  return status;
}

absl::Status ComputeListExemptions(Judge* judge, Store* store,
                                   const v1::ListExemptionsRequest& request,
                                   v1::ListExemptionsResponse* response) {
  RETURN_IF_ERROR(NeedJudge(judge));
  if (request.include_removed()) {
    for (const v1::Exemption& e : judge->Exemptions()) {
      if (e.exemption_id() == 0) *response->add_exemptions() = e;
    }
    ASSIGN_OR_RETURN(std::vector<v1::Exemption> all, store->ListExemptions(true));
    for (v1::Exemption& e : all) *response->add_exemptions() = std::move(e);
    return absl::OkStatus();
  }
  for (v1::Exemption& e : judge->Exemptions()) *response->add_exemptions() = std::move(e);
  return absl::OkStatus();
}

absl::Status ComputeListAudit(Store* store, const v1::ListAuditRequest& request,
                              v1::ListAuditResponse* response) {
  RETURN_IF_ERROR(NeedStore(store));
  if (request.limit() > kMaxCaseLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit ", request.limit(), " is above the maximum of ", kMaxCaseLimit));
  }
  ASSIGN_OR_RETURN(std::vector<v1::AuditEntry> entries,
                   store->ListAudit(request.limit() == 0 ? kDefaultCaseLimit : request.limit()));
  for (v1::AuditEntry& e : entries) *response->add_entries() = std::move(e);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* OperatorService::ListHosts(grpc::CallbackServerContext* context,
                                                     const v1::ListHostsRequest* /*request*/,
                                                     v1::ListHostsResponse* response) {
  return Reply(context, ComputeListHosts(*fleet_, response));
}

grpc::ServerUnaryReactor* OperatorService::ListTenants(grpc::CallbackServerContext* context,
                                                       const v1::ListTenantsRequest* request,
                                                       v1::ListTenantsResponse* response) {
  return Reply(context, ComputeListTenants(*fleet_, *request, response));
}

grpc::ServerUnaryReactor* OperatorService::Top(grpc::CallbackServerContext* context,
                                               const v1::TopRequest* request,
                                               v1::TopResponse* response) {
  return Reply(context, ComputeTop(*fleet_, *request, response));
}

grpc::ServerUnaryReactor* OperatorService::GetTenant(grpc::CallbackServerContext* context,
                                                     const v1::GetTenantRequest* request,
                                                     v1::TenantDetail* response) {
  return Reply(context, ComputeGetTenant(*fleet_, *request, response));
}

grpc::ServerUnaryReactor* OperatorService::ListCases(grpc::CallbackServerContext* context,
                                                     const v1::ListCasesRequest* request,
                                                     v1::ListCasesResponse* response) {
  return Reply(context, ComputeListCases(store_, *request, response));
}

grpc::ServerUnaryReactor* OperatorService::GetCase(grpc::CallbackServerContext* context,
                                                   const v1::GetCaseRequest* request,
                                                   v1::Case* response) {
  return Reply(context, ComputeGetCase(store_, *request, response));
}

namespace {

ActionContext Context(grpc::CallbackServerContext* context, Judge* judge, Store* store) {
  return ActionContext{judge, store, context->peer(), absl::Now()};
}

}  // namespace

grpc::ServerUnaryReactor* OperatorService::Throttle(grpc::CallbackServerContext* context,
                                                    const v1::ThrottleRequest* request,
                                                    v1::OperatorActionResponse* response) {
  return Reply(context, ComputeThrottle(Context(context, judge_, store_), *request, response));
}

grpc::ServerUnaryReactor* OperatorService::Release(grpc::CallbackServerContext* context,
                                                   const v1::ReleaseRequest* request,
                                                   v1::OperatorActionResponse* response) {
  return Reply(context, ComputeRelease(Context(context, judge_, store_), *request, response));
}

grpc::ServerUnaryReactor* OperatorService::Exempt(grpc::CallbackServerContext* context,
                                                  const v1::ExemptRequest* request,
                                                  v1::Exemption* response) {
  return Reply(context, ComputeExempt(Context(context, judge_, store_), *request, response));
}

grpc::ServerUnaryReactor* OperatorService::Unexempt(grpc::CallbackServerContext* context,
                                                    const v1::UnexemptRequest* request,
                                                    v1::Exemption* response) {
  return Reply(context, ComputeUnexempt(Context(context, judge_, store_), *request, response));
}

grpc::ServerUnaryReactor* OperatorService::ListExemptions(grpc::CallbackServerContext* context,
                                                          const v1::ListExemptionsRequest* request,
                                                          v1::ListExemptionsResponse* response) {
  return Reply(context, ComputeListExemptions(judge_, store_, *request, response));
}

grpc::ServerUnaryReactor* OperatorService::GetPolicy(grpc::CallbackServerContext* context,
                                                     const v1::GetPolicyRequest* /*request*/,
                                                     v1::PolicyView* response) {
  return Reply(context, ComputeGetPolicy(judge_, configured_, response));
}

grpc::ServerUnaryReactor* OperatorService::SetDryRun(grpc::CallbackServerContext* context,
                                                     const v1::SetDryRunRequest* request,
                                                     v1::PolicyView* response) {
  return Reply(context,
               ComputeSetDryRun(Context(context, judge_, store_), configured_, *request, response));
}

grpc::ServerUnaryReactor* OperatorService::ListAudit(grpc::CallbackServerContext* context,
                                                     const v1::ListAuditRequest* request,
                                                     v1::ListAuditResponse* response) {
  return Reply(context, ComputeListAudit(store_, *request, response));
}

}  // namespace fairwatch::controller
