#include "controller/operator_service.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"

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

}  // namespace fairwatch::controller
