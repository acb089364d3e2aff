#include "controller/engine.h"

#include <algorithm>

#include "absl/strings/string_view.h"

namespace fairwatch::controller {
namespace {

constexpr size_t kResources = std::size(kJudgedResources);
// Weight of a quiet interval in a tenant's quiet usage: about the last 10 s
// at a 1 s interval.
constexpr double kQuietUsageAlpha = 0.2;
// A resource is quiet for that while used below this share of its capacity.
constexpr double kQuietUseOfCapacity = 0.75;

// Who caused each harmed tenant's waiting on `resource`, as shares of it. On
// CPU, who held the CPU while it waited, when the agent measured it (its
// waiting on an idle CPU is nobody's); otherwise, and on disk and network,
// each tenant's part of the resource's use (AttributeByUse).
void AttributeWaiting(v1::Resource resource, const HostInterval& interval,
                      const absl::flat_hash_map<absl::string_view, uint32_t>& index,
                      std::vector<TenantSample>* samples) {
  for (size_t i = 0; i < samples->size(); ++i) {
    TenantSample& s = (*samples)[i];
    s.caused_by.clear();
    s.neighbour_share = 0;
    s.causes_measured = false;
    if (!s.harmed || resource != v1::RESOURCE_CPU) continue;
    const v1::HarmSignals& h = interval.tenants[i].harm;
    if (!h.runq_attributed()) continue;
    double total = h.runq_self_wait_ns_per_s() + h.runq_host_wait_ns_per_s();
    for (const v1::TenantWait& w : h.runq_wait_by_tenant()) total += w.wait_ns_per_s();
    if (total <= 0) continue;
    s.causes_measured = true;
    for (const v1::TenantWait& w : h.runq_wait_by_tenant()) {
      auto k = index.find(w.tenant_id());
      if (k == index.end() || k->second == i) continue;  // gone since, or itself
      const double share = w.wait_ns_per_s() / total;
      s.caused_by.emplace_back(k->second, share);
      s.neighbour_share += share;
    }
  }
  AttributeByUse(samples);
}

}  // namespace

Evaluation FairnessEngine::Evaluate(const HostInterval& interval, const LimitsInForce& limits) {
  Evaluation evaluation;
  HostState& host = hosts_[interval.host_id];
  // Judged already. A lower seq is the agent's new run (its seqs restart at 1;
  // within a run the fleet keeps only newer reports): judged, not ignored.
  if (interval.seq == host.last_seq || interval.seconds <= 0) return evaluation;
  host.last_seq = interval.seq;
  const uint64_t round = ++host.round;
  evaluation.host_id = interval.host_id;
  evaluation.seq = interval.seq;
  std::vector<Finding>& findings = evaluation.findings;
  const size_t n = interval.tenants.size();

  // Each tenant's state, its pointer taken once no insertion can move entries.
  std::vector<TenantState*> state(n);
  bool inserted_any = false;
  for (size_t i = 0; i < n; ++i) {
    auto [it, inserted] = host.tenants.try_emplace(interval.tenants[i].id);
    TenantState& t = it->second;
    t.seen = t.round + 1 == round ? std::min(t.seen + 1, params_.window) : 1;
    t.round = round;
    state[i] = &it->second;
    inserted_any = inserted_any || inserted;
  }
  if (inserted_any) {
    for (size_t i = 0; i < n; ++i) state[i] = &host.tenants.find(interval.tenants[i].id)->second;
  }

  // Harm first, against each tenant's baseline as it was before this interval.
  std::vector<HarmVerdict> harm(n * kResources);  // [tenant * kResources + resource]
  std::vector<char> harmed_anywhere(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const TenantInterval& t = interval.tenants[i];
    if (!t.has_harm) continue;
    for (size_t k = 0; k < kResources; ++k) {
      HarmVerdict& v = harm[i * kResources + k];
      if (k > 0 && HarmGroupOf(kJudgedResources[k]) == HarmGroupOf(kJudgedResources[k - 1])) {
        v = harm[i * kResources + k - 1];
      } else {
        v = state[i]->baseline.Judge(kJudgedResources[k], t.harm, params_.harm);
      }
      if (v.harmed) harmed_anywhere[i] = 1;
    }
  }

  absl::flat_hash_map<absl::string_view, uint32_t> index;
  index.reserve(n);
  for (size_t i = 0; i < n; ++i) index.emplace(interval.tenants[i].id, static_cast<uint32_t>(i));

  // One sample per tenant, refilled for each resource.
  std::vector<TenantSample> samples(n);
  std::vector<const std::map<v1::Resource, double>*> tenant_limits(n, nullptr);
  for (size_t i = 0; i < n; ++i) {
    const TenantInterval& t = interval.tenants[i];
    samples[i].id = t.id;
    samples[i].weight = t.weight;
    if (limits.empty()) continue;
    if (auto l = limits.find(t.id); l != limits.end()) tenant_limits[i] = &l->second;
  }
  std::vector<FlagHistory*> histories(n);
  std::array<bool, kResources> recorded{};
  bool any_contended = false;
  for (size_t k = 0; k < kResources; ++k) {
    const v1::Resource resource = kJudgedResources[k];
    const double capacity = ResourceCapacity(interval.capacity, resource);
    if (capacity <= 0) continue;  // unknown capacity: no shares to judge against
    for (size_t i = 0; i < n; ++i) {
      const TenantInterval& t = interval.tenants[i];
      TenantSample& s = samples[i];
      s.usage = ResourceUsage(t.rates, resource);
      s.wanted = 0;
      s.elastic_when_harmed = true;
      if (resource == v1::RESOURCE_CPU) {
        // Time runnable but not running is CPU it wanted: a measured demand,
        // unless its own quota held it back (then it wants what the quota gives).
        const bool self_throttled =
            t.harm.throttled_ns_per_s() / 1e9 > params_.harm.self_throttled_fraction;
        s.wanted = self_throttled ? 0 : t.harm.runq_wait_ns_per_s() / 1e9;
        // Untraced (agent/runq_gate.h): its waiting is unknown, as on disk.
        s.elastic_when_harmed = t.harm.runq_untraced();
      }
      s.limit = 0;
      s.held_back = false;
      if (tenant_limits[i] != nullptr) {
        if (auto v = tenant_limits[i]->find(resource); v != tenant_limits[i]->end()) {
          s.limit = v->second;
          s.held_back = true;
        }
      }
      // A tenant that just appeared (a container starting) has no history
      // to be harmed against: a victim only once seen for a whole window.
      s.harmed = harm[i * kResources + k].harmed && state[i]->seen >= params_.window;
      histories[i] = &state[i]->flags[k];
    }
    AttributeWaiting(resource, interval, index, &samples);
    IntervalJudgement judgement = JudgeInterval(params_, capacity, samples);
    any_contended = any_contended || judgement.contended;
    for (size_t i = 0; i < n; ++i) {
      TenantShare& share = judgement.tenants[i];
      const HarmVerdict& h = harm[i * kResources + k];
      share.severity = h.severity;
      if (share.harm_signal) share.evidence = h.evidence;
      // What it takes when nothing stands in its way: learned while the
      // resource is far from full (near it, a squeezed sender's rate would
      // teach its squeeze), kept through busier intervals.
      double& quiet = state[i]->quiet_usage[k];
      if (judgement.total_usage < kQuietUseOfCapacity * capacity && !samples[i].held_back &&
          !h.harmed) {
        quiet = quiet < 0 ? share.usage : Ewma(quiet, share.usage, kQuietUsageAlpha);
      }
      share.quiet_usage = std::max(0.0, quiet);
    }
    recorded[k] = true;
    for (Offender& o : RecordOffenders(params_, judgement, histories)) {
      Finding f;
      f.host_id = interval.host_id;
      f.seq = interval.seq;
      f.resource = resource;
      f.capacity = capacity;
      f.total_usage = judgement.total_usage;
      f.contended = judgement.contended;
      const uint32_t offender = index.at(o.id);
      for (size_t i = 0; i < n; ++i) {
        if (!judgement.tenants[i].harmed || i == offender) continue;
        HarmedNeighbour h{interval.tenants[i].id, harm[i * kResources + k].evidence, 0,
                          samples[i].causes_measured};
        for (const auto& [j, share] : samples[i].caused_by) {
          if (j == offender) h.caused = share;
        }
        f.harmed.push_back(std::move(h));
      }
      f.offender = std::move(o);
      findings.push_back(std::move(f));
    }
    evaluation.verdicts.push_back({resource, std::move(judgement)});
  }

  // Quiet intervals teach the baselines.
  if (!any_contended) {
    for (size_t i = 0; i < n; ++i) {
      const TenantInterval& t = interval.tenants[i];
      if (t.has_harm && !harmed_anywhere[i]) state[i]->baseline.Learn(t.harm, params_.harm);
    }
  }
  // A tenant that left loses its baseline at once and its N-of-M history as
  // it ages out (a history with no flagged interval is as good as none).
  for (auto it = host.tenants.begin(); it != host.tenants.end();) {
    TenantState& s = it->second;
    if (s.round == round) {
      ++it;
      continue;
    }
    s.baseline = HarmBaseline();
    bool flagged = false;
    for (size_t k = 0; k < kResources; ++k) {
      if (recorded[k]) RecordAbsent(params_, &s.flags[k]);
      flagged = flagged || s.flags[k].bits != 0;
    }
    if (flagged) {
      ++it;
    } else {
      host.tenants.erase(it++);
    }
  }
  return evaluation;
}

}  // namespace fairwatch::controller
