// End to end on the real binaries: controller and agent on loopback, real
// tenant cgroups with real workloads, figures read back through
// `fairwatch ... --output json` and checked against the kernel's counters.
#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/cgroup_layout.h"
#include "fairwatch/v1/operator.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/e2e/process.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::testing {
namespace {

template <typename Message>
bool ParseJson(const std::string& text, Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  return google::protobuf::util::JsonStringToMessage(text, message, options).ok();
}

class CpuEndToEndRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!IsRoot()) GTEST_SKIP() << "needs root: the agent loads BPF; the test creates cgroups";
    auto mounts = agent::ReadCgroupMounts();
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    auto hierarchy = agent::ChooseCpuHierarchy(*mounts, "auto");
    ASSERT_TRUE(hierarchy.ok());
    hierarchy_ = *hierarchy;
    cpu_mount_ = *mounts->MountOf(hierarchy_);
    std::vector<std::string> tree_mounts{cpu_mount_};
    // The kernel's ns counter: cpuacct.usage on v1, cpu.stat usage_usec on v2.
    if (hierarchy_ == "cpu") {
      auto cpuacct = mounts->MountOf("cpuacct");
      ASSERT_TRUE(cpuacct.ok()) << "hybrid host without cpuacct";
      counter_mount_ = *cpuacct;
      if (counter_mount_ != cpu_mount_) tree_mounts.push_back(counter_mount_);
    } else {
      counter_mount_ = cpu_mount_;
    }
    tree_ = std::make_unique<TestCgroupTree>(tree_mounts, UniqueCgroupPrefix());
    char tmpl[] = "/tmp/fwe2e-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    port_ = PickFreePort();
    ASSERT_GT(port_, 0);
    metrics_port_ = PickFreePort();
    ASSERT_GT(metrics_port_, 0);
    address_ = absl::StrCat("127.0.0.1:", port_);
  }

  void TearDown() override {
    if (HasFailure()) {
      if (agent_) std::cerr << "--- agent log ---\n" << agent_->Log();
      if (controller_) std::cerr << "--- controller log ---\n" << controller_->Log();
    }
    agent_.reset();
    controller_.reset();
    tree_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void StartController() {
    controller_ = std::make_unique<Daemon>(
        std::vector<std::string>{FW_CONTROLLER_BIN, "--insecure-plaintext", "--listen", address_,
                                 "--db", dir_ + "/controller.db", "--metrics-address",
                                 "127.0.0.1:0"},
        dir_ + "/controller.log");
    ASSERT_TRUE(controller_->Start());
  }

  void StartAgent() {
    agent_ = std::make_unique<Daemon>(
        std::vector<std::string>{FW_AGENT_BIN, "--insecure-plaintext", "--controller", address_,
                                 "--cgroup-parent", tree_->prefix(), "--host-id", "e2e-host",
                                 "--metrics-address", absl::StrCat("127.0.0.1:", metrics_port_),
                                 "--state-dir", dir_ + "/agent-state"},
        dir_ + "/agent.log");
    ASSERT_TRUE(agent_->Start());
  }

  CommandResult Cli(const std::vector<std::string>& args) {
    return RunCliJson(FW_CLI_BIN, address_, args);
  }

  // Polls `fairwatch tenants` until `n` tenants of this test are listed.
  bool WaitForTenants(size_t n, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 200) {
      CommandResult r = Cli({"tenants", "--host", "e2e-host"});
      v1::ListTenantsResponse response;
      if (r.exit_code == 0 && ParseJson(r.out, &response) &&
          static_cast<size_t>(response.tenants_size()) == n) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }

  uint64_t KernelNs(const std::string& child) {
    if (hierarchy_ == "cpu") {
      auto text = tree_->ReadFile(counter_mount_, child, "cpuacct.usage");
      uint64_t ns = 0;
      EXPECT_TRUE(text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &ns));
      return ns;
    }
    auto text = tree_->ReadFile(counter_mount_, child, "cpu.stat");
    EXPECT_TRUE(text.ok());
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      std::vector<absl::string_view> kv = absl::StrSplit(line, ' ');
      uint64_t us = 0;
      if (kv.size() == 2 && kv[0] == "usage_usec" && absl::SimpleAtoi(kv[1], &us)) return us * 1000;
    }
    return 0;
  }

  std::map<std::string, v1::TopRow> Top() {
    CommandResult r = Cli({"top", "--once", "--host", "e2e-host"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    v1::TopResponse response;
    EXPECT_TRUE(ParseJson(r.out, &response)) << r.out;
    std::map<std::string, v1::TopRow> rows;
    for (const auto& row : response.rows()) rows[row.tenant_name()] = row;
    return rows;
  }

  std::string hierarchy_, cpu_mount_, counter_mount_, dir_, address_;
  int port_ = 0;
  int metrics_port_ = 0;
  std::unique_ptr<TestCgroupTree> tree_;
  std::unique_ptr<Daemon> controller_;
  std::unique_ptr<Daemon> agent_;
};

TEST_F(CpuEndToEndRoot, TopShowsEachTenantsCpuAsTheKernelCountsIt) {
  ASSERT_TRUE(tree_->Create({"busy", "half", "idle"}).ok());
  StartController();
  StartAgent();
  ASSERT_TRUE(WaitForTenants(3, 15000)) << "agent did not report 3 tenants";

  // Workloads start after discovery, so the agent's cumulative counters and
  // the kernel's cover the same span.
  ASSERT_TRUE(tree_->SpawnWorkload("busy", 1.0).ok());
  ASSERT_TRUE(tree_->SpawnWorkload("half", 0.5, "vcpu0").ok());
  ASSERT_TRUE(tree_->SpawnWorkload("idle", 0.0).ok());

  // A running window: the rate the controller shows vs the kernel's rate.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  std::map<std::string, uint64_t> k0;
  for (const char* t : {"busy", "half", "idle"}) k0[t] = KernelNs(t);
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(6));
  std::map<std::string, uint64_t> k1;
  for (const char* t : {"busy", "half", "idle"}) k1[t] = KernelNs(t);
  const double span_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto running = Top();
  ASSERT_EQ(running.size(), 3u);
  for (const char* t : {"busy", "half"}) {
    const double kernel_cores = static_cast<double>(k1[t] - k0[t]) / 1e9 / span_s;
    const v1::TopRow& row = running[t];
    std::cout << t << ": top " << row.cpu_cores() << " cores (" << 100 * row.cpu_host_fraction()
              << " % of host, window " << row.window_s() << " s), kernel " << kernel_cores
              << " cores\n";
    EXPECT_GT(row.window_s(), 3.0);
    // Windows are not aligned (the controller's ends at the last report).
    EXPECT_NEAR(row.cpu_cores(), kernel_cores, 0.1 * kernel_cores + 0.02) << t;
  }
  EXPECT_LT(running["idle"].cpu_cores(), 0.01);
  EXPECT_GT(running["busy"].cpu_cores(), running["half"].cpu_cores());

  // Frozen workloads: cumulative counters must now equal the kernel's.
  tree_->StopWorkloads();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto frozen = Top();
  for (const char* t : {"busy", "half", "idle"}) {
    const double kernel = static_cast<double>(KernelNs(t));
    const double reported = static_cast<double>(frozen[t].cpu_usage_ns());
    std::cout << t << ": cumulative " << reported / 1e6 << " ms, kernel " << kernel / 1e6
              << " ms\n";
    if (std::string(t) == "idle") {
      EXPECT_NEAR(reported, kernel, 5e6);
    } else {
      EXPECT_NEAR(reported, kernel, 0.02 * kernel) << t;
    }
  }
  // The agent's own /metrics carries the same cumulative counter.
  httplib::Client scraper("127.0.0.1", metrics_port_);
  auto scrape = scraper.Get("/metrics");
  ASSERT_TRUE(scrape) << "no /metrics on port " << metrics_port_;
  EXPECT_EQ(scrape->status, 200);
  const std::string busy_series =
      absl::StrCat("fairwatch_tenant_cpu_seconds_total{account=\"\",name=\"busy\",tenant=\"",
                   tree_->prefix(), "/busy\"} ");
  const size_t at = scrape->body.find(busy_series);
  ASSERT_NE(at, std::string::npos) << scrape->body.substr(0, 2000);
  double scraped_s = 0;
  ASSERT_TRUE(
      absl::SimpleAtod(scrape->body.substr(at + busy_series.size(),
                                           scrape->body.find('\n', at) - at - busy_series.size()),
                       &scraped_s));
  EXPECT_NEAR(scraped_s * 1e9, static_cast<double>(KernelNs("busy")), 0.02 * KernelNs("busy"));

  CommandResult hosts = Cli({"hosts"});
  ASSERT_EQ(hosts.exit_code, 0) << hosts.err;
  v1::ListHostsResponse host_list;
  ASSERT_TRUE(ParseJson(hosts.out, &host_list)) << hosts.out;
  ASSERT_EQ(host_list.hosts_size(), 1);
  EXPECT_TRUE(host_list.hosts(0).connected());
  EXPECT_EQ(host_list.hosts(0).cpu_hierarchy(), hierarchy_);
  EXPECT_EQ(host_list.hosts(0).tenant_count(), 3u);
}

TEST_F(CpuEndToEndRoot, TenantsComeAndGoWithoutRestart) {
  ASSERT_TRUE(tree_->Create({"a"}).ok());
  StartController();
  StartAgent();
  ASSERT_TRUE(WaitForTenants(1, 15000));
  ASSERT_TRUE(tree_->AddChild("b").ok());
  auto added = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitForTenants(2, 5000));
  const double seen_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - added).count();
  std::cout << "new tenant listed after " << seen_s << " s\n";
  EXPECT_LE(seen_s, 2.0);
  ASSERT_TRUE(tree_->RemoveChild("a").ok());
  auto removed = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitForTenants(1, 5000));
  const double gone_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - removed).count();
  std::cout << "removed tenant gone after " << gone_s << " s\n";
  EXPECT_LE(gone_s, 2.0);
}

TEST_F(CpuEndToEndRoot, AnOperatorsThrottleReachesTheCgroupAndReleaseUndoesIt) {
  ASSERT_TRUE(tree_->Create({"hog"}).ok());
  StartController();
  StartAgent();
  ASSERT_TRUE(WaitForTenants(1, 15000));
  ASSERT_TRUE(tree_->SpawnCommand("hog", {"stress-ng", "--cpu", "2", "--quiet"}).ok());
  const std::string tenant = absl::StrCat(tree_->prefix(), "/hog");
  const char* quota_file = hierarchy_ == "unified" ? "cpu.max" : "cpu.cfs_quota_us";
  auto quota = [&] {
    auto text = tree_->ReadFile(cpu_mount_, "hog", quota_file);
    return std::string(absl::StripAsciiWhitespace(text.value_or("?")));
  };
  const std::string before = quota();

  const auto asked = std::chrono::steady_clock::now();
  CommandResult throttled = Cli({"--operator", "e2e", "throttle", tenant, "--host", "e2e-host",
                                 "--cpu", "0.4", "--reason", "e2e: abuse report"});
  ASSERT_EQ(throttled.exit_code, 0) << throttled.err << throttled.out;
  v1::OperatorActionResponse response;
  ASSERT_TRUE(ParseJson(throttled.out, &response)) << throttled.out;
  ASSERT_EQ(response.cases_size(), 1);
  const uint64_t case_id = response.cases(0).case_id();
  // The agent's acknowledgement lands in the case: "applied", with the value read back.
  bool applied = false;
  v1::Case record;
  for (int waited = 0; waited < 5000 && !applied; waited += 100) {
    CommandResult shown = Cli({"case", absl::StrCat(case_id)});
    if (shown.exit_code == 0 && ParseJson(shown.out, &record) && record.actions_size() > 0 &&
        record.actions(0).ack() == v1::ACK_STATE_APPLIED) {
      applied = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ASSERT_TRUE(applied) << record.DebugString();
  const double ack_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  std::cout << "throttle to applied ack: " << ack_s << " s\n";
  EXPECT_NEAR(record.actions(0).in_effect(), 0.4, 1e-6);
  EXPECT_EQ(quota(), hierarchy_ == "unified" ? "40000 100000" : "40000");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double cpu0 = static_cast<double>(KernelNs("hog"));
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double used = (static_cast<double>(KernelNs("hog")) - cpu0) / 1e9 /
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "stress-ng --cpu 2 under a 0.4-core limit: " << used << " cores\n";
  EXPECT_NEAR(used, 0.4, 0.02);

  CommandResult released = Cli(
      {"--operator", "e2e", "release", tenant, "--host", "e2e-host", "--reason", "e2e: resolved"});
  ASSERT_EQ(released.exit_code, 0) << released.err << released.out;
  bool restored = false;
  for (int waited = 0; waited < 5000 && !restored; waited += 100) {
    restored = quota() == before;
    if (!restored) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(restored) << "quota " << quota() << ", before the throttle " << before;
}

TEST_F(CpuEndToEndRoot, AgentReconnectsAfterControllerRestartWithoutLosingCounts) {
  ASSERT_TRUE(tree_->Create({"busy"}).ok());
  StartController();
  StartAgent();
  ASSERT_TRUE(WaitForTenants(1, 15000));
  ASSERT_TRUE(tree_->SpawnWorkload("busy", 1.0).ok());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  controller_->Stop();
  std::this_thread::sleep_for(std::chrono::seconds(3));  // the agent buffers meanwhile
  StartController();
  ASSERT_TRUE(WaitForTenants(1, 20000)) << "agent did not reconnect";
  tree_->StopWorkloads();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto rows = Top();
  const double kernel = static_cast<double>(KernelNs("busy"));
  EXPECT_NEAR(static_cast<double>(rows["busy"].cpu_usage_ns()), kernel, 0.02 * kernel)
      << "cumulative counters carry across the outage";
}

TEST_F(CpuEndToEndRoot, AgentAndCliTalkToTheControllerOverTls) {
  if (access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "openssl not installed";
  // A self-signed certificate for 127.0.0.1 that is its own CA.
  CommandResult gen =
      RunCommand({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                  "-subj", "/CN=fairwatch-test", "-addext", "subjectAltName=IP:127.0.0.1",
                  "-keyout", dir_ + "/key.pem", "-out", dir_ + "/cert.pem"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  {
    std::ofstream(dir_ + "/controller.textproto")
        << "listen_address: \"" << address_ << "\"\n"
        << "database_path: \"" << dir_ << "/controller.db\"\n"
        << "metrics_address: \"127.0.0.1:0\"\n"
        << "tls { cert_file: \"" << dir_ << "/cert.pem\" key_file: \"" << dir_ << "/key.pem\" }\n";
    std::ofstream(dir_ + "/agent.textproto")
        << "controller_address: \"" << address_ << "\"\n"
        << "host_id: \"e2e-host\"\n"
        << "metrics_address: \"127.0.0.1:" << metrics_port_ << "\"\n"
        << "cgroup_parents { path: \"" << tree_->prefix() << "\" }\n"
        << "state_dir: \"" << dir_ << "/agent-state\"\n"
        << "tls { ca_file: \"" << dir_ << "/cert.pem\" }\n";
  }
  ASSERT_TRUE(tree_->Create({"t"}).ok());
  controller_ = std::make_unique<Daemon>(
      std::vector<std::string>{FW_CONTROLLER_BIN, "--config", dir_ + "/controller.textproto"},
      dir_ + "/controller.log");
  ASSERT_TRUE(controller_->Start());
  agent_ = std::make_unique<Daemon>(
      std::vector<std::string>{FW_AGENT_BIN, "--config", dir_ + "/agent.textproto"},
      dir_ + "/agent.log");
  ASSERT_TRUE(agent_->Start());

  bool listed = false;
  for (int i = 0; i < 75 && !listed; ++i) {
    CommandResult r = RunCommand({FW_CLI_BIN, "--controller", address_, "--tls-ca",
                                  dir_ + "/cert.pem", "--output", "json", "tenants"});
    v1::ListTenantsResponse response;
    listed = r.exit_code == 0 && ParseJson(r.out, &response) && response.tenants_size() == 1;
    if (!listed) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(listed) << "tenant not listed over TLS";
  // Plaintext against a TLS controller fails cleanly.
  CommandResult plain = Cli({"hosts"});
  EXPECT_EQ(plain.exit_code, 3) << plain.out << plain.err;
}

}  // namespace
}  // namespace fairwatch::testing
