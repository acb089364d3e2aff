#include "tests/e2e/scenario_kit.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace fairwatch::testing::e2e {

int Cpus() { return static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)); }

// A steady tenant: `percent` of a core's worth of work every 10 ms, done
// whenever it gets to run (this binary's --steady-work).
std::vector<std::string> Steady(int percent) {
  return {std::filesystem::read_symlink("/proc/self/exe").string(), "--steady-work",
          absl::StrFormat("%.2f", percent / 100.0)};
}
// As many busy workers as the host has CPUs: a tenant that wants everything.
std::vector<std::string> Hog() { return {"stress-ng", "--cpu", absl::StrCat(Cpus()), "--quiet"}; }

ScenarioContext Variant(const ScenarioContext& ctx, const std::string& name) {
  ScenarioContext variant = ctx;
  variant.dir = absl::StrCat(ctx.dir, "/", name);
  std::error_code ec;
  std::filesystem::create_directories(variant.dir, ec);
  return variant;
}

std::string Fmt(double v) { return absl::StrFormat("%.2f", v); }

// The first case of `tenant_id` on `resource` (one that began with a limit,
// when `limited`: a skip recorded earlier is its own, closed case), if any.
const v1::Case* FindCase(const std::vector<v1::Case>& cases, const std::string& tenant_id,
                         v1::Resource resource, bool limited) {
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

World::World(ScenarioContext& ctx, const std::vector<std::string>& names, Stack::Options options)
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

absl::Status World::Start(size_t tenant_count) {
  if (!made.ok()) return made;
  absl::Status up = stack->Start(tenant_count);
  if (up.ok()) {
    say.Say(absl::StrCat("controller and agent up on loopback; ", tenant_count,
                         " tenant cgroups under ", tenants.prefix()));
  }
  return up;
}

std::map<std::string, double> World::Rates(const std::vector<std::string>& names,
                                           absl::Duration span, absl::string_view when) {
  std::map<std::string, double> rates = tenants.CpuRates(names, span);
  std::vector<std::string> parts;
  for (const auto& [n, r] : rates) parts.push_back(absl::StrCat(n, " ", Cores(r)));
  say.Say(absl::StrCat(when, " (kernel, over ", absl::FormatDuration(span),
                       "): ", absl::StrJoin(parts, ", ")));
  return rates;
}

// Waits for the policy's first limit on the tenant with id `tenant_id` to be
// applied (or to fail).
std::optional<Detection> WaitForLimitOn(CaseWatcher& watcher, const std::string& tenant_id,
                                        absl::Time t0, absl::Duration timeout,
                                        v1::Resource resource) {
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
                                      absl::Duration timeout, v1::Resource resource) {
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

// Waits until the limit of case `case_id` has not moved for longer than two
// step intervals (11 s: a step needs its harm to persist through the latest
// intervals after a step interval); returns seconds from `t0` to its last move.
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
          return absl::Now() - absl::FromUnixNanos(last) > absl::Seconds(11);
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

std::optional<v1::HarmSignals> HarmOfId(World& w, const std::string& tenant_id, int window) {
  v1::TenantDetail detail;
  if (!w.stack->CliJson(
          {"tenant", tenant_id, "--host", w.stack->host_id(), "--window", absl::StrCat(window)},
          &detail)) {
    return std::nullopt;
  }
  return detail.harm();
}
std::optional<v1::HarmSignals> HarmOf(World& w, const std::string& name, int window) {
  return HarmOfId(w, w.tenants.Id(name), window);
}

void CheckRecovered(Outcome& out, CaseWatcher& watcher, uint64_t case_id, const std::string& who,
                    const std::string& who_id, absl::string_view signal, double quiet,
                    double limited, double floor, absl::string_view unit) {
  const std::string name = absl::StrCat(who, "_", signal);
  out.Figure(absl::StrCat(name, "_quiet"), quiet, unit);
  out.Figure(absl::StrCat(name, "_limited"), limited, unit);
  const bool recovered = limited <= std::max(2 * quiet, floor);
  out.Figure(absl::StrCat(name, "_recovered"), recovered ? 1 : 0, "");
  if (recovered) return;
  // Not recovered: whether the case says so (issue 19's target; not yet met
  // on every resource, so recorded rather than checked: docs/performance.md).
  bool said = false;
  for (const v1::Case& c : watcher.Poll()) {
    if (c.case_id() != case_id) continue;
    for (const v1::CaseAction& a : c.actions()) {
      said = said || (absl::StrContains(a.reason(), "not recovered: ") &&
                      absl::StrContains(a.reason(), who_id));
    }
  }
  out.Figure(absl::StrCat(name, "_case_says"), said ? 1 : 0, "");
}

void CheckWorkConserved(Outcome& out, CaseWatcher& watcher, uint64_t case_id, double used,
                        double capacity, double demand,
                        const std::function<std::string(double)>& format, bool required) {
  const double available = std::min(capacity, demand);
  const double share = available > 0 ? used / available : 1;
  out.Figure("host_use_of_available", share, "");
  if (share >= 0.9) return;
  const v1::CaseAction* last = nullptr;
  std::vector<v1::Case> cases = watcher.Poll();
  for (const v1::Case& c : cases) {
    if (c.case_id() != case_id) continue;
    for (const v1::CaseAction& a : c.actions()) {
      if (a.kind() != v1::ACTION_KIND_RENEW) last = &a;
    }
  }
  const bool held_for_harm = last != nullptr && last->kind() == v1::ACTION_KIND_STEP_DOWN &&
                             last->limit() < last->seen().sized_cap();
  out.Figure("held_below_sized_for_harm", held_for_harm ? 1 : 0, "");
  out.Check(held_for_harm || !required,
            absl::StrCat("the host used ", format(used), " of ", format(available),
                         " (min of capacity ", format(capacity), " and demand ", format(demand),
                         "): ", Fmt(share), ", and the offender is not held there for harm"));
}

}  // namespace fairwatch::testing::e2e
