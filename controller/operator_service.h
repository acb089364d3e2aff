// fairwatch.v1.Operator: views of the fleet and its cases for the CLI, and
// the operator's actions (throttle, release, exempt, dry run), each checked,
// carried out by the judge and written to the audit log. Unary calls answered
// inline with the callback API.
#pragma once

#include "controller/fleet_state.h"
#include "controller/judge.h"
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
  grpc::ServerUnaryReactor* Throttle(grpc::CallbackServerContext* context,
                                     const v1::ThrottleRequest* request,
                                     v1::OperatorActionResponse* response) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::ReleaseRequest* request,
                                    v1::OperatorActionResponse* response) override;
  grpc::ServerUnaryReactor* Exempt(grpc::CallbackServerContext* context,
                                   const v1::ExemptRequest* request,
                                   v1::Exemption* response) override;
  grpc::ServerUnaryReactor* Unexempt(grpc::CallbackServerContext* context,
                                     const v1::UnexemptRequest* request,
                                     v1::Exemption* response) override;
  grpc::ServerUnaryReactor* ListExemptions(grpc::CallbackServerContext* context,
                                           const v1::ListExemptionsRequest* request,
                                           v1::ListExemptionsResponse* response) override;
  grpc::ServerUnaryReactor* GetPolicy(grpc::CallbackServerContext* context,
                                      const v1::GetPolicyRequest* request,
                                      v1::PolicyView* response) override;
  grpc::ServerUnaryReactor* SetDryRun(grpc::CallbackServerContext* context,
                                      const v1::SetDryRunRequest* request,
                                      v1::PolicyView* response) override;
  grpc::ServerUnaryReactor* ListAudit(grpc::CallbackServerContext* context,
                                      const v1::ListAuditRequest* request,
                                      v1::ListAuditResponse* response) override;

  // Before the server starts: the judge that carries out operator actions
  // (null without a store) and the configured policy, defaults applied.
  void SetJudge(Judge* judge, v1::FairnessPolicy configured) {
    judge_ = judge;
    configured_ = std::move(configured);
  }

 private:
  FleetState* const fleet_;
  Store* const store_;
  Judge* judge_ = nullptr;
  v1::FairnessPolicy configured_;
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

// Operator actions, usable without gRPC. Each writes one audit entry, whether
// it succeeds or not, when there is a store.
struct ActionContext {
  Judge* judge = nullptr;  // null: no store, no actions
  Store* store = nullptr;
  std::string peer;  // the caller, as gRPC saw it
  absl::Time now;
};
inline constexpr size_t kMaxOperatorName = 64;
inline constexpr size_t kMaxReason = 1024;
// "operator:<name>", or why `why` is not acceptable.
absl::StatusOr<std::string> CheckOperatorReason(const v1::OperatorReason& why);
absl::Status ComputeThrottle(const ActionContext& ctx, const v1::ThrottleRequest& request,
                             v1::OperatorActionResponse* response);
absl::Status ComputeRelease(const ActionContext& ctx, const v1::ReleaseRequest& request,
                            v1::OperatorActionResponse* response);
absl::Status ComputeExempt(const ActionContext& ctx, const v1::ExemptRequest& request,
                           v1::Exemption* response);
absl::Status ComputeUnexempt(const ActionContext& ctx, const v1::UnexemptRequest& request,
                             v1::Exemption* response);
absl::Status ComputeSetDryRun(const ActionContext& ctx, const v1::FairnessPolicy& configured,
                              const v1::SetDryRunRequest& request, v1::PolicyView* response);
absl::Status ComputeGetPolicy(Judge* judge, const v1::FairnessPolicy& configured,
                              v1::PolicyView* response);
absl::Status ComputeListExemptions(Judge* judge, Store* store,
                                   const v1::ListExemptionsRequest& request,
                                   v1::ListExemptionsResponse* response);
absl::Status ComputeListAudit(Store* store, const v1::ListAuditRequest& request,
                              v1::ListAuditResponse* response);

}  // namespace fairwatch::controller
