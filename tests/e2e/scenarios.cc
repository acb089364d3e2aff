#include "tests/e2e/scenarios.h"

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

namespace fairwatch::testing::e2e {
namespace {

// Ends the scenario on a failed step; the check is on record.
#define SCENARIO_REQUIRE(out, cond, what)     \
  do {                                        \
    if (!(out).Check((cond), (what))) return; \
  } while (0)
#define SCENARIO_REQUIRE_OK(out, expr)                                            \
  do {                                                                            \
    const absl::Status& scenario_status_ = (expr);                                \
    if (!(out).Check(scenario_status_.ok(), scenario_status_.ToString())) return; \
  } while (0)

int Cpus() { return static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)); }

// A steady tenant: `percent` of a core's worth of work every 10 ms, done
// whenever it gets to run (this binary's --steady-work).
std::vector<std::string> Steady(int percent) {
  return {std::filesystem::read_symlink("/proc/self/exe").string(), "--steady-work",
          absl::StrFormat("%.2f", percent / 100.0)};
}
// As many busy workers as the host has CPUs: a tenant that wants everything.
std::vector<std::string> Hog() { return {"stress-ng", "--cpu", absl::StrCat(Cpus()), "--quiet"}; }

std::string Fmt(double v) { return absl::StrFormat("%.2f", v); }

// The first case of `tenant_id` on `resource` (one that began with a limit,
// when `limited`: a skip recorded earlier is its own, closed case), if any.
const v1::Case* FindCase(const std::vector<v1::Case>& cases, const std::string& tenant_id,
                         v1::Resource resource = v1::RESOURCE_CPU, bool limited = false) {
  for (const v1::Case& c : cases) {
    if (c.tenant_id() != tenant_id || c.resource() != resource) continue;
    if (limited && (c.actions_size() == 0 || c.actions(0).kind() != v1::ACTION_KIND_LIMIT)) {
      continue;
    }
    return &c;
  }
  return nullptr;
}

// Every case, read for a check that something did not happen: a failed read
// or a dead controller fails the check rather than passing it.
std::vector<v1::Case> CasesForCheck(Stack& stack, Outcome& out) {
  std::optional<std::vector<v1::Case>> cases = stack.Cases();
  out.Check(cases.has_value(), "could not read the cases through the CLI");
  out.Check(stack.ControllerRunning(), "the controller is not running");
  return cases.value_or(std::vector<v1::Case>{});
}

// Everyone's cases but `tenant_id`'s.
std::vector<std::string> OthersCases(const std::vector<v1::Case>& cases,
                                     const std::string& tenant_id) {
  std::vector<std::string> out;
  for (const v1::Case& c : cases) {
    if (c.tenant_id() != tenant_id) {
      out.push_back(absl::StrCat("case ", c.case_id(), " on ", c.tenant_name()));
    }
  }
  return out;
}

// A controller and agent over a fresh set of tenant cgroups.
struct World {
  World(ScenarioContext& ctx, const std::vector<std::string>& names, Stack::Options options)
      : tenants(ctx.mounts), say(*ctx.narrator) {
    options.fairness = absl::StrCat(options.fairness, "\n", ctx.fairness);
    for (const std::string& n : names) {
      absl::Status added = tenants.Add(n);
      if (!added.ok() && made.ok()) made = added;
    }
    if (options.parents.empty()) options.parents.push_back({tenants.prefix(), 1});
    stack = std::make_unique<Stack>(ctx.binaries, ctx.dir, std::move(options));
    watcher = std::make_unique<CaseWatcher>(stack.get(), ctx.narrator);
  }
  absl::Status Start(size_t tenant_count) {
    if (!made.ok()) return made;
    absl::Status up = stack->Start(tenant_count);
    if (up.ok()) {
      say.Say(absl::StrCat("controller and agent up on loopback; ", tenant_count,
                           " tenant cgroups under ", tenants.prefix()));
    }
    return up;
  }
  // Kernel CPU rates of `names` over `span`, narrated.
  std::map<std::string, double> Rates(const std::vector<std::string>& names, absl::Duration span,
                                      absl::string_view when) {
    std::map<std::string, double> rates = tenants.CpuRates(names, span);
    std::vector<std::string> parts;
    for (const auto& [n, r] : rates) parts.push_back(absl::StrCat(n, " ", Cores(r)));
    say.Say(absl::StrCat(when, " (kernel, over ", absl::FormatDuration(span),
                         "): ", absl::StrJoin(parts, ", ")));
    return rates;
  }

  absl::Status made;
  Tenants tenants;
  const Narrator& say;
  std::unique_ptr<Stack> stack;
  std::unique_ptr<CaseWatcher> watcher;
};

struct Detection {
  v1::Case record;
  double opened_s = 0;   // start -> case opened
  double applied_s = 0;  // start -> the agent's "applied" for the first limit
};

// Waits for the policy's first limit on the tenant with id `tenant_id` to be
// applied (or to fail).
std::optional<Detection> WaitForLimitOn(CaseWatcher& watcher, const std::string& tenant_id,
                                        absl::Time t0, absl::Duration timeout,
                                        v1::Resource resource = v1::RESOURCE_CPU) {
  std::optional<Detection> found;
  WaitUntil(
      [&] {
        std::vector<v1::Case> cases = watcher.Poll();
        const v1::Case* c = FindCase(cases, tenant_id, resource, /*limited=*/true);
        if (c == nullptr || c->actions_size() == 0) return false;
        const v1::CaseAction& first = c->actions(0);
        if (first.kind() != v1::ACTION_KIND_LIMIT) return false;
        if (first.ack() != v1::ACK_STATE_APPLIED && first.ack() != v1::ACK_STATE_FAILED) {
          return false;
        }
        found = Detection{*c, Since(t0, c->opened_unix_ns()), Since(t0, first.ack_unix_ns())};
        return true;
      },
      timeout, absl::Milliseconds(150));
  return found;
}
std::optional<Detection> WaitForLimit(World& w, const std::string& tenant, absl::Time t0,
                                      absl::Duration timeout,
                                      v1::Resource resource = v1::RESOURCE_CPU) {
  return WaitForLimitOn(*w.watcher, w.tenants.Id(tenant), t0, timeout, resource);
}

// The end of a hog's story, from its stop at `t_stop`: waits (up to 45 s)
// until `limit_gone` holds in the kernel and case `case_id` is closed,
// records "release" (seconds to the later of the two) and checks it is within
// 30 s; then checks nobody but `offender_id` has a case.
void CheckReleased(CaseWatcher& watcher, Stack& stack, Outcome& out, uint64_t case_id,
                   absl::Time t_stop, const std::function<bool()>& limit_gone,
                   const std::string& offender_id, absl::string_view who) {
  std::optional<double> gone_s;
  std::optional<double> closed_s;
  WaitUntil(
      [&] {
        if (!gone_s && limit_gone()) gone_s = absl::ToDoubleSeconds(absl::Now() - t_stop);
        for (const v1::Case& c : watcher.Poll()) {
          if (c.case_id() == case_id && c.state() == v1::CASE_STATE_CLOSED) {
            closed_s = Since(t_stop, c.closed_unix_ns());
          }
        }
        return gone_s && closed_s;
      },
      absl::Seconds(45), absl::Milliseconds(150));
  if (out.Check(gone_s && closed_s,
                absl::StrCat(who, "'s limit not released within 45 s of its stop"))) {
    const double released = std::max(*gone_s, *closed_s);
    out.Figure("release", released, "s");
    out.Check(released <= 30, absl::StrCat("released ", Seconds(released), " after the stop"));
  }
  std::vector<std::string> innocent = OthersCases(CasesForCheck(stack, out), offender_id);
  out.Check(innocent.empty(),
            absl::StrCat("innocent tenants touched: ", absl::StrJoin(innocent, ", ")));
}

// Waits until the limit of case `case_id` has not moved for longer than a
// step interval (5 s); returns seconds from `t0` to its last move.
std::optional<double> WaitSettled(CaseWatcher& watcher, uint64_t case_id, absl::Time t0,
                                  absl::Duration timeout) {
  std::optional<double> last_move;
  const bool done = WaitUntil(
      [&] {
        for (const v1::Case& c : watcher.Poll()) {
          if (c.case_id() != case_id) continue;
          int64_t last = 0;
          for (const v1::CaseAction& a : c.actions()) {
            if (a.kind() != v1::ACTION_KIND_RENEW) last = a.at_unix_ns();
          }
          last_move = Since(t0, last);
          return absl::Now() - absl::FromUnixNanos(last) > absl::Seconds(6);
        }
        return false;
      },
      timeout, absl::Milliseconds(250));
  return done ? last_move : std::nullopt;
}

// Checks the opening evidence of a policy case on `hog` (a name) against
// neighbours with ids `victim_ids`.
void CheckEvidence(Outcome& out, const v1::Case& c, const std::string& hog,
                   const std::vector<std::string>& victim_ids) {
  out.Check(c.opened_by() == "policy", absl::StrCat("opened by ", c.opened_by()));
  out.Check(c.tenant_name() == hog, absl::StrCat("offender ", c.tenant_name(), ", not ", hog));
  const v1::CaseEvidence& e = c.opening();
  out.Check(e.usage() > e.entitled_share(),
            absl::StrCat("evidence: usage ", Fmt(e.usage()), " not above its entitlement ",
                         Fmt(e.entitled_share())));
  out.Check(e.harmed_size() > 0, "evidence: nobody harmed");
  for (const v1::HarmedTenant& h : e.harmed()) {
    const bool known =
        std::find(victim_ids.begin(), victim_ids.end(), h.tenant_id()) != victim_ids.end();
    out.Check(known, absl::StrCat("evidence names ", h.tenant_id(), " as harmed"));
    out.Check(!h.evidence().empty(), absl::StrCat(h.tenant_id(), " harmed without evidence"));
    out.Check(h.caused_share() > 0,
              absl::StrCat("evidence: ", h.tenant_id(), "'s waiting not caused by the offender"));
  }
}
void CheckEvidence(World& w, Outcome& out, const v1::Case& c, const std::string& hog,
                   const std::vector<std::string>& victims) {
  std::vector<std::string> ids;
  for (const std::string& v : victims) ids.push_back(w.tenants.Id(v));
  CheckEvidence(out, c, hog, ids);
}

// A CPU hog next to two steady neighbours: limited within seconds with the
// right evidence, neighbours get their share, released once it stops.
void CpuHogScenario(ScenarioContext& ctx, Outcome& out) {
  World w(ctx, {"web", "db", "hog"}, {});
  SCENARIO_REQUIRE_OK(out, w.Start(3));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("web", Steady(40)));
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("db", Steady(40)));
  w.say.Say("web and db start steady work, 40 % of a core each; the host is quiet");
  Pause(absl::Seconds(5));  // quiet intervals: each neighbour's baseline
  std::map<std::string, double> quiet = w.Rates({"web", "db"}, absl::Seconds(4), "quiet");

  const absl::Time t0 = absl::Now();
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("hog", Hog()));
  w.say.Say(absl::StrCat("hog starts: stress-ng with ", Cpus(), " workers, wanting every core"));
  std::optional<Detection> d = WaitForLimit(w, "hog", t0, absl::Seconds(15));
  SCENARIO_REQUIRE(out, d.has_value(), "no limit on hog within 15 s of its start");
  out.Figure("case_opened", d->opened_s, "s");
  out.Figure("detect", d->applied_s, "s");
  out.Check(d->opened_s <= 5,
            absl::StrCat("case opened ", Seconds(d->opened_s), " after the start"));
  CheckEvidence(w, out, d->record, "hog", {"web", "db"});
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

  if (w.say.on()) {
    w.say.Say(absl::StrCat("what an operator sees: fairwatch case ", d->record.case_id()));
    w.say.Show(w.stack->CliTable({"case", absl::StrCat(d->record.case_id())}).out);
  }
  // The policy steps the limit down while the neighbours still suffer; their
  // share is measured once it holds (no step for longer than a step interval).
  std::optional<double> settled =
      WaitSettled(*w.watcher, d->record.case_id(), t0, absl::Seconds(40));
  SCENARIO_REQUIRE(out, settled.has_value(), "hog's limit still moving 40 s after the start");
  out.Figure("settled", *settled, "s");
  std::map<std::string, double> under =
      w.Rates({"web", "db", "hog"}, absl::Seconds(6), "with hog limited");
  for (const char* n : {"web", "db"}) {
    // Fair share: each wants ~0.4 of 2+ cores shared by 3, so all of it.
    const double share = under[n] / quiet[n];
    out.Figure(absl::StrCat(n, "_of_fair_share"), share, "");
    out.Check(share >= 0.9, absl::StrCat(n, " got ", Cores(under[n]), ", ", Fmt(share),
                                         " of its fair share ", Cores(quiet[n])));
  }

  const absl::Time t_stop = absl::Now();
  w.tenants.Stop("hog");
  w.say.Say("hog stops");
  CheckReleased(
      *w.watcher, *w.stack, out, d->record.case_id(), t_stop,
      [&] { return w.tenants.CpuHeldBack("hog").empty(); }, w.tenants.Id("hog"), "hog");
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

// The whole disk holding `path`, as "major:minor" and its kernel name.
absl::StatusOr<std::pair<std::string, std::string>> DiskOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError("stat " + path);
  std::string dev = absl::StrCat(major(st.st_dev), ":", minor(st.st_dev));
  std::error_code ec;
  std::filesystem::path sys = std::filesystem::canonical(absl::StrCat("/sys/dev/block/", dev), ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, " is not on a block device (", dev, ")"));
  if (std::filesystem::exists(sys / "partition")) {
    sys = sys.parent_path();
    std::ifstream in(sys / "dev");
    if (!(in >> dev)) return absl::NotFoundError("no dev for " + sys.string());
  }
  return std::make_pair(dev, sys.filename().string());
}

// Bytes written to the disk so far (/sys/block/<name>/stat, sectors of 512).
uint64_t DiskBytesWritten(const std::string& name) {
  std::ifstream in(absl::StrCat("/sys/block/", name, "/stat"));
  uint64_t v[7] = {};
  for (uint64_t& x : v) in >> x;
  return v[6] * 512;
}

std::vector<std::string> FioWriter(const std::string& file, int seconds) {
  return {"fio",
          "--name=writer",
          "--filename=" + file,
          "--size=512M",
          "--rw=write",
          "--bs=1M",
          "--direct=1",
          "--ioengine=libaio",
          "--iodepth=16",
          "--time_based",
          absl::StrCat("--runtime=", seconds),
          "--output=/dev/null"};
}

// The reader's I/O latency (p50, p99 in ms) over the last `window` intervals, via the CLI.
struct Latency {
  double p50 = 0;
  double p99 = 0;
};
std::optional<Latency> ReaderLatency(World& w, const std::string& name, int window) {
  v1::TenantDetail detail;
  if (!w.stack->CliJson({"tenant", w.tenants.Id(name), "--host", w.stack->host_id(), "--window",
                         absl::StrCat(window)},
                        &detail)) {
    return std::nullopt;
  }
  return Latency{detail.harm().io_latency_p50_ns() / 1e6, detail.harm().io_latency_p99_ns() / 1e6};
}

// Direct writes flood the disk next to a reader that needs low latency: the
// writer gets an I/O limit and the reader's latency comes back down.
// A directory of the scenario's own on a disk: /var/tmp, since /tmp may be a
// tmpfs (Debian 13 and systemd hosts mount one there). Removed at the end.
class DiskDir {
 public:
  DiskDir() {
    char tmpl[] = "/var/tmp/fairwatch-scenario-disk-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~DiskDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  DiskDir(const DiskDir&) = delete;
  DiskDir& operator=(const DiskDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void DiskHogScenario(ScenarioContext& ctx, Outcome& out) {
  const DiskDir dir;
  SCENARIO_REQUIRE(out, !dir.path().empty(), "cannot make a directory in /var/tmp");
  absl::StatusOr<std::pair<std::string, std::string>> disk = DiskOf(dir.path());
  SCENARIO_REQUIRE_OK(out, disk.status());
  const std::string dev = disk->first;  // a lambda below captures it
  const std::string disk_name = disk->second;
  // The disk's write bandwidth, measured alone: the capacity the controller judges by.
  const uint64_t before = DiskBytesWritten(disk_name);
  const absl::Time m0 = absl::Now();
  std::vector<std::string> fio = FioWriter(dir.path() + "/probe", 4);
  fio[0] = Which("fio");  // RunCommand does not search PATH
  CommandResult probe = RunCommand(fio, 30);
  const double bandwidth = static_cast<double>(DiskBytesWritten(disk_name) - before) /
                           absl::ToDoubleSeconds(absl::Now() - m0);
  std::filesystem::remove(dir.path() + "/probe");
  SCENARIO_REQUIRE(out, probe.exit_code == 0 && bandwidth > 1e6,
                   absl::StrCat("measuring ", disk_name, ": fio exit ", probe.exit_code, ", ",
                                bandwidth / 1e6, " MB/s ", probe.err));
  out.Figure("disk_bandwidth", bandwidth / 1e6, "MB/s");

  Stack::Options options;
  options.agent_extra = absl::StrFormat(
      "disk_capacity { device: \"%s\" bandwidth_bytes_per_s: %.0f }", dev, bandwidth);
  World w(ctx, {"reader", "writer"}, options);
  w.say.Say(absl::StrFormat("%s (%s) writes %.0f MB/s alone: the capacity given to the agent",
                            disk_name, dev, bandwidth / 1e6));
  SCENARIO_REQUIRE_OK(out, w.Start(2));
  SCENARIO_REQUIRE_OK(
      out, w.tenants.Run("reader", {"fio", "--name=reader", "--filename=" + dir.path() + "/reader",
                                    "--size=64M", "--rw=randread", "--bs=4k", "--direct=1",
                                    "--ioengine=psync", "--rate_iops=50", "--time_based",
                                    "--runtime=600", "--output=/dev/null"}));
  w.say.Say("reader starts: 50 random 4 KiB direct reads per second, latency-sensitive");
  Pause(absl::Seconds(8));
  std::optional<Latency> quiet = ReaderLatency(w, "reader", 5);
  SCENARIO_REQUIRE(out, quiet.has_value(), "no reading of the reader's latency");
  w.say.Say(absl::StrFormat("reader's I/O latency, quiet: p50 %.2f ms, p99 %.2f ms", quiet->p50,
                            quiet->p99));

  const absl::Time t0 = absl::Now();
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("writer", FioWriter(dir.path() + "/writer", 600)));
  w.say.Say("writer starts: 1 MiB direct writes, 16 in flight");
  std::optional<Detection> d =
      WaitForLimit(w, "writer", t0, absl::Seconds(20), v1::RESOURCE_DISK_BANDWIDTH);
  if (!d.has_value()) {
    // What the controller saw, for whoever reads the failure.
    for (const char* n : {"writer", "reader"}) {
      out.Check(false,
                w.stack->CliTable({"tenant", w.tenants.Id(n), "--host", w.stack->host_id()}).out);
    }
    out.Check(false, w.stack->CliTable({"top", "--once", "--resource", "disk"}).out);
  }
  SCENARIO_REQUIRE(out, d.has_value(), "no disk limit on the writer within 20 s of its start");
  std::optional<Latency> hit = ReaderLatency(w, "reader", 3);
  out.Figure("case_opened", d->opened_s, "s");
  out.Figure("detect", d->applied_s, "s");
  CheckEvidence(w, out, d->record, "writer", {"reader"});
  SCENARIO_REQUIRE(out, d->record.actions(0).ack() == v1::ACK_STATE_APPLIED,
                   absl::StrCat("limit not applied: ", d->record.actions(0).ack_message()));
  const std::string throttle_file =
      ctx.mounts.cpu_hierarchy == "cpu" ? "blkio.throttle.write_bps_device" : "io.max";
  auto throttled = [&] {
    absl::StatusOr<std::string> text =
        w.tenants.tree().ReadFile(ctx.mounts.blkio, "writer", throttle_file);
    return text.ok() && text->find(dev + " ") != std::string::npos &&
           text->find("wbps=max") == std::string::npos;
  };
  out.Check(throttled(), absl::StrCat("no throttle for ", dev, " in the writer's ", throttle_file));

  // The policy steps the limit down while the reader still suffers; its
  // latency is read once the limit holds.
  std::optional<double> settled =
      WaitSettled(*w.watcher, d->record.case_id(), t0, absl::Seconds(45));
  SCENARIO_REQUIRE(out, settled.has_value(), "writer's limit still moving 45 s after its start");
  out.Figure("settled", *settled, "s");
  std::optional<Latency> limited = ReaderLatency(w, "reader", 5);
  SCENARIO_REQUIRE(out, hit && limited, "no reading of the reader's latency");
  for (const auto& [when, l] : {std::pair<const char*, const Latency*>{"quiet", &*quiet},
                                {"hog", &*hit},
                                {"limited", &*limited}}) {
    out.Figure(absl::StrCat("reader_p50_", when), l->p50, "ms");
    out.Figure(absl::StrCat("reader_p99_", when), l->p99, "ms");
  }
  w.say.Say(absl::StrFormat(
      "reader's I/O latency p50 / p99: quiet %.2f / %.2f ms, with the writer %.2f / %.2f ms, with "
      "the writer limited %.2f / %.2f ms",
      quiet->p50, quiet->p99, hit->p50, hit->p99, limited->p50, limited->p99));
  // Recovered: the typical request (p50) is back near its quiet latency
  // (within 1 ms or twice it), or at least halved. The tail (p99) is reported,
  // not judged: blk-throttle lets a throttled writer's 1 MiB requests out in
  // bursts, and a read behind such a burst still waits (docs/performance.md).
  out.Check(limited->p50 <= std::max(1.0, 2 * quiet->p50) || limited->p50 <= hit->p50 / 2,
            absl::StrFormat("reader's p50 %.2f ms with the writer limited (quiet %.2f, hit %.2f)",
                            limited->p50, quiet->p50, hit->p50));

  const absl::Time t_stop = absl::Now();
  w.tenants.Stop("writer");
  w.say.Say("writer stops");
  CheckReleased(
      *w.watcher, *w.stack, out, d->record.case_id(), t_stop, [&] { return !throttled(); },
      w.tenants.Id("writer"), "writer");
}

// A shared uplink, everything in it made here: a bridge with a port per
// tenant (the host side of a veth whose other end is eth0 in the tenant's own
// network namespace) and a port towards an "upstream" namespace, shaped to
// `mbit` by a TBF on that port's egress, so everything the tenants send
// leaves through one queue. A shallow one (5 ms), as a switch port has: a
// flow squeezed there loses packets and retransmits (with 20 ms the flows
// settled into a standing queue with no loss for seconds at a time, and a
// squeezed sender showed only delay: docs/network.md). All of it (and the IFB devices the agent
// adds to limit the tenants' ports) is deleted when this goes, also on failure.
class SharedLink {
 public:
  explicit SharedLink(int mbit)
      : mbit_(mbit),
        // Interface names hold 15 characters: "fw" + 6 hex digits + a suffix.
        id_(absl::StrFormat("fw%06x", absl::Uniform<uint32_t>(absl::BitGen(), 0, 1u << 24))),
        // Namespaces carry the pid, so deploy/test.sh can sweep a killed run's.
        ns_prefix_(absl::StrCat("fwtest-net-", getpid(), "-", id_)),
        subnet_(absl::StrCat("10.251.", absl::Uniform<int>(absl::BitGen(), 0, 250), ".")) {}
  ~SharedLink() {
    for (const auto& [tenant, ifindex] : ifindex_) {
      // The agent's IFB for a limit it had no time to lift (agent/net_shaper.h).
      const std::string ifb = absl::StrCat("fwi", ifindex);
      if (std::filesystem::exists("/sys/class/net/" + ifb)) Ip({"link", "del", ifb});
    }
    // The veths go with their namespaces; the bridge is ours to delete.
    for (const std::string& ns : namespaces_) Ip({"netns", "del", ns});
    for (const std::string& link : links_) {
      if (std::filesystem::exists("/sys/class/net/" + link)) Ip({"link", "del", link});
    }
  }
  SharedLink(const SharedLink&) = delete;
  SharedLink& operator=(const SharedLink&) = delete;

  absl::Status Build(const std::vector<std::string>& tenants) {
    const std::string bridge = id_ + "br";
    RETURN_IF_ERROR(Fresh(bridge));
    RETURN_IF_ERROR(IpOk({"link", "add", bridge, "type", "bridge"}));
    links_.push_back(bridge);  // only what was made here is deleted
    RETURN_IF_ERROR(IpOk({"link", "set", bridge, "alias", ns_prefix_}));
    RETURN_IF_ERROR(IpOk({"link", "set", bridge, "up"}));
    int host = 1;
    auto port = [&](const std::string& who, const std::string& side) -> absl::Status {
      const std::string ns = Netns(who);
      RETURN_IF_ERROR(Fresh(side));
      if (std::filesystem::exists("/run/netns/" + ns)) {
        return absl::AlreadyExistsError("network namespace " + ns + " exists: not ours");
      }
      RETURN_IF_ERROR(IpOk({"netns", "add", ns}));
      namespaces_.push_back(ns);
      RETURN_IF_ERROR(
          IpOk({"link", "add", side, "type", "veth", "peer", "name", "eth0", "netns", ns}));
      RETURN_IF_ERROR(IpOk({"link", "set", side, "master", bridge, "up"}));
      RETURN_IF_ERROR(IpOk({"-n", ns, "link", "set", "lo", "up"}));
      RETURN_IF_ERROR(IpOk({"-n", ns, "link", "set", "eth0", "up"}));
      const std::string address = who == "upstream" ? server_ip() : absl::StrCat(subnet_, host++);
      return IpOk({"-n", ns, "addr", "add", address + "/24", "dev", "eth0"});
    };
    RETURN_IF_ERROR(port("upstream", uplink()));
    for (size_t i = 0; i < tenants.size(); ++i) {
      const std::string side = absl::StrCat(id_, "t", i);
      host_side_[tenants[i]] = side;
      RETURN_IF_ERROR(port(tenants[i], side));
      std::ifstream index("/sys/class/net/" + side + "/ifindex");
      index >> ifindex_[tenants[i]];
    }
    CommandResult tc =
        RunCommand({Which("tc"), "qdisc", "add", "dev", uplink(), "root", "tbf", "rate",
                    absl::StrCat(mbit_, "mbit"), "burst", "64kb", "latency", "5ms"});
    if (tc.exit_code != 0) return absl::InternalError("tc qdisc add tbf: " + tc.err);
    return absl::OkStatus();
  }

  std::string Netns(const std::string& who) const { return absl::StrCat(ns_prefix_, "-", who); }
  // argv run inside `who`'s namespace.
  std::vector<std::string> In(const std::string& who, std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {Which("ip"), "netns", "exec", Netns(who)});
    return argv;
  }
  std::string uplink() const { return id_ + "up"; }
  std::string server_ip() const { return subnet_ + "254"; }
  double bytes_per_s() const { return mbit_ * 1e6 / 8; }
  // What the tenant has sent: its port's host-side receive counter.
  std::optional<uint64_t> SentBytes(const std::string& tenant) const {
    std::ifstream in("/sys/class/net/" + host_side_.at(tenant) + "/statistics/rx_bytes");
    uint64_t bytes = 0;
    if (in >> bytes) return bytes;
    return std::nullopt;
  }
  // The IFB the agent shapes the tenant's sending through, when it exists.
  bool Shaped(const std::string& tenant) const {
    return std::filesystem::exists(absl::StrCat("/sys/class/net/fwi", ifindex_.at(tenant)));
  }

 private:
  static void Ip(std::vector<std::string> args) {
    args.insert(args.begin(), Which("ip"));
    (void)RunCommand(args, 30);
  }
  static absl::Status Fresh(const std::string& link) {
    if (!std::filesystem::exists("/sys/class/net/" + link)) return absl::OkStatus();
    return absl::AlreadyExistsError("interface " + link + " exists: not ours");
  }
  static absl::Status IpOk(std::vector<std::string> args) {
    args.insert(args.begin(), Which("ip"));
    CommandResult r = RunCommand(args, 30);
    if (r.exit_code == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(absl::StrJoin(args, " "), ": ", r.err));
  }

  int mbit_;
  std::string id_;
  std::string ns_prefix_;
  std::string subnet_;
  std::vector<std::string> namespaces_;
  std::vector<std::string> links_;
  std::map<std::string, std::string> host_side_;
  std::map<std::string, int> ifindex_;
};

// Bytes per second each tenant sent over `span`, from the kernel (NaN when unreadable).
std::map<std::string, double> SendRates(const SharedLink& link,
                                        const std::vector<std::string>& tenants,
                                        absl::Duration span) {
  std::map<std::string, std::optional<uint64_t>> before;
  for (const std::string& t : tenants) before[t] = link.SentBytes(t);
  const absl::Time t0 = absl::Now();
  Pause(span);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  std::map<std::string, double> rates;
  for (const std::string& t : tenants) {
    const std::optional<uint64_t> after = link.SentBytes(t);
    rates[t] = before[t] && after && *after >= *before[t]
                   ? static_cast<double>(*after - *before[t]) / seconds
                   : std::nan("");
  }
  return rates;
}

std::string Mbit(double bytes_per_s) {
  return absl::StrFormat("%.1f Mbit/s", bytes_per_s * 8 / 1e6);
}

// A tenant floods a shaped uplink with eight TCP streams next to a tenant
// that sends a steady 40 % of it: the flooder gets a network limit on its
// port and the neighbour's throughput comes back.
void NetHogScenario(ScenarioContext& ctx, Outcome& out) {
  constexpr int kMbit = 100;
  SharedLink link(kMbit);
  SCENARIO_REQUIRE_OK(out, link.Build({"web", "hog"}));
  Stack::Options options;
  // The uplink is the host's network capacity (docs/network.md), and only it:
  // the machine's own NICs carry none of this traffic.
  options.agent_extra = absl::StrFormat(
      "interface_capacity { name: \"%s\" rx_bytes_per_s: %.0f tx_bytes_per_s: %.0f }\n",
      link.uplink(), link.bytes_per_s(), link.bytes_per_s());
  for (const auto& entry : std::filesystem::directory_iterator("/sys/class/net")) {
    if (std::filesystem::exists(entry.path() / "device")) {
      absl::StrAppend(&options.agent_extra, "interface_capacity { name: \"",
                      entry.path().filename().string(), "\" exclude: true }\n");
    }
  }
  // The servers go after the tenants (declared first, destroyed last).
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  Daemon iperf_server(link.In("upstream", {Which("iperf3"), "-s", "-p", "5201"}),
                      ctx.dir + "/iperf3-server.log");
  Daemon sink(link.In("upstream", {self, "--sink", "5300"}), ctx.dir + "/sink.log");
  SCENARIO_REQUIRE(out, iperf_server.Start() && sink.Start(), "cannot start the servers upstream");
  World w(ctx, {"web", "hog"}, options);
  SCENARIO_REQUIRE_OK(out, w.Start(2));
  w.say.Say(
      absl::StrCat("web and hog each in a network namespace of their own, bridged to one "
                   "uplink shaped to ",
                   kMbit, " Mbit/s (", link.uplink(), ": the host's capacity)"));
  const double steady = 0.4 * link.bytes_per_s();
  SCENARIO_REQUIRE_OK(
      out, w.tenants.Run("web", link.In("web", {self, "--steady-send", link.server_ip() + ":5300",
                                                "--send-rate", absl::StrFormat("%.0f", steady)})));
  // A process in hog's namespace, so its port is found and counted before it sends.
  SCENARIO_REQUIRE_OK(out, w.tenants.Run("hog", link.In("hog", {"sleep", "3600"})));
  w.say.Say(absl::StrCat("web sends a steady ", Mbit(steady), " upstream over one TCP connection"));
  Pause(absl::Seconds(8));  // ports found (2 s rescans), quiet intervals: baselines
  std::map<std::string, double> quiet = SendRates(link, {"web"}, absl::Seconds(5));
  w.say.Say(absl::StrCat("quiet: web sends ", Mbit(quiet["web"]), " (kernel, over 5 s)"));
  SCENARIO_REQUIRE(out, quiet["web"] > 0.8 * steady,
                   absl::StrCat("web sends only ", Mbit(quiet["web"]), " on a quiet link"));

  const std::optional<uint64_t> web_at_start = link.SentBytes("web");
  const absl::Time t0 = absl::Now();
  absl::StatusOr<pid_t> flood = w.tenants.Spawn(
      "hog", link.In("hog", {"iperf3", "-c", link.server_ip(), "-p", "5201", "-P", "8", "-t", "600",
                             "--logfile", ctx.dir + "/hog-iperf3.log"}));
  SCENARIO_REQUIRE_OK(out, flood.status());
  w.say.Say("hog starts iperf3 with 8 streams upstream, as fast as the link goes");
  std::optional<Detection> d = WaitForLimit(w, "hog", t0, absl::Seconds(20), v1::RESOURCE_NET_TX);
  const std::optional<uint64_t> web_at_limit = link.SentBytes("web");
  if (!d.has_value()) {
    for (const char* n : {"hog", "web"}) {
      out.Check(false,
                w.stack->CliTable({"tenant", w.tenants.Id(n), "--host", w.stack->host_id()}).out);
    }
  }
  SCENARIO_REQUIRE(out, d.has_value(), "no network limit on hog within 20 s of its start");
  out.Figure("case_opened", d->opened_s, "s");
  out.Figure("detect", d->applied_s, "s");
  if (web_at_start && web_at_limit && d->applied_s > 0) {
    const double hit = static_cast<double>(*web_at_limit - *web_at_start) / d->applied_s;
    out.Figure("web_flooded_mbit", hit * 8 / 1e6, "Mbit/s");
    w.say.Say(absl::StrCat("until the limit web sent ", Mbit(hit)));
  }
  CheckEvidence(w, out, d->record, "hog", {"web"});
  const v1::CaseAction& limit = d->record.actions(0);
  SCENARIO_REQUIRE(out, limit.ack() == v1::ACK_STATE_APPLIED,
                   absl::StrCat("limit not applied: ", limit.ack_message()));
  out.Check(link.Shaped("hog"), "no IFB shaping what hog sends");
  if (w.say.on()) {
    w.say.Say(absl::StrCat("what an operator sees: fairwatch case ", d->record.case_id()));
    w.say.Show(w.stack->CliTable({"case", absl::StrCat(d->record.case_id())}).out);
  }
  std::optional<double> settled =
      WaitSettled(*w.watcher, d->record.case_id(), t0, absl::Seconds(45));
  SCENARIO_REQUIRE(out, settled.has_value(), "hog's limit still moving 45 s after its start");
  out.Figure("settled", *settled, "s");
  std::map<std::string, double> under = SendRates(link, {"web", "hog"}, absl::Seconds(6));
  w.say.Say(absl::StrCat("with hog limited (kernel, over 6 s): web ", Mbit(under["web"]), ", hog ",
                         Mbit(under["hog"])));
  const double share = under["web"] / quiet["web"];
  out.Figure("web_of_fair_share", share, "");
  // Fair share: web wants 40 % of a link two tenants share, so all it asks.
  out.Check(share >= 0.9, absl::StrCat("web sent ", Mbit(under["web"]), ", ", Fmt(share),
                                       " of its fair share ", Mbit(quiet["web"])));

  const absl::Time t_stop = absl::Now();
  kill(*flood, SIGTERM);
  w.say.Say("hog stops sending");
  CheckReleased(
      *w.watcher, *w.stack, out, d->record.case_id(), t_stop, [&] { return !link.Shaped("hog"); },
      w.tenants.Id("hog"), "hog");
}

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
      WaitSettled(*w.watcher, d->record.case_id(), t0, absl::Seconds(45));
  SCENARIO_REQUIRE(out, settled.has_value(), "hog's limit still moving 45 s after its start");
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

const std::vector<Scenario>& AllScenarios() {
  static const std::vector<Scenario> scenarios = {
      {"cpu-hog",
       "a CPU hog next to two steady neighbours: limited, neighbours served, released",
       {"stress-ng"},
       CpuHogScenario},
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
      {"disk-hog",
       "direct writes flooding the disk next to a latency-sensitive reader: an I/O "
       "limit, the reader's latency recovers",
       {"fio"},
       DiskHogScenario},
      {"net-hog",
       "eight TCP streams flooding a shared uplink next to a steady sender: a network limit "
       "on the flooder, the neighbour's throughput recovers",
       {"iperf3", "tc", "ip"},
       NetHogScenario},
      {"controller-restart",
       "controller killed with a limit in force: lease reverts it; restart keeps history and "
       "gets the buffered reports",
       {"stress-ng"},
       ControllerRestartScenario},
      {"vm-hog",
       "a libvirt guest with two busy vCPUs next to two steady guests: limited through libvirt, "
       "the neighbours served, released",
       {},
       VmHogScenario},
  };
  return scenarios;
}

}  // namespace fairwatch::testing::e2e
