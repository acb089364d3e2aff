// Runs the installed-shape binary for behaviour that needs no controller.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace {

struct Outcome {
  int exit_code;
  std::string output;  // stdout and stderr together
};

Outcome RunBinary(const std::string& args) {
  const std::string command =
      absl::StrCat("env -u FAIRWATCH_CONTROLLER -u FAIRWATCH_INSECURE_PLAINTEXT '",
                   FAIRWATCH_CLI_BINARY, "' ", args, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(FairwatchBinary, UnknownFlagIsUsageError) {
  const Outcome outcome = RunBinary("--no-such-flag hosts");
  EXPECT_EQ(outcome.exit_code, 2) << outcome.output;
  EXPECT_NE(outcome.output.find("--no-such-flag"), std::string::npos) << outcome.output;
}

TEST(FairwatchBinary, UnknownSubcommandIsUsageError) {
  EXPECT_EQ(RunBinary("frobnicate").exit_code, 2);
}

TEST(FairwatchBinary, UnsupportedOutputFormatIsUsageError) {
  const Outcome outcome = RunBinary("--output yaml hosts");
  EXPECT_EQ(outcome.exit_code, 2) << outcome.output;
  EXPECT_NE(outcome.output.find("yaml"), std::string::npos) << outcome.output;
}

TEST(FairwatchBinary, UnreachableControllerIsOneLineAndExitCode3) {
  const Outcome outcome = RunBinary("--insecure-plaintext --controller 127.0.0.1:1 hosts");
  EXPECT_EQ(outcome.exit_code, 3) << outcome.output;
  EXPECT_EQ(outcome.output.rfind("fairwatch: cannot reach controller at 127.0.0.1:1: ", 0), 0u)
      << outcome.output;
  EXPECT_EQ(outcome.output.find('\n'), outcome.output.size() - 1) << outcome.output;
}

TEST(FairwatchBinary, VersionAndHelpSucceed) {
  const Outcome version = RunBinary("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.output, absl::StrCat("fairwatch ", FAIRWATCH_VERSION, "\n"));
  const Outcome help = RunBinary("--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("Example: fairwatch --insecure-plaintext top --once"),
            std::string::npos)
      << help.output;
}

}  // namespace
