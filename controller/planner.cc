#include "controller/planner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/units.h"

namespace fairwatch::controller {
namespace {

const TenantShare* FindShare(const Evaluation& evaluation, v1::Resource resource,
                             const std::string& tenant_id, uint32_t* others_harmed) {
  for (const ResourceVerdict& v : evaluation.verdicts) {
    if (v.resource != resource) continue;
    for (const TenantShare& s : v.judgement.tenants) {
      if (s.id != tenant_id) continue;
      *others_harmed = v.judgement.harmed - (s.harmed ? 1 : 0);
      return &s;
    }
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
    uint32_t others_harmed = 0;
    const TenantShare* share = FindShare(evaluation, resource, std::get<1>(key), &others_harmed);
    if (share == nullptr) {
      if (!InInterval(evaluation, std::get<1>(key))) {
        action(key, v1::ACTION_KIND_RELEASE, 0, now, c.dry_run, "the tenant is gone from the host");
        it = cases_.erase(it);
        continue;
      }
      // The tenant is there but this resource was not judged (its capacity is
      // unknown on the host): no neighbour is seen harmed on it.
      others_harmed = 0;
    }
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
    ++c.intervals_since_step;
    if (others_harmed > 0) ++c.harmed_since_step;
    if (!idle) ++c.binding_since_step;
    // Harm that persists, from a tenant that keeps using its limit (or, with
    // only its weight lowered, keeps taking more than its entitlement): a
    // tenant that bursts leaves its neighbours behind on their work, so they
    // wait in its idle intervals too, and it would be stepped every step
    // interval.
    const double needed = params_.step_down_harmed_fraction * c.intervals_since_step;
    const bool harm_persists = c.harmed_since_step >= needed && c.binding_since_step >= needed;
    if (c.manual) {
      // Renewed below.
    } else if (idle && now - c.idle_since >= params_.quiet_period) {
      action(
          key, v1::ACTION_KIND_RELEASE, 0, now, c.dry_run,
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
                    " (now ", FormatAmount(share->usage, resource), "): it no longer needs one"));
      cooldown_until_[key] = now + params_.cooldown;
      it = cases_.erase(it);
      continue;
    } else if (weight_only) {
      // Its weight is lowered: the kernel serves the neighbours first. A cap
      // only when that did not end the harm.
      if (others_harmed > 0) {
        c.quiet_since = absl::InfinitePast();
        if (step_due && harm_persists && share != nullptr) {
          const double cap = std::max(c.floor, share->fair * (1 + params_.headroom));
          if (cap < share->usage && capped < cap_bound) {
            c.limit = cap;
            c.opening_usage = std::max(c.opening_usage, share->usage);
            c.last_step = now;
            c.intervals_since_step = 0;
            c.harmed_since_step = 0;
            c.binding_since_step = 0;
            c.lease_expires = now + params_.lease;
            ++capped;
            action(key, v1::ACTION_KIND_STEP_DOWN, c.limit, c.lease_expires, c.dry_run,
                   absl::StrCat("its lowered weight did not end the harm (", others_harmed,
                                " neighbour(s) still harmed): capped at ",
                                FormatAmount(c.limit, resource), ", its fair share + ",
                                std::lround(100 * params_.headroom), " %"));
            acted = true;
          }
        }
      } else if (c.quiet_since == absl::InfinitePast()) {
        c.quiet_since = now;
      }
    } else if (others_harmed > 0) {
      c.quiet_since = absl::InfinitePast();
      const double lower = std::max(c.floor, c.limit * params_.step_down);
      // A limit it does not use is not what harms them: no step down then;
      // nor for harm now and then (a tenant that bursts): it would be
      // stepped every step interval.
      if (step_due && !idle && harm_persists && lower < c.limit) {
        c.limit = lower;
        c.last_step = now;
        c.intervals_since_step = 0;
        c.harmed_since_step = 0;
        c.binding_since_step = 0;
        c.lease_expires = now + params_.lease;
        action(key, v1::ACTION_KIND_STEP_DOWN, c.limit, c.lease_expires, c.dry_run,
               absl::StrCat(others_harmed, " neighbour(s) still harmed; limit lowered to ",
                            FormatAmount(c.limit, resource),
                            c.limit <= c.floor ? " (its floor: half its entitlement)" : ""));
        acted = true;
      }
    } else {
      if (c.quiet_since == absl::InfinitePast()) c.quiet_since = now;
      if (step_due && now - c.quiet_since >= params_.quiet_period) {
        const double higher = c.limit * params_.step_up;
        if (higher >= c.opening_usage) {
          action(
              key, v1::ACTION_KIND_RELEASE, 0, now, c.dry_run,
              absl::StrCat("no neighbour harmed for ",
                           absl::FormatDuration(absl::Trunc(now - c.quiet_since, absl::Seconds(1))),
                           "; limit back above its usage when the case opened (",
                           FormatAmount(c.opening_usage, resource), ")"));
          cooldown_until_[key] = now + params_.cooldown;
          it = cases_.erase(it);
          continue;
        }
        c.limit = higher;
        c.last_step = now;
        c.intervals_since_step = 0;
        c.harmed_since_step = 0;
        c.binding_since_step = 0;
        c.lease_expires = now + params_.lease;
        action(
            key, v1::ACTION_KIND_STEP_UP, c.limit, c.lease_expires, c.dry_run,
            absl::StrCat("no neighbour harmed for ",
                         absl::FormatDuration(absl::Trunc(now - c.quiet_since, absl::Seconds(1))),
                         "; limit raised to ", FormatAmount(c.limit, resource)));
        acted = true;
      }
    }
    if ((!acted || c.manual) && c.lease_expires - now <= params_.lease / 2) {
      c.lease_expires = now + params_.lease;
      action(key, v1::ACTION_KIND_RENEW, c.limit, c.lease_expires, c.dry_run, "case still open");
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
    Case c;
    c.floor = params_.floor_fraction * s.entitled;
    c.opening_usage = s.usage;
    c.last_step = now;
    c.lease_expires = now + params_.lease;
    c.dry_run = dry_run;
    std::vector<std::string> harmed;
    for (const HarmedNeighbour& h : f.harmed) {
      harmed.push_back(absl::StrCat(
          h.id, " (", absl::StrJoin(h.evidence, ", "), "; ", std::lround(100 * h.caused),
          h.measured ? " % of its run-queue wait was behind it)" : " % of the use was its)"));
    }
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
      cases_.emplace(key, c);
      continue;
    }
    if (capped >= cap_bound) {
      action(key, v1::ACTION_KIND_SKIP, 0, now, dry_run,
             absl::StrCat("cap reached: ", capped, " of ", host_tenants,
                          " tenants on the host already capped"));
      continue;
    }
    c.limit = std::max(c.floor, s.fair * (1 + params_.headroom));
    if (c.limit >= s.usage) {
      action(key, v1::ACTION_KIND_SKIP, 0, now, dry_run,
             "a limit at its fair share plus headroom would not bind");
      continue;
    }
    action(key, v1::ACTION_KIND_LIMIT, c.limit, c.lease_expires, dry_run, why);
    cases_.emplace(key, c);
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
