// libvirt guests as tenants: a busy guest next to steady ones, limited through
// libvirt (docs/scenarios.md).
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/cgroup_layout.h"
#include "common/status.h"
#include "tests/e2e/scenario_kit.h"

namespace fairwatch::testing::e2e {
namespace {

// Guests of tests/vm/fw-test-vms.sh, named under a prefix unique to this
// run; every one of them is torn down when this goes (also on a failed
// check or Ctrl-C), and the script stops the libvirt daemons it started.
class TestVms {
 public:
  TestVms(std::string script, const Narrator& say)
      : script_(std::move(script)),
        prefix_(absl::StrCat("fws", getpid(), "-", absl::ToUnixMillis(absl::Now()) % 100000, "-")),
        say_(say) {}
  ~TestVms() {
    if (!defined_) return;
    CommandResult r = Script({"teardown", prefix_}, 300);
    if (r.exit_code != 0)
      std::fprintf(stderr, "teardown of %s*: %s%s", prefix_.c_str(), r.out.c_str(), r.err.c_str());
  }
  TestVms(const TestVms&) = delete;
  TestVms& operator=(const TestVms&) = delete;

  std::string Name(const std::string& short_name) const { return prefix_ + short_name; }

  // Makes this machine a libvirt host (installs packages on a first run).
  absl::Status Setup() {
    // From here teardown runs, also to stop a libvirtd that setup started.
    defined_ = true;
    return Run({"setup"}, 1200);
  }
  absl::Status Define(const std::string& short_name, std::vector<std::string> args) {
    defined_ = true;
    args.insert(args.begin(), {"define", Name(short_name)});
    return Run(args, 120);
  }
  // Starts the guest and waits until its workload runs.
  absl::Status Boot(const std::string& short_name) {
    absl::Status started = Run({"start", Name(short_name), "--fast-boot"}, 120);
    if (!started.ok()) return started;
    return Run({"wait-ready", Name(short_name), "--timeout", "240"}, 300);
  }
  absl::Status Virsh(const std::vector<std::string>& args) {
    std::vector<std::string> argv{Which("virsh"), "-q", "-c", "qemu:///system"};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = RunCommand(argv, 60);
    if (r.exit_code == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("virsh ", absl::StrJoin(args, " "), ": ", r.err));
  }
  // UUIDs of every running domain, ours or not.
  std::vector<std::string> Running() {
    CommandResult r =
        RunCommand({Which("virsh"), "-q", "-c", "qemu:///system", "list", "--uuid"}, 60);
    return absl::StrSplit(r.out, '\n', absl::SkipWhitespace());
  }
  // `fw-test-vms.sh info`: uuid, tap, cgroup_<controllers> paths, ...
  std::map<std::string, std::string> Info(const std::string& short_name) {
    std::map<std::string, std::string> info;
    CommandResult r = Script({"info", Name(short_name)}, 60);
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
      info[kv.first] = kv.second;
    }
    return info;
  }
  // A live value of `virsh schedinfo`, e.g. global_quota; empty when unreadable.
  std::string Schedinfo(const std::string& short_name, const std::string& field) {
    CommandResult r = RunCommand(
        {Which("virsh"), "-q", "-c", "qemu:///system", "schedinfo", Name(short_name), "--live"},
        30);
    for (absl::string_view line : absl::StrSplit(r.out, '\n')) {
      std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(line, absl::MaxSplits(':', 1));
      if (absl::StripAsciiWhitespace(kv.first) == field) {
        return std::string(absl::StripAsciiWhitespace(kv.second));
      }
    }
    return "";
  }

 private:
  CommandResult Script(std::vector<std::string> args, int timeout_s) const {
    args.insert(args.begin(), {"/bin/bash", script_});
    return RunCommand(args, timeout_s);
  }
  absl::Status Run(const std::vector<std::string>& args, int timeout_s) {
    CommandResult r = Script(args, timeout_s);
    if (r.exit_code == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("fw-test-vms.sh ", absl::StrJoin(args, " "), " (exit ",
                                            r.exit_code, "): ", Tail(r.out + r.err, 15)));
  }

  std::string script_;
  std::string prefix_;
  const Narrator& say_;
  bool defined_ = false;
};

// A guest's CPU time as the kernel counts it (its unified cgroup's cpu.stat,
// which libvirt keeps on every layout), in ns.
std::optional<uint64_t> VmCpuNs(const agent::CgroupMounts& mounts,
                                const std::map<std::string, std::string>& info) {
  auto path = info.find("cgroup_unified");
  if (mounts.unified.empty() || path == info.end()) return std::nullopt;
  std::ifstream in(mounts.unified + path->second + "/cpu.stat");
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "usage_usec") return value * 1000;
  }
  return std::nullopt;
}

// Cores each guest used over `span`, from the kernel (NaN when unreadable).
std::map<std::string, double> VmRates(
    const agent::CgroupMounts& mounts,
    const std::map<std::string, std::map<std::string, std::string>>& infos, absl::Duration span) {
  std::map<std::string, std::optional<uint64_t>> before;
  for (const auto& [name, info] : infos) before[name] = VmCpuNs(mounts, info);
  const absl::Time t0 = absl::Now();
  Pause(span);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  std::map<std::string, double> rates;
  for (const auto& [name, info] : infos) {
    const std::optional<uint64_t> after = VmCpuNs(mounts, info);
    rates[name] = before[name] && after && *after >= *before[name]
                      ? static_cast<double>(*after - *before[name]) / 1e9 / seconds
                      : std::nan("");
  }
  return rates;
}

// The CFS quota in force on a guest's cgroup, in cores; nullopt when none.
std::optional<double> VmCpuLimit(const agent::CgroupMounts& mounts,
                                 const std::map<std::string, std::string>& info) {
  for (const auto& [key, path] : info) {
    if (!absl::StartsWith(key, "cgroup_")) continue;
    const std::vector<std::string> controllers = absl::StrSplit(key.substr(strlen("cgroup_")), ',');
    if (std::find(controllers.begin(), controllers.end(), "cpu") == controllers.end()) continue;
    absl::StatusOr<std::string> mount = mounts.MountOf("cpu");
    if (!mount.ok()) return std::nullopt;
    std::ifstream quota(*mount + path + "/cpu.cfs_quota_us");
    std::ifstream period(*mount + path + "/cpu.cfs_period_us");
    int64_t q = -1;
    int64_t p = 0;
    if (!(quota >> q) || !(period >> p) || q < 0 || p <= 0) return std::nullopt;
    return static_cast<double>(q) / static_cast<double>(p);
  }
  if (auto unified = info.find("cgroup_unified");
      unified != info.end() && !mounts.unified.empty()) {
    std::ifstream max(mounts.unified + unified->second + "/cpu.max");
    std::string q;
    double p = 0;
    double quota = 0;
    if (!(max >> q >> p) || q == "max" || !absl::SimpleAtod(q, &quota) || p <= 0) {
      return std::nullopt;
    }
    return quota / p;
  }
  return std::nullopt;
}

// A libvirt guest with two busy vCPUs next to two guests with a steady
// partial load: limited through libvirt, the neighbours get their CPU back,
// released once the hog is paused.
void VmHogScenario(ScenarioContext& ctx, Outcome& out) {
  absl::StatusOr<agent::CgroupMounts> mounts = agent::ReadCgroupMounts();
  SCENARIO_REQUIRE_OK(out, mounts.status());
  TestVms vms(ctx.vm_script, *ctx.narrator);
  const Narrator& say = *ctx.narrator;
  say.Say("preparing the libvirt host (a first run installs libvirt and a guest kernel)");
  SCENARIO_REQUIRE_OK(out, vms.Setup());
  SCENARIO_REQUIRE_OK(out,
                      vms.Define("hog", {"--workload", "cpu", "--vcpus", "2", "--quota-pct", "0"}));
  const std::vector<std::string> neighbours = {"web", "db"};
  for (const std::string& n : neighbours) {
    SCENARIO_REQUIRE_OK(out, vms.Define(n, {"--workload", "steady", "--quota-pct", "0",
                                            "--cmdline-extra", "fw_duty=40"}));
  }
  // The hog boots first and is paused; the neighbours measure their work
  // rate at boot on a quiet host.
  SCENARIO_REQUIRE_OK(out, vms.Boot("hog"));
  SCENARIO_REQUIRE_OK(out, vms.Virsh({"suspend", vms.Name("hog")}));
  std::map<std::string, std::map<std::string, std::string>> infos;
  std::vector<std::string> neighbour_ids;
  for (const std::string& n : neighbours) {
    SCENARIO_REQUIRE_OK(out, vms.Boot(n));
    infos[n] = vms.Info(n);
    neighbour_ids.push_back(infos[n]["uuid"]);
    SCENARIO_REQUIRE(out, !neighbour_ids.back().empty(), "no UUID for " + vms.Name(n));
  }
  infos["hog"] = vms.Info("hog");
  const std::string hog_id = infos["hog"]["uuid"];
  SCENARIO_REQUIRE(out, !hog_id.empty(), "no UUID for " + vms.Name("hog"));
  say.Say(absl::StrCat("guests ", vms.Name("web"), " and ", vms.Name("db"),
                       " (1 vCPU each, a steady 40 % of it) and ", vms.Name("hog"),
                       " (2 vCPUs, each a busy loop; paused) run under TCG"));

  Stack::Options options;
  options.agent_extra = "libvirt {}";
  // The agent follows every running domain; the policy never limits one this
  // scenario did not define.
  for (const std::string& uuid : vms.Running()) {
    if (uuid != hog_id &&
        std::find(neighbour_ids.begin(), neighbour_ids.end(), uuid) == neighbour_ids.end()) {
      absl::StrAppend(&options.fairness, "exempt_tenants: \"", uuid, "\"\n");
    }
  }
  World w(ctx, {}, options);
  SCENARIO_REQUIRE_OK(out, w.stack->Start(3));
  say.Say("controller and agent up on loopback; the agent follows libvirt's domains");
  const std::optional<double> own_limit = VmCpuLimit(*mounts, infos["hog"]);
  const std::string own_quota = vms.Schedinfo("hog", "global_quota");
  const std::string own_shares = vms.Schedinfo("hog", "cpu_shares");
  Pause(absl::Seconds(5));  // quiet intervals: the neighbours' baselines
  std::map<std::string, std::map<std::string, std::string>> neighbour_infos = infos;
  neighbour_infos.erase("hog");
  std::map<std::string, double> quiet = VmRates(*mounts, neighbour_infos, absl::Seconds(8));
  say.Say(absl::StrCat("quiet (kernel, over 8 s): web ", Cores(quiet["web"]), ", db ",
                       Cores(quiet["db"])));
  for (const std::string& n : neighbours) {
    SCENARIO_REQUIRE(out, quiet[n] > 0.1, absl::StrCat(n, " uses ", Cores(quiet[n])));
  }
  std::map<std::string, std::optional<v1::HarmSignals>> quiet_harm;
  for (const std::string& n : neighbours) quiet_harm[n] = HarmOfId(w, infos[n]["uuid"], 8);

  const absl::Time t0 = absl::Now();
  SCENARIO_REQUIRE_OK(out, vms.Virsh({"resume", vms.Name("hog")}));
  say.Say("hog resumes: two vCPUs busy, wanting both host cores");
  std::optional<Detection> d = WaitForLimitOn(*w.watcher, hog_id, t0, absl::Seconds(20));
  if (!d.has_value()) {
    // What the controller saw, for whoever reads the failure.
    for (const std::string& id : {hog_id, neighbour_ids[0], neighbour_ids[1]}) {
      out.Check(false, w.stack->CliTable({"tenant", id, "--host", w.stack->host_id()}).out);
    }
  }
  SCENARIO_REQUIRE(out, d.has_value(), "no limit on the hog guest within 20 s of its start");
  out.Figure("case_opened", d->opened_s, "s");
  out.Figure("detect", d->applied_s, "s");
  CheckEvidence(out, d->record, vms.Name("hog"), neighbour_ids);
  const v1::CaseAction& limit = d->record.actions(0);
  SCENARIO_REQUIRE(out, limit.ack() == v1::ACK_STATE_APPLIED,
                   absl::StrCat("limit not applied: ", limit.ack_message()));
  // Through libvirt: the weight first (cpu_shares), a quota if it followed;
  // libvirt's view and the kernel's agree.
  const std::string shares = vms.Schedinfo("hog", "cpu_shares");
  const std::string quota = vms.Schedinfo("hog", "global_quota");
  const std::optional<double> in_kernel = VmCpuLimit(*mounts, infos["hog"]);
  say.Say(absl::StrCat("virsh schedinfo: cpu_shares ", shares, " (was ", own_shares,
                       "), global_quota ", quota, " (was ", own_quota, "); kernel quota ",
                       in_kernel ? Cores(*in_kernel) : "none"));
  if (limit.weight() > 0) {
    uint64_t now_shares = 0, was_shares = 0;
    out.Check(absl::SimpleAtoi(shares, &now_shares) && absl::SimpleAtoi(own_shares, &was_shares) &&
                  now_shares < was_shares,
              absl::StrCat("libvirt's cpu_shares is ", shares, ", was ", own_shares));
  }
  if (limit.limit() > 0) {
    out.Check(quota != own_quota && !quota.empty() && quota != "-1",
              absl::StrCat("libvirt's global_quota is ", quota, ", was ", own_quota));
    out.Check(in_kernel.has_value() && *in_kernel <= limit.in_effect() + 1e-6,
              absl::StrCat("kernel quota ", in_kernel ? Cores(*in_kernel) : "none", ", applied ",
                           Cores(limit.in_effect())));
  }
  if (say.on()) {
    say.Say(absl::StrCat("what an operator sees: fairwatch case ", d->record.case_id()));
    say.Show(w.stack->CliTable({"case", absl::StrCat(d->record.case_id())}).out);
  }
  std::optional<double> settled =
      WaitSettled(*w.watcher, d->record.case_id(), t0, absl::Seconds(60));
  SCENARIO_REQUIRE(out, settled.has_value(), "hog's limit still moving 60 s after its start");
  out.Figure("settled", *settled, "s");
  std::map<std::string, double> under = VmRates(*mounts, infos, absl::Seconds(10));
  say.Say(absl::StrCat("with hog limited (kernel, over 10 s): web ", Cores(under["web"]), ", db ",
                       Cores(under["db"]), ", hog ", Cores(under["hog"])));
  for (const std::string& n : neighbours) {
    // Each wants ~0.5 of the 2 cores three guests share: all of it is its
    // fair share. The bound is looser than for cgroup tenants: a TCG guest's
    // CPU use for the same work varies run to run (0.75-1.23 of its quiet
    // rate measured over 13 runs with the hog limited, docs/scenarios.md).
    const double share = under[n] / quiet[n];
    out.Figure(absl::StrCat(n, "_of_fair_share"), share, "");
    out.Check(share >= 0.7, absl::StrCat(n, " got ", Cores(under[n]), ", ", Fmt(share),
                                         " of its fair share ", Cores(quiet[n])));
  }
  // Issue 19's figures (recorded, not judged here): each neighbour's
  // run-queue p99 against quiet, and the host's use of what the guests want
  // (the hog's two vCPUs and the neighbours' quiet rates).
  double used = 0;
  double demand = 2;
  for (const auto& [n, rate] : under) used += rate;
  for (const std::string& n : neighbours) {
    demand += quiet[n];
    std::optional<v1::HarmSignals> limited = HarmOfId(w, infos[n]["uuid"], 10);
    if (quiet_harm[n] && limited) {
      CheckRecovered(out, *w.watcher, d->record.case_id(), n, infos[n]["uuid"], "runq_p99",
                     quiet_harm[n]->runq_wait_p99_ns() / 1e6, limited->runq_wait_p99_ns() / 1e6,
                     1.0, "ms");
    }
  }
  CheckWorkConserved(
      out, *w.watcher, d->record.case_id(), used, Cpus(), demand, [](double v) { return Cores(v); },
      /*required=*/false);

  const absl::Time t_stop = absl::Now();
  SCENARIO_REQUIRE_OK(out, vms.Virsh({"suspend", vms.Name("hog")}));
  say.Say("hog is paused");
  CheckReleased(
      *w.watcher, *w.stack, out, d->record.case_id(), t_stop,
      [&] {
        return VmCpuLimit(*mounts, infos["hog"]) == own_limit &&
               vms.Schedinfo("hog", "global_quota") == own_quota &&
               vms.Schedinfo("hog", "cpu_shares") == own_shares;
      },
      hog_id, "hog");
}

}  // namespace

// Scenarios with real libvirt guests.
std::vector<Scenario> VmScenarios() {
  return {
      {"vm-hog",
       "a libvirt guest with two busy vCPUs next to two steady guests: limited through libvirt, "
       "the neighbours served, released",
       {},
       VmHogScenario},
  };
}

}  // namespace fairwatch::testing::e2e
