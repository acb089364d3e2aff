// Operator actions over real gRPC on 127.0.0.1: the controller in-process
// with its SQLite store, a fake agent stream receiving the limit commands,
// the CLI run in-process like an operator would, and raw requests for what
// the CLI never sends (missing reason, oversized, malformed).
#include <condition_variable>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/app.h"
#include "controller/server.h"
#include "controller/store.h"
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

constexpr int64_t kEpoch = 1'700'000'000'000'000'000;
constexpr uint64_t kSecond = 1'000'000'000;
constexpr uint32_t kMaxMessageBytes = 64 * 1024;

struct CliResult {
  int code;
  std::string out;
  std::string err;
};

class OperatorActionsTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  void TearDown() override {
    agent_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  void StartServer() {
    if (store_ == nullptr) {
      auto store = SqliteStore::Open(dir_.Join("controller.db"));
      ASSERT_TRUE(store.ok()) << store.status();
      store_ = std::move(*store);
    }
    v1::ControllerConfig config;
    config.set_listen_address("127.0.0.1:0");
    config.set_insecure_plaintext(true);
    config.set_window_intervals(5);
    config.set_history_reports(120);
    config.set_max_message_bytes(kMaxMessageBytes);
    config.set_host_stale_ms(600'000);
    config.mutable_fairness()->add_exempt_accounts("from-config");
    config.mutable_fairness()->mutable_harm()->add_disabled_detectors("net_drops");
    auto server = ControllerServer::Start(config, grpc::InsecureServerCredentials(), store_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    operator_ = v1::Operator::NewStub(channel_);
  }

  void RestartServer() {
    agent_.reset();
    server_->Shutdown(absl::Seconds(2));
    server_.reset();
    StartServer();
  }

  // Host "hv" with tenants hog (account acct-a) and victim (acct-b), three
  // reports in, so the fleet has an interval for them.
  void ConnectAgent() {
    agent_ = std::make_unique<FakeAgent>(channel_, absl::Seconds(30));
    ASSERT_TRUE(agent_->Hello(MakeHello("hv", kEpoch, 2)).has_value());
    ASSERT_TRUE(
        agent_->Inventory(MakeInventory(true, {MakeTenant("hog", "hog-vm", "acct-a"),
                                               MakeTenant("victim", "victim-vm", "acct-b")})));
    for (uint64_t seq = 1; seq <= 3; ++seq) {
      ASSERT_EQ(agent_->Report(
                    MakeReport(seq, seq * kSecond,
                               {{"hog", seq * 15 * kSecond / 10}, {"victim", seq * kSecond / 2}})),
                seq);
    }
  }

  CliResult Cli(std::vector<std::string> args) {
    std::vector<std::string> all = {"fairwatch",  "--controller", address_, "--insecure-plaintext",
                                    "--operator", "alice"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    std::ostringstream out;
    std::ostringstream err;
    const int code = cli::RunCli(static_cast<int>(argv.size()), argv.data(), out, err);
    return {code, out.str(), err.str()};
  }

  v1::OperatorReason Why(const std::string& reason) {
    v1::OperatorReason why;
    why.set_operator_name("bob");
    why.set_reason(reason);
    return why;
  }

  std::vector<v1::AuditEntry> Audit() {
    absl::StatusOr<std::vector<v1::AuditEntry>> entries = store_->ListAudit(0);
    EXPECT_TRUE(entries.ok()) << entries.status();
    return entries.ok() ? *entries : std::vector<v1::AuditEntry>{};
  }

  TempDir dir_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<ControllerServer> server_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Operator::Stub> operator_;
  std::unique_ptr<FakeAgent> agent_;
};

TEST_F(OperatorActionsTest, ThrottleReachesTheAgentIsAckedThenReleaseClearsAndCloses) {
  ConnectAgent();
  CliResult throttled =
      Cli({"throttle", "hog-vm", "--cpu", "0.5", "--reason", "ticket 4411: runaway job"});
  ASSERT_EQ(throttled.code, cli::kExitOk) << throttled.err;
  EXPECT_THAT(throttled.out, HasSubstr("limited hog-vm on hv, cpu at 0.50 cores: case "));

  std::optional<v1::LimitCommand> apply = agent_->NextLimit();
  ASSERT_TRUE(apply.has_value());
  EXPECT_EQ(apply->kind(), v1::LimitCommand::KIND_APPLY);
  EXPECT_EQ(apply->limit().tenant_id(), "hog");
  EXPECT_EQ(apply->limit().resource(), v1::RESOURCE_CPU);
  EXPECT_DOUBLE_EQ(apply->limit().value(), 0.5);
  EXPECT_EQ(apply->lease_ms(), 30000u);
  v1::LimitAck ack;
  ack.set_command_id(apply->command_id());
  ack.set_status_code(0);
  *ack.mutable_in_effect() = apply->limit();
  ASSERT_TRUE(agent_->Ack(ack));

  CaseFilter open;
  open.open_only = true;
  absl::StatusOr<std::vector<v1::Case>> cases = store_->ListCases(open);
  ASSERT_TRUE(cases.ok());
  ASSERT_EQ(cases->size(), 1u);
  const uint64_t case_id = cases->front().case_id();
  EXPECT_EQ(cases->front().opened_by(), "operator:alice");
  EXPECT_EQ(cases->front().actions(0).decided_by(), "operator:alice");
  EXPECT_EQ(cases->front().actions(0).reason(), "ticket 4411: runaway job");
  EXPECT_NEAR(cases->front().opening().usage(), 1.5, 0.01);
  // The ack travels on the stream; poll the record.
  v1::AckState state = v1::ACK_STATE_PENDING;
  for (int i = 0; i < 200 && state != v1::ACK_STATE_APPLIED; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    state = store_->GetCase(case_id)->actions(0).ack();
  }
  EXPECT_EQ(state, v1::ACK_STATE_APPLIED);
  CliResult story = Cli({"case", absl::StrCat(case_id)});
  ASSERT_EQ(story.code, cli::kExitOk) << story.err;
  EXPECT_THAT(story.out, HasSubstr("by operator:alice"));
  EXPECT_THAT(story.out, HasSubstr("applied"));

  CliResult released = Cli({"release", "hog", "--reason", "customer fixed it"});
  ASSERT_EQ(released.code, cli::kExitOk) << released.err;
  EXPECT_THAT(released.out, HasSubstr("released hog-vm on hv, cpu: case "));
  std::optional<v1::LimitCommand> clear = agent_->NextLimit();
  ASSERT_TRUE(clear.has_value());
  EXPECT_EQ(clear->kind(), v1::LimitCommand::KIND_CLEAR);
  EXPECT_EQ(clear->limit().tenant_id(), "hog");
  absl::StatusOr<v1::Case> closed = store_->GetCase(case_id);
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(closed->state(), v1::CASE_STATE_CLOSED);
  EXPECT_EQ(closed->close_reason(), "released by operator:alice: customer fixed it");

  // Nothing left to release.
  CliResult again = Cli({"release", "hog", "--reason", "twice"});
  EXPECT_EQ(again.code, cli::kExitRpcError);
  EXPECT_THAT(again.err, HasSubstr("NOT_FOUND: no limit in force on tenant hog"));

  std::vector<v1::AuditEntry> audit = Audit();
  ASSERT_EQ(audit.size(), 3u);
  EXPECT_EQ(audit[2].action(), "throttle");
  EXPECT_EQ(audit[2].operator_name(), "alice");
  EXPECT_EQ(audit[2].target(), "hv/hog");
  EXPECT_TRUE(audit[2].ok());
  EXPECT_THAT(audit[2].peer(), HasSubstr("127.0.0.1"));
  EXPECT_EQ(audit[1].action(), "release");
  EXPECT_TRUE(audit[1].ok());
  EXPECT_FALSE(audit[0].ok());
  CliResult log = Cli({"audit"});
  ASSERT_EQ(log.code, cli::kExitOk) << log.err;
  EXPECT_THAT(log.out, HasSubstr("refused"));
  EXPECT_THAT(log.out, HasSubstr("ticket 4411"));
}

TEST_F(OperatorActionsTest, BadRequestsAreRefusedClearlyAndAudited) {
  ConnectAgent();
  // Through the CLI: an unknown tenant, a missing reason, no limit at all.
  CliResult unknown = Cli({"throttle", "nobody", "--cpu", "1", "--reason", "x"});
  EXPECT_EQ(unknown.code, cli::kExitRpcError);
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND: no tenant 'nobody'"));
  CliResult no_reason = Cli({"throttle", "hog", "--cpu", "1"});
  EXPECT_EQ(no_reason.code, cli::kExitUsage);
  EXPECT_THAT(no_reason.err, HasSubstr("--reason is required"));
  CliResult no_limit = Cli({"throttle", "hog", "--reason", "x"});
  EXPECT_EQ(no_limit.code, cli::kExitUsage);
  EXPECT_THAT(no_limit.err, HasSubstr("give at least one limit"));

  // Raw requests the CLI would not send.
  auto throttle = [&](const v1::ThrottleRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::OperatorActionResponse response;
    return operator_->Throttle(&context, request, &response);
  };
  v1::ThrottleRequest request;
  request.set_tenant("hog");
  v1::Limit* limit = request.add_limits();
  limit->set_resource(v1::RESOURCE_CPU);
  limit->set_value(0.5);
  struct Case {
    const char* name;
    std::function<void(v1::ThrottleRequest*)> change;
    grpc::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"nobody", [](v1::ThrottleRequest*) {}, grpc::StatusCode::INVALID_ARGUMENT,
       "operator's name is missing"},
      {"no reason", [&](v1::ThrottleRequest* r) { *r->mutable_why() = Why(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "a reason is required"},
      {"blank reason", [&](v1::ThrottleRequest* r) { *r->mutable_why() = Why("   "); },
       grpc::StatusCode::INVALID_ARGUMENT, "a reason is required"},
      {"no operator",
       [&](v1::ThrottleRequest* r) {
         *r->mutable_why() = Why("r");
         r->mutable_why()->clear_operator_name();
       },
       grpc::StatusCode::INVALID_ARGUMENT, "operator's name is missing"},
      {"reason too long",
       [&](v1::ThrottleRequest* r) { *r->mutable_why() = Why(std::string(1025, 'x')); },
       grpc::StatusCode::INVALID_ARGUMENT, "longer than 1024"},
      {"negative limit",
       [&](v1::ThrottleRequest* r) {
         *r->mutable_why() = Why("r");
         r->mutable_limits(0)->set_value(-1);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "positive number"},
      {"unknown resource",
       [&](v1::ThrottleRequest* r) {
         *r->mutable_why() = Why("r");
         r->mutable_limits(0)->set_resource(static_cast<v1::Resource>(99));
       },
       grpc::StatusCode::INVALID_ARGUMENT, "unknown resource"},
      {"resource twice",
       [&](v1::ThrottleRequest* r) {
         *r->mutable_why() = Why("r");
         *r->add_limits() = r->limits(0);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "limited twice"},
      {"oversized",
       [&](v1::ThrottleRequest* r) {
         *r->mutable_why() = Why("r");
         r->set_tenant(std::string(kMaxMessageBytes + 1, 'h'));
       },
       grpc::StatusCode::RESOURCE_EXHAUSTED, ""},
  };
  for (const Case& c : cases) {
    v1::ThrottleRequest bad = request;
    c.change(&bad);
    grpc::Status status = throttle(bad);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.name;
  }

  // Bytes that are not a ThrottleRequest.
  grpc::GenericStub generic(channel_);
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  const std::string garbage("\x12\xff\xff\xff\x0f\x01", 6);
  grpc::Slice slice(garbage);
  grpc::ByteBuffer bytes(&slice, 1);
  grpc::ByteBuffer reply;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  grpc::Status malformed;
  generic.UnaryCall(&context, "/fairwatch.v1.Operator/Throttle", grpc::StubOptions(), &bytes,
                    &reply, [&](grpc::Status s) {
                      std::lock_guard<std::mutex> lock(mu);
                      malformed = s;
                      done = true;
                      done_cv.notify_all();
                    });
  {
    std::unique_lock<std::mutex> lock(mu);
    done_cv.wait(lock, [&] { return done; });
  }
  EXPECT_FALSE(malformed.ok());
  EXPECT_NE(malformed.error_code(), grpc::StatusCode::UNAVAILABLE) << malformed.error_message();

  // Nothing was limited and nothing reached the agent; every refusal that
  // reached the service is on record (the oversized and malformed ones never
  // reached it).
  CaseFilter all;
  EXPECT_TRUE(store_->ListCases(all)->empty());
  std::vector<v1::AuditEntry> audit = Audit();
  ASSERT_EQ(audit.size(), 9u);  // unknown tenant + 8 raw
  for (const v1::AuditEntry& e : audit) {
    EXPECT_FALSE(e.ok()) << e.ShortDebugString();
    EXPECT_EQ(e.action(), "throttle");
    EXPECT_FALSE(e.result().empty());
  }
  // The controller still answers.
  CliResult cases_now = Cli({"cases"});
  EXPECT_EQ(cases_now.code, cli::kExitOk) << cases_now.err;
}

TEST_F(OperatorActionsTest, ExemptionsAndDryRunAreKeptAcrossARestart) {
  ConnectAgent();
  CliResult exempt = Cli({"exempt", "--account", "acct-a", "--reason", "backup service"});
  ASSERT_EQ(exempt.code, cli::kExitOk) << exempt.err;
  EXPECT_THAT(exempt.out, HasSubstr("account acct-a"));
  CliResult twice = Cli({"exempt", "--account", "acct-a", "--reason", "again"});
  EXPECT_EQ(twice.code, cli::kExitRpcError);
  EXPECT_THAT(twice.err, HasSubstr("ALREADY_EXISTS"));
  CliResult tenant = Cli({"exempt", "victim-vm", "--reason", "VIP"});
  ASSERT_EQ(tenant.code, cli::kExitOk) << tenant.err;
  EXPECT_THAT(tenant.out, HasSubstr("victim-vm (victim) on hv"));
  CliResult config = Cli({"unexempt", "--account", "from-config", "--reason", "try"});
  EXPECT_EQ(config.code, cli::kExitRpcError);
  EXPECT_THAT(config.err, HasSubstr("config file"));

  CliResult dry = Cli({"policy", "dry-run", "on", "--resource", "disk", "--reason", "new SAN"});
  ASSERT_EQ(dry.code, cli::kExitOk) << dry.err;
  EXPECT_THAT(dry.out, HasSubstr("on for disk"));

  RestartServer();
  CliResult shown = Cli({"policy", "show"});
  ASSERT_EQ(shown.code, cli::kExitOk) << shown.err;
  EXPECT_THAT(shown.out, HasSubstr("on for disk"));
  EXPECT_THAT(shown.out, HasSubstr("set by operator:alice"));
  EXPECT_THAT(shown.out, HasSubstr("new SAN"));
  EXPECT_THAT(shown.out, HasSubstr("account acct-a"));
  EXPECT_THAT(shown.out, HasSubstr("account from-config"));
  // Every detector, with the one the config turns off.
  EXPECT_THAT(shown.out, ::testing::ContainsRegex("runq_wait_p99 +on +cpu +1.0 ms"));
  EXPECT_THAT(shown.out, ::testing::ContainsRegex("io_psi +on +disk,disk-iops +5%"));
  EXPECT_THAT(shown.out, ::testing::ContainsRegex("net_drops +off +net-rx,net-tx"));
  CliResult json = Cli({"-o", "json", "policy", "show"});
  ASSERT_EQ(json.code, cli::kExitOk) << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"dry_run_resources\":[\"RESOURCE_DISK_BANDWIDTH\"]"));

  // The tenant is not on a connected host after the restart, so by id.
  CliResult list = Cli({"exemptions"});
  ASSERT_EQ(list.code, cli::kExitOk) << list.err;
  EXPECT_THAT(list.out, HasSubstr("victim"));
  CliResult off = Cli({"unexempt", "--id", "1", "--reason", "backups moved"});
  ASSERT_EQ(off.code, cli::kExitOk) << off.err;
  CliResult left = Cli({"exemptions"});
  EXPECT_THAT(left.out, ::testing::Not(HasSubstr("acct-a")));
  CliResult all = Cli({"exemptions", "--all"});
  EXPECT_THAT(all.out, HasSubstr("removed by operator:alice: backups moved"));

  CliResult dry_off = Cli({"policy", "dry-run", "off", "--reason", "SAN is fine"});
  ASSERT_EQ(dry_off.code, cli::kExitOk) << dry_off.err;
  EXPECT_THAT(dry_off.out, HasSubstr("off: limits are sent"));
}

}  // namespace
}  // namespace fairwatch::controller
