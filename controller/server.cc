#include "controller/server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "controller/policy.h"
#include "grpcpp/server_builder.h"

namespace fairwatch::controller {

namespace {

AgentLinkOptions LinkOptions(ControllerServer* server) {
  AgentLinkOptions options;
  options.on_limit_ack = [server](const std::string& host_id, const v1::LimitAck& ack) {
    if (server->judge() != nullptr) server->judge()->OnAck(host_id, ack, absl::Now());
  };
  options.on_report = [server](const std::string&) {
    if (server->judge() != nullptr) server->judge()->Wake();
  };
  return options;
}

}  // namespace

ControllerServer::ControllerServer(const v1::ControllerConfig& config, Store* store)
    : fleet_(FleetOptions::FromConfig(config)),
      agent_link_(&fleet_, store, LinkOptions(this)),
      operator_(&fleet_, store) {
  if (store == nullptr) return;
  JudgeOptions options;
  // Validated with the config; a failure here means defaults.
  absl::StatusOr<FairnessParams> fairness = FairnessParamsFromPolicy(config.fairness());
  if (fairness.ok()) options.fairness = *fairness;
  absl::StatusOr<PlannerParams> planner = PlannerParamsFromPolicy(config.fairness());
  if (planner.ok()) options.planner = *planner;
  options.exempt_tenants.assign(config.fairness().exempt_tenants().begin(),
                                config.fairness().exempt_tenants().end());
  options.exempt_accounts.assign(config.fairness().exempt_accounts().begin(),
                                 config.fairness().exempt_accounts().end());
  judge_ = std::make_unique<Judge>(
      &fleet_, store,
      [this](const std::string& host_id, const v1::ControllerMessage& message) {
        return agent_link_.SendToHost(host_id, message);
      },
      options);
  v1::FairnessPolicy configured = config.fairness();
  ApplyPolicyDefaults(&configured);
  operator_.SetJudge(judge_.get(), std::move(configured));
}

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    const v1::ControllerConfig& config, std::shared_ptr<grpc::ServerCredentials> credentials,
    Store* store) {
  std::unique_ptr<ControllerServer> server(new ControllerServer(config, store));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen_address(), std::move(credentials), &server->port_);
  builder.RegisterService(&server->agent_link_);
  builder.RegisterService(&server->operator_);
  // gRPC ends just the offending stream with RESOURCE_EXHAUSTED.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes()));
  // Without this a second controller could bind the same port and silently
  // take half of the agents.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Agents stay connected for days; notice dead peers without traffic.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    if (server->server_ != nullptr) server->server_->Shutdown();
    server->shut_down_ = true;
    return DiagnoseListenFailure(config.listen_address());
  }
  const absl::Duration period = std::clamp(absl::Milliseconds(config.host_stale_ms()) / 10,
                                           absl::Milliseconds(100), absl::Seconds(10));
  server->housekeeping_ = std::thread([raw = server.get(), period] { raw->Housekeeping(period); });
  if (server->judge_) server->judge_->Start();
  return server;
}

ControllerServer::~ControllerServer() { Shutdown(absl::ZeroDuration()); }

void ControllerServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (judge_) judge_->Stop();
  agent_link_.FinishAll(grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller shutting down"));
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  stop_.Notify();
  if (housekeeping_.joinable()) housekeeping_.join();
}

void ControllerServer::Housekeeping(absl::Duration period) {
  while (!stop_.WaitForNotificationWithTimeout(period)) {
    for (const std::string& host_id : fleet_.ExpireStaleHosts(absl::Now())) {
      FW_LOG(Info, "host ", host_id, " forgotten: disconnected longer than host_stale_ms");
    }
  }
}

absl::Status DiagnoseListenFailure(const std::string& address) {
  const std::string prefix = absl::StrCat("cannot listen on ", address);
  absl::string_view view(address);
  if (absl::ConsumePrefix(&view, "unix:")) {
    return absl::FailedPreconditionError(
        absl::StrCat(prefix,
                     ": the socket path cannot be created (directory missing or not writable, "
                     "or a stale socket file is in the way)"));
  }
  const size_t colon = view.rfind(':');
  std::string host(view.substr(0, colon));
  const std::string port(view.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* results = nullptr;
  const int gai =
      getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &results);
  if (gai != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": cannot resolve \"", host, "\": ", gai_strerror(gai)));
  }
  int bind_errno = 0;
  for (addrinfo* ai = results; ai != nullptr && bind_errno == 0; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) bind_errno = errno;
    close(fd);
  }
  freeaddrinfo(results);
  switch (bind_errno) {
    case EADDRINUSE:
      return absl::FailedPreconditionError(absl::StrCat(
          prefix, ": address already in use (is another fairwatch-controller running?)"));
    case EACCES:
      return absl::PermissionDeniedError(
          absl::StrCat(prefix, ": permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"));
    case EADDRNOTAVAIL:
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, ": the address is not assigned to any interface of this host"));
    case 0:
      return absl::UnavailableError(
          absl::StrCat(prefix, ": gRPC could not start the server (see its log above)"));
    default:
      return absl::UnavailableError(absl::StrCat(prefix, ": ", std::strerror(bind_errno)));
  }
}

}  // namespace fairwatch::controller
