#include "agent/runq_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/proc_stats.h"
#include "bpf/fw_runq.h"
#include "common/log.h"
#include "common/status.h"
#include "runq_bpf.skel.h"

namespace fairwatch::agent {
namespace {

constexpr int kWireBuckets = FW_RUNQ_HIST_FIRST_LOG2 + FW_RUNQ_HIST_BUCKETS;

// Sums entries with the same holder (kind and tenant), in place.
void MergeCauses(google::protobuf::RepeatedPtrField<v1::RunqWaitCause>* causes) {
  for (int i = 0; i < causes->size(); ++i) {
    for (int k = causes->size() - 1; k > i; --k) {
      const v1::RunqWaitCause& b = causes->Get(k);
      v1::RunqWaitCause* a = causes->Mutable(i);
      if (a->holder() != b.holder() || a->tenant_id() != b.tenant_id()) continue;
      a->set_wait_ns(a->wait_ns() + b.wait_ns());
      causes->DeleteSubrange(k, 1);
    }
  }
}

}  // namespace

RunqCollector::RunqCollector(RunqCollectorOptions options) : options_(std::move(options)) {}

RunqCollector::~RunqCollector() { (void)Stop(); }

absl::Status RunqCollector::LoadAndAttach(bool use_btf) {
  const char* kind = use_btf ? "tp_btf" : "raw_tp";
  skel_ = runq_bpf__open();
  if (!skel_) return ErrnoStatus(errno, "opening the runq BPF object");
  skel_->rodata->use_v1_cpu = options_.use_v1_cpu;
  for (struct bpf_program* prog :
       {skel_->progs.fw_runq_wakeup_btf, skel_->progs.fw_runq_wakeup_new_btf,
        skel_->progs.fw_runq_switch_btf}) {
    bpf_program__set_autoload(prog, use_btf);
  }
  for (struct bpf_program* prog :
       {skel_->progs.fw_runq_wakeup_raw, skel_->progs.fw_runq_wakeup_new_raw,
        skel_->progs.fw_runq_switch_raw}) {
    bpf_program__set_autoload(prog, !use_btf);
  }
  // Task storage needs 5.11+; the raw_tp path does without it.
  int err = bpf_map__set_autocreate(skel_->maps.task_memo, use_btf);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.tenant_roots, options_.max_tenants);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.runq_usage, options_.max_tenants);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.cgroup_slots, options_.max_tenants * 8);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.runq_causes, max_wait_causes());
  if (!err) {
    err = bpf_map__set_max_entries(skel_->maps.enqueued_by_pid,
                                   use_btf ? 1 : options_.max_queued_tasks);
  }
  if (err) return ErrnoStatus(-err, "sizing the runq BPF maps");
  err = runq_bpf__load(skel_);
  if (err) return ErrnoStatus(-err, absl::StrCat("loading the runq BPF programs (", kind, ")"));
  attach_kind_ = kind;
  return AttachPrograms();
}

absl::Status RunqCollector::AttachPrograms() {
  // Who held each CPU, as the programs last saw it, is stale after a
  // detachment: forgotten (no program runs now to race with).
  std::vector<fw_runq_cpu> cpus(num_cpus_);
  const uint32_t zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.runq_cpu), &zero, cpus.data(), BPF_ANY) != 0) {
    return ErrnoStatus(errno, "clearing the run-queue CPU segments");
  }
  const uint64_t now = MonotonicNs();
  __atomic_store_n(&skel_->bss->trace_since_ns, now, __ATOMIC_SEQ_CST);
  const int err = runq_bpf__attach(skel_);
  if (err) {
    return ErrnoStatus(-err,
                       absl::StrCat("attaching sched_wakeup/sched_switch (", attach_kind_, ")"));
  }
  attached_ = true;
  attached_since_ns_ = now;
  ++attaches_;
  return absl::OkStatus();
}

void RunqCollector::DetachPrograms() {
  if (!attached_) return;
  runq_bpf__detach(skel_);
  attached_ = false;
  traced_ns_ += MonotonicNs() - attached_since_ns_;
}

uint64_t RunqCollector::traced_ns() const {
  return traced_ns_ + (attached_ ? MonotonicNs() - attached_since_ns_ : 0);
}

absl::Duration RunqCollector::tick_period() const {
  return gate_ ? gate_->params().tick : absl::ZeroDuration();
}

void RunqCollector::Tick(absl::Time now) {
  if (!gate_ || !skel_) return;
  absl::StatusOr<double> idle = ReadIdleSeconds();
  if (!idle.ok()) {
    // Unknown load: traced, as if contended, rather than blind.
    FW_LOG(Warning, "runq: ", idle.status().message(), "; tracing as if contended");
    gate_->AssumeContended(now);
  } else {
    gate_->ObserveIdle(now, *idle);
  }
  FollowGate(now);
}

void RunqCollector::SetCpuLimitInForce(bool in_force) {
  if (gate_) gate_->SetLimitInForce(in_force);
}

void RunqCollector::FollowGate(absl::Time now) {
  if (!gate_ || !skel_) return;
  const RunqGateReason reason = gate_->Decide(now);
  const bool want = reason != RunqGateReason::kQuiet;
  // Sampled intervals come and go every few seconds: not worth a log line.
  const bool noteworthy = reason != RunqGateReason::kSample && reason_ != RunqGateReason::kSample;
  if (want && !attached_) {
    absl::Status status = AttachPrograms();
    if (!status.ok()) {
      FW_LOG(Error, "runq: ", status.message());
      return;
    }
    if (noteworthy) {
      FW_LOG(Info, "runq: tracing (", RunqGateReasonName(reason), "; ",
             absl::StrFormat("%.0f", 100 * gate_->busy()), " % of CPU time busy)");
    }
  } else if (!want && attached_) {
    DetachPrograms();
    if (noteworthy) {
      FW_LOG(Info, "runq: not tracing (quiet: ", absl::StrFormat("%.0f", 100 * gate_->busy()),
             " % of CPU time busy)");
    }
  }
  reason_ = reason;
}

absl::Status RunqCollector::Init() {
  if (options_.max_tenants == 0) return absl::InvalidArgumentError("max_tenants must be positive");
  if (options_.max_queued_tasks == 0) {
    return absl::InvalidArgumentError("max_queued_tasks must be positive");
  }
  num_cpus_ = libbpf_num_possible_cpus();
  if (num_cpus_ <= 0) return ErrnoStatus(-num_cpus_, "counting possible CPUs");
  const std::string& mode = options_.attach_mode;
  if (mode != "auto" && mode != "tp_btf" && mode != "raw_tp") {
    return absl::InvalidArgumentError(
        absl::StrCat("runq attach mode must be auto, tp_btf or raw_tp; got '", mode, "'"));
  }
  absl::Status status = LoadAndAttach(mode != "raw_tp");
  if (!status.ok() && mode == "auto") {
    FW_LOG(Warning, "runq: ", status.message(), "; falling back to raw_tp");
    runq_bpf__destroy(skel_);
    skel_ = nullptr;
    status = LoadAndAttach(false);
  }
  if (!status.ok()) {
    runq_bpf__destroy(skel_);
    skel_ = nullptr;
    state_ = CollectorState::kFailed;
    return status;
  }
  state_ = CollectorState::kRunning;
  FW_LOG(Info, "runq: attached to sched_wakeup/sched_switch via ", attach_kind_, " (",
         options_.use_v1_cpu ? "v1 cpu" : "unified", " hierarchy, ", options_.max_tenants,
         " tenant slots; ",
         options_.adaptive ? "adaptive: traced while it can matter" : "always traced", ")");
  if (options_.adaptive) {
    gate_.emplace(options_.gate, static_cast<int>(OnlineCpuCount()));
  }
  return absl::OkStatus();
}

uint32_t RunqCollector::max_wait_causes() const {
  return options_.max_wait_causes > 0 ? options_.max_wait_causes : 8 * options_.max_tenants;
}

absl::Status RunqCollector::ForgetCauses(const absl::flat_hash_map<uint32_t, bool>& slots) {
  const int fd = bpf_map__fd(skel_->maps.runq_causes);
  std::vector<fw_runq_cause_key> doomed;
  fw_runq_cause_key key{}, next{};
  const fw_runq_cause_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (slots.contains(next.waiter) || slots.contains(next.holder)) doomed.push_back(next);
    key = next;
    prev = &key;
  }
  for (const fw_runq_cause_key& k : doomed) {
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("forgetting the run-queue causes of slot ", k.waiter));
    }
  }
  return absl::OkStatus();
}

absl::Status RunqCollector::SyncTenants(absl::Span<const TenantEntry> tenants) {
  if (!skel_) return absl::FailedPreconditionError("runq collector is not running");
  int roots_fd = bpf_map__fd(skel_->maps.tenant_roots);
  int usage_fd = bpf_map__fd(skel_->maps.runq_usage);
  absl::flat_hash_map<uint64_t, uint32_t> wanted;
  for (const auto& t : tenants) wanted[t.cpu_cgroup_id] = t.slot;

  bool changed = false;
  for (auto it = installed_roots_.begin(); it != installed_roots_.end();) {
    auto w = wanted.find(it->first);
    if (w != wanted.end() && w->second == it->second) {
      ++it;
      continue;
    }
    if (bpf_map_delete_elem(roots_fd, &it->first) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("removing cgroup ", it->first, " from runq roots"));
    }
    installed_roots_.erase(it++);
    changed = true;
  }
  std::vector<fw_runq_counters> zero(num_cpus_);
  absl::flat_hash_map<uint32_t, bool> handed_over;
  for (const auto& t : tenants) {
    auto owner = slot_owner_.find(t.slot);
    if (owner == slot_owner_.end() || owner->second != t.tenant.id()) {
      // A slot handed to a new tenant starts its counters from zero.
      if (bpf_map_update_elem(usage_fd, &t.slot, zero.data(), BPF_ANY) != 0) {
        return ErrnoStatus(errno, absl::StrCat("clearing runq slot ", t.slot));
      }
      if (owner != slot_owner_.end()) handed_over[t.slot] = true;
      slot_owner_[t.slot] = t.tenant.id();
      // Its quiet baseline is learned from traced intervals.
      if (gate_) gate_->NoteNewTenant(absl::Now());
    }
    if (installed_roots_.contains(t.cpu_cgroup_id)) continue;
    if (bpf_map_update_elem(roots_fd, &t.cpu_cgroup_id, &t.slot, BPF_ANY) != 0) {
      return ErrnoStatus(errno, absl::StrCat("adding tenant ", t.tenant.id(), " (cgroup ",
                                             t.cpu_cgroup_id, ") to runq roots"));
    }
    installed_roots_[t.cpu_cgroup_id] = t.slot;
    changed = true;
  }
  // Waits of the old owner, and waits the old owner caused, are not the new one's.
  if (!handed_over.empty()) RETURN_IF_ERROR(ForgetCauses(handed_over));
  if (changed) {
    // Invalidates every memoized cgroup -> slot result at once.
    __atomic_add_fetch(&skel_->bss->tenant_gen, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&skel_->bss->tenant_count, static_cast<uint32_t>(installed_roots_.size()),
                     __ATOMIC_SEQ_CST);
  }
  FollowGate(absl::Now());
  return absl::OkStatus();
}

absl::StatusOr<RunqSlotCounters> RunqCollector::ReadSlot(uint32_t slot) const {
  if (!skel_) return absl::FailedPreconditionError("runq collector is not running");
  std::vector<fw_runq_counters> per_cpu(num_cpus_);
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.runq_usage), &slot, per_cpu.data()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("reading runq slot ", slot));
  }
  RunqSlotCounters out;
  out.hist.assign(kWireBuckets, 0);
  for (const auto& c : per_cpu) {
    out.wait_ns += c.wait_ns;
    out.waits += c.waits;
    for (int b = 0; b < FW_RUNQ_HIST_BUCKETS; ++b)
      out.hist[FW_RUNQ_HIST_FIRST_LOG2 + b] += c.hist[b];
  }
  return out;
}

absl::StatusOr<absl::flat_hash_map<uint32_t, std::vector<RunqCause>>> RunqCollector::ReadCauses()
    const {
  if (!skel_) return absl::FailedPreconditionError("runq collector is not running");
  const int fd = bpf_map__fd(skel_->maps.runq_causes);
  absl::flat_hash_map<uint32_t, std::vector<RunqCause>> out;
  std::vector<uint64_t> per_cpu(num_cpus_);
  fw_runq_cause_key key{}, next{};
  const fw_runq_cause_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    if (bpf_map_lookup_elem(fd, &key, per_cpu.data()) != 0) {
      if (errno == ENOENT) continue;  // deleted meanwhile
      return ErrnoStatus(errno, "reading the run-queue causes");
    }
    RunqCause cause{key.holder, 0};
    for (uint64_t v : per_cpu) cause.wait_ns += v;
    out[key.waiter].push_back(cause);
  }
  return out;
}

absl::Status RunqCollector::Collect(absl::Span<const TenantEntry> tenants,
                                    v1::UsageReport* report) {
  // The interval that starts now is traced or not as the gate says, after
  // the counters of the one that ends are read.
  absl::Cleanup next_interval = [this] {
    if (!gate_) return;
    gate_->NoteInterval();
    FollowGate(absl::Now());
  };
  report->mutable_host()->set_runq_traced_ns(traced_ns());
  ASSIGN_OR_RETURN(auto causes, ReadCauses());
  cause_pairs_ = 0;
  for (const auto& [waiter, list] : causes) cause_pairs_ += list.size();
  for (size_t i = 0; i < tenants.size(); ++i) {
    ASSIGN_OR_RETURN(RunqSlotCounters counters, ReadSlot(tenants[i].slot));
    v1::CpuCounters* cpu = report->mutable_tenants(static_cast<int>(i))->mutable_cpu();
    cpu->set_runq_wait_ns(counters.wait_ns);
    cpu->set_runq_waits(counters.waits);
    auto* buckets = cpu->mutable_runq_wait_hist()->mutable_buckets();
    buckets->Clear();
    buckets->Add(counters.hist.begin(), counters.hist.end());
    cpu->set_runq_wait_attributed(true);
    cpu->clear_runq_wait_by();
    auto mine = causes.find(tenants[i].slot);
    if (mine == causes.end()) continue;
    for (const RunqCause& c : mine->second) {
      v1::RunqWaitCause* out = cpu->add_runq_wait_by();
      out->set_wait_ns(c.wait_ns);
      if (c.holder == tenants[i].slot) {
        out->set_holder(v1::RunqWaitCause::HOLDER_SELF);
      } else if (c.holder == FW_HOLDER_IDLE) {
        out->set_holder(v1::RunqWaitCause::HOLDER_IDLE);
      } else if (auto owner = slot_owner_.find(c.holder);
                 c.holder != FW_HOLDER_HOST && owner != slot_owner_.end()) {
        out->set_holder(v1::RunqWaitCause::HOLDER_TENANT);
        out->set_tenant_id(owner->second);
      } else {
        out->set_holder(v1::RunqWaitCause::HOLDER_HOST);
      }
    }
    // One entry per holder kind (a slot freed and not yet reused reads as the host).
    MergeCauses(cpu->mutable_runq_wait_by());
  }
  return absl::OkStatus();
}

uint64_t RunqCollector::lost_events() const {
  if (!skel_) return 0;
  std::vector<uint64_t> per_cpu(num_cpus_);
  uint64_t total = 0;
  for (uint32_t key : {FW_RUNQ_STAT_LOST, FW_RUNQ_STAT_CAUSE_LOST}) {
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.runq_stats), &key, per_cpu.data()) != 0) {
      continue;
    }
    for (uint64_t v : per_cpu) total += v;
  }
  return total;
}

void RunqCollector::AddSelfCounters(v1::AgentSelfCounters* self) const {
  if (!skel_) return;
  for (struct bpf_program* prog :
       {skel_->progs.fw_runq_wakeup_btf, skel_->progs.fw_runq_wakeup_new_btf,
        skel_->progs.fw_runq_switch_btf, skel_->progs.fw_runq_wakeup_raw,
        skel_->progs.fw_runq_wakeup_new_raw, skel_->progs.fw_runq_switch_raw}) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) continue;
    struct bpf_prog_info info = {};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) continue;
    v1::BpfProgramStats* stats = self->add_programs();
    stats->set_name(bpf_program__name(prog));
    stats->set_run_time_ns(info.run_time_ns);
    stats->set_run_count(info.run_cnt);
  }
  self->set_lost_events(self->lost_events() + lost_events());
  self->set_runq_tracing(attached_);
  self->set_runq_traced_ns(traced_ns());
  self->set_runq_attaches(attaches_);
  v1::BpfMapFill* roots = self->add_maps();
  roots->set_name("runq/tenant_roots");
  roots->set_entries(installed_roots_.size());
  roots->set_max_entries(options_.max_tenants);
  v1::BpfMapFill* causes = self->add_maps();
  causes->set_name("runq/causes");
  causes->set_entries(cause_pairs_);
  causes->set_max_entries(max_wait_causes());
}

absl::Status RunqCollector::Stop() {
  if (skel_) {
    DetachPrograms();
    runq_bpf__destroy(skel_);
    skel_ = nullptr;
    installed_roots_.clear();
    slot_owner_.clear();
    state_ = CollectorState::kStopped;
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
