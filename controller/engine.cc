#include "controller/engine.h"

#include <algorithm>

namespace fairwatch::controller {

Evaluation FairnessEngine::Evaluate(const HostInterval& interval, const LimitsInForce& limits) {
  Evaluation evaluation;
  HostState& host = hosts_[interval.host_id];
  if (interval.seq <= host.last_seq || interval.seconds <= 0) return evaluation;
  host.last_seq = interval.seq;
  evaluation.host_id = interval.host_id;
  evaluation.seq = interval.seq;
  std::vector<Finding>& findings = evaluation.findings;

  // Harm first, against each tenant's baseline as it was before this interval.
  struct Judged {
    std::vector<HarmVerdict> by_resource;
    bool harmed_anywhere = false;
  };
  std::vector<Judged> judged(interval.tenants.size());
  for (size_t i = 0; i < interval.tenants.size(); ++i) {
    const TenantInterval& t = interval.tenants[i];
    const HarmBaseline& baseline = host.baselines[t.id];
    for (v1::Resource r : kJudgedResources) {
      HarmVerdict v;
      if (t.has_harm) v = baseline.Judge(r, t.harm, params_.harm);
      judged[i].harmed_anywhere = judged[i].harmed_anywhere || v.harmed;
      judged[i].by_resource.push_back(std::move(v));
    }
  }

  bool any_contended = false;
  for (size_t k = 0; k < std::size(kJudgedResources); ++k) {
    const v1::Resource resource = kJudgedResources[k];
    const double capacity = ResourceCapacity(interval.capacity, resource);
    if (capacity <= 0) continue;  // unknown capacity: no shares to judge against
    std::vector<TenantSample> samples;
    samples.reserve(interval.tenants.size());
    for (size_t i = 0; i < interval.tenants.size(); ++i) {
      const TenantInterval& t = interval.tenants[i];
      TenantSample s;
      s.id = t.id;
      s.weight = t.weight;
      s.usage = ResourceUsage(t.rates, resource);
      if (resource == v1::RESOURCE_CPU) {
        // Time runnable but not running is CPU it wanted: a measured demand,
        // unless its own quota held it back (then it wants what the quota gives).
        const bool self_throttled =
            t.harm.throttled_ns_per_s() / 1e9 > params_.harm.self_throttled_fraction;
        s.wanted = self_throttled ? 0 : t.harm.runq_wait_ns_per_s() / 1e9;
        s.elastic_when_harmed = false;
      }
      if (auto l = limits.find(t.id); l != limits.end()) {
        if (auto v = l->second.find(resource); v != l->second.end()) s.limit = v->second;
      }
      s.harmed = judged[i].by_resource[k].harmed;
      samples.push_back(std::move(s));
    }
    const IntervalJudgement judgement = JudgeInterval(params_, capacity, samples);
    any_contended = any_contended || judgement.contended;
    auto [tracker, fresh] = host.trackers.try_emplace(resource, params_);
    (void)fresh;
    for (Offender& o : tracker->second.Record(judgement)) {
      Finding f;
      f.host_id = interval.host_id;
      f.seq = interval.seq;
      f.resource = resource;
      f.capacity = capacity;
      f.total_usage = judgement.total_usage;
      f.contended = judgement.contended;
      for (size_t i = 0; i < interval.tenants.size(); ++i) {
        const HarmVerdict& v = judged[i].by_resource[k];
        if (v.harmed && interval.tenants[i].id != o.id) {
          f.harmed.push_back({interval.tenants[i].id, v.evidence});
        }
      }
      f.offender = std::move(o);
      findings.push_back(std::move(f));
    }
    evaluation.verdicts.push_back({resource, judgement});
  }

  // Quiet intervals teach the baselines; tenants that left are forgotten.
  absl::flat_hash_map<std::string, HarmBaseline> kept;
  for (size_t i = 0; i < interval.tenants.size(); ++i) {
    const TenantInterval& t = interval.tenants[i];
    HarmBaseline& baseline = host.baselines[t.id];
    if (t.has_harm && !any_contended && !judged[i].harmed_anywhere) {
      baseline.Learn(t.harm, params_.harm);
    }
    kept.emplace(t.id, baseline);
  }
  host.baselines = std::move(kept);
  return evaluation;
}

}  // namespace fairwatch::controller
