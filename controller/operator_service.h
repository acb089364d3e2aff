// fairwatch.v1.Operator: read-only views of the fleet for the CLI. Unary
// calls answered inline from FleetState with the callback API.
#pragma once

#include "controller/fleet_state.h"
#include "controller/store.h"
#include "fairwatch/v1/operator.grpc.pb.h"

namespace fairwatch::controller {

class OperatorService final : public v1::Operator::CallbackService {
 public:
  // `fleet` and `store` must outlive the service; `store` may be null (then
  // case queries fail with FAILED_PRECONDITION).
  explicit OperatorService(FleetState* fleet, Store* store = nullptr)
      : fleet_(fleet), store_(store) {}

  grpc::ServerUnaryReactor* ListHosts(grpc::CallbackServerContext* context,
                                      const v1::ListHostsRequest* request,
                                      v1::ListHostsResponse* response) override;
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* context,
                                        const v1::ListTenantsRequest* request,
                                        v1::ListTenantsResponse* response) override;
  grpc::ServerUnaryReactor* Top(grpc::CallbackServerContext* context, const v1::TopRequest* request,
                                v1::TopResponse* response) override;
  grpc::ServerUnaryReactor* GetTenant(grpc::CallbackServerContext* context,
                                      const v1::GetTenantRequest* request,
                                      v1::TenantDetail* response) override;
  grpc::ServerUnaryReactor* ListCases(grpc::CallbackServerContext* context,
                                      const v1::ListCasesRequest* request,
                                      v1::ListCasesResponse* response) override;
  grpc::ServerUnaryReactor* GetCase(grpc::CallbackServerContext* context,
                                    const v1::GetCaseRequest* request, v1::Case* response) override;

 private:
  FleetState* const fleet_;
  Store* const store_;
};

// The logic behind the RPCs, usable without gRPC.
absl::Status ComputeListHosts(FleetState& fleet, v1::ListHostsResponse* response);
absl::Status ComputeListTenants(const FleetState& fleet, const v1::ListTenantsRequest& request,
                                v1::ListTenantsResponse* response);
absl::Status ComputeTop(const FleetState& fleet, const v1::TopRequest& request,
                        v1::TopResponse* response);
absl::Status ComputeGetTenant(const FleetState& fleet, const v1::GetTenantRequest& request,
                              v1::TenantDetail* response);
inline constexpr uint32_t kDefaultCaseLimit = 50;
inline constexpr uint32_t kMaxCaseLimit = 1000;
absl::Status ComputeListCases(Store* store, const v1::ListCasesRequest& request,
                              v1::ListCasesResponse* response);
absl::Status ComputeGetCase(Store* store, const v1::GetCaseRequest& request, v1::Case* response);

}  // namespace fairwatch::controller
