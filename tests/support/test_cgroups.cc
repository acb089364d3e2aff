#include "tests/support/test_cgroups.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace fairwatch::testing {
namespace {

uint64_t NowNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

absl::Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, absl::StrCat("mkdir ", path));
  }
  return absl::OkStatus();
}

[[noreturn]] void RunDuty(double duty) {
  if (duty <= 0) {
    while (true) pause();
  }
  const uint64_t period_ns = 10'000'000;
  const uint64_t busy_ns = static_cast<uint64_t>(period_ns * std::min(duty, 1.0));
  volatile uint64_t sink = 0;
  while (true) {
    uint64_t start = NowNs();
    while (NowNs() - start < busy_ns) sink = sink + 1;
    if (busy_ns < period_ns) {
      struct timespec rest {
        0, static_cast<long>(period_ns - busy_ns)
      };
      nanosleep(&rest, nullptr);
    }
  }
}

}  // namespace

bool IsRoot() { return geteuid() == 0; }

std::string UniqueCgroupPrefix() {
  static std::atomic<int> counter{0};
  return absl::StrCat("fwtest-", getpid(), "-", counter++);
}

TestCgroupTree::TestCgroupTree(std::vector<std::string> mounts, std::string prefix)
    : mounts_(std::move(mounts)), prefix_(std::move(prefix)) {}

TestCgroupTree::~TestCgroupTree() {
  KillWorkloads();
  for (const auto& mount : mounts_) {
    for (auto it = nested_.rbegin(); it != nested_.rend(); ++it) {
      rmdir(absl::StrCat(mount, "/", prefix_, "/", *it).c_str());
    }
    // Newest first: a child may be nested in an earlier one ("gold", "gold/big").
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      rmdir(PathIn(mount, *it).c_str());
    }
    rmdir(absl::StrCat(mount, "/", prefix_).c_str());
  }
}

std::string TestCgroupTree::PathIn(const std::string& mount, const std::string& child) const {
  return absl::StrCat(mount, "/", prefix_, "/", child);
}

absl::Status TestCgroupTree::Create(const std::vector<std::string>& children) {
  for (const auto& mount : mounts_) RETURN_IF_ERROR(MakeDir(absl::StrCat(mount, "/", prefix_)));
  for (const auto& child : children) RETURN_IF_ERROR(AddChild(child));
  return absl::OkStatus();
}

absl::Status TestCgroupTree::AddChild(const std::string& child) {
  for (const auto& mount : mounts_) RETURN_IF_ERROR(MakeDir(PathIn(mount, child)));
  if (std::find(children_.begin(), children_.end(), child) == children_.end()) {
    children_.push_back(child);
  }
  return absl::OkStatus();
}

absl::Status TestCgroupTree::RemoveChild(const std::string& child) {
  for (const auto& mount : mounts_) {
    if (rmdir(PathIn(mount, child).c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("rmdir ", PathIn(mount, child)));
    }
  }
  children_.erase(std::remove(children_.begin(), children_.end(), child), children_.end());
  return absl::OkStatus();
}

absl::StatusOr<pid_t> TestCgroupTree::SpawnWorkload(const std::string& child, double duty,
                                                    const std::string& sub) {
  std::string rel = child;
  if (!sub.empty()) {
    std::string acc = child;
    for (absl::string_view part : absl::StrSplit(sub, '/', absl::SkipEmpty())) {
      acc = absl::StrCat(acc, "/", part);
      for (const auto& mount : mounts_) RETURN_IF_ERROR(MakeDir(PathIn(mount, acc)));
      if (std::find(nested_.begin(), nested_.end(), acc) == nested_.end()) nested_.push_back(acc);
    }
    rel = acc;
  }
  return Spawn(rel, nullptr, duty);
}

absl::StatusOr<pid_t> TestCgroupTree::SpawnCommand(const std::string& child,
                                                   const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("no command");
  return Spawn(child, &argv, 0);
}

absl::StatusOr<pid_t> TestCgroupTree::Spawn(const std::string& rel,
                                            const std::vector<std::string>* argv, double duty) {
  // Everything the child needs is prepared here: after fork it only makes syscalls.
  std::vector<std::string> procs_files;
  for (const auto& mount : mounts_) procs_files.push_back(PathIn(mount, rel) + "/cgroup.procs");
  std::vector<char*> args;
  if (argv != nullptr) {
    for (const auto& a : *argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
  }
  // The child answers 0 (could not join), 1 (joined, running the busy loop)
  // or 2 (exec failed); a successful exec closes the pipe unanswered.
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test killed outright takes its workloads along
    close(ready[0]);
    char answer = 1;
    for (const auto& file : procs_files) {
      int fd = open(file.c_str(), O_WRONLY);
      // "0" moves the writing process itself.
      if (fd < 0 || write(fd, "0", 1) != 1) answer = 0;
      if (fd >= 0) close(fd);
    }
    if (answer == 0) {
      (void)!write(ready[1], &answer, 1);
      _exit(127);
    }
    if (argv == nullptr) {
      if (write(ready[1], &answer, 1) != 1) _exit(1);
      close(ready[1]);
      RunDuty(duty);
    }
    execvp(args[0], args.data());
    answer = 2;
    (void)!write(ready[1], &answer, 1);
    _exit(127);
  }
  close(ready[1]);
  char answer = 1;
  const ssize_t n = read(ready[0], &answer, 1);
  close(ready[0]);
  pids_.push_back(pid);
  const std::string what = argv != nullptr ? (*argv)[0] : std::string("workload");
  if (n < 0 || (n == 1 && answer == 0)) {
    return absl::InternalError(absl::StrCat(what, " could not join ", rel));
  }
  if (n == 1 && answer == 2) return absl::NotFoundError(absl::StrCat("cannot run ", what));
  if (n == 0 && argv == nullptr) {
    return absl::InternalError(absl::StrCat("workload died before joining ", rel));
  }
  return pid;
}

absl::Status TestCgroupTree::WriteFile(const std::string& mount, const std::string& child,
                                       const std::string& file, const std::string& value) {
  std::string path = absl::StrCat(PathIn(mount, child), "/", file);
  std::ofstream out(path);
  out << value;
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("writing '", value, "' to ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::string> TestCgroupTree::ReadFile(const std::string& mount,
                                                     const std::string& child,
                                                     const std::string& file) const {
  std::string path = absl::StrCat(PathIn(mount, child), "/", file);
  std::ifstream in(path);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void TestCgroupTree::StopWorkloads() {
  for (pid_t pid : pids_) kill(pid, SIGSTOP);
}

void TestCgroupTree::KillIn(const std::string& child) {
  for (int round = 0; round < 100; ++round) {
    bool any = false;
    for (const auto& mount : mounts_) {
      std::ifstream in(PathIn(mount, child) + "/cgroup.procs");
      pid_t pid = 0;
      while (in >> pid) {
        any = true;
        kill(pid, SIGKILL);
      }
    }
    // Ours among them leave the cgroup's list only once reaped.
    for (auto it = pids_.begin(); it != pids_.end();) {
      it = waitpid(*it, nullptr, WNOHANG) == *it ? pids_.erase(it) : std::next(it);
    }
    if (!any) return;
    usleep(20'000);
  }
}

void TestCgroupTree::KillWorkloads() {
  for (pid_t pid : pids_) kill(pid, SIGKILL);
  for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
  pids_.clear();
  // What they started is in the same cgroups, all created by this tree.
  std::vector<std::string> dirs;
  for (const auto& mount : mounts_) {
    for (const auto& child : children_) dirs.push_back(PathIn(mount, child));
    for (const auto& nested : nested_)
      dirs.push_back(absl::StrCat(mount, "/", prefix_, "/", nested));
  }
  for (int round = 0; round < 50; ++round) {
    bool any = false;
    for (const auto& dir : dirs) {
      std::ifstream in(dir + "/cgroup.procs");
      pid_t pid = 0;
      while (in >> pid) {
        any = true;
        kill(pid, SIGKILL);
      }
    }
    if (!any) break;
    usleep(20'000);
  }
}

}  // namespace fairwatch::testing
