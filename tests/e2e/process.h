// Runs the real fairwatch binaries from tests: daemons in the background and
// one-shot commands with their output captured.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace fairwatch::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv to completion (killed after timeout_s) and captures stdout/stderr.
CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_s = 30);

// A background process whose stderr goes to a log file; killed (SIGTERM, then
// SIGKILL) when destroyed.
class Daemon {
 public:
  Daemon(std::vector<std::string> argv, std::string log_path);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  bool Start();
  // SIGTERM and wait; returns the exit status as from waitpid.
  int Stop(int timeout_ms = 5000);
  void Kill();  // SIGKILL
  bool Running();
  pid_t pid() const { return pid_; }
  std::string Log() const;

 private:
  std::vector<std::string> argv_;
  std::string log_path_;
  pid_t pid_ = -1;
};

// Runs the operator CLI `cli_bin` against a plaintext controller at
// `address` with --output json, then `args`.
CommandResult RunCliJson(const std::string& cli_bin, const std::string& address,
                         const std::vector<std::string>& args, int timeout_s = 15);

// A TCP port on 127.0.0.1 that was free a moment ago.
int PickFreePort();

}  // namespace fairwatch::testing
