#include "agent/cpu_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bpf/fw_cpu.h"
#include "common/log.h"
#include "common/status.h"
#include "cpu_bpf.skel.h"

namespace fairwatch::agent {

CpuCollector::CpuCollector(CpuCollectorOptions options) : options_(std::move(options)) {}

CpuCollector::~CpuCollector() { (void)Stop(); }

absl::Status CpuCollector::LoadAndAttach(bool use_btf) {
  skel_ = cpu_bpf__open();
  if (!skel_) return ErrnoStatus(errno, "opening the cpu BPF object");
  skel_->rodata->use_v1_cpu = options_.use_v1_cpu;
  bpf_program__set_autoload(skel_->progs.fw_cpu_runtime_btf, use_btf);
  bpf_program__set_autoload(skel_->progs.fw_cpu_runtime_raw, !use_btf);
  int err = bpf_map__set_max_entries(skel_->maps.tenant_roots, options_.max_tenants);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.cpu_usage, options_.max_tenants);
  // Descendant cgroups (vcpuN, emulator, nested scopes) share the cache.
  if (!err) err = bpf_map__set_max_entries(skel_->maps.cgroup_slots, options_.max_tenants * 8);
  if (err) return ErrnoStatus(-err, "sizing the cpu BPF maps");
  err = cpu_bpf__load(skel_);
  if (err) {
    return ErrnoStatus(
        -err, absl::StrCat("loading the cpu BPF programs (", use_btf ? "tp_btf" : "raw_tp", ")"));
  }
  err = cpu_bpf__attach(skel_);
  if (err) {
    return ErrnoStatus(
        -err, absl::StrCat("attaching sched_stat_runtime (", use_btf ? "tp_btf" : "raw_tp", ")"));
  }
  attach_kind_ = use_btf ? "tp_btf" : "raw_tp";
  return absl::OkStatus();
}

absl::Status CpuCollector::Init() {
  if (options_.max_tenants == 0) return absl::InvalidArgumentError("max_tenants must be positive");
  num_cpus_ = libbpf_num_possible_cpus();
  if (num_cpus_ <= 0) return ErrnoStatus(-num_cpus_, "counting possible CPUs");
  const std::string& mode = options_.attach_mode;
  if (mode != "auto" && mode != "tp_btf" && mode != "raw_tp") {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu attach mode must be auto, tp_btf or raw_tp; got '", mode, "'"));
  }
  if (options_.fallback_only) {
    state_ = CollectorState::kRunning;
    FW_LOG(Info,
           "cpu: CPU time from the kernel's cgroup counters; sched_stat_runtime attached only "
           "while a tenant has none");
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(Attach());
  state_ = CollectorState::kRunning;
  return absl::OkStatus();
}

absl::Status CpuCollector::Attach() {
  absl::Status status = LoadAndAttach(options_.attach_mode != "raw_tp");
  if (!status.ok() && options_.attach_mode == "auto") {
    FW_LOG(Warning, "cpu: ", status.message(), "; falling back to raw_tp");
    cpu_bpf__destroy(skel_);
    skel_ = nullptr;
    status = LoadAndAttach(false);
  }
  if (!status.ok()) {
    cpu_bpf__destroy(skel_);
    skel_ = nullptr;
    attach_kind_.clear();
    state_ = CollectorState::kFailed;
    return status;
  }
  FW_LOG(Info, "cpu: attached to sched_stat_runtime via ", attach_kind_, " (",
         options_.use_v1_cpu ? "v1 cpu" : "unified", " hierarchy, ", options_.max_tenants,
         " tenant slots)");
  return absl::OkStatus();
}

void CpuCollector::Detach() {
  if (skel_ == nullptr) return;
  cpu_bpf__destroy(skel_);
  skel_ = nullptr;
  attach_kind_.clear();
  installed_roots_.clear();
  slot_owner_.clear();
}

absl::Status CpuCollector::SyncTenants(absl::Span<const TenantEntry> all) {
  if (state_ == CollectorState::kNew || state_ == CollectorState::kStopped) {
    return absl::FailedPreconditionError("cpu collector is not running");
  }
  std::vector<TenantEntry> uncounted;
  if (options_.fallback_only) {
    for (const TenantEntry& t : all) {
      if (!KernelCpuTimeFile(t.tenant, options_.cpu_hierarchy, options_.mounts)) {
        uncounted.push_back(t);
      }
    }
    if (uncounted.empty() && skel_ != nullptr) {
      FW_LOG(Info, "cpu: every tenant has a kernel CPU time counter; sched_stat_runtime detached");
      Detach();
    } else if (!uncounted.empty() && skel_ == nullptr) {
      FW_LOG(Info, "cpu: ", uncounted.size(),
             " tenant(s) without a kernel CPU time counter (the first: ",
             uncounted.front().tenant.id(), "); attaching sched_stat_runtime for them");
      RETURN_IF_ERROR(Attach());
      state_ = CollectorState::kRunning;
    }
  }
  const absl::Span<const TenantEntry> tenants =
      options_.fallback_only ? absl::MakeConstSpan(uncounted) : all;
  measured_.clear();
  for (const TenantEntry& t : tenants) measured_.insert(t.tenant.id());
  if (!skel_) return absl::OkStatus();
  int roots_fd = bpf_map__fd(skel_->maps.tenant_roots);
  int usage_fd = bpf_map__fd(skel_->maps.cpu_usage);
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
      return ErrnoStatus(errno, absl::StrCat("removing cgroup ", it->first, " from tenant_roots"));
    }
    installed_roots_.erase(it++);
    changed = true;
  }
  std::vector<fw_cpu_counters> zero(num_cpus_);
  for (const auto& t : tenants) {
    auto owner = slot_owner_.find(t.slot);
    if (owner == slot_owner_.end() || owner->second != t.tenant.id()) {
      // A slot handed to a new tenant starts its counters from zero.
      if (bpf_map_update_elem(usage_fd, &t.slot, zero.data(), BPF_ANY) != 0) {
        return ErrnoStatus(errno, absl::StrCat("clearing cpu slot ", t.slot));
      }
      slot_owner_[t.slot] = t.tenant.id();
    }
    if (installed_roots_.contains(t.cpu_cgroup_id)) continue;
    if (bpf_map_update_elem(roots_fd, &t.cpu_cgroup_id, &t.slot, BPF_ANY) != 0) {
      return ErrnoStatus(errno, absl::StrCat("adding tenant ", t.tenant.id(), " (cgroup ",
                                             t.cpu_cgroup_id, ") to tenant_roots"));
    }
    installed_roots_[t.cpu_cgroup_id] = t.slot;
    changed = true;
  }
  if (changed) {
    // Invalidates every cached cgroup -> slot result at once.
    __atomic_add_fetch(&skel_->bss->tenant_gen, 1, __ATOMIC_SEQ_CST);
  }
  return absl::OkStatus();
}

absl::Status CpuCollector::ReadSlot(uint32_t slot, uint64_t* usage_ns, uint64_t* events) const {
  if (!skel_) return absl::FailedPreconditionError("the cpu program is not attached");
  std::vector<fw_cpu_counters> per_cpu(num_cpus_);
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.cpu_usage), &slot, per_cpu.data()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("reading cpu slot ", slot));
  }
  *usage_ns = 0;
  *events = 0;
  for (const auto& c : per_cpu) {
    *usage_ns += c.usage_ns;
    *events += c.events;
  }
  return absl::OkStatus();
}

absl::Status CpuCollector::Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) {
  if (!skel_) return absl::OkStatus();
  for (size_t i = 0; i < tenants.size(); ++i) {
    if (!measured_.contains(tenants[i].tenant.id())) continue;
    uint64_t usage_ns = 0;
    uint64_t events = 0;
    RETURN_IF_ERROR(ReadSlot(tenants[i].slot, &usage_ns, &events));
    report->mutable_tenants(static_cast<int>(i))->mutable_cpu()->set_usage_ns(usage_ns);
  }
  return absl::OkStatus();
}

void CpuCollector::AddSelfCounters(v1::AgentSelfCounters* self) const {
  if (!skel_) return;
  for (struct bpf_program* prog :
       {skel_->progs.fw_cpu_runtime_btf, skel_->progs.fw_cpu_runtime_raw}) {
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
  v1::BpfMapFill* roots = self->add_maps();
  roots->set_name("cpu/tenant_roots");
  roots->set_entries(installed_roots_.size());
  roots->set_max_entries(options_.max_tenants);
}

absl::Status CpuCollector::Stop() {
  Detach();
  measured_.clear();
  if (state_ == CollectorState::kRunning) state_ = CollectorState::kStopped;
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
