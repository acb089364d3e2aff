#include "agent/disk_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/block_devices.h"
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

// Reads + writes completed on a whole disk, from /sys/dev/block/<maj:min>/stat.
absl::StatusOr<uint64_t> CompletedRequests(uint32_t dev) {
  const std::string path = absl::StrCat("/sys/dev/block/", dev >> FW_DISK_MINOR_BITS, ":",
                                        dev & FW_DISK_MINOR_MASK, "/stat");
  std::ifstream in(path);
  uint64_t fields[5] = {};
  for (uint64_t& f : fields) in >> f;
  if (!in) return absl::NotFoundError(absl::StrCat("reading ", path));
  // Fields: reads completed, reads merged, sectors read, ms reading, writes completed.
  return fields[0] + fields[4];
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

DiskCollector::DiskCollector(DiskCollectorOptions options) : options_(std::move(options)) {}

DiskCollector::~DiskCollector() { (void)Stop(); }

absl::Status DiskCollector::LoadAndAttach(bool use_btf) {
  skel_ = disk_bpf__open();
  if (!skel_) return ErrnoStatus(errno, "opening the disk BPF object");
  bpf_program__set_autoload(skel_->progs.fw_disk_issue_btf, use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_complete_btf, use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_issue_raw, !use_btf);
  bpf_program__set_autoload(skel_->progs.fw_disk_complete_raw, !use_btf);
  const uint32_t counter_entries =
      options_.max_counter_entries > 0 ? options_.max_counter_entries : options_.max_tenants * 4;
  int err = bpf_map__set_max_entries(skel_->maps.tenant_roots, options_.max_tenants);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.disk_usage, counter_entries);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.issue_ns, options_.max_inflight);
  // Descendant cgroups (nested scopes) share the cache.
  if (!err) err = bpf_map__set_max_entries(skel_->maps.cgroup_slots, options_.max_tenants * 8);
  if (err) return ErrnoStatus(-err, "sizing the disk BPF maps");
  const char* kind = use_btf ? "tp_btf" : "raw_tp";
  err = disk_bpf__load(skel_);
  if (err) return ErrnoStatus(-err, absl::StrCat("loading the disk BPF programs (", kind, ")"));
  err = disk_bpf__attach(skel_);
  if (err) {
    return ErrnoStatus(-err,
                       absl::StrCat("attaching block_rq_issue/block_rq_complete (", kind, ")"));
  }
  attach_kind_ = kind;
  return absl::OkStatus();
}

absl::Status DiskCollector::Init() {
  if (options_.max_tenants == 0) return absl::InvalidArgumentError("max_tenants must be positive");
  if (options_.max_inflight == 0) {
    return absl::InvalidArgumentError("disk max_inflight must be positive");
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
  // Baselines for the unobserved-completions estimate; a disk that cannot be read is skipped.
  absl::StatusOr<std::vector<BlockDevice>> devices = ListBlockDevices();
  if (devices.ok()) {
    for (const auto& d : *devices) {
      const uint32_t dev = d.major << FW_DISK_MINOR_BITS | d.minor;
      absl::StatusOr<uint64_t> completed = CompletedRequests(dev);
      if (completed.ok()) completed_at_init_[dev] = *completed;
    }
  }
  state_ = CollectorState::kRunning;
  FW_LOG(Info, "disk: attached to block_rq_issue/block_rq_complete via ", attach_kind_, " (",
         options_.hierarchy, " hierarchy, ", options_.max_tenants, " tenant slots)");
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
    stats.no_issue_time += s.no_issue_time;
  }
  const int done_fd = bpf_map__fd(skel_->maps.device_done);
  std::vector<uint64_t> seen_per_cpu(num_cpus_);
  for (const auto& [dev, at_init] : completed_at_init_) {
    uint64_t seen = 0;
    if (bpf_map_lookup_elem(done_fd, &dev, seen_per_cpu.data()) == 0) {
      for (uint64_t s : seen_per_cpu) seen += s;
    }
    absl::StatusOr<uint64_t> completed = CompletedRequests(dev);
    // Requests in flight at Init complete after it: the estimate is a few high at most.
    if (completed.ok() && *completed - at_init > seen) {
      stats.unobserved_completions += *completed - at_init - seen;
    }
  }
  return stats;
}

absl::Status DiskCollector::Collect(absl::Span<const TenantEntry> tenants,
                                    v1::UsageReport* report) {
  ASSIGN_OR_RETURN(auto all, ReadAll());
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
       {skel_->progs.fw_disk_issue_btf, skel_->progs.fw_disk_complete_btf,
        skel_->progs.fw_disk_issue_raw, skel_->progs.fw_disk_complete_raw}) {
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
  AddMapFill(self, "issue_ns", CountEntries<uint64_t>(bpf_map__fd(skel_->maps.issue_ns)),
             bpf_map__max_entries(skel_->maps.issue_ns));
  AddMapFill(self, "device_done", CountEntries<uint32_t>(bpf_map__fd(skel_->maps.device_done)),
             bpf_map__max_entries(skel_->maps.device_done));
  AddMapFill(self, "cgroup_slots", CountEntries<uint64_t>(bpf_map__fd(skel_->maps.cgroup_slots)),
             bpf_map__max_entries(skel_->maps.cgroup_slots));
  absl::StatusOr<EventStats> stats = ReadEventStats();
  if (stats.ok()) {
    self->set_lost_events(self->lost_events() + stats->lost_events + stats->recursion_misses);
  }
}

absl::Status DiskCollector::Stop() {
  if (skel_) {
    disk_bpf__destroy(skel_);
    skel_ = nullptr;
    installed_roots_.clear();
    slot_owner_.clear();
    completed_at_init_.clear();
    state_ = CollectorState::kStopped;
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
