// End-to-end tests of the CLI's client code against an in-process fake of the
// controller's Operator service.
#include "cli/app.h"

#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fairwatch/v1/operator.grpc.pb.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace fairwatch::cli {
namespace {

class FakeOperator final : public v1::Operator::Service {
 public:
  grpc::Status ListHosts(grpc::ServerContext*, const v1::ListHostsRequest*,
                         v1::ListHostsResponse* response) override {
    v1::HostInfo* host = response->add_hosts();
    host->set_host_id("hv-1");
    host->set_hostname("hv-1.example");
    host->set_connected(true);
    host->set_last_report_unix_ns(absl::ToUnixNanos(absl::Now()));
    host->set_layout(v1::CGROUP_LAYOUT_V2);
    host->mutable_capacity()->set_cpus(8);
    host->set_tenant_count(2);
    host->set_cpu_used_cores(1.5);
    host->set_agent_version("0.1.0");
    return grpc::Status::OK;
  }

  grpc::Status ListTenants(grpc::ServerContext*, const v1::ListTenantsRequest* request,
                           v1::ListTenantsResponse* response) override {
    absl::MutexLock lock(&mu_);
    last_tenants_request_ = *request;
    v1::TenantInfo* info = response->add_tenants();
    info->set_host_id("hv-1");
    info->mutable_tenant()->set_id("machine/vm-a");
    info->mutable_tenant()->set_name("vm-a");
    info->mutable_tenant()->set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
    return grpc::Status::OK;
  }

  grpc::Status Top(grpc::ServerContext* context, const v1::TopRequest* request,
                   v1::TopResponse* response) override {
    absl::Duration delay;
    {
      absl::MutexLock lock(&mu_);
      last_top_request_ = *request;
      ++top_calls_;
      delay = top_delay_;
    }
    const absl::Time until = absl::Now() + delay;
    while (absl::Now() < until && !context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
    if (request->resource() != v1::RESOURCE_CPU) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "only cpu is ranked so far");
    }
    response->set_resource(v1::RESOURCE_CPU);
    response->set_computed_unix_ns(absl::ToUnixNanos(absl::FromUnixSeconds(1'700'000'000)));
    v1::TopRow* row = response->add_rows();
    row->set_host_id("hv-1");
    row->set_tenant_id("machine/vm-a");
    row->set_tenant_name("vm-a");
    row->set_cpu_cores(2);
    row->set_cpu_host_fraction(0.25);
    row->set_window_s(5);
    return grpc::Status::OK;
  }

  v1::TopRequest last_top_request() {
    absl::MutexLock lock(&mu_);
    return last_top_request_;
  }
  v1::ListTenantsRequest last_tenants_request() {
    absl::MutexLock lock(&mu_);
    return last_tenants_request_;
  }
  int top_calls() {
    absl::MutexLock lock(&mu_);
    return top_calls_;
  }
  void set_top_delay(absl::Duration delay) {
    absl::MutexLock lock(&mu_);
    top_delay_ = delay;
  }

 private:
  absl::Mutex mu_;
  v1::TopRequest last_top_request_ ABSL_GUARDED_BY(mu_);
  v1::ListTenantsRequest last_tenants_request_ ABSL_GUARDED_BY(mu_);
  int top_calls_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration top_delay_ ABSL_GUARDED_BY(mu_);
};

struct CliResult {
  int exit_code;
  std::string out;
  std::string err;
};

class CliAgainstFakeController : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("FAIRWATCH_CONTROLLER");
    unsetenv("FAIRWATCH_INSECURE_PLAINTEXT");
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    address_ = absl::StrCat("127.0.0.1:", port);
  }

  void TearDown() override { server_->Shutdown(); }

  CliResult Run(std::vector<std::string> args, bool plaintext_to_fake = true,
                bool out_is_terminal = false) {
    std::vector<std::string> full = {"fairwatch"};
    if (plaintext_to_fake)
      full.insert(full.end(), {"--insecure-plaintext", "--controller", address_});
    full.insert(full.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& arg : full) argv.push_back(arg.data());
    argv.push_back(nullptr);
    std::ostringstream out;
    std::ostringstream err;
    const int code = RunCli(static_cast<int>(full.size()), argv.data(), out, err, out_is_terminal);
    return {code, out.str(), err.str()};
  }

  FakeOperator service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

TEST_F(CliAgainstFakeController, HostsTable) {
  const CliResult result = Run({"hosts"});
  ASSERT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(result.err, "");
  EXPECT_EQ(result.out,
            "HOST  HOSTNAME      STATE      LAYOUT  CPUS  TENANTS  CPU USED  AGENT\n"
            "hv-1  hv-1.example  up 0s ago  v2         8        2      1.50  0.1.0\n");
}

TEST_F(CliAgainstFakeController, HostsJsonIsOneDocumentWithStableKeys) {
  const CliResult result = Run({"--output", "json", "hosts"});
  ASSERT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(result.out.rfind("{\"hosts\":[{\"host_id\":\"hv-1\"", 0), 0u) << result.out;
  EXPECT_NE(result.out.find("\"first_seen_unix_ns\":\"0\""), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find('\n'), result.out.size() - 1);
}

TEST_F(CliAgainstFakeController, GlobalFlagsAlsoWorkAfterTheCommand) {
  const CliResult result = Run({"tenants", "--host", "hv-1", "-o", "json"});
  ASSERT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(result.out.rfind("{\"tenants\":[", 0), 0u) << result.out;
  EXPECT_EQ(service_.last_tenants_request().host_id(), "hv-1");
}

TEST_F(CliAgainstFakeController, TenantsTable) {
  const CliResult result = Run({"tenants"});
  ASSERT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(result.out,
            "HOST  TENANT        NAME  SOURCE         ACCOUNT  WEIGHT  CGROUPS\n"
            "hv-1  machine/vm-a  vm-a  cgroup-parent                1  -\n");
  EXPECT_EQ(service_.last_tenants_request().host_id(), "");
}

TEST_F(CliAgainstFakeController, TopOncePrintsOneTableAndPassesTheRequest) {
  const CliResult result =
      Run({"top", "--once", "--host", "hv-1", "--limit", "7", "--window", "3"});
  ASSERT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(result.out,
            "HOST  TENANT   CPU  % HOST                WINDOW  ID\n"
            "hv-1  vm-a    2.00   25.0%  [###       ]      5s  machine/vm-a\n");
  const v1::TopRequest request = service_.last_top_request();
  EXPECT_EQ(request.host_id(), "hv-1");
  EXPECT_EQ(request.resource(), v1::RESOURCE_CPU);
  EXPECT_EQ(request.limit(), 7u);
  EXPECT_EQ(request.window_intervals(), 3u);
  EXPECT_EQ(service_.top_calls(), 1);
}

TEST_F(CliAgainstFakeController, TopOnceJsonIsExactlyOneDocument) {
  const CliResult result = Run({"--output=json", "top", "--once"});
  ASSERT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(result.out.front(), '{');
  EXPECT_EQ(result.out.find('\n'), result.out.size() - 1);
  EXPECT_NE(result.out.find("\"tenant_name\":\"vm-a\""), std::string::npos) << result.out;
}

TEST_F(CliAgainstFakeController, UnimplementedResourceIsOneLineError) {
  const CliResult result = Run({"top", "--once", "--resource", "disk"});
  EXPECT_EQ(result.exit_code, kExitRpcError);
  EXPECT_EQ(result.out, "");
  EXPECT_EQ(result.err, "fairwatch: top: UNIMPLEMENTED: only cpu is ranked so far\n");
  EXPECT_EQ(service_.last_top_request().resource(), v1::RESOURCE_DISK_BANDWIDTH);
}

TEST_F(CliAgainstFakeController, SlowAnswerHitsTheDeadline) {
  service_.set_top_delay(absl::Seconds(5));
  const absl::Time start = absl::Now();
  const CliResult result = Run({"--timeout", "0.3", "top", "--once"});
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(result.exit_code, kExitRpcError);
  EXPECT_EQ(result.err, "fairwatch: top: DEADLINE_EXCEEDED: Deadline Exceeded (--timeout 0.3s)\n");
}

TEST_F(CliAgainstFakeController, TopRefreshesUntilStoppedWithTimestampedFrames) {
  CliResult result;
  std::thread cli([&] { result = Run({"top", "--interval", "0.05"}); });
  while (service_.top_calls() < 3) absl::SleepFor(absl::Milliseconds(5));
  RequestStop();
  cli.join();
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  const std::vector<std::string> frames = absl::StrSplit(result.out, "\n\n");
  ASSERT_GE(frames.size(), 3u) << result.out;
  for (const std::string& frame : frames) {
    EXPECT_EQ(frame.rfind(absl::StrCat("# 2023-11-14T22:13:20Z  ", address_, "  top cpu\nHOST"), 0),
              0u)
        << frame;
  }
  EXPECT_EQ(result.out.find('\033'), std::string::npos);
}

TEST_F(CliAgainstFakeController, TopOnATerminalClearsTheScreenForEachFrame) {
  CliResult result;
  std::thread cli([&] {
    result = Run({"top", "--interval", "0.05"}, /*plaintext_to_fake=*/true,
                 /*out_is_terminal=*/true);
  });
  while (service_.top_calls() < 2) absl::SleepFor(absl::Milliseconds(5));
  RequestStop();
  cli.join();
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  const std::vector<std::string> frames =
      absl::StrSplit(result.out, "\033[H\033[2J", absl::SkipEmpty());
  ASSERT_GE(frames.size(), 2u) << result.out;
  EXPECT_EQ(result.out.rfind("\033[H\033[2J", 0), 0u);
  for (const std::string& frame : frames) {
    EXPECT_NE(frame.find("Ctrl-C quits)\n\nHOST"), std::string::npos) << frame;
  }
}

TEST_F(CliAgainstFakeController, EnvironmentChoosesControllerAndPlaintext) {
  setenv("FAIRWATCH_CONTROLLER", address_.c_str(), 1);
  setenv("FAIRWATCH_INSECURE_PLAINTEXT", "1", 1);
  const CliResult result = Run({"hosts"}, /*plaintext_to_fake=*/false);
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  unsetenv("FAIRWATCH_CONTROLLER");
  unsetenv("FAIRWATCH_INSECURE_PLAINTEXT");
}

TEST_F(CliAgainstFakeController, TlsAgainstPlaintextControllerIsUnreachable) {
  const CliResult result = Run({"--controller", address_, "hosts"}, /*plaintext_to_fake=*/false);
  EXPECT_EQ(result.exit_code, kExitUnreachable);
  EXPECT_EQ(result.err.rfind(absl::StrCat("fairwatch: cannot reach controller at ", address_), 0),
            0u)
      << result.err;
  EXPECT_EQ(result.err.find('\n'), result.err.size() - 1) << result.err;
}

TEST(Cli, HelpOfEachCommandHasAnExample) {
  for (const char* command : {"hosts", "tenants", "top"}) {
    std::string program = "fairwatch";
    std::string name = command;
    std::string help = "--help";
    char* argv[] = {program.data(), name.data(), help.data(), nullptr};
    std::ostringstream out;
    std::ostringstream err;
    EXPECT_EQ(RunCli(3, argv, out, err), kExitOk);
    EXPECT_NE(out.str().find("Example: fairwatch --insecure-plaintext"), std::string::npos)
        << out.str();
  }
}

}  // namespace
}  // namespace fairwatch::cli
