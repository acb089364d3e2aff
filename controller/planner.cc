#include "controller/planner.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/units.h"

namespace fairwatch::controller {
namespace {

// Harm persists when it was seen in step_down_harmed_fraction of the latest
// this many intervals since the last step (at a 1 s interval, a step interval).
constexpr uint32_t kPersistWindow = 5;
// ... from a tenant that used its limit in this share of the latest this
// many intervals since the last step: a tenant on for 2 s and off for 2 s
// touches 3 intervals in 4 of 1 s, so 4 of the latest 5 caught it now and
// then (a cap 28 s after its first limit, in CI); 9 of 10 does not.
constexpr uint32_t kBindingWindow = 10;
constexpr double kBindingFraction = 0.9;

const ResourceVerdict* FindVerdict(const Evaluation& evaluation, v1::Resource resource) {
  for (const ResourceVerdict& v : evaluation.verdicts) {
    if (v.resource == resource) return &v;
  }
  return nullptr;
}

const TenantShare* FindShare(const ResourceVerdict* verdict, const std::string& tenant_id) {
  if (verdict == nullptr) return nullptr;
  for (const TenantShare& s : verdict->judgement.tenants) {
    if (s.id == tenant_id) return &s;
  }
  return nullptr;
}

// Whether the interval has the tenant on any judged resource.
bool InInterval(const Evaluation& evaluation, const std::string& tenant_id) {
  for (const ResourceVerdict& v : evaluation.verdicts) {
    for (const TenantShare& s : v.judgement.tenants) {
      if (s.id == tenant_id) return true;
    }
  }
  return false;
}

// The neighbours of one tenant on one resource in one interval, as the
// planner weighs them.
struct Neighbours {
  double need = 0;         // what they want, together
  uint32_t suffering = 0;  // harmed, or short of what they want
  double severity = 0;     // the worst of them (HarmVerdict::severity, or the shortfall)
};

// What a neighbour wants: what it uses, and, when it suffers, at least what
// it used in quiet intervals (a squeezed sender's rate is not what it
// wants). Not CPU's demand (use plus run-queue wait): a tenant that wakes
// often and waits behind the offender shows its waiting as demand it would
// not use (a 0.4-core tenant waiting 0.35 cores of the time read as needing
// 0.75), and with the offender's weight lowered the kernel gives the
// neighbours what they ask first, so their use is what they want.
double Wants(const TenantShare& s, bool suffering) {
  return suffering ? std::max(s.usage, s.quiet_usage) : s.usage;
}

// Whether a disk or network neighbour gets under `shortfall` of its quiet
// rate while the resource is busy: it wants more than it gets (these
// resources show no demand; a TCP sender behind a full queue slows down
// without losing a packet).
bool ShortOfIt(const TenantShare& s, v1::Resource resource, const IntervalJudgement& j,
               const PlannerParams& p) {
  return resource != v1::RESOURCE_CPU && s.active && s.quiet_usage > 0 &&
         j.total_usage >= p.busy_fraction * j.capacity &&
         s.usage < p.shortfall_fraction * s.quiet_usage;
}

Neighbours Assess(const ResourceVerdict& verdict, const std::string& self, const PlannerParams& p) {
  Neighbours n;
  for (const TenantShare& s : verdict.judgement.tenants) {
    if (s.id == self) continue;
    const bool short_of_it = ShortOfIt(s, verdict.resource, verdict.judgement, p);
    n.need += Wants(s, s.harmed || short_of_it);
    if (!s.harmed && !short_of_it) continue;
    ++n.suffering;
    double severity = s.harmed ? std::max(1.0, s.severity) : 0;
    if (short_of_it) {
      severity = std::max(severity, p.shortfall_fraction * s.quiet_usage / std::max(s.usage, 1e-9));
    }
    n.severity = std::max(n.severity, severity);
  }
  return n;
}

// The cap that leaves the neighbours what they need plus headroom, never
// below the floor.
double SizedCap(double capacity, double need, double floor, const PlannerParams& p) {
  return std::max(floor, capacity * (1 - p.headroom) - need);
}

// The interval as an action records it: the host's use, the tenant's, and
// its neighbours that were harmed when the case opened or suffer now.
v1::ActionContext Context(const ResourceVerdict* verdict, uint64_t seq, const std::string& self,
                          const std::vector<std::string>& victims, double need, double sized,
                          const PlannerParams& p) {
  v1::ActionContext seen;
  if (verdict == nullptr) return seen;
  const IntervalJudgement& j = verdict->judgement;
  seen.set_report_seq(seq);
  seen.set_capacity(j.capacity);
  seen.set_host_usage(j.total_usage);
  seen.set_neighbours_need(need);
  seen.set_sized_cap(sized);
  constexpr int kMaxNeighbours = 8;
  for (const TenantShare& s : j.tenants) {
    if (s.id == self) {
      seen.set_tenant_usage(s.usage);
      continue;
    }
    const bool short_of_it = ShortOfIt(s, verdict->resource, j, p);
    const bool suffering = s.harmed || short_of_it;
    if (!suffering && std::find(victims.begin(), victims.end(), s.id) == victims.end()) continue;
    if (seen.neighbours_size() >= kMaxNeighbours) continue;
    v1::NeighbourSeen* n = seen.add_neighbours();
    n->set_tenant_id(s.id);
    n->set_usage(s.usage);
    n->set_wants(Wants(s, true));
    n->set_suffering(suffering);
    for (const std::string& e : s.evidence) n->add_evidence(e);
    if (short_of_it) {
      n->add_evidence(absl::StrFormat("getting %.0f %% of its quiet rate %s",
                                      100 * s.usage / s.quiet_usage,
                                      FormatAmount(s.quiet_usage, verdict->resource)));
    }
  }
  return seen;
}

// Folds an interval's suffering neighbours into `unrecovered` and forgets
// those not harmed in the latest `window` intervals.
void NoteUnrecovered(const v1::ActionContext& seen, uint64_t seq, uint32_t window,
                     UnrecoveredNeighbours* unrecovered) {
  for (const v1::NeighbourSeen& n : seen.neighbours()) {
    if (!n.suffering()) continue;
    (*unrecovered)[n.tenant_id()] = {absl::StrJoin(n.evidence(), ", "), seq};
  }
  std::erase_if(*unrecovered,
                [&](const auto& entry) { return entry.second.second + window <= seq; });
}

// Notes that the case has named every neighbour in `unrecovered`.
void SaidUnrecovered(const UnrecoveredNeighbours& unrecovered, std::set<std::string>* said) {
  for (const auto& [id, last] : unrecovered) said->insert(id);
}

// Which neighbours' signals have not recovered, in words: "reader (I/O
// latency p99 8.1 ms (baseline 0.6 ms))".
std::string Unrecovered(const UnrecoveredNeighbours& unrecovered) {
  std::vector<std::string> parts;
  for (const auto& [id, last] : unrecovered)
    parts.push_back(absl::StrCat(id, " (", last.first, ")"));
  return parts.empty() ? "none now" : absl::StrJoin(parts, "; ");
}

}  // namespace

bool Planner::DryRun(v1::Resource resource) const {
  return params_.dry_run ||
         std::find(params_.dry_run_resources.begin(), params_.dry_run_resources.end(), resource) !=
             params_.dry_run_resources.end();
}

double Planner::LimitOf(const std::string& host_id, const std::string& tenant_id,
                        v1::Resource resource) const {
  auto it = cases_.find(Key(host_id, tenant_id, resource));
  return it == cases_.end() ? 0 : it->second.limit;
}

LimitsInForce Planner::LimitsOn(const std::string& host_id) const {
  LimitsInForce limits;
  for (const auto& [key, c] : cases_) {
    // Every case: its cap, or 0 with only the weight lowered (held back, but
    // its demand bounded by nothing).
    if (std::get<0>(key) == host_id) limits[std::get<1>(key)][std::get<2>(key)] = c.limit;
  }
  return limits;
}

std::vector<PlannedAction> Planner::Plan(absl::Time now, const Evaluation& evaluation,
                                         size_t host_tenants, const ExemptFn& exempt) {
  std::vector<PlannedAction> actions;
  if (evaluation.seq == 0) return actions;  // an interval already planned for
  const std::string& host = evaluation.host_id;
  // Every action but a release carries the levers of the case as they stand.
  auto action = [&](const Key& key, v1::ActionKind kind, double limit, absl::Time lease,
                    bool dry_run, std::string reason) -> PlannedAction& {
    PlannedAction& a = actions.emplace_back();
    a.host_id = host;
    a.tenant_id = std::get<1>(key);
    a.resource = std::get<2>(key);
    a.kind = kind;
    a.limit = limit;
    if (auto c = cases_.find(key); c != cases_.end() && kind != v1::ACTION_KIND_RELEASE) {
      a.weight = c->second.weight;
    }
    a.lease_expires = lease;
    a.dry_run = dry_run;
    a.reason = std::move(reason);
    return a;
  };

  // Offenders now that each caused a large part of the victims' waiting:
  // never refused a cap by the cap on capped tenants.
  size_t strong = 0;
  for (const Finding& f : evaluation.findings) {
    if (f.offender.blame >= params_.co_offender_blame) ++strong;
  }
  const size_t cap_bound =
      std::max({size_t{1},
                static_cast<size_t>(
                    std::floor(params_.max_limited_fraction * static_cast<double>(host_tenants))),
                strong});
  size_t capped = 0;
  for (const auto& [key, c] : cases_) {
    if (std::get<0>(key) == host && c.limit > 0) ++capped;
  }

  // Cases in progress on this host.
  for (auto it = cases_.begin(); it != cases_.end();) {
    const Key& key = it->first;
    Case& c = it->second;
    if (std::get<0>(key) != host) {
      ++it;
      continue;
    }
    const v1::Resource resource = std::get<2>(key);
    const ResourceVerdict* verdict = FindVerdict(evaluation, resource);
    const TenantShare* share = FindShare(verdict, std::get<1>(key));
    if (share == nullptr && !InInterval(evaluation, std::get<1>(key))) {
      PlannedAction& a = action(key, v1::ACTION_KIND_RELEASE, 0, now, c.dry_run,
                                "the tenant is gone from the host");
      a.seen = Context(verdict, evaluation.seq, std::get<1>(key), c.victims, 0, 0, params_);
      it = cases_.erase(it);
      continue;
    }
    // Without a share the tenant is there but this resource was not judged
    // (its capacity is unknown on the host): no neighbour is seen harmed on it.
    Neighbours nb;
    double need = 0;
    double sized = 0;  // 0: unknown
    if (share != nullptr) {
      nb = Assess(*verdict, std::get<1>(key), params_);
      c.need.push_back(nb.need);
      if (c.need.size() > params_.need_window) c.need.erase(c.need.begin());
      need = *std::max_element(c.need.begin(), c.need.end());
      sized = SizedCap(verdict->judgement.capacity, need, c.floor, params_);
    }
    // What the interval showed, built only for an action or a harmed one.
    std::optional<v1::ActionContext> seen_built;
    auto seen = [&]() -> const v1::ActionContext& {
      if (!seen_built) {
        seen_built =
            Context(verdict, evaluation.seq, std::get<1>(key), c.victims, need, sized, params_);
      }
      return *seen_built;
    };
    auto step = [&](v1::ActionKind kind, double limit, std::string reason) {
      c.stepped_up = c.limit > 0 && limit > c.limit;  // a raise, not a first cap
      c.limit = limit;
      c.last_step = now;
      c.intervals_since_step = 0;
      c.severity_since_step = 0;
      c.lease_expires = now + params_.lease;
      action(key, kind, c.limit, c.lease_expires, c.dry_run, std::move(reason)).seen = seen();
    };
    bool acted = c.manual;  // an operator's limit stays as set
    const bool step_due = now - c.last_step >= params_.step_interval;
    const bool weight_only = c.limit == 0;
    // Usage is unknown when the resource was not judged: never "stopped".
    // With only its weight lowered, it has stopped once it wants no more
    // than its entitlement: then nobody needs it lowered. Its demand, not its
    // usage: under the lowered weight it gets only what is idle, which may be
    // less than its entitlement while it still wants much more.
    const bool idle =
        share != nullptr && (weight_only ? share->demand <= share->entitled
                                         : share->usage < params_.release_below_fraction * c.limit);
    if (!idle) {
      c.idle_since = absl::InfinitePast();
    } else if (c.idle_since == absl::InfinitePast()) {
      c.idle_since = now;
    }
    const bool suffering = nb.suffering > 0;
    ++c.intervals_since_step;
    c.harmed_bits = (c.harmed_bits << 1) | (suffering ? 1 : 0);
    c.binding_bits = (c.binding_bits << 1) | (idle ? 0 : 1);
    c.severity_since_step += nb.severity;
    if (suffering) {
      c.quiet_since = absl::InfinitePast();
    } else if (c.quiet_since == absl::InfinitePast()) {
      c.quiet_since = now;
    }
    const bool quiet_long = !suffering && now - c.quiet_since >= params_.quiet_period;
    if (quiet_long) {
      c.exhausted = false;  // the harm ended: a lower cap may be tried again
      c.said_unrecovered.clear();
      c.unrecovered.clear();
    }
    NoteUnrecovered(suffering ? seen() : v1::ActionContext(), evaluation.seq, kPersistWindow,
                    &c.unrecovered);
    // Harm that persists, judged on the latest kPersistWindow intervals since
    // the last step (harm that began after a quiet spell counts once it has
    // lasted, not diluted by the quiet before it), from a tenant that keeps
    // using its limit (or, with only its weight lowered, keeps taking more
    // than its entitlement) through the latest kBindingWindow: a tenant that
    // bursts leaves its neighbours behind on their work, so they wait in its
    // idle intervals too, and it would be stepped every step interval.
    const uint32_t recent = std::min(c.intervals_since_step, kPersistWindow);
    const uint32_t recent_binding = std::min(c.intervals_since_step, kBindingWindow);
    const bool harm_persists = std::popcount(c.harmed_bits & ((1u << recent) - 1)) >=
                                   params_.step_down_harmed_fraction * recent &&
                               std::popcount(c.binding_bits & ((1u << recent_binding) - 1)) >=
                                   kBindingFraction * recent_binding;
    const double mean_severity = c.severity_since_step / c.intervals_since_step;
    auto quiet_for = [&] {
      return absl::FormatDuration(absl::Trunc(now - c.quiet_since, absl::Seconds(1)));
    };
    // Set by a branch below that ends the case.
    std::optional<std::string> release;
    if (c.manual || share == nullptr) {
      // An operator's limit, or the resource not judged here: kept as it
      // is, renewed below.
    } else if (idle && now - c.idle_since >= params_.quiet_period) {
      release =
          weight_only
              ? absl::StrCat(
                    "wanting no more than its entitlement ",
                    FormatAmount(share->entitled, resource), " for ",
                    absl::FormatDuration(absl::Trunc(now - c.idle_since, absl::Seconds(1))),
                    " (now using ", FormatAmount(share->usage, resource),
                    "): its weight is its own again")
              : absl::StrCat(
                    "its usage stayed under ", std::lround(100 * params_.release_below_fraction),
                    " % of its limit ", FormatAmount(c.limit, resource), " for ",
                    absl::FormatDuration(absl::Trunc(now - c.idle_since, absl::Seconds(1))),
                    " (now ", FormatAmount(share->usage, resource), "): it no longer needs one");
    } else if (weight_only) {
      // Its weight is lowered: the kernel serves the neighbours first. A cap
      // only when that did not end the harm, and only one that gives them
      // CPU they want: the sized one, when it binds. When it would not, they
      // already get what they want and what remains is latency (the turns
      // the scheduler still gives its threads on their CPUs, a tick each):
      // a cap below what they leave would idle the host and not remove it.
      const double cap = std::max(c.floor, sized);
      if (suffering && step_due && cap >= share->usage) {
        // No cap would give them more CPU, whether the harm persists or
        // comes and goes (a step interval after the weight, which takes a
        // moment to show): the case says so, once, at once.
        c.exhausted = true;
      } else if (suffering && step_due && harm_persists) {
        if (capped < cap_bound) {
          c.opening_usage = std::max(c.opening_usage, share->usage);
          c.limit_before_step = 0;
          c.severity_before_step = -1;
          ++capped;
          step(v1::ACTION_KIND_STEP_DOWN, cap,
               absl::StrCat("its lowered weight did not end the harm (", nb.suffering,
                            " neighbour(s) still harmed): capped at ", FormatAmount(cap, resource),
                            ", what its neighbours leave (they need ", FormatAmount(need, resource),
                            ", + ", std::lround(100 * params_.headroom), " % headroom)"));
          acted = true;
        }
      }
    } else if (suffering) {
      if (step_due && !idle && harm_persists) {
        if (c.stepped_up) {
          // Harm again under a cap it was raised to: not that high again for
          // a cool-down.
          c.harmful_cap = c.limit;
          c.harmful_when = now;
        }
        if (c.severity_before_step >= 0 && c.limit_before_step > c.limit &&
            mean_severity > (1 - params_.min_improvement) * c.severity_before_step) {
          // The last step down did not lower the harm: the cap is not what
          // causes it. Undone, and no lower cap tried while it lasts.
          std::string why = absl::StrFormat(
              "a cap of %s did not lower its neighbours' harm (severity %.2f, %.2f under %s): "
              "their harm does not follow its use; back to %s, no lower cap while the harm "
              "lasts; not recovered: %s",
              FormatAmount(c.limit, resource), mean_severity, c.severity_before_step,
              FormatAmount(c.limit_before_step, resource),
              FormatAmount(c.limit_before_step, resource), Unrecovered(c.unrecovered));
          c.exhausted = true;
          SaidUnrecovered(c.unrecovered, &c.said_unrecovered);  // this action's reason says it
          c.severity_before_step = -1;
          step(v1::ACTION_KIND_STEP_UP, c.limit_before_step, std::move(why));
          c.stepped_up = false;  // an undo, not a raise to try again later
          acted = true;
        } else if (c.limit > sized * (1 + params_.resize_margin) && !c.exhausted) {
          // Not once a lower cap was shown not to help: the sized cap also
          // falls with a capacity learned from what the device does now (a
          // disk's operations per busy second drop as its writer is capped):
          // disk-hog's IOPS cap was stepped again after its undo, with the
          // reader's p99 unchanged.
          c.severity_before_step = -1;
          step(v1::ACTION_KIND_STEP_DOWN, sized,
               absl::StrCat(nb.suffering, " neighbour(s) still harmed; cap lowered to ",
                            FormatAmount(sized, resource), ", what they need (",
                            FormatAmount(need, resource), ") + ",
                            std::lround(100 * params_.headroom), " % headroom left free"));
          acted = true;
        } else if (resource == v1::RESOURCE_CPU) {
          // At what its neighbours leave: they get the CPU they want; a
          // lower cap only idles the host (see the weight above).
          c.exhausted = true;
        } else if (!c.exhausted) {
          const double lower = std::max(c.floor, c.limit * params_.step_down);
          if (lower < c.limit) {
            c.limit_before_step = c.limit;
            c.severity_before_step = mean_severity;
            step(v1::ACTION_KIND_STEP_DOWN, lower,
                 absl::StrCat(nb.suffering,
                              " neighbour(s) still harmed with what they need left "
                              "free; cap lowered to ",
                              FormatAmount(lower, resource),
                              lower <= c.floor ? " (its floor: half its entitlement)" : ""));
            acted = true;
          }
        }
      } else if (resource == v1::RESOURCE_CPU && step_due && !idle &&
                 c.limit <= sized * (1 + params_.resize_margin)) {
        // Capped at what its neighbours leave and they are harmed now and
        // then: no lower cap would help (as above); the case says so.
        c.exhausted = true;
      }
    } else if (step_due) {
      const double ceiling = now - c.harmful_when < params_.cooldown
                                 ? std::min(sized, c.harmful_cap * params_.step_down)
                                 : sized;
      if (!idle && c.limit > sized * (1 + params_.resize_margin)) {
        // Its neighbours want more than it leaves them: resized before they suffer.
        c.severity_before_step = -1;
        step(v1::ACTION_KIND_STEP_DOWN, sized,
             absl::StrCat("its neighbours now need ", FormatAmount(need, resource),
                          ": cap lowered to ", FormatAmount(sized, resource),
                          ", what they leave with ", std::lround(100 * params_.headroom),
                          " % headroom"));
        acted = true;
      } else if (quiet_long && need <= 0.01 * verdict->judgement.capacity) {
        release = absl::StrCat("no neighbour harmed for ", quiet_for(),
                               ", and none wants any of it (they need ",
                               FormatAmount(need, resource), ")");
      } else if (quiet_long && sized >= c.opening_usage) {
        release = absl::StrCat("no neighbour harmed for ", quiet_for(), "; what they leave (",
                               FormatAmount(sized, resource),
                               ") is above its usage when the case opened (",
                               FormatAmount(c.opening_usage, resource), ")");
      } else if (quiet_long && c.limit * (1 + params_.resize_margin) < ceiling) {
        // Below what its neighbours leave (stepped down while they suffered):
        // back up towards it, never past it, nor, for a cool-down, back to
        // a cap under which they suffered.
        c.severity_before_step = -1;
        const double higher = std::min(ceiling, c.limit * params_.step_up);
        step(v1::ACTION_KIND_STEP_UP, higher,
             absl::StrCat("no neighbour harmed for ", quiet_for(), "; cap raised to ",
                          FormatAmount(higher, resource),
                          higher == sized ? absl::StrCat(", what its neighbours leave (they need ",
                                                         FormatAmount(need, resource), ")")
                                          : ""));
        acted = true;
      }
    }
    if (release) {
      action(key, v1::ACTION_KIND_RELEASE, 0, now, c.dry_run, *std::move(release)).seen = seen();
      cooldown_until_[key] = now + params_.cooldown;
      it = cases_.erase(it);
      continue;
    }
    // Renewed at half the lease, or at once when a neighbour is harmed that
    // the case has not named yet and nothing else is done about it (no lower
    // cap helps, it is at its floor, or the harm comes too seldom for a
    // step), a step interval after the last action: the case says which
    // signals did not recover and why when it knows, not half a lease later.
    const bool say_unrecovered =
        !c.manual && suffering && (c.exhausted || step_due) &&
        std::any_of(c.unrecovered.begin(), c.unrecovered.end(),
                    [&](const auto& u) { return !c.said_unrecovered.contains(u.first); });
    if ((!acted || c.manual) && (c.lease_expires - now <= params_.lease / 2 || say_unrecovered)) {
      SaidUnrecovered(c.unrecovered, &c.said_unrecovered);
      c.lease_expires = now + params_.lease;
      std::string why = "case still open";
      if (const int harmed = std::popcount(c.harmed_bits & 0x1f); harmed > 0 && !c.manual) {
        absl::StrAppend(&why, "; neighbours harmed in ", harmed, " of the last 5 intervals; ",
                        "not recovered: ", Unrecovered(c.unrecovered));
        if (c.exhausted) {
          absl::StrAppend(
              &why, resource == v1::RESOURCE_CPU
                        ? "; they get the CPU they want (its weight serves them first, any cap "
                          "leaves them what they need): what remains is the turns the scheduler "
                          "still gives its threads on their CPUs, a scheduler tick each, which a "
                          "lower cap or a shorter quota period does not remove (docs/policy.md, "
                          "\"What a cap cannot remove\")"
                        : "; a lower cap did not lower it");
        } else if (!weight_only && c.limit <= c.floor) {
          absl::StrAppend(&why, "; at its floor (half its entitlement)");
        } else if (!harm_persists) {
          absl::StrAppend(&why, "; harmed too seldom for a lower cap (",
                          std::lround(100 * params_.step_down_harmed_fraction),
                          " % of the intervals since the last step make one)");
        }
      }
      action(key, v1::ACTION_KIND_RENEW, c.limit, c.lease_expires, c.dry_run, std::move(why)).seen =
          seen();
    }
    ++it;
  }
  for (auto it = cooldown_until_.begin(); it != cooldown_until_.end();) {
    it = it->second <= now ? cooldown_until_.erase(it) : std::next(it);
  }

  // New offenders.
  for (const Finding& f : evaluation.findings) {
    const Key key(host, f.offender.id, f.resource);
    if (cases_.contains(key)) continue;
    const bool dry_run = DryRun(f.resource);
    if (std::optional<std::string> why = exempt ? exempt(host, f.offender.id) : std::nullopt) {
      action(key, v1::ACTION_KIND_SKIP, 0, now, dry_run, absl::StrCat("exempt: ", *why));
      continue;
    }
    if (auto cool = cooldown_until_.find(key); cool != cooldown_until_.end()) {
      action(key, v1::ACTION_KIND_SKIP, 0, now, dry_run,
             absl::StrCat("cooling down for another ",
                          absl::FormatDuration(absl::Trunc(cool->second - now, absl::Seconds(1))),
                          " after its last release"));
      continue;
    }
    const TenantShare& s = f.offender.share;
    const ResourceVerdict* verdict = FindVerdict(evaluation, f.resource);
    Case c;
    c.floor = params_.floor_fraction * s.entitled;
    c.opening_usage = s.usage;
    c.last_step = now;
    c.lease_expires = now + params_.lease;
    c.dry_run = dry_run;
    std::vector<std::string> harmed;
    for (const HarmedNeighbour& h : f.harmed) {
      c.victims.push_back(h.id);
      harmed.push_back(absl::StrCat(
          h.id, " (", absl::StrJoin(h.evidence, ", "), "; ", std::lround(100 * h.caused),
          h.measured ? " % of its run-queue wait was behind it)" : " % of the use was its)"));
    }
    const Neighbours nb =
        verdict != nullptr ? Assess(*verdict, f.offender.id, params_) : Neighbours{};
    const double need = nb.need;
    c.need.push_back(need);
    const double sized = SizedCap(f.capacity, need, c.floor, params_);
    const v1::ActionContext seen =
        Context(verdict, evaluation.seq, f.offender.id, c.victims, need, sized, params_);
    const std::string why = absl::StrCat(
        "using ", FormatAmount(s.usage, f.resource), " of ", FormatAmount(f.capacity, f.resource),
        ", above its entitlement ", FormatAmount(s.entitled, f.resource), " (fair share ",
        FormatAmount(s.fair, f.resource), "), in ", f.offender.flagged_intervals,
        " recent intervals", f.contended ? "; host contended" : "",
        harmed.empty() ? "" : "; harmed: ", absl::StrJoin(harmed, "; "));
    if (f.resource == v1::RESOURCE_CPU) {
      // The lightest lever first: it costs the offender nothing the
      // neighbours do not need, so it needs no cap on how many get it.
      c.weight = params_.weight_fraction;
      PlannedAction& a =
          action(key, v1::ACTION_KIND_LIMIT, 0, c.lease_expires, dry_run,
                 absl::StrCat(why, "; weight lowered to ", absl::StrFormat("%g %%", 100 * c.weight),
                              " of its own"));
      a.weight = c.weight;
      a.seen = seen;
      cases_.emplace(key, std::move(c));
      continue;
    }
    if (capped >= cap_bound) {
      action(key, v1::ACTION_KIND_SKIP, 0, now, dry_run,
             absl::StrCat("cap reached: ", capped, " of ", host_tenants,
                          " tenants on the host already capped"));
      continue;
    }
    // Sized from its neighbours: what they need, plus headroom, left free.
    // When that would not bind (the device delivers less under the mixed
    // load than the capacity it is judged against), a step below its usage,
    // judged like any step below the sized cap: undone if it did not help.
    std::string capped_at;
    if (sized < s.usage) {
      c.limit = sized;
      capped_at =
          absl::StrCat(", what its neighbours leave (they need ", FormatAmount(need, f.resource),
                       ", + ", std::lround(100 * params_.headroom), " % headroom)");
    } else {
      c.limit = std::max(c.floor, s.usage * params_.step_down);
      c.limit_before_step = s.usage;
      c.severity_before_step = nb.severity;
      capped_at = absl::StrCat(", below its usage (what its neighbours leave, ",
                               FormatAmount(sized, f.resource), ", would not bind)");
    }
    if (c.limit >= s.usage) {
      action(key, v1::ACTION_KIND_SKIP, 0, now, dry_run, "a cap at its floor would not bind");
      continue;
    }
    action(key, v1::ACTION_KIND_LIMIT, c.limit, c.lease_expires, dry_run,
           absl::StrCat(why, "; capped at ", FormatAmount(c.limit, f.resource), capped_at))
        .seen = seen;
    cases_.emplace(key, std::move(c));
    ++capped;
  }
  return actions;
}

PlannedAction Planner::Impose(absl::Time now, const std::string& host_id,
                              const std::string& tenant_id, v1::Resource resource, double limit,
                              std::string decided_by, std::string reason) {
  const Key key(host_id, tenant_id, resource);
  auto [it, inserted] = cases_.try_emplace(key);
  Case& c = it->second;
  c.limit = limit;
  // The operator's cap is the whole of it: a weight the policy had lowered
  // is no longer renewed and comes back when its lease ends.
  c.weight = 0;
  c.floor = 0;
  c.last_step = now;
  c.lease_expires = now + params_.lease;
  c.dry_run = false;
  c.manual = true;
  cooldown_until_.erase(key);
  PlannedAction a;
  a.host_id = host_id;
  a.tenant_id = tenant_id;
  a.resource = resource;
  a.kind = v1::ACTION_KIND_LIMIT;
  a.limit = limit;
  a.lease_expires = c.lease_expires;
  a.reason = std::move(reason);
  a.decided_by = std::move(decided_by);
  a.new_case = inserted;
  return a;
}

bool Planner::Lift(absl::Time now, const std::string& host_id, const std::string& tenant_id,
                   v1::Resource resource, std::string decided_by, std::string reason, bool cooldown,
                   PlannedAction* release) {
  const Key key(host_id, tenant_id, resource);
  auto it = cases_.find(key);
  if (it == cases_.end()) return false;
  release->host_id = host_id;
  release->tenant_id = tenant_id;
  release->resource = resource;
  release->kind = v1::ACTION_KIND_RELEASE;
  release->limit = 0;
  release->lease_expires = now;
  release->dry_run = it->second.dry_run;
  release->reason = std::move(reason);
  release->decided_by = std::move(decided_by);
  cases_.erase(it);
  if (cooldown) cooldown_until_[key] = now + params_.cooldown;
  return true;
}

std::vector<Planner::CaseRef> Planner::Cases() const {
  std::vector<CaseRef> out;
  out.reserve(cases_.size());
  for (const auto& [key, c] : cases_) {
    out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), c.manual, c.dry_run});
  }
  return out;
}

void Planner::SetDryRun(bool all, std::vector<v1::Resource> resources) {
  params_.dry_run = all;
  params_.dry_run_resources = std::move(resources);
}

}  // namespace fairwatch::controller
