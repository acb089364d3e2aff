#include "agent/disk_collector.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bpf/fw_disk.h"
#include "common/log.h"
#include "common/status.h"
#include "disk_bpf.skel.h"

namespace fairwatch::agent {
namespace {

// Entries of a hash map, by walking its keys (the kernel keeps no count).
template <typename Key>
uint64_t CountEntries(int fd) {
  Key key{};
  Key next{};
  uint64_t n = 0;
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    ++n;
    key = next;
    prev = &key;
  }
  return n;
}

// The clock of bpf_ktime_get_ns() and of the block layer's timestamps.
uint64_t MonotonicNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Whether block_getrq passes just the bio, as disk.bpf.c expects (5.11 and
// later): its BTF prototype is (void *data, struct bio *bio).
bool GetrqTracepointTakesBio() {
  struct btf* vmlinux = btf__load_vmlinux_btf();
  if (vmlinux == nullptr) return false;
  bool bio_only = false;
  const int id = btf__find_by_name_kind(vmlinux, "btf_trace_block_getrq", BTF_KIND_TYPEDEF);
  if (id > 0) {
    const struct btf_type* t = btf__type_by_id(vmlinux, btf__type_by_id(vmlinux, id)->type);
    if (t != nullptr && btf_is_ptr(t)) t = btf__type_by_id(vmlinux, t->type);
    bio_only = t != nullptr && btf_is_func_proto(t) && btf_vlen(t) == 2;
  }
  btf__free(vmlinux);
  return bio_only;
}

void AddMapFill(v1::AgentSelfCounters* self, const char* map, uint64_t entries, uint64_t max) {
  v1::BpfMapFill* fill = self->add_maps();
  fill->set_name(absl::StrCat("disk/", map));
  fill->set_entries(entries);
  fill->set_max_entries(max);
}

}  // namespace

absl::StatusOr<std::string> ChooseDiskHierarchy(const CgroupMounts& mounts) {
  if (mounts.v1_by_controller.contains("blkio")) return std::string("blkio");
  if (!mounts.unified.empty()) return std::string("unified");
  return absl::FailedPreconditionError(
      "no hierarchy carries block I/O cgroups: neither a v1 blkio nor a cgroup2 mount");
}

absl::StatusOr<uint64_t> RemoveStaleInflight(int fd, uint64_t before_ns) {
  std::vector<uint64_t> stale;
  uint64_t key = 0;
  uint64_t next = 0;
  const uint64_t* prev = nullptr;
  fw_disk_inflight rec{};
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    if (bpf_map_lookup_elem(fd, &key, &rec) == 0 && rec.issue_ns < before_ns) {
      stale.push_back(key);
    }
  }
  uint64_t removed = 0;
  for (uint64_t k : stale) {
    // ENOENT: its completion or a new issue took it meanwhile (and counted it).
    if (bpf_map_delete_elem(fd, &k) == 0) {
      ++removed;
    } else if (errno != ENOENT) {
      return ErrnoStatus(errno, "removing a stale disk in-flight record");
    }
  }
  return removed;
}

DiskCollector::DiskCollector(DiskCollectorOptions options) : options_(std::move(options)) {}

DiskCollector::~DiskCollector() { (void)Stop(); }

absl::Status DiskCollector::LoadAndAttach(bool use_btf) {
  skel_ = disk_bpf__open();
  if (!skel_) return ErrnoStatus(errno, "opening the disk BPF object");
  // Without it, empty flush writes (fsync) are not counted as ops.
  const bool getrq = GetrqTracepointTakesBio();
  bpf_program__set_autoload(skel_->progs.fw_disk_issue_btf, use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_getrq_btf, use_btf && getrq);
  bpf_program__set_autoload(skel_->progs.fw_disk_getrq_raw, !use_btf && getrq);
  bpf_program__set_autoload(skel_->progs.fw_disk_requeue_btf, use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_complete_btf, use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_issue_raw, !use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_requeue_raw, !use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_complete_raw, !use_btf);
  const uint32_t counter_entries =
      options_.max_counter_entries > 0 ? options_.max_counter_entries : options_.max_tenants * 4;
  int err = bpf_map__set_max_entries(skel_->maps.tenant_roots, options_.max_tenants);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.disk_usage, counter_entries);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.inflight, options_.max_inflight);
  // Descendant cgroups (nested scopes) share the cache.
  if (!err) err = bpf_map__set_max_entries(skel_->maps.cgroup_slots, options_.max_tenants * 8);
  if (err) return ErrnoStatus(-err, "sizing the disk BPF maps");
  const char* kind = use_btf ? "tp_btf" : "raw_tp";
  err = disk_bpf__load(skel_);
  if (err) return ErrnoStatus(-err, absl::StrCat("loading the disk BPF programs (", kind, ")"));
  err = disk_bpf__attach(skel_);
  if (err) {
    return ErrnoStatus(
        -err, absl::StrCat("attaching block_getrq/rq_issue/rq_requeue/rq_complete (", kind, ")"));
  }
  // Requests allocated before now may have been issued unseen; later ones were not.
  __atomic_store_n(&skel_->data->attached_ns, MonotonicNs(), __ATOMIC_SEQ_CST);
  attach_kind_ = kind;
  return absl::OkStatus();
}

absl::Status DiskCollector::Init() {
  if (options_.max_tenants == 0) return absl::InvalidArgumentError("max_tenants must be positive");
  if (options_.max_inflight == 0) {
    return absl::InvalidArgumentError("disk max_inflight must be positive");
  }
  if (options_.stale_inflight_ms == 0) {
    return absl::InvalidArgumentError("disk stale_inflight_ms must be positive");
  }
  if (options_.hierarchy != "blkio" && options_.hierarchy != "unified") {
    return absl::InvalidArgumentError(
        absl::StrCat("disk hierarchy must be blkio or unified; got '", options_.hierarchy, "'"));
  }
  num_cpus_ = libbpf_num_possible_cpus();
  if (num_cpus_ <= 0) return ErrnoStatus(-num_cpus_, "counting possible CPUs");
  const std::string& mode = options_.attach_mode;
  if (mode != "auto" && mode != "tp_btf" && mode != "raw_tp") {
    return absl::InvalidArgumentError(
        absl::StrCat("disk attach mode must be auto, tp_btf or raw_tp; got '", mode, "'"));
  }
  absl::Status status = LoadAndAttach(mode != "raw_tp");
  if (!status.ok() && mode == "auto") {
    FW_LOG(Warning, "disk: ", status.message(), "; falling back to raw_tp");
    disk_bpf__destroy(skel_);
    skel_ = nullptr;
    status = LoadAndAttach(false);
  }
  if (!status.ok()) {
    disk_bpf__destroy(skel_);
    skel_ = nullptr;
    state_ = CollectorState::kFailed;
    return status;
  }
  last_stale_check_ns_ = MonotonicNs();
  state_ = CollectorState::kRunning;
  FW_LOG(Info, "disk: attached to block_getrq/rq_issue/rq_requeue/rq_complete via ", attach_kind_,
         " (", options_.hierarchy, " hierarchy, ", options_.max_tenants, " tenant slots)");
  return absl::OkStatus();
}

absl::Status DiskCollector::ClearSlot(uint32_t slot) {
  int fd = bpf_map__fd(skel_->maps.disk_usage);
  std::vector<fw_disk_key> doomed;
  fw_disk_key key{};
  fw_disk_key next{};
  const fw_disk_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (next.slot == slot) doomed.push_back(next);
    key = next;
    prev = &key;
  }
  for (const auto& k : doomed) {
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("clearing disk counters of slot ", slot));
    }
  }
  return absl::OkStatus();
}

absl::Status DiskCollector::SyncTenants(absl::Span<const TenantEntry> tenants) {
  if (!skel_) return absl::FailedPreconditionError("disk collector is not running");
  int roots_fd = bpf_map__fd(skel_->maps.tenant_roots);
  // Root cgroup id in our hierarchy -> slot; tenants without a cgroup there are not measured.
  absl::flat_hash_map<uint64_t, uint32_t> wanted;
  for (const auto& t : tenants) {
    for (const auto& ref : t.tenant.cgroups()) {
      if (ref.hierarchy() == options_.hierarchy) wanted[ref.id()] = t.slot;
    }
  }

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
  for (const auto& t : tenants) {
    auto owner = slot_owner_.find(t.slot);
    if (owner == slot_owner_.end() || owner->second != t.tenant.id()) {
      // A slot handed to a new tenant starts its counters from zero.
      RETURN_IF_ERROR(ClearSlot(t.slot));
      slot_owner_[t.slot] = t.tenant.id();
    }
  }
  for (const auto& [id, slot] : wanted) {
    if (installed_roots_.contains(id)) continue;
    if (bpf_map_update_elem(roots_fd, &id, &slot, BPF_ANY) != 0) {
      return ErrnoStatus(errno, absl::StrCat("adding ", options_.hierarchy, " cgroup ", id,
                                             " (slot ", slot, ") to tenant_roots"));
    }
    installed_roots_[id] = slot;
    changed = true;
  }
  if (changed) {
    // Invalidates every cached cgroup -> slot result at once.
    __atomic_add_fetch(&skel_->bss->tenant_gen, 1, __ATOMIC_SEQ_CST);
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::flat_hash_map<uint32_t, std::vector<v1::DiskCounters>>>
DiskCollector::ReadAll() const {
  if (!skel_) return absl::FailedPreconditionError("disk collector is not running");
  int fd = bpf_map__fd(skel_->maps.disk_usage);
  absl::flat_hash_map<uint32_t, std::vector<v1::DiskCounters>> out;
  std::vector<fw_disk_counters> per_cpu(num_cpus_);
  fw_disk_key key{};
  fw_disk_key next{};
  const fw_disk_key* prev = nullptr;
  uint64_t entries = 0;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    ++entries;
    // Deleted (slot cleared) between the two calls: nothing to report.
    if (bpf_map_lookup_elem(fd, &key, per_cpu.data()) != 0) {
      if (errno == ENOENT) continue;
      return ErrnoStatus(errno, absl::StrCat("reading disk counters of slot ", key.slot));
    }
    fw_disk_counters sum{};
    for (const auto& c : per_cpu) {
      sum.read_bytes += c.read_bytes;
      sum.write_bytes += c.write_bytes;
      sum.read_ops += c.read_ops;
      sum.write_ops += c.write_ops;
      for (int b = 0; b < FW_DISK_HIST_BUCKETS; ++b) sum.latency[b] += c.latency[b];
    }
    v1::DiskCounters counters;
    counters.mutable_device()->set_major(key.dev >> FW_DISK_MINOR_BITS);
    counters.mutable_device()->set_minor(key.dev & FW_DISK_MINOR_MASK);
    counters.set_read_bytes(sum.read_bytes);
    counters.set_write_bytes(sum.write_bytes);
    counters.set_read_ops(sum.read_ops);
    counters.set_write_ops(sum.write_ops);
    // The wire's bucket i is [2^i, 2^(i+1)) ns; ours start at 2^FW_DISK_HIST_SHIFT.
    v1::Log2Histogram* hist = counters.mutable_latency();
    for (int i = 0; i < FW_DISK_HIST_SHIFT; ++i) hist->add_buckets(0);
    for (int b = 0; b < FW_DISK_HIST_BUCKETS; ++b) hist->add_buckets(sum.latency[b]);
    out[key.slot].push_back(std::move(counters));
  }
  for (auto& [slot, devices] : out) {
    std::sort(devices.begin(), devices.end(),
              [](const v1::DiskCounters& a, const v1::DiskCounters& b) {
                return std::make_pair(a.device().major(), a.device().minor()) <
                       std::make_pair(b.device().major(), b.device().minor());
              });
  }
  counter_entries_ = entries;
  return out;
}

absl::StatusOr<std::vector<v1::DiskCounters>> DiskCollector::ReadSlot(uint32_t slot) const {
  ASSIGN_OR_RETURN(auto all, ReadAll());
  auto it = all.find(slot);
  if (it == all.end()) return std::vector<v1::DiskCounters>{};
  return std::move(it->second);
}

absl::StatusOr<DiskCollector::EventStats> DiskCollector::ReadEventStats() const {
  if (!skel_) return absl::FailedPreconditionError("disk collector is not running");
  std::vector<fw_disk_stats> per_cpu(num_cpus_);
  const uint32_t zero = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.disk_stats), &zero, per_cpu.data()) != 0) {
    return ErrnoStatus(errno, "reading the disk event statistics");
  }
  EventStats stats;
  for (const auto& [prog, info] : ProgramInfos()) stats.recursion_misses += info.recursion_misses;
  for (const auto& s : per_cpu) {
    stats.lost_events += s.lost_events;
    stats.other_ops += s.other_ops;
    stats.completions_unseen += s.completions_unseen;
    stats.issued_before_attach += s.issued_before_attach;
    stats.empty_flushes += s.empty_flushes;
  }
  stats.completions_unseen += stale_removed_;
  stats.inflight = CountEntries<uint64_t>(bpf_map__fd(skel_->maps.inflight));
  return stats;
}

absl::Status DiskCollector::Collect(absl::Span<const TenantEntry> tenants,
                                    v1::UsageReport* report) {
  ASSIGN_OR_RETURN(auto all, ReadAll());
  // A completion the kernel never delivered leaves its record until the struct is
  // issued again; look for records that outlived any request now and then.
  const uint64_t now = MonotonicNs();
  const uint64_t stale_ns = uint64_t{options_.stale_inflight_ms} * 1000000;
  if (now - last_stale_check_ns_ >= stale_ns / 2 && now > stale_ns) {
    last_stale_check_ns_ = now;
    absl::StatusOr<uint64_t> removed =
        RemoveStaleInflight(bpf_map__fd(skel_->maps.inflight), now - stale_ns);
    // Counting goes on without the sweep; the records stay until the next one.
    if (removed.ok()) {
      stale_removed_ += *removed;
    } else {
      FW_LOG(Warning, "disk: ", removed.status().message());
    }
  }
  for (size_t i = 0; i < tenants.size(); ++i) {
    auto it = all.find(tenants[i].slot);
    if (it == all.end()) continue;
    v1::TenantCounters* out = report->mutable_tenants(static_cast<int>(i));
    for (auto& counters : it->second) *out->add_disks() = std::move(counters);
  }
  return absl::OkStatus();
}

std::vector<std::pair<struct bpf_program*, struct bpf_prog_info>> DiskCollector::ProgramInfos()
    const {
  std::vector<std::pair<struct bpf_program*, struct bpf_prog_info>> out;
  if (!skel_) return out;
  for (struct bpf_program* prog :
       {skel_->progs.fw_disk_issue_btf, skel_->progs.fw_disk_getrq_btf,
        skel_->progs.fw_disk_requeue_btf, skel_->progs.fw_disk_complete_btf,
        skel_->progs.fw_disk_issue_raw, skel_->progs.fw_disk_getrq_raw,
        skel_->progs.fw_disk_requeue_raw, skel_->progs.fw_disk_complete_raw}) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) continue;
    struct bpf_prog_info info = {};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) continue;
    out.emplace_back(prog, info);
  }
  return out;
}

void DiskCollector::AddSelfCounters(v1::AgentSelfCounters* self) const {
  if (!skel_) return;
  for (const auto& [prog, info] : ProgramInfos()) {
    v1::BpfProgramStats* stats = self->add_programs();
    stats->set_name(bpf_program__name(prog));
    stats->set_run_time_ns(info.run_time_ns);
    stats->set_run_count(info.run_cnt);
  }
  AddMapFill(self, "disk_usage", counter_entries_, bpf_map__max_entries(skel_->maps.disk_usage));
  absl::StatusOr<EventStats> stats = ReadEventStats();
  AddMapFill(self, "inflight", stats.ok() ? stats->inflight : 0,
             bpf_map__max_entries(skel_->maps.inflight));
  AddMapFill(self, "cgroup_slots", CountEntries<uint64_t>(bpf_map__fd(skel_->maps.cgroup_slots)),
             bpf_map__max_entries(skel_->maps.cgroup_slots));
  if (stats.ok()) {
    // Not recorded: full maps, recursion, unseen completions (latency samples),
    // requests in flight at attach (bytes and op).
    self->set_lost_events(self->lost_events() + stats->lost_events + stats->recursion_misses +
                          stats->completions_unseen + stats->issued_before_attach);
  }
}

absl::Status DiskCollector::Stop() {
  if (skel_) {
    disk_bpf__destroy(skel_);
    skel_ = nullptr;
    installed_roots_.clear();
    slot_owner_.clear();
    stale_removed_ = 0;
    state_ = CollectorState::kStopped;
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
