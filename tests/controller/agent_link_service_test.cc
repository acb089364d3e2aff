// The real server in-process on 127.0.0.1:<picked port>, driven by fake
// agents through the generated stub (and a generic stub for raw bytes).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/histogram.h"
#include "controller/server.h"
#include "controller/store.h"
#include "fairwatch/v1/agent.grpc.pb.h"
#include "fairwatch/v1/operator.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"
#include "tests/controller/fake_agent.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::Deadline;
using ::fairwatch::controller::testing::FakeAgent;
using ::fairwatch::controller::testing::MakeHello;
using ::fairwatch::controller::testing::MakeInventory;
using ::fairwatch::controller::testing::MakeReport;
using ::fairwatch::controller::testing::MakeTenant;
using ::fairwatch::controller::testing::TempDir;
using ::testing::HasSubstr;

constexpr uint64_t kSecond = 1'000'000'000;
constexpr int64_t kEpoch = 1'700'000'000'000'000'000;
constexpr uint32_t kMaxMessageBytes = 64 * 1024;
class AgentLinkServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v1::ControllerConfig config;
    config.set_listen_address("127.0.0.1:0");
    config.set_insecure_plaintext(true);
    config.set_window_intervals(5);
    config.set_history_reports(120);
    config.set_max_message_bytes(kMaxMessageBytes);
    config.set_host_stale_ms(600'000);
    auto store = SqliteStore::Open(dir_.Join("controller.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto server = ControllerServer::Start(config, grpc::InsecureServerCredentials(), store_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    operator_ = v1::Operator::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ == nullptr) return;
    server_->Shutdown(absl::Seconds(2));
    EXPECT_EQ(server_->agent_link().active_reactor_count(), 0);
  }

  // A new channel (own connection), so a stream broken by the server cannot
  // take another fake agent's transport with it.
  std::shared_ptr<grpc::Channel> NewChannel() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::InsecureChannelCredentials(), args);
  }

  // Connects `host_id`, sends a full inventory and reports 1..n at 1 s
  // intervals where tenant i uses cores[i].
  std::unique_ptr<FakeAgent> ConnectAndReport(
      const std::string& host_id, uint32_t cpus,
      const std::vector<std::pair<std::string, double>>& tenants, int reports) {
    auto agent = std::make_unique<FakeAgent>(NewChannel());
    std::optional<v1::Welcome> welcome = agent->Hello(MakeHello(host_id, kEpoch, cpus));
    EXPECT_TRUE(welcome.has_value());
    v1::TenantInventory inventory;
    inventory.set_full(true);
    for (const auto& [id, cores] : tenants)
      *inventory.add_upserted() = MakeTenant(id, id + "-name");
    EXPECT_TRUE(agent->Inventory(inventory));
    for (int seq = 1; seq <= reports; ++seq) {
      EXPECT_EQ(agent->Report(SteadyReport(seq, tenants)), static_cast<uint64_t>(seq));
    }
    return agent;
  }

  static v1::UsageReport SteadyReport(uint64_t seq,
                                      const std::vector<std::pair<std::string, double>>& tenants) {
    v1::UsageReport report = MakeReport(seq, seq * kSecond, {});
    for (const auto& [id, cores] : tenants) {
      v1::TenantCounters* counters = report.add_tenants();
      counters->set_tenant_id(id);
      counters->mutable_cpu()->set_usage_ns(
          static_cast<uint64_t>(cores * static_cast<double>(seq * kSecond)));
    }
    return report;
  }

  v1::ListHostsResponse ListHosts() {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::ListHostsResponse response;
    grpc::Status status = operator_->ListHosts(&context, {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  std::optional<v1::HostInfo> Host(const std::string& host_id) {
    const v1::ListHostsResponse hosts = ListHosts();
    for (const v1::HostInfo& info : hosts.hosts()) {
      if (info.host_id() == host_id) return info;
    }
    return std::nullopt;
  }

  grpc::Status Top(const v1::TopRequest& request, v1::TopResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    return operator_->Top(&context, request, response);
  }

  // Stream teardown is asynchronous on the server; poll briefly.
  bool WaitForConnected(const std::string& host_id, bool connected) {
    const absl::Time give_up = absl::Now() + absl::Seconds(5);
    while (absl::Now() < give_up) {
      std::optional<v1::HostInfo> info = Host(host_id);
      if (info.has_value() && info->connected() == connected) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

  TempDir dir_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<ControllerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Operator::Stub> operator_;
};

TEST_F(AgentLinkServiceTest, TwoAgentsReportAndOperatorSeesRatesFromCounters) {
  auto a = ConnectAndReport("host-a", 4, {{"a1", 0.5}, {"a2", 1.5}}, 3);
  auto b = ConnectAndReport("host-b", 2, {{"b1", 0.25}}, 3);

  v1::ListHostsResponse hosts = ListHosts();
  ASSERT_EQ(hosts.hosts_size(), 2);
  const v1::HostInfo& ha = hosts.hosts(0);
  EXPECT_EQ(ha.host_id(), "host-a");
  EXPECT_TRUE(ha.connected());
  EXPECT_EQ(ha.last_report_seq(), 3u);
  EXPECT_EQ(ha.tenant_count(), 2u);
  EXPECT_EQ(ha.capacity().cpus(), 4u);
  EXPECT_DOUBLE_EQ(ha.cpu_used_cores(), 2.0);
  EXPECT_DOUBLE_EQ(hosts.hosts(1).cpu_used_cores(), 0.25);

  grpc::ClientContext context;
  context.set_deadline(Deadline());
  v1::ListTenantsRequest tenants_request;
  tenants_request.set_host_id("host-a");
  v1::ListTenantsResponse tenants;
  ASSERT_TRUE(operator_->ListTenants(&context, tenants_request, &tenants).ok());
  ASSERT_EQ(tenants.tenants_size(), 2);
  EXPECT_EQ(tenants.tenants(0).tenant().id(), "a1");
  EXPECT_EQ(tenants.tenants(0).tenant().name(), "a1-name");
  EXPECT_EQ(tenants.tenants(0).host_id(), "host-a");

  v1::TopResponse top;
  ASSERT_TRUE(Top({}, &top).ok());
  EXPECT_EQ(top.resource(), v1::RESOURCE_CPU);
  EXPECT_GT(top.computed_unix_ns(), 0);
  ASSERT_EQ(top.rows_size(), 3);
  EXPECT_EQ(top.rows(0).tenant_id(), "a2");
  EXPECT_DOUBLE_EQ(top.rows(0).cpu_cores(), 1.5);
  EXPECT_DOUBLE_EQ(top.rows(0).cpu_host_fraction(), 1.5 / 4);
  EXPECT_DOUBLE_EQ(top.rows(0).window_s(), 2.0);
  EXPECT_EQ(top.rows(0).cpu_usage_ns(), 3 * kSecond * 3 / 2);
  EXPECT_EQ(top.rows(0).tenant_name(), "a2-name");
  EXPECT_EQ(top.rows(1).tenant_id(), "a1");
  EXPECT_DOUBLE_EQ(top.rows(1).cpu_cores(), 0.5);
  EXPECT_EQ(top.rows(2).tenant_id(), "b1");
  EXPECT_DOUBLE_EQ(top.rows(2).cpu_host_fraction(), 0.125);

  v1::TopRequest limited;
  limited.set_limit(1);
  ASSERT_TRUE(Top(limited, &top).ok());
  ASSERT_EQ(top.rows_size(), 1);
  EXPECT_EQ(top.rows(0).tenant_id(), "a2");

  v1::TopRequest one_host;
  one_host.set_host_id("host-b");
  one_host.set_window_intervals(1);
  ASSERT_TRUE(Top(one_host, &top).ok());
  ASSERT_EQ(top.rows_size(), 1);
  EXPECT_DOUBLE_EQ(top.rows(0).window_s(), 1.0);

  // The store saw the Hello and the inventory.
  absl::StatusOr<std::vector<StoredTenant>> stored = store_->ListTenants("host-a");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->size(), 2u);
  EXPECT_EQ(store_->ListHosts()->size(), 2u);
}

TEST_F(AgentLinkServiceTest, OperatorErrors) {
  auto a = ConnectAndReport("host-a", 4, {{"a1", 0.5}}, 2);
  {
    grpc::ClientContext context;
    v1::ListTenantsRequest request;
    request.set_host_id("no-such-host");
    v1::ListTenantsResponse response;
    grpc::Status status = operator_->ListTenants(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(status.error_message(), HasSubstr("no-such-host"));
  }
  v1::TopResponse top;
  v1::TopRequest bogus;
  bogus.set_resource(static_cast<v1::Resource>(77));
  grpc::Status status = Top(bogus, &top);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("77"));
  v1::TopRequest too_long;
  too_long.set_window_intervals(500);
  EXPECT_EQ(Top(too_long, &top).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::TopRequest unknown_host;
  unknown_host.set_host_id("nope");
  EXPECT_EQ(Top(unknown_host, &top).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AgentLinkServiceTest, DuplicateReportIsAckedButNotCounted) {
  std::vector<std::pair<std::string, double>> tenants = {{"t", 0.5}};
  auto agent = ConnectAndReport("host-a", 4, tenants, 3);
  v1::UsageReport resent = SteadyReport(2, tenants);
  resent.mutable_tenants(0)->mutable_cpu()->set_usage_ns(100 * kSecond);
  EXPECT_EQ(agent->Report(resent), 2u);
  v1::TopResponse top;
  ASSERT_TRUE(Top({}, &top).ok());
  ASSERT_EQ(top.rows_size(), 1);
  EXPECT_DOUBLE_EQ(top.rows(0).cpu_cores(), 0.5);
  EXPECT_EQ(top.rows(0).cpu_usage_ns(), 3 * kSecond / 2);
  EXPECT_EQ(Host("host-a")->last_report_seq(), 3u);
}

TEST_F(AgentLinkServiceTest, ReconnectResumesAfterLastSeqOfSameEpoch) {
  std::vector<std::pair<std::string, double>> tenants = {{"t", 1.0}};
  auto first = ConnectAndReport("host-a", 4, tenants, 3);
  EXPECT_TRUE(first->Close().ok());
  ASSERT_TRUE(WaitForConnected("host-a", false));

  FakeAgent again(NewChannel());
  std::optional<v1::Welcome> welcome = again.Hello(MakeHello("host-a", kEpoch, 4));
  ASSERT_TRUE(welcome.has_value());
  EXPECT_EQ(welcome->last_report_seq(), 3u);
  EXPECT_EQ(welcome->controller_version(), FAIRWATCH_VERSION);
  EXPECT_TRUE(Host("host-a")->connected());
  EXPECT_EQ(again.Report(SteadyReport(4, tenants)), 4u);
  EXPECT_TRUE(again.Close().ok());
  ASSERT_TRUE(WaitForConnected("host-a", false));

  FakeAgent rebooted(NewChannel());
  welcome = rebooted.Hello(MakeHello("host-a", kEpoch + 1, 4));
  ASSERT_TRUE(welcome.has_value());
  EXPECT_EQ(welcome->last_report_seq(), 0u);
}

TEST_F(AgentLinkServiceTest, SecondStreamOfAHostReplacesTheFirst) {
  std::vector<std::pair<std::string, double>> tenants = {{"t", 1.0}};
  auto old_stream = ConnectAndReport("host-a", 4, tenants, 2);
  FakeAgent new_stream(NewChannel());
  std::optional<v1::Welcome> welcome = new_stream.Hello(MakeHello("host-a", kEpoch, 4));
  ASSERT_TRUE(welcome.has_value());
  EXPECT_EQ(welcome->last_report_seq(), 2u);
  grpc::Status old_status = old_stream->AwaitEnd();
  EXPECT_EQ(old_status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(old_status.error_message(), HasSubstr("replaced"));
  EXPECT_EQ(new_stream.Report(SteadyReport(3, tenants)), 3u);
  // The old stream's end must not mark the host disconnected.
  EXPECT_TRUE(Host("host-a")->connected());
  EXPECT_EQ(server_->agent_link().live_stream_count(), 1u);
}

TEST_F(AgentLinkServiceTest, ProtocolViolationsEndTheStreamWithAReason) {
  struct Case {
    const char* name;
    std::vector<v1::AgentMessage> messages;
    grpc::StatusCode code;
    const char* message;
  };
  v1::AgentMessage hello;
  *hello.mutable_hello() = MakeHello("host-x", kEpoch);
  v1::AgentMessage report;
  *report.mutable_report() = MakeReport(1, kSecond, {{"t", 1}});
  v1::AgentMessage no_id;
  *no_id.mutable_hello() = MakeHello("", kEpoch);
  v1::AgentMessage empty;
  v1::AgentMessage bad_inventory;
  *bad_inventory.mutable_inventory() = MakeInventory(true, {MakeTenant("", "x")});
  v1::AgentMessage seq_zero;
  *seq_zero.mutable_report() = MakeReport(0, kSecond, {});
  const Case cases[] = {
      {"report before hello",
       {report},
       grpc::StatusCode::INVALID_ARGUMENT,
       "first message must be Hello with host_id (got UsageReport)"},
      {"hello without host_id",
       {no_id},
       grpc::StatusCode::INVALID_ARGUMENT,
       "first message must be Hello with host_id"},
      {"empty message first",
       {empty},
       grpc::StatusCode::INVALID_ARGUMENT,
       "first message must be Hello"},
      {"second hello", {hello, hello}, grpc::StatusCode::FAILED_PRECONDITION, "second Hello"},
      {"empty message later",
       {hello, empty},
       grpc::StatusCode::INVALID_ARGUMENT,
       "empty AgentMessage"},
      {"tenant without id", {hello, bad_inventory}, grpc::StatusCode::INVALID_ARGUMENT, "empty id"},
      {"seq zero", {hello, seq_zero}, grpc::StatusCode::INVALID_ARGUMENT, "seq 0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FakeAgent agent(NewChannel());
    for (const v1::AgentMessage& message : c.messages) agent.Send(message);
    grpc::Status status = agent.AwaitEnd();
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
}

TEST_F(AgentLinkServiceTest, OversizedMessageEndsOnlyThatStream) {
  std::vector<std::pair<std::string, double>> tenants = {{"t", 1.0}};
  auto healthy = ConnectAndReport("host-a", 4, tenants, 2);

  FakeAgent big(NewChannel());
  ASSERT_TRUE(big.Hello(MakeHello("host-big", kEpoch)).has_value());
  v1::UsageReport huge = MakeReport(1, kSecond, {});
  huge.add_tenants()->set_tenant_id(std::string(2 * kMaxMessageBytes, 'x'));
  v1::AgentMessage message;
  *message.mutable_report() = huge;
  big.Send(message);
  grpc::Status status = big.AwaitEnd();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();

  EXPECT_EQ(healthy->Report(SteadyReport(3, tenants)), 3u);
  ASSERT_TRUE(WaitForConnected("host-big", false));
  EXPECT_TRUE(Host("host-a")->connected());
}

TEST_F(AgentLinkServiceTest, GarbageBytesEndOnlyThatStream) {
  std::vector<std::pair<std::string, double>> tenants = {{"t", 1.0}};
  auto healthy = ConnectAndReport("host-a", 4, tenants, 2);

  // Same channel as nothing else, driven through the generic stub so the
  // bytes reach the server exactly as written.
  grpc::GenericStub generic(NewChannel());
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  auto await = [&queue](intptr_t tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(queue.Next(&got, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(got), tag);
    return ok;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      generic.PrepareCall(&context, "/fairwatch.v1.AgentLink/Connect", &queue);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(await(1));
  // Field 1 (hello), length-delimited, with a length far past the end.
  const std::string garbage("\x0a\xff\xff\xff\x0f\x01\x02", 7);
  grpc::Slice slice(garbage);
  grpc::ByteBuffer bytes(&slice, 1);
  call->Write(bytes, reinterpret_cast<void*>(2));
  await(2);
  grpc::ByteBuffer reply;
  call->Read(&reply, reinterpret_cast<void*>(3));
  EXPECT_FALSE(await(3));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  ASSERT_TRUE(await(4));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("not a valid fairwatch.v1.AgentMessage"));
  queue.Shutdown();
  void* ignored_tag;
  bool ignored_ok;
  while (queue.Next(&ignored_tag, &ignored_ok)) {
  }

  EXPECT_EQ(healthy->Report(SteadyReport(3, tenants)), 3u);
  EXPECT_DOUBLE_EQ(Host("host-a")->cpu_used_cores(), 1.0);
}

TEST_F(AgentLinkServiceTest, SendToHostDeliversOnTheLiveStream) {
  auto agent = ConnectAndReport("host-a", 4, {{"t", 1.0}}, 1);
  v1::ControllerMessage command;
  command.mutable_limit()->set_command_id("cmd-1");
  command.mutable_limit()->set_kind(v1::LimitCommand::KIND_APPLY);
  command.mutable_limit()->mutable_limit()->set_tenant_id("t");
  command.mutable_limit()->set_lease_ms(30'000);
  ASSERT_TRUE(server_->agent_link().SendToHost("host-a", command).ok());
  std::optional<v1::ControllerMessage> received = agent->Read();
  ASSERT_TRUE(received.has_value());
  ASSERT_TRUE(received->has_limit());
  EXPECT_EQ(received->limit().command_id(), "cmd-1");

  v1::AgentMessage ack;
  ack.mutable_limit_ack()->set_command_id("cmd-1");
  EXPECT_TRUE(agent->Send(ack));
  EXPECT_EQ(agent->Report(SteadyReport(2, {{"t", 1.0}})), 2u);

  absl::Status missing = server_->agent_link().SendToHost("host-nope", command);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
}

TEST_F(AgentLinkServiceTest, LimitCommandsOfRealSizeFollowOtherWrites) {
  // gRPC serializes a message of more than GRPC_SLICE_INLINED_SIZE bytes only
  // into an empty buffer, and asserts (aborting the controller) otherwise.
  auto agent = ConnectAndReport("host-a", 4, {{"t", 1.0}}, 2);  // Welcome and acks went first
  for (int i = 0; i < 3; ++i) {
    v1::ControllerMessage command;
    v1::LimitCommand* limit = command.mutable_limit();
    limit->set_command_id(absl::StrCat(1000 + i));
    limit->set_kind(v1::LimitCommand::KIND_APPLY);
    limit->mutable_limit()->set_tenant_id("6f1c2b7e-0d4a-4c55-9a57-3f0e8d2b1c9a");
    limit->mutable_limit()->set_resource(v1::RESOURCE_CPU);
    limit->mutable_limit()->set_value(1.5);
    limit->set_lease_ms(30'000);
    ASSERT_GT(command.ByteSizeLong(), 64u);
    ASSERT_TRUE(server_->agent_link().SendToHost("host-a", command).ok());
    std::optional<v1::ControllerMessage> received = agent->Read();
    ASSERT_TRUE(received.has_value()) << "command " << i;
    ASSERT_TRUE(received->has_limit());
    EXPECT_EQ(received->limit().command_id(), absl::StrCat(1000 + i));
    EXPECT_EQ(received->limit().limit().tenant_id(), "6f1c2b7e-0d4a-4c55-9a57-3f0e8d2b1c9a");
  }
  EXPECT_EQ(agent->Report(SteadyReport(3, {{"t", 1.0}})), 3u);
}

TEST_F(AgentLinkServiceTest, StatsCountMessagesBytesReportsAndIngestLag) {
  FakeAgent agent(NewChannel());
  size_t bytes = 0;
  v1::AgentMessage hello;
  *hello.mutable_hello() = MakeHello("host-a", kEpoch, 4);
  bytes += hello.ByteSizeLong();
  ASSERT_TRUE(agent.Send(hello));
  ASSERT_TRUE(agent.Read().has_value());  // Welcome
  v1::AgentMessage inventory;
  *inventory.mutable_inventory() = MakeInventory(true, {MakeTenant("t1", "one")});
  bytes += inventory.ByteSizeLong();
  ASSERT_TRUE(agent.Send(inventory));
  constexpr int64_t kLagNs = 50'000'000;
  for (uint64_t seq : {1, 2, 3, 3}) {  // the last one a resend
    v1::UsageReport report = SteadyReport(seq, {{"t1", 0.5}, {"t2", 0.25}});
    report.set_timestamp_unix_ns(absl::GetCurrentTimeNanos() - kLagNs);
    v1::AgentMessage message;
    *message.mutable_report() = report;
    bytes += message.ByteSizeLong();
    EXPECT_EQ(agent.Report(report), seq);
  }

  const AgentLinkStats stats = server_->agent_link().stats();
  EXPECT_EQ(stats.streams_opened, 1u);
  EXPECT_EQ(stats.messages_received, 6u);
  EXPECT_EQ(stats.bytes_received, bytes);
  EXPECT_EQ(stats.reports_ingested, 3u) << "the resend is not new";
  EXPECT_EQ(Log2Count(stats.ingest_lag_hist), 3u);
  EXPECT_EQ(stats.ingest_lag_negative, 0u);
  EXPECT_GE(stats.last_ingest_lag_ns, kLagNs);
  EXPECT_GE(stats.ingest_lag_sum_ns, 3u * kLagNs);
  EXPECT_GE(Log2Quantile(stats.ingest_lag_hist, 0.5), kLagNs / 2) << "bucket [2^25, 2^26) ns";
  EXPECT_LT(Log2Quantile(stats.ingest_lag_hist, 0.99), 10e9);

  const FleetIngestStats fleet = server_->fleet().ingest_stats();
  EXPECT_EQ(fleet.reports_ingested, 3u);
  EXPECT_EQ(fleet.reports_duplicate, 1u);
  EXPECT_EQ(fleet.tenant_samples_ingested, 6u);
}

TEST_F(AgentLinkServiceTest, ShutdownEndsAgentStreamsWithUnavailable) {
  auto agent = ConnectAndReport("host-a", 4, {{"t", 1.0}}, 1);
  server_->Shutdown(absl::Seconds(2));
  EXPECT_EQ(agent->AwaitEnd().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server_->agent_link().active_reactor_count(), 0);
}

TEST(ControllerServer, PortInUseIsReportedClearly) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  v1::ControllerConfig config;
  config.set_listen_address(absl::StrCat("127.0.0.1:", ntohs(address.sin_port)));
  config.set_max_message_bytes(kMaxMessageBytes);
  config.set_window_intervals(5);
  config.set_history_reports(120);
  auto server = ControllerServer::Start(config, grpc::InsecureServerCredentials(), nullptr);
  close(fd);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(server.status().message(), HasSubstr("already in use"));
}

}  // namespace
}  // namespace fairwatch::controller
