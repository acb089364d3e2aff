// Cgroups and workloads for tests that need root. Everything is created under
// a unique prefix and removed in the destructor, also when the test fails.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fairwatch::testing {

bool IsRoot();

// Unique per process and call: "fwtest-<pid>-<n>".
std::string UniqueCgroupPrefix();

// A directory tree in one or more cgroup hierarchy mounts, the same relative
// path in each (e.g. /sys/fs/cgroup/cpu/<prefix> and /sys/fs/cgroup/cpuacct/<prefix>).
class TestCgroupTree {
 public:
  TestCgroupTree(std::vector<std::string> mounts, std::string prefix);
  ~TestCgroupTree();
  TestCgroupTree(const TestCgroupTree&) = delete;
  TestCgroupTree& operator=(const TestCgroupTree&) = delete;

  // Creates <prefix> and <prefix>/<child> in every mount.
  absl::Status Create(const std::vector<std::string>& children);
  absl::Status AddChild(const std::string& child);
  absl::Status RemoveChild(const std::string& child);

  // Forks a process that joins <prefix>/<child> (plus `sub`, a nested path under
  // it, when given) in every mount and then runs `duty` of a busy loop:
  // 1.0 = one busy core, 0.5 = busy half of every 10 ms, 0 = sleeps.
  absl::StatusOr<pid_t> SpawnWorkload(const std::string& child, double duty,
                                      const std::string& sub = "");
  // Forks a process that joins <prefix>/<child> in every mount and execs
  // `argv` (e.g. stress-ng). Its own children stay in the cgroup and are
  // killed with it.
  absl::StatusOr<pid_t> SpawnCommand(const std::string& child,
                                     const std::vector<std::string>& argv);
  // Writes `value` to <mount>/<prefix>/<child>/<file>.
  absl::Status WriteFile(const std::string& mount, const std::string& child,
                         const std::string& file, const std::string& value);
  absl::StatusOr<std::string> ReadFile(const std::string& mount, const std::string& child,
                                       const std::string& file) const;
  void StopWorkloads();  // SIGSTOP: freezes their counters without removing them
  // Kills every process in <prefix>/<child> (in every mount) and reaps those
  // this tree started.
  void KillIn(const std::string& child);
  // Kills the workloads and every process still in the cgroups it created.
  void KillWorkloads();

  const std::string& prefix() const { return prefix_; }
  std::string PathIn(const std::string& mount, const std::string& child) const;

 private:
  // Forks a child that joins <prefix>/<rel> in every mount, then execs `argv`
  // or, when it is null, runs `duty` of a busy loop.
  absl::StatusOr<pid_t> Spawn(const std::string& rel, const std::vector<std::string>* argv,
                              double duty);
  std::vector<std::string> mounts_;
  std::string prefix_;
  std::vector<std::string> children_;
  std::vector<std::string> nested_;
  std::vector<pid_t> pids_;
};

}  // namespace fairwatch::testing
