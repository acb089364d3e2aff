// The controller's gRPC server: AgentLink and Operator on one address, the
// fleet state they share, and a housekeeping thread that expires stale hosts.
#pragma once

#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "controller/agent_link_service.h"
#include "controller/fleet_state.h"
#include "controller/judge.h"
#include "controller/operator_service.h"
#include "controller/store.h"
#include "fairwatch/v1/config.pb.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"

namespace fairwatch::controller {

class ControllerServer {
 public:
  // Listens on config.listen_address ("host:0" picks a port). `store` may be
  // null and must otherwise outlive the server.
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Start(
      const v1::ControllerConfig& config, std::shared_ptr<grpc::ServerCredentials> credentials,
      Store* store);

  ~ControllerServer();
  ControllerServer(const ControllerServer&) = delete;
  ControllerServer& operator=(const ControllerServer&) = delete;

  // Ends agent streams with UNAVAILABLE, then stops the server, cancelling
  // whatever is still running after `grace`. Idempotent.
  void Shutdown(absl::Duration grace);

  int port() const { return port_; }
  FleetState& fleet() { return fleet_; }
  AgentLinkService& agent_link() { return agent_link_; }
  // Null without a store: nothing is judged without somewhere to keep cases.
  Judge* judge() { return judge_.get(); }

 private:
  ControllerServer(const v1::ControllerConfig& config, Store* store);
  void Housekeeping(absl::Duration period);

  FleetState fleet_;
  AgentLinkService agent_link_;
  OperatorService operator_;
  std::unique_ptr<Judge> judge_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Notification stop_;
  std::thread housekeeping_;
  bool shut_down_ = false;
};

// Why `address` cannot be listened on, found by binding it ourselves: gRPC
// only reports that it failed.
absl::Status DiagnoseListenFailure(const std::string& address);

}  // namespace fairwatch::controller
