// Bad input to the real binaries: unknown flags, broken configs, an
// unreachable controller, a non-root agent.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/e2e/process.h"

namespace fairwatch::testing {
namespace {

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fwbad-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(BadInput, UnknownFlagsExitWithUsageError) {
  for (const char* bin : {FW_AGENT_BIN, FW_CONTROLLER_BIN, FW_CLI_BIN}) {
    std::vector<std::string> argv{bin};
    if (std::string(bin) == FW_CLI_BIN) argv.push_back("hosts");
    argv.push_back("--no-such-flag");
    CommandResult r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << bin << ": " << r.err;
    EXPECT_NE(r.err.find("no-such-flag"), std::string::npos) << bin << ": " << r.err;
  }
}

TEST_F(BadInput, HelpDescribesEveryBinary) {
  for (const char* bin : {FW_AGENT_BIN, FW_CONTROLLER_BIN, FW_CLI_BIN}) {
    CommandResult r = RunCommand({bin, "--help"});
    EXPECT_EQ(r.exit_code, 0) << bin;
    if (std::string(bin) != FW_CLI_BIN) {
      EXPECT_NE(r.out.find("--config"), std::string::npos) << bin;
    }
    EXPECT_GT(r.out.size(), 200u) << bin;
  }
}

TEST_F(BadInput, AgentConfigUnknownKeyNamesFileAndLine) {
  std::string path =
      Write("agent.textproto",
            "insecure_plaintext: true\ncgroup_parents { path: \"m\" }\nbogus_key: 3\n");
  CommandResult r = RunCommand({FW_AGENT_BIN, "--config", path, "--check-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(path + ":3:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bogus_key"), std::string::npos) << r.err;
}

TEST_F(BadInput, AgentCheckConfigAcceptsAGoodFile) {
  std::string path = Write("agent.textproto",
                           "controller_address: \"127.0.0.1:7400\"\ninsecure_plaintext: true\n"
                           "cgroup_parents { path: \"machine\" account: \"acme\" }\n");
  CommandResult r = RunCommand({FW_AGENT_BIN, "--config", path, "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("config OK"), std::string::npos) << r.out;
}

TEST_F(BadInput, ControllerConfigErrorsNameTheLine) {
  std::string path =
      Write("controller.textproto", "insecure_plaintext: true\nlisten_adress: \"x\"\n");
  CommandResult r = RunCommand({FW_CONTROLLER_BIN, "--config", path, "--check-config"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find(":2:"), std::string::npos) << r.err;
  std::string broken = Write("broken.textproto", "window_intervals: {\n");
  r = RunCommand({FW_CONTROLLER_BIN, "--config", broken, "--check-config"});
  EXPECT_EQ(r.exit_code, 2);
  std::string missing = dir_ + "/nope.textproto";
  r = RunCommand({FW_CONTROLLER_BIN, "--config", missing, "--check-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE((r.out + r.err).find("nope.textproto"), std::string::npos) << r.err;
}

TEST_F(BadInput, ControllerRefusesPlaintextWithoutExplicitFlag) {
  CommandResult r =
      RunCommand({FW_CONTROLLER_BIN, "--listen", "127.0.0.1:0", "--db", dir_ + "/c.db"}, 10);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("insecure"), std::string::npos) << r.err;
}

TEST_F(BadInput, CliReportsUnreachableControllerInOneLine) {
  CommandResult r = RunCommand(
      {FW_CLI_BIN, "--insecure-plaintext", "--controller", "127.0.0.1:1", "top", "--once"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("cannot reach controller"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
}

TEST_F(BadInput, AgentRefusesToRunWithoutRoot) {
  if (geteuid() != 0) {
    CommandResult r = RunCommand({FW_AGENT_BIN, "--insecure-plaintext", "--cgroup-parent", "x"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("must run as root"), std::string::npos) << r.err;
    return;
  }
  // As root, drop to nobody for this one run.
  if (access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv (util-linux) not installed";
  CommandResult r =
      RunCommand({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  FW_AGENT_BIN, "--insecure-plaintext", "--cgroup-parent", "x"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("must run as root"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fairwatch::testing
