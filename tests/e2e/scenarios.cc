// CPU scenarios on tenant cgroups: a hog, a lone tenant, weights, bursts, exemption,
// dry run, a controller restart (docs/scenarios.md).
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

// Run-queue wait p99 of each of `names` over the last `window` seconds, in ms.
// One reading per tenant: every CLI run is a host task its neighbours wait
// behind (sampling each second put the quiet p99 at ~4 ms instead of 0.1-0.5).
std::map<std::string, double> RunqP99(World& w, const std::vector<std::string>& names, int window) {
  std::map<std::string, double> p99;
  for (const std::string& n : names) {
    if (std::optional<v1::HarmSignals> h = HarmOf(w, n, window)) {
      p99[n] = h->runq_wait_p99_ns() / 1e6;
    }
  }
  return p99;
}

// A CPU hog of `workers` busy threads next to neighbours (`steady`: name ->
// percent of a core): limited within seconds with the right evidence; once the
// case settles, each neighbour gets its share and its run-queue wait back
// (within 2x of quiet, or the case says why not) while the host stays busy
// (at least 90 % of what the tenants want); released once it stops.
void CpuHog(ScenarioContext& ctx, Outcome& out, int workers,
            const std::vector<std::pair<std::string, int>>& steady) {
  std::vector<std::string> names;
  for (const auto& [n, percent] : steady) names.push_back(n);
  std::vector<std::string> all = names;
  all.push_back("hog");
  World w(ctx, all, {});
  SCENARIO_REQUIRE_OK(out, w.Start(all.size()));
  for (const auto& [n, percent] : steady) {
    SCENARIO_REQUIRE_OK(out, w.tenants.Run(n, Steady(percent)));
    w.say.Say(
        absl::StrCat(n, " starts steady work: ", percent, " % of a core, a slice every 10 ms"));
  }
  w.say.Say("the host is otherwise quiet");
  Pause(absl::Seconds(5));  // quiet intervals: each neighbour's baseline
  std::map<std::string, double> quiet = w.Rates(names, absl::Seconds(4), "quiet");
  std::map<std::string, double> quiet_p99 = RunqP99(w, names, 4);

  const absl::Time t0 = absl::Now();
  SCENARIO_REQUIRE_OK(
      out, w.tenants.Run("hog", {"stress-ng", "--cpu", absl::StrCat(workers), "--quiet"}));
  w.say.Say(absl::StrCat("hog starts: stress-ng with ", workers, " workers on ", Cpus(),
                         " CPUs, wanting every core"));
  std::optional<Detection> d = WaitForLimit(w, "hog", t0, absl::Seconds(15));
  SCENARIO_REQUIRE(out, d.has_value(), "no limit on hog within 15 s of its start");
  out.Figure("case_opened", d->opened_s, "s");
  out.Figure("detect", d->applied_s, "s");
  out.Check(d->opened_s <= 5,
            absl::StrCat("case opened ", Seconds(d->opened_s), " after the start"));
  CheckEvidence(w, out, d->record, "hog", names);
  const v1::CaseAction& limit = d->record.actions(0);
  SCENARIO_REQUIRE(out, limit.ack() == v1::ACK_STATE_APPLIED,
                   absl::StrCat("limit not applied: ", limit.ack_message()));
  // The kernel holds the lever applied (the weight first; a cap may have followed).
  const std::string held = w.tenants.CpuHeldBack("hog");
  out.Check(!held.empty(), "hog held back by neither a quota nor a lowered weight");
  if (limit.limit() > 0) {
    std::optional<double> in_kernel = w.tenants.CpuLimit("hog");
    out.Check(in_kernel.has_value() && *in_kernel <= limit.in_effect() + 1e-6,
              absl::StrCat("kernel quota ", in_kernel ? Cores(*in_kernel) : "none", ", applied ",
                           Cores(limit.in_effect())));
  }
  w.say.Say(absl::StrCat("in the kernel: hog's ", held));

  // The policy adds or moves a cap while the neighbours still suffer; what
  // they get is measured once it holds (no move for longer than a step interval).
  std::optional<double> settled =
      WaitSettled(*w.watcher, d->record.case_id(), t0, absl::Seconds(60));
  SCENARIO_REQUIRE(out, settled.has_value(), "hog's limit still moving 60 s after the start");
  out.Figure("settled", *settled, "s");
  std::map<std::string, double> under = w.Rates(all, absl::Seconds(6), "with hog limited");
  std::map<std::string, double> under_p99 = RunqP99(w, names, 6);
  double used = 0;
  double demand = workers;
  for (const auto& [n, rate] : under) used += rate;
  for (const std::string& n : names) {
    // Fair share: each neighbour wants less than an equal split, so all it asks.
    const double share = under[n] / quiet[n];
    demand += quiet[n];
    out.Figure(absl::StrCat(n, "_of_fair_share"), share, "");
    out.Check(share >= 0.9, absl::StrCat(n, " got ", Cores(under[n]), ", ", Fmt(share),
                                         " of its fair share ", Cores(quiet[n])));
    SCENARIO_REQUIRE(out, quiet_p99.contains(n) && under_p99.contains(n),
                     absl::StrCat("no reading of ", n, "'s run-queue wait"));
    CheckRecovered(out, *w.watcher, d->record.case_id(), n, w.tenants.Id(n), "runq_p99",
                   quiet_p99[n], under_p99[n], 1.0, "ms");
    w.say.Say(absl::StrFormat("%s's run-queue wait p99: quiet %.2f ms, with hog limited %.2f ms", n,
                              quiet_p99[n], under_p99[n]));
  }
  out.Figure("hog_cores", under["hog"], "cores");
  CheckWorkConserved(
      out, *w.watcher, d->record.case_id(), used, Cpus(), demand, [](double v) { return Cores(v); },
      /*required=*/true);
  w.say.Say(absl::StrCat("the host: ", Cores(used), " of ", Cpus(), " cores in use"));
  if (w.say.on()) {
    w.say.Say(absl::StrCat("what an operator sees: fairwatch case ", d->record.case_id()));
    w.say.Show(w.stack->CliTable({"case", absl::StrCat(d->record.case_id())}).out);
  }

  const absl::Time t_stop = absl::Now();
  w.tenants.Stop("hog");
  w.say.Say("hog stops");
  CheckReleased(
      *w.watcher, *w.stack, out, d->record.case_id(), t_stop,
      [&] { return w.tenants.CpuHeldBack("hog").empty(); }, w.tenants.Id("hog"), "hog");
}

void CpuHogScenario(ScenarioContext& ctx, Outcome& out) {
  CpuHog(ctx, out, Cpus(), {{"web", 40}, {"db", 40}});
}
// More busy threads than CPUs: however low a quota, each period starts with
// all of them running on every CPU.
void ThreadsHogScenario(ScenarioContext& ctx, Outcome& out) {
  CpuHog(ctx, out, 4 * Cpus(), {{"web", 40}, {"db", 40}});
}
// A neighbour that needs little CPU but wakes 100 times a second: what it
// suffers is latency, not throughput.
void LatencyNeighbourScenario(ScenarioContext& ctx, Outcome& out) {
  CpuHog(ctx, out, Cpus(), {{"light", 10}, {"web", 40}});
}

// One tenant takes the whole otherwise idle host: nobody is owed anything.
void LoneTenantScenario(ScenarioContext& ctx, Outcome& out) {
  World w(ctx, {"lone", "idle-a", "idle-b"}, {});
  SCENARIO_REQUIRE_OK(out, w.Start(3));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("lone", Hog()));
  w.say.Say(absl::StrCat("lone starts ", Cpus(), " busy workers; idle-a and idle-b do nothing"));
  Pause(absl::Seconds(4));
  std::map<std::string, double> rates = w.Rates({"lone"}, absl::Seconds(8), "lone uses");
  out.Figure("lone_cores", rates["lone"], "cores");
  out.Check(rates["lone"] >= 0.85 * Cpus(),
            absl::StrCat("lone got ", Cores(rates["lone"]), " of an idle host"));
  w.watcher->Poll();  // narrated
  std::vector<v1::Case> cases = CasesForCheck(*w.stack, out);
  out.Figure("cases", static_cast<double>(cases.size()), "");
  out.Check(cases.empty(), absl::StrCat(cases.size(), " case(s) on an idle host's lone tenant"));
  if (cases.empty()) w.say.Say("no case: a tenant alone on an idle host takes nothing from anyone");
}

// Weight 3 against weight 1, both wanting everything: 3:1 is their due.
void WeightedScenario(ScenarioContext& ctx, Outcome& out) {
  Stack::Options options;
  World w(ctx, {"gold", "gold/big", "std", "std/small"}, {});
  // Two tenant sources: weight 3 and weight 1.
  options.parents = {{w.tenants.Id("gold"), 3}, {w.tenants.Id("std"), 1}};
  options.fairness = ctx.fairness;
  w.stack = std::make_unique<Stack>(ctx.binaries, ctx.dir, options);
  w.watcher = std::make_unique<CaseWatcher>(w.stack.get(), ctx.narrator);
  // The kernel shares the CPU 3:1 between the two parents.
  const bool v1 = ctx.mounts.cpu_hierarchy == "cpu";
  SCENARIO_REQUIRE_OK(
      out, w.tenants.tree().WriteFile(ctx.mounts.cpu, "gold", v1 ? "cpu.shares" : "cpu.weight",
                                      v1 ? "3072" : "300"));
  SCENARIO_REQUIRE_OK(
      out, w.tenants.tree().WriteFile(ctx.mounts.cpu, "std", v1 ? "cpu.shares" : "cpu.weight",
                                      v1 ? "1024" : "100"));
  SCENARIO_REQUIRE_OK(out, w.Start(2));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("gold/big", Hog()));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("std/small", Hog()));
  w.say.Say("big (weight 3) and small (weight 1) both start busy workers on every core");
  Pause(absl::Seconds(4));
  std::map<std::string, double> rates =
      w.Rates({"gold/big", "std/small"}, absl::Seconds(8), "they use");
  const double ratio = rates["gold/big"] / std::max(rates["std/small"], 1e-3);
  out.Figure("usage_ratio", ratio, "");
  out.Check(ratio > 2.4 && ratio < 3.6,
            absl::StrCat("big/small used ", Fmt(ratio), ", the kernel's weights are 3:1"));
  w.watcher->Poll();  // narrated
  std::vector<v1::Case> cases = CasesForCheck(*w.stack, out);
  out.Figure("cases", static_cast<double>(cases.size()), "");
  out.Check(cases.empty(), absl::StrCat(cases.size(), " case(s) on tenants within their weights"));
  if (cases.empty()) w.say.Say("no case: big uses three times small's share, as its weight allows");
}

// Two seconds on, two off, next to steady neighbours: whatever is done is
// done once, not toggled.
void BurstyScenario(ScenarioContext& ctx, Outcome& out) {
  World w(ctx, {"web", "db", "bursty"}, {});
  SCENARIO_REQUIRE_OK(out, w.Start(3));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("web", Steady(40)));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("db", Steady(40)));
  Pause(absl::Seconds(5));
  SCENARIO_REQUIRE_OK(
      out, w.tenants.Run("bursty", {"sh", "-c",
                                    absl::StrCat("while :; do stress-ng --cpu ", Cpus(),
                                                 " --timeout 2 --quiet; sleep 2; done")}));
  w.say.Say("bursty starts: every core for 2 s, then 2 s idle, over and over, for 45 s");
  const absl::Time end = absl::Now() + absl::Seconds(45);
  WaitUntil([&] { return w.watcher->Poll(), absl::Now() >= end; }, absl::Seconds(50),
            absl::Milliseconds(500));
  w.watcher->Poll();  // narrated
  std::vector<v1::Case> cases = CasesForCheck(*w.stack, out);
  std::vector<int64_t> changes = LimitChangeTimes(cases);
  out.Figure("limit_changes", static_cast<double>(changes.size()), "");
  double closest = 1e9;
  for (size_t i = 1; i < changes.size(); ++i) {
    closest = std::min(closest, static_cast<double>(changes[i] - changes[i - 1]) / 1e9);
  }
  if (changes.size() > 1) out.Figure("closest_changes", closest, "s");
  out.Check(closest >= 30, absl::StrCat(changes.size(), " limit changes, two within ",
                                        Seconds(closest), " (at most one per 30 s)"));
  std::vector<std::string> innocent = OthersCases(cases, w.tenants.Id("bursty"));
  out.Check(innocent.empty(),
            absl::StrCat("innocent tenants touched: ", absl::StrJoin(innocent, ", ")));
  w.say.Say(absl::StrCat(changes.size(), " limit change(s) in 45 s"));
}

// Runs a hog that the policy must not limit and checks that nothing was
// written to its cgroup while a case records why. `prepare` makes it so.
void UntouchedHog(ScenarioContext& ctx, Outcome& out, const std::function<bool(World&)>& prepare,
                  const std::function<bool(const v1::Case&)>& recorded, absl::string_view what) {
  World w(ctx, {"web", "db", "hog"}, {});
  SCENARIO_REQUIRE_OK(out, w.Start(3));
  SCENARIO_REQUIRE(out, prepare(w), "could not set the scenario up");
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("web", Steady(40)));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("db", Steady(40)));
  Pause(absl::Seconds(5));
  const absl::Time t0 = absl::Now();
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("hog", Hog()));
  w.say.Say("hog starts, wanting every core");
  bool written = false;
  const v1::Case* found = nullptr;
  std::vector<v1::Case> cases;
  WaitUntil(
      [&] {
        written = written || !w.tenants.CpuHeldBack("hog").empty();
        cases = w.watcher->Poll();
        found = FindCase(cases, w.tenants.Id("hog"));
        return found != nullptr && recorded(*found);
      },
      absl::Seconds(15), absl::Milliseconds(150));
  SCENARIO_REQUIRE(out, found != nullptr && recorded(*found),
                   absl::StrCat("no case recording ", what, " within 15 s"));
  out.Figure("recorded", Since(t0, found->opened_unix_ns()), "s");
  // Some more intervals: still nothing written.
  WaitUntil([&] { return (written = written || !w.tenants.CpuHeldBack("hog").empty()); },
            absl::Seconds(5), absl::Milliseconds(100));
  out.Check(!written, "a CPU limit was written to the hog's cgroup");
  if (!written) w.say.Say(absl::StrCat("nothing written to hog's cgroup: ", what));
}

void ExemptScenario(ScenarioContext& ctx, Outcome& out) {
  UntouchedHog(
      ctx, out,
      [](World& w) {
        CommandResult r = w.stack->Cli({"exempt", w.tenants.Id("hog"), "--host", w.stack->host_id(),
                                        "--reason", "scenario: nightly batch window"});
        w.say.Say("an operator exempts hog: fairwatch exempt hog --reason 'nightly batch window'");
        return r.exit_code == 0;
      },
      [](const v1::Case& c) {
        return c.state() == v1::CASE_STATE_CLOSED && c.actions_size() == 1 &&
               c.actions(0).kind() == v1::ACTION_KIND_SKIP &&
               c.actions(0).ack() == v1::ACK_STATE_NOT_SENT &&
               c.close_reason().find("exempt") != std::string::npos;
      },
      "the hog is exempt");
}

void DryRunScenario(ScenarioContext& ctx, Outcome& out) {
  UntouchedHog(
      ctx, out,
      [](World& w) {
        CommandResult r = w.stack->Cli(
            {"policy", "dry-run", "on", "--reason", "scenario: new policy, watching first"});
        w.say.Say("an operator turns dry run on: fairwatch policy dry-run on");
        return r.exit_code == 0;
      },
      [](const v1::Case& c) {
        return c.dry_run() && c.actions_size() > 0 &&
               c.actions(0).kind() == v1::ACTION_KIND_LIMIT &&
               (c.actions(0).limit() > 0 || c.actions(0).weight() > 0) &&
               c.actions(0).ack() == v1::ACK_STATE_NOT_SENT;
      },
      "a dry run: the would-be limit is on the case");
}

// The controller dies with a limit in force: the agent lets the lease run
// out and reverts it; a new controller finds the history and the agent's
// buffered reports.
void ControllerRestartScenario(ScenarioContext& ctx, Outcome& out) {
  constexpr int kLeaseS = 10;
  Stack::Options options;
  options.fairness = absl::StrCat("actions { lease_ms: ", kLeaseS * 1000, " }");
  World w(ctx, {"web", "db", "hog"}, options);
  SCENARIO_REQUIRE_OK(out, w.Start(3));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("web", Steady(40)));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("db", Steady(40)));
  Pause(absl::Seconds(5));
  const absl::Time t0 = absl::Now();
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("hog", Hog()));
  w.say.Say(absl::StrCat("hog starts; leases are ", kLeaseS, " s in this scenario"));
  std::optional<Detection> d = WaitForLimit(w, "hog", t0, absl::Seconds(15));
  SCENARIO_REQUIRE(out, d && !w.tenants.CpuHeldBack("hog").empty(), "hog not limited within 15 s");

  std::optional<v1::HostInfo> before = w.stack->Host();
  SCENARIO_REQUIRE(out, before.has_value(), "no host listed");
  const absl::Time killed = absl::Now();
  w.stack->KillController();
  w.say.Say(absl::StrCat("controller killed (SIGKILL) with hog limited; last report seq ",
                         before->last_report_seq()));
  std::optional<double> reverted;
  WaitUntil(
      [&] {
        if (w.tenants.CpuHeldBack("hog").empty()) {
          reverted = absl::ToDoubleSeconds(absl::Now() - killed);
        }
        return reverted.has_value();
      },
      absl::Seconds(kLeaseS + 10), absl::Milliseconds(100));
  SCENARIO_REQUIRE(out, reverted.has_value(),
                   absl::StrCat("hog's limit still in force ", kLeaseS + 10, " s after the kill"));
  out.Figure("lease_revert", *reverted, "s");
  out.Check(*reverted <= kLeaseS + 2, absl::StrCat("reverted ", Seconds(*reverted),
                                                   " after the kill, lease ", kLeaseS, " s"));
  w.say.Say(absl::StrCat("the agent reverted hog's limit when its lease ran out, ",
                         Seconds(*reverted), " after the kill"));

  SCENARIO_REQUIRE_OK(out, w.stack->StartController());
  const double outage = absl::ToDoubleSeconds(absl::Now() - killed);
  w.say.Say("controller restarted on the same database");
  SCENARIO_REQUIRE(out, w.stack->WaitForTenants(3, absl::Seconds(20)),
                   "the agent did not reconnect within 20 s");
  std::optional<v1::HostInfo> after;
  const bool caught_up = WaitUntil(
      [&] {
        after = w.stack->Host();
        return after && after->connected() &&
               after->last_report_seq() > before->last_report_seq() + outage - 1;
      },
      absl::Seconds(10), absl::Milliseconds(200));
  SCENARIO_REQUIRE(out, caught_up && after.has_value(),
                   "the host's reports did not cover the outage 10 s after the restart");
  // Reports the agent buffered through the outage arrive: the new controller's
  // first report is the last one the old one listed (resent, its ack lost),
  // or the next, or the one after (if one slipped in before the kill) — and
  // from the same run of the agent — with nothing missing since.
  out.Check(after->first_report_seq() >= before->last_report_seq() &&
                after->first_report_seq() <= before->last_report_seq() + 2,
            absl::StrCat("first report after the restart is seq ", after->first_report_seq(),
                         ", last before the kill ", before->last_report_seq()));
  out.Check(after->reports_missing() == 0,
            absl::StrCat(after->reports_missing(), " reports missing after the restart"));
  out.Figure("outage", outage, "s");
  out.Figure("buffered_reports",
             static_cast<double>(after->last_report_seq() - after->first_report_seq() + 1), "");
  w.say.Say(absl::StrCat("the agent resent what it buffered: seqs ", after->first_report_seq(),
                         "..", after->last_report_seq(), ", ", after->reports_missing(),
                         " missing"));
  v1::Case history;
  std::string error;
  SCENARIO_REQUIRE(out,
                   w.stack->CliJson({"case", absl::StrCat(d->record.case_id())}, &history, &error),
                   absl::StrCat("case ", d->record.case_id(), " after the restart: ", error));
  out.Check(history.actions_size() >= 1 && history.actions(0).ack() == v1::ACK_STATE_APPLIED,
            "the case's applied limit is not in its history after the restart");
  out.Check(history.state() == v1::CASE_STATE_CLOSED &&
                history.close_reason().find("controller restarted") != std::string::npos,
            absl::StrCat("case after the restart: ", v1::CaseState_Name(history.state()), " (",
                         history.close_reason(), ")"));
  w.say.Say(absl::StrCat("case ", history.case_id(), " intact: ", history.actions_size(),
                         " action(s), closed: ", history.close_reason()));
}

}  // namespace

// CPU scenarios on cgroup tenants.
std::vector<Scenario> CpuScenarios() {
  return {
      {"cpu-hog",
       "a CPU hog next to two steady neighbours: limited, neighbours served and their run-queue "
       "wait back, the host busy, released",
       {"stress-ng"},
       CpuHogScenario},
      {"threads-hog",
       "a hog with four busy threads per CPU next to two steady neighbours: they get their "
       "share and their run-queue wait back, the host stays busy",
       {"stress-ng"},
       ThreadsHogScenario},
      {"latency-neighbour",
       "a hog next to a neighbour that needs a tenth of a core but wakes 100 times a second: "
       "its run-queue wait comes back, the host stays busy",
       {"stress-ng"},
       LatencyNeighbourScenario},
      {"lone-tenant",
       "a lone tenant using the whole idle host: no case",
       {"stress-ng"},
       LoneTenantScenario},
      {"weighted",
       "weight 3 using three times a weight-1 neighbour's share: no case",
       {"stress-ng"},
       WeightedScenario},
      {"bursty",
       "2 s on, 2 s off next to steady neighbours: at most one limit change per 30 s",
       {"stress-ng"},
       BurstyScenario},
      {"exempt",
       "an exempt hog: a case records why it was left alone, nothing written",
       {"stress-ng"},
       ExemptScenario},
      {"dry-run",
       "dry run: a case with the would-be limit, nothing written",
       {"stress-ng"},
       DryRunScenario},
      {"controller-restart",
       "controller killed with a limit in force: lease reverts it; restart keeps history and "
       "gets the buffered reports",
       {"stress-ng"},
       ControllerRestartScenario},
  };
}

const std::vector<Scenario>& AllScenarios() {
  static const std::vector<Scenario> scenarios = [] {
    std::vector<Scenario> all;
    for (auto family : {CpuScenarios, DiskNetScenarios, VmScenarios, JudgementScenarios}) {
      for (Scenario& s : family()) all.push_back(std::move(s));
    }
    return all;
  }();
  return scenarios;
}

}  // namespace fairwatch::testing::e2e
