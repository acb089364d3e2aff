#include "controller/fairness.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace fairwatch::controller {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

double Ewma(double old_value, double sample, double alpha) {
  return old_value + alpha * (sample - old_value);
}

HarmVerdict HarmBaseline::Judge(v1::Resource resource, const v1::HarmSignals& s,
                                const HarmParams& params) const {
  HarmVerdict verdict;
  const std::optional<HarmGroup> group = HarmGroupOf(resource);
  if (!group) return verdict;
  // Waiting because its own quota ran out is its choice, not a neighbour's doing.
  if (*group == HarmGroup::kCpu && s.throttled_ns_per_s() / 1e9 > params.self_throttled_fraction) {
    return verdict;
  }
  const auto& detectors = HarmDetectors();
  for (size_t d = 0; d < detectors.size(); ++d) {
    const HarmDetector& detector = detectors[d];
    if (!Judges(detector, *group) || !params.enabled[d]) continue;
    if (detector.present != nullptr && !detector.present(s)) continue;
    const double value = detector.value(s);
    // Harm: above both its floor and `ratio` x the tenant's own level.
    const double threshold = std::max(detector.floor(params), params.ratio * level_[d]);
    if (threshold > 0) verdict.severity = std::max(verdict.severity, value / threshold);
    if (!(value > threshold)) continue;
    verdict.harmed = true;
    verdict.evidence.push_back(absl::StrCat(detector.label, " ", detector.format(value),
                                            " (baseline ", detector.format(level_[d]), ")"));
  }
  return verdict;
}

void HarmBaseline::Learn(const v1::HarmSignals& s, const HarmParams& params) {
  const auto& detectors = HarmDetectors();
  for (size_t d = 0; d < detectors.size(); ++d) {
    // An interval without the signal (run-queue tracing off) says nothing of its level.
    if (detectors[d].present != nullptr && !detectors[d].present(s)) continue;
    const double value = detectors[d].value(s);
    level_[d] = seeded_[d] ? Ewma(level_[d], value, params.baseline_alpha) : value;
    seeded_[d] = true;
  }
}

std::vector<double> WeightedMaxMin(double capacity, const std::vector<double>& demands,
                                   const std::vector<double>& weights) {
  const size_t n = demands.size();
  std::vector<double> share(n, 0.0);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> per_weight(n);
  for (size_t i = 0; i < n; ++i) per_weight[i] = demands[i] / weights[i];
  // Satisfied first: the smallest demand per unit of weight.
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return per_weight[a] < per_weight[b]; });
  double remaining = std::max(0.0, capacity);
  double weight_left = 0;
  for (double w : weights) weight_left += w;
  size_t k = 0;
  for (; k < n; ++k) {
    const size_t i = order[k];
    const double level = remaining / weight_left;  // per unit of weight
    if (per_weight[i] > level) break;
    share[i] = demands[i];
    remaining -= demands[i];
    weight_left -= weights[i];
  }
  // Everyone from k on wants more than an equal split of what is left.
  for (; k < n; ++k) {
    const size_t i = order[k];
    share[i] = weight_left > 0 ? remaining * weights[i] / weight_left : 0;
  }
  return share;
}

void AttributeByUse(std::vector<TenantSample>* samples) {
  double total_use = 0;
  for (const TenantSample& s : *samples) total_use += s.usage;
  if (total_use <= 0) return;
  for (size_t i = 0; i < samples->size(); ++i) {
    TenantSample& s = (*samples)[i];
    if (!s.harmed || s.causes_measured) continue;
    s.caused_by.clear();
    s.neighbour_share = 0;
    for (size_t j = 0; j < samples->size(); ++j) {
      const double use = (*samples)[j].usage;
      if (j == i || use <= 0) continue;
      s.caused_by.emplace_back(static_cast<uint32_t>(j), use / total_use);
      s.neighbour_share += use / total_use;
    }
  }
}

IntervalJudgement JudgeInterval(const FairnessParams& params, double capacity,
                                const std::vector<TenantSample>& tenants) {
  IntervalJudgement j;
  j.capacity = capacity;
  const double idle_below = params.idle_fraction * capacity;
  double active_weight = 0;
  std::vector<double> demands, weights;
  demands.reserve(tenants.size());
  weights.reserve(tenants.size());
  j.tenants.reserve(tenants.size());
  for (const TenantSample& t : tenants) {
    TenantShare s;
    s.id = t.id;
    s.weight = t.weight > 0 ? t.weight : 1.0;
    s.usage = t.usage;
    s.harm_signal = t.harmed;
    s.active = t.usage >= idle_below || t.harmed;
    j.total_usage += t.usage;
    if (s.active) active_weight += s.weight;
    weights.push_back(s.weight);
    j.tenants.push_back(std::move(s));
  }
  j.contended = capacity > 0 && j.total_usage >= params.contention * capacity;
  // Entitlement is split among the active; an idle tenant's would-be share
  // is what it gets the moment it wakes up.
  for (TenantShare& s : j.tenants) {
    const double pool = s.active ? active_weight : active_weight + s.weight;
    s.entitled = pool > 0 ? capacity * s.weight / pool : capacity;
  }
  // Measured demand (what it used plus, on CPU, what it waited for; at
  // least a cap of ours) and the fair shares over it.
  for (size_t i = 0; i < tenants.size(); ++i) {
    const TenantSample& t = tenants[i];
    double d = t.usage + std::max(0.0, t.wanted);
    if (t.limit > 0) d = std::max(d, t.limit);
    demands.push_back(d);
  }
  const std::vector<double> measured_fair = WeightedMaxMin(capacity, demands, weights);
  // Victims, and what each tenant caused them. Only a tenant that takes more
  // than the victim (per unit of weight, beyond the tolerance) can harm it:
  // waiting behind a smaller neighbour's brief turns is what wanting more
  // costs. A victim wants no more than its fair share, or gets less than it:
  // a tenant that waits because it wants more than it could fairly get is
  // not harmed by anyone.
  std::vector<std::vector<std::pair<uint32_t, double>>> causes(tenants.size());
  for (size_t i = 0; i < tenants.size(); ++i) {
    const TenantSample& t = tenants[i];
    TenantShare& s = j.tenants[i];
    // Held back by a case of ours, it yields to everyone by design: its
    // waiting is our doing, not its neighbours'.
    if (!t.harmed || t.held_back) continue;
    const double f = measured_fair[i];
    // Wanting more than its fair share, it is harmed only by a tenant that
    // takes more than its own fair share: among tenants that all want more,
    // one getting a little less than the others in an interval is the
    // scheduler's noise, not anyone's doing.
    const bool wants_more = demands[i] > f * (1 + params.tolerance);
    // Waiting behind smaller tenants (many small ones waking often), and for
    // a victim that wants more, behind takers within their fair share, is
    // left out of the whole: nobody's doing, like waiting on an idle CPU.
    const double own = t.usage / s.weight * (1 + params.tolerance);
    double from_bigger = 0, from_smaller = 0;
    for (const auto& [k, share] : t.caused_by) {
      if (k >= j.tenants.size() || k == i) continue;
      const bool over_fair = tenants[k].usage > measured_fair[k] * (1 + params.tolerance);
      if (j.tenants[k].usage / j.tenants[k].weight <= own || (wants_more && !over_fair)) {
        from_smaller += share;
        continue;
      }
      causes[i].emplace_back(k, share);
      from_bigger += share;
    }
    const double whole = 1 - std::min(from_smaller, 0.99);
    from_bigger /= whole;
    for (auto& [k, share] : causes[i]) share /= whole;
    const bool within_fair = !wants_more || t.usage < f * (1 - params.tolerance);
    s.harmed = from_bigger >= params.min_neighbour_share && within_fair;
    if (!s.harmed) {
      causes[i].clear();
      continue;
    }
    ++j.harmed;
    for (const auto& [k, share] : causes[i]) {
      j.tenants[k].caused_max = std::max(j.tenants[k].caused_max, share);
      j.tenants[k].caused += share;
    }
  }
  // A victim whose unmet demand is not measured (disk, network) would take
  // whatever it may get.
  for (size_t i = 0; i < tenants.size(); ++i) {
    TenantShare& s = j.tenants[i];
    s.demand = demands[i];
    if (s.harmed && tenants[i].elastic_when_harmed) s.demand = demands[i] = kInf;
  }
  const std::vector<double> fair = WeightedMaxMin(capacity, demands, weights);
  // Above its entitlement, a tenant is flagged when it caused at least
  // min_blame of a victim's waiting and: it is over its fair share (a
  // disproportionate share); or it caused at least dominant_blame of it (a
  // hog next to a lone modest neighbour, within its max-min share because
  // that neighbour wants little, and the cause of most of its waiting); or
  // it is a taker — wanting more than its fair share — and takers together
  // caused at least dominant_blame of it (several hogs sharing the blame).
  // "Above" has the tolerance, except next to a victim that lends: one
  // wanting less than its entitlement (beyond the tolerance; what it used
  // plus, on CPU, what it waited for) is owed prompt service for what it
  // uses, and whoever takes more than its own entitlement takes what the
  // victim lends (three hogs next to a small tenant each sit just above
  // their entitlement). A victim that wants about its entitlement lends
  // nothing, even in an interval where it got less: next to it, a neighbour
  // a few per cent above its own is the scheduler's rounding (a
  // single-threaded tenant next to a many-threaded one gets 0.88-0.97 of a
  // core on two CPUs, the host's own tasks taking part of the rest).
  std::vector<char> above_tol(j.tenants.size(), 0), wants_more(j.tenants.size(), 0);
  for (size_t i = 0; i < j.tenants.size(); ++i) {
    TenantShare& s = j.tenants[i];
    s.fair = fair[i];
    s.over = s.active && s.usage > s.fair * (1 + params.tolerance) && s.usage > s.entitled;
    const double measured_demand = tenants[i].usage + std::max(0.0, tenants[i].wanted);
    s.above = s.active && s.usage > s.entitled;
    above_tol[i] = s.active && s.usage > s.entitled * (1 + params.tolerance);
    wants_more[i] = s.over || measured_demand > s.fair * (1 + params.tolerance);
  }
  for (size_t v = 0; v < tenants.size(); ++v) {
    if (causes[v].empty()) continue;
    const double wants = tenants[v].usage + std::max(0.0, tenants[v].wanted);
    const bool lends = wants < j.tenants[v].entitled * (1 - params.tolerance);
    auto qualifies = [&](uint32_t k) { return lends ? j.tenants[k].above : above_tol[k] != 0; };
    double by_takers = 0;
    for (const auto& [k, share] : causes[v]) by_takers += qualifies(k) && wants_more[k] ? share : 0;
    for (const auto& [k, share] : causes[v]) {
      if (!qualifies(k) || share < params.min_blame) continue;
      TenantShare& s = j.tenants[k];
      s.flagged = s.flagged || s.over || share >= params.dominant_blame ||
                  (wants_more[k] && by_takers >= params.dominant_blame);
    }
  }
  return j;
}

namespace {

uint32_t WindowMask(const FairnessParams& params) {
  const uint32_t window = std::clamp<uint32_t>(params.window, 1, 32);
  return window == 32 ? ~0u : (1u << window) - 1;
}

}  // namespace

std::vector<Offender> RecordOffenders(const FairnessParams& params,
                                      const IntervalJudgement& judgement,
                                      absl::Span<FlagHistory* const> histories) {
  const uint32_t mask = WindowMask(params);
  std::vector<Offender> offenders;
  double total_caused = 0;
  // Co-offenders are acted on together: once one tenant meets the N-of-M
  // rule, every tenant flagged in this interval or the one before, and above
  // its entitlement now, is an offender with it (each was a cause of a
  // victim's waiting just now). One after the other, the first held back
  // would leave the others more room, and the victims' harm might end
  // before their turn: the first would pay for all.
  bool any = false;
  for (size_t i = 0; i < judgement.tenants.size(); ++i) {
    const TenantShare& s = judgement.tenants[i];
    FlagHistory& h = *histories[i];
    h.bits = ((h.bits << 1) | (s.flagged ? 1u : 0u)) & mask;
    h.absent = 0;
    any = any || (s.flagged && static_cast<uint32_t>(std::popcount(h.bits)) >= params.required);
  }
  for (size_t i = 0; i < judgement.tenants.size() && any; ++i) {
    const TenantShare& s = judgement.tenants[i];
    const auto flagged = static_cast<uint32_t>(std::popcount(histories[i]->bits));
    if (!s.flagged && !((histories[i]->bits & 2u) != 0 && s.above && !s.harmed)) continue;
    Offender o;
    o.id = s.id;
    o.flagged_intervals = flagged;
    o.excess = std::max(0.0, s.usage - s.fair);
    o.share = s;
    total_caused += s.caused;
    offenders.push_back(std::move(o));
  }
  for (Offender& o : offenders) {
    o.blame = total_caused > 0 ? o.share.caused / total_caused : 1.0 / offenders.size();
  }
  std::sort(offenders.begin(), offenders.end(),
            [](const Offender& a, const Offender& b) { return a.blame > b.blame; });
  return offenders;
}

bool RecordAbsent(const FairnessParams& params, FlagHistory* history) {
  history->bits = (history->bits << 1) & WindowMask(params);
  return ++history->absent >= std::clamp<uint32_t>(params.window, 1, 32);
}

std::vector<Offender> OffenderTracker::Record(const IntervalJudgement& judgement) {
  ++round_;
  // Inserted first: pointers are taken once no insertion can move entries.
  for (const TenantShare& s : judgement.tenants) history_[s.id].round = round_;
  std::vector<FlagHistory*> histories;
  histories.reserve(judgement.tenants.size());
  for (const TenantShare& s : judgement.tenants) {
    histories.push_back(&history_.find(s.id)->second.flags);
  }
  std::vector<Offender> offenders = RecordOffenders(params_, judgement, histories);
  // Absent this interval: the interval counts as not flagged.
  for (auto it = history_.begin(); it != history_.end();) {
    if (it->second.round != round_ && RecordAbsent(params_, &it->second.flags)) {
      history_.erase(it++);
    } else {
      ++it;
    }
  }
  return offenders;
}

uint32_t OffenderTracker::FlaggedIntervals(const std::string& id) const {
  auto it = history_.find(id);
  return it == history_.end() ? 0 : static_cast<uint32_t>(std::popcount(it->second.flags.bits));
}

}  // namespace fairwatch::controller
