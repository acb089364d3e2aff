// The scenario harness: a controller and an agent (the real binaries, over
// loopback gRPC, SQLite in a temp dir) watching tenant cgroups that the
// harness creates and fills with real workloads on a timeline. What it
// asserts it reads only through the operator CLI's JSON and the kernel's own
// files. Everything it creates goes away when its objects do, also on a
// failed check or Ctrl-C (a wait then throws Interrupted and the stack
// unwinds).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fairwatch/v1/operator.pb.h"
#include "google/protobuf/message.h"
#include "tests/e2e/process.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::testing::e2e {

// SIGINT/SIGTERM/SIGHUP set a flag; the next Pause or Wait throws.
void InstallInterruptHandlers();
struct Interrupted {};

// Sleeps, throwing Interrupted when asked to stop.
void Pause(absl::Duration d);
// Polls `done` every `every` until it holds (true) or `timeout` passes (false).
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout,
               absl::Duration every = absl::Milliseconds(100));

// Prints "[  12.3 s] what" when narrating, nothing otherwise.
class Narrator {
 public:
  explicit Narrator(bool on) : on_(on) {}
  void Restart() { t0_ = absl::Now(); }
  void Say(absl::string_view what) const;
  // Prints a block (a CLI's output) indented under the last line.
  void Show(absl::string_view block) const;
  bool on() const { return on_; }

 private:
  bool on_;
  absl::Time t0_ = absl::Now();
};

// What one run of a scenario found: failed checks and named figures.
class Outcome {
 public:
  // Records a failure when `ok` is false; returns ok.
  bool Check(bool ok, absl::string_view what);
  void Figure(const std::string& name, double value, absl::string_view unit);
  bool passed() const { return failures_.empty(); }
  const std::vector<std::string>& failures() const { return failures_; }
  struct Value {
    std::string name;
    double value;
    std::string unit;
  };
  const std::vector<Value>& figures() const { return figures_; }

 private:
  std::vector<std::string> failures_;
  std::vector<Value> figures_;
};

struct Binaries {
  std::string agent;
  std::string controller;
  std::string cli;
};

// Every Stack started after this runs its agent as `wrapper... agent args`
// (e.g. setpriv with the systemd unit's capabilities; wrapper[0] a full path).
void SetAgentWrapper(std::vector<std::string> wrapper);

// The host's cgroup layout for tenants: the hierarchy CPU is attributed and
// limited in, its ns counter, and blkio (v1) for disk.
struct TenantMounts {
  std::string cpu_hierarchy;  // "cpu" (v1) or "unified"
  std::string cpu;            // mount limits are written in
  std::string cpu_counter;    // cpuacct on v1, the unified mount on v2
  std::string blkio;          // v1 blkio or the unified mount; empty when absent
  std::vector<std::string> all() const;
};
absl::StatusOr<TenantMounts> FindCgroupMounts();

// Tenants as child cgroups of a unique test prefix, and their kernel figures.
class Tenants {
 public:
  explicit Tenants(TenantMounts mounts);
  const std::string& prefix() const { return tree_.prefix(); }
  TestCgroupTree& tree() { return tree_; }
  const TenantMounts& mounts() const { return mounts_; }
  // Tenant id as the agent reports it for child `name` of the prefix.
  std::string Id(const std::string& name) const { return prefix() + "/" + name; }

  absl::Status Add(const std::string& name);
  absl::Status Run(const std::string& name, const std::vector<std::string>& argv);
  // As Run, and the pid (to stop one workload of several).
  absl::StatusOr<pid_t> Spawn(const std::string& name, const std::vector<std::string>& argv);
  // Kills every process in the tenant's cgroup.
  void Stop(const std::string& name);
  // Cumulative CPU time the kernel charged to the tenant, in ns; nullopt
  // when the kernel's file could not be read.
  std::optional<uint64_t> CpuNs(const std::string& name) const;
  // The CFS quota in force in cores; nullopt when unlimited (-1 / "max").
  std::optional<double> CpuLimit(const std::string& name) const;
  // The CPU weight as a fraction of a plain cgroup's (cpu.shares / 1024 on
  // v1, cpu.weight / 100 on v2); nullopt when unreadable.
  std::optional<double> CpuWeight(const std::string& name) const;
  // Held back on CPU by a cap or a weight below a plain cgroup's: how, in
  // words, or empty when neither.
  std::string CpuHeldBack(const std::string& name) const;
  // Cores used over `span`, from the kernel's counter (NaN when unreadable,
  // so any check on it fails).
  std::map<std::string, double> CpuRates(const std::vector<std::string>& names,
                                         absl::Duration span) const;

 private:
  TenantMounts mounts_;
  TestCgroupTree tree_;
};

// Controller + agent on loopback.
class Stack {
 public:
  struct Options {
    // Body of the controller's `fairness { ... }` (textproto); empty: defaults.
    std::string fairness;
    // Tenant sources: cgroup parents relative to the hierarchy root, with weights.
    std::vector<std::pair<std::string, double>> parents;
    std::string agent_extra;  // more AgentConfig fields (textproto)
    // Both daemons serve /metrics on free 127.0.0.1 ports (default: off).
    bool metrics = false;
  };
  Stack(Binaries binaries, std::string dir, Options options);
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  // Starts both and waits until the agent reports `tenants` tenants.
  absl::Status Start(size_t tenants);
  absl::Status StartController();
  void KillController();  // SIGKILL: no goodbye
  bool WaitForTenants(size_t n, absl::Duration timeout);

  CommandResult Cli(const std::vector<std::string>& args);
  // The CLI's table output, as an operator sees it.
  CommandResult CliTable(const std::vector<std::string>& args);
  // `fairwatch --output json ARGS` parsed into `out`; false (and why in `error`) otherwise.
  template <typename Message>
  bool CliJson(const std::vector<std::string>& args, Message* out, std::string* error = nullptr);
  // Every case of the host (or of a tenant), oldest first; nullopt when the
  // CLI or the controller failed, so "no case" is never read from an error.
  std::optional<std::vector<v1::Case>> Cases(const std::string& tenant_id = "");
  bool ControllerRunning();
  std::optional<v1::HostInfo> Host();

  const std::string& host_id() const { return host_id_; }
  // The /metrics ports with Options::metrics; 0 without.
  int agent_metrics_port() const { return agent_metrics_port_; }
  int controller_metrics_port() const { return controller_metrics_port_; }
  const std::string& dir() const { return dir_; }
  std::string Logs() const;  // the last lines of both daemons' logs

 private:
  Binaries binaries_;
  std::string dir_;
  Options options_;
  std::string host_id_ = "scenario-host";
  std::string address_;
  std::string state_dir_;  // the agent's journal
  int agent_metrics_port_ = 0;
  int controller_metrics_port_ = 0;
  std::unique_ptr<Daemon> controller_;
  std::unique_ptr<Daemon> agent_;
};

// Narrates a tenant's cases as they change: opened (and why), every action
// with the agent's answer, closed (and why).
class CaseWatcher {
 public:
  CaseWatcher(Stack* stack, const Narrator* narrator) : stack_(stack), narrator_(narrator) {}
  // Reads the cases and narrates what is new; returns them (empty when the
  // read failed: see last_ok).
  std::vector<v1::Case> Poll();
  bool last_ok() const { return last_ok_; }

 private:
  Stack* stack_;
  const Narrator* narrator_;
  std::map<uint64_t, std::string> seen_;  // case id -> what was last said of it
  bool last_ok_ = true;
};

bool ParseJsonInto(const std::string& text, google::protobuf::Message* out, std::string* error);

template <typename Message>
bool Stack::CliJson(const std::vector<std::string>& args, Message* out, std::string* error) {
  CommandResult r = Cli(args);
  if (r.exit_code != 0) {
    if (error != nullptr) *error = r.err.empty() ? r.out : r.err;
    return false;
  }
  return ParseJsonInto(r.out, out, error);
}

// The last `lines` lines of `text`.
std::string Tail(const std::string& text, size_t lines);

// The full path of `tool` on PATH; empty when missing.
std::string Which(const std::string& tool);

// One-line figures.
std::string Seconds(double s);
std::string Cores(double c);
// Human words for an action of a case ("limit 0.73 cores, applied (in effect 0.73 cores)").
std::string DescribeAction(const v1::Case& c, const v1::CaseAction& a);
// Seconds from `t0` to a unix-ns timestamp of the controller.
double Since(absl::Time t0, int64_t unix_ns);
// Counts limit changes (limit, step down, step up, release) of a set of cases.
std::vector<int64_t> LimitChangeTimes(const std::vector<v1::Case>& cases);

}  // namespace fairwatch::testing::e2e
