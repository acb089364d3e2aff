// fairwatch.v1.Operator: read-only views of the fleet for the CLI. Unary
// calls answered inline from FleetState with the callback API.
#pragma once

#include "controller/fleet_state.h"
#include "fairwatch/v1/operator.grpc.pb.h"

namespace fairwatch::controller {

class OperatorService final : public v1::Operator::CallbackService {
 public:
  // `fleet` must outlive the service.
  explicit OperatorService(FleetState* fleet) : fleet_(fleet) {}

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

 private:
  FleetState* const fleet_;
};

// The logic behind the RPCs, usable without gRPC.
absl::Status ComputeListHosts(FleetState& fleet, v1::ListHostsResponse* response);
absl::Status ComputeListTenants(const FleetState& fleet, const v1::ListTenantsRequest& request,
                                v1::ListTenantsResponse* response);
absl::Status ComputeTop(const FleetState& fleet, const v1::TopRequest& request,
                        v1::TopResponse* response);
absl::Status ComputeGetTenant(const FleetState& fleet, const v1::GetTenantRequest& request,
                              v1::TenantDetail* response);

}  // namespace fairwatch::controller
