#include "agent/net_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status.h"
#include "net_bpf.skel.h"

namespace fairwatch::agent {
namespace {

// libbpf prints the kernel's extack ("Exclusivity flag on", "Parent Qdisc
// doesn't exists") as warnings for outcomes that are normal here; while tc
// calls run, its messages go to the debug log instead.
int DebugPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (GetLogLevel() > LogLevel::kDebug) return 0;
  char line[512];
  int n = vsnprintf(line, sizeof(line), format, args);
  FW_LOG(Debug, "libbpf: ", absl::StripTrailingAsciiWhitespace(line));
  return n;
}

class QuietLibbpf {
 public:
  QuietLibbpf() : previous_(libbpf_set_print(DebugPrint)) {}
  ~QuietLibbpf() { libbpf_set_print(previous_); }

 private:
  libbpf_print_fn_t previous_;
};

constexpr enum bpf_tc_attach_point kPoints[] = {BPF_TC_INGRESS, BPF_TC_EGRESS};

const char* PointName(enum bpf_tc_attach_point point) {
  return point == BPF_TC_INGRESS ? "ingress" : "egress";
}

std::string ProgName(uint32_t prog_id) {
  int fd = bpf_prog_get_fd_by_id(prog_id);
  if (fd < 0) return "";
  struct bpf_prog_info info = {};
  __u32 len = sizeof(info);
  std::string name;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) name = info.name;
  close(fd);
  return name;
}

// The program id of the filter at our handle/priority, 0 if there is none
// (no clsact qdisc, no such filter, interface gone).
uint32_t QueryOurSlot(uint32_t ifindex, enum bpf_tc_attach_point point) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex), .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = FW_NET_TC_HANDLE, .priority = FW_NET_TC_PRIORITY);
  if (bpf_tc_query(&hook, &opts) != 0) return 0;
  return opts.prog_id;
}

bool IsOurProgram(uint32_t prog_id) {
  return absl::StartsWith(ProgName(prog_id), FW_NET_TC_PROG_PREFIX);
}

// Detaches the filter at our handle/priority if accept(prog_id) says it is
// ours. Returns true when one was removed.
template <typename Accept>
absl::StatusOr<bool> DetachIfOurs(uint32_t ifindex, enum bpf_tc_attach_point point, Accept accept) {
  uint32_t prog_id = QueryOurSlot(ifindex, point);
  if (prog_id == 0 || !accept(prog_id)) return false;
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex), .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = FW_NET_TC_HANDLE, .priority = FW_NET_TC_PRIORITY);
  int err = bpf_tc_detach(&hook, &opts);
  // The interface (and its filters with it) may have gone meanwhile.
  if (err == -ENODEV || err == -ENOENT) return false;
  if (err) {
    return ErrnoStatus(-err, absl::StrCat("detaching our tc filter from ifindex ", ifindex, " ",
                                          PointName(point)));
  }
  return true;
}

// Ids of the BPF programs some live process holds an fd to. A filter whose
// program is held belongs to a running agent (another one, or a test's), not
// to a crashed one, and must not be removed.
absl::flat_hash_set<uint32_t> ProgramsHeldByLiveProcesses() {
  absl::flat_hash_set<uint32_t> held;
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) continue;
    std::error_code fd_ec;
    for (const auto& fd : std::filesystem::directory_iterator(proc.path() / "fd", fd_ec)) {
      std::error_code link_ec;
      const auto target = std::filesystem::read_symlink(fd.path(), link_ec);
      if (link_ec || target.native() != "anon_inode:bpf-prog") continue;
      std::ifstream info(proc.path() / "fdinfo" / fd.path().filename());
      std::string line;
      while (std::getline(info, line)) {
        uint32_t id = 0;
        if (absl::StartsWith(line, "prog_id:") &&
            absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &id)) {
          held.insert(id);
        }
      }
    }
  }
  return held;
}

uint64_t Sub(uint64_t now, uint64_t then) { return now > then ? now - then : 0; }

void Add(fw_net_counters* into, const fw_net_counters& c) {
  into->rx_bytes += c.rx_bytes;
  into->tx_bytes += c.tx_bytes;
  into->rx_packets += c.rx_packets;
  into->tx_packets += c.tx_packets;
}

}  // namespace

NetCollector::NetCollector(NetCollectorOptions options) : options_(std::move(options)) {
  for (const auto& ti : options_.tenant_interfaces) {
    auto& names = configured_[ti.tenant_id()];
    names.insert(names.end(), ti.interfaces().begin(), ti.interfaces().end());
  }
}

NetCollector::~NetCollector() { (void)Stop(); }

absl::StatusOr<int> NetCollector::RemoveStaleTcFilters() {
  ASSIGN_OR_RETURN(std::vector<LinkInfo> links, DumpLinks());
  QuietLibbpf quiet;
  const absl::flat_hash_set<uint32_t> held = ProgramsHeldByLiveProcesses();
  auto stale = [&held](uint32_t prog_id) {
    return IsOurProgram(prog_id) && !held.contains(prog_id);
  };
  int removed = 0;
  absl::Status first_error = absl::OkStatus();
  for (const auto& link : links) {
    for (auto point : kPoints) {
      absl::StatusOr<bool> gone = DetachIfOurs(link.ifindex, point, stale);
      if (!gone.ok()) {
        if (first_error.ok()) first_error = gone.status();
        continue;
      }
      if (*gone) {
        FW_LOG(Info, "net: removed a stale tc filter of ours from ", link.name, " ",
               PointName(point));
        ++removed;
      }
    }
  }
  RETURN_IF_ERROR(first_error);
  return removed;
}

absl::Status NetCollector::Init() {
  if (options_.max_tenants == 0 || options_.max_interfaces == 0) {
    return absl::InvalidArgumentError("net: max_tenants and max_interfaces must be positive");
  }
  num_cpus_ = libbpf_num_possible_cpus();
  if (num_cpus_ <= 0) return ErrnoStatus(-num_cpus_, "counting possible CPUs");
  skel_ = net_bpf__open();
  if (!skel_) return ErrnoStatus(errno, "opening the net BPF object");
  int err = bpf_map__set_max_entries(skel_->maps.iface_slots, options_.max_interfaces);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.iface_counters, options_.max_interfaces);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.cgroup_tenants, options_.max_tenants);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.cgroup_counters, options_.max_tenants);
  if (!err) {
    err = bpf_map__set_max_entries(skel_->maps.cgroup_slot_cache, options_.max_tenants * 8);
  }
  if (err) {
    net_bpf__destroy(skel_);
    skel_ = nullptr;
    state_ = CollectorState::kFailed;
    return ErrnoStatus(-err, "sizing the net BPF maps");
  }
  err = net_bpf__load(skel_);
  if (err) {
    net_bpf__destroy(skel_);
    skel_ = nullptr;
    state_ = CollectorState::kFailed;
    return ErrnoStatus(-err, "loading the net BPF programs (tc, cgroup_skb)");
  }
  free_iface_slots_.clear();
  for (uint32_t s = 0; s < options_.max_interfaces; ++s) free_iface_slots_.push_back(s);
  // tc filters outlive their loader (no tcx links in libbpf 1.1): a crashed agent leaves some.
  absl::StatusOr<int> stale = RemoveStaleTcFilters();
  if (!stale.ok()) FW_LOG(Warning, "net: reconcile: ", stale.status().message());
  state_ = CollectorState::kRunning;
  FW_LOG(Info, "net: loaded tc and cgroup_skb programs (", options_.max_interfaces,
         " interface slots, ", options_.max_tenants, " tenant slots), netns discovery ",
         options_.netns_discovery ? "on" : "off");
  return absl::OkStatus();
}

absl::Status NetCollector::ReadCounters(int map_fd, uint32_t key, fw_net_counters* out) const {
  std::vector<fw_net_counters> per_cpu(num_cpus_);
  if (bpf_map_lookup_elem(map_fd, &key, per_cpu.data()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("reading net counters slot ", key));
  }
  *out = {};
  for (const auto& c : per_cpu) Add(out, c);
  return absl::OkStatus();
}

absl::Status NetCollector::AttachTc(const std::string& tenant_id, uint32_t ifindex,
                                    const std::string& name) {
  if (free_iface_slots_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "net: all ", options_.max_interfaces, " interface slots in use; not counting ", name));
  }
  const uint32_t slot = free_iface_slots_.front();
  std::vector<fw_net_counters> zero(num_cpus_);
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.iface_counters), &slot, zero.data(), BPF_ANY) !=
      0) {
    return ErrnoStatus(errno, absl::StrCat("clearing net interface slot ", slot));
  }
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.iface_slots), &ifindex, &slot, BPF_ANY) != 0) {
    return ErrnoStatus(errno, absl::StrCat("mapping ", name, " (ifindex ", ifindex, ") to a slot"));
  }
  free_iface_slots_.erase(free_iface_slots_.begin());
  TcAttachment a;
  a.tenant_id = tenant_id;
  a.name = name;
  a.ifindex = ifindex;
  a.iface_slot = slot;
  absl::StatusOr<InterfaceStats> stats = ReadInterfaceStats(name, options_.sys_class_net);
  if (stats.ok()) a.stats_at_attach = a.last_stats = *stats;
  tc_[ifindex] = a;  // from here DetachTc undoes whatever part got attached

  QuietLibbpf quiet;
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex),
              .attach_point = BPF_TC_INGRESS);
  // Creates clsact if missing; an existing one (ours from before, or anyone's) is shared.
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) {
    return ErrnoStatus(-err, absl::StrCat("creating the clsact qdisc on ", name));
  }
  for (auto point : kPoints) {
    hook.attach_point = point;
    struct bpf_program* prog =
        point == BPF_TC_INGRESS ? skel_->progs.fw_net_tc_in : skel_->progs.fw_net_tc_eg;
    LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = bpf_program__fd(prog), .flags = 0,
                .handle = FW_NET_TC_HANDLE, .priority = FW_NET_TC_PRIORITY);
    err = bpf_tc_attach(&hook, &opts);
    if (err == -EEXIST) {
      // Our handle/priority is taken: replace it only if it is a filter of ours.
      uint32_t holder = QueryOurSlot(ifindex, point);
      if (holder == 0 || !IsOurProgram(holder)) {
        return absl::AlreadyExistsError(absl::StrCat(
            "net: a foreign tc filter holds handle ", FW_NET_TC_HANDLE, " priority ",
            FW_NET_TC_PRIORITY, " on ", name, " ", PointName(point), "; not counting it"));
      }
      opts.prog_id = 0;
      opts.flags = BPF_TC_F_REPLACE;
      err = bpf_tc_attach(&hook, &opts);
    }
    if (err) {
      return ErrnoStatus(
          -err, absl::StrCat("attaching the tc classifier to ", name, " ", PointName(point)));
    }
  }
  FW_LOG(Info, "net: counting ", name, " (ifindex ", ifindex, ") for tenant ", tenant_id);
  return absl::OkStatus();
}

absl::Status NetCollector::DetachTc(uint32_t ifindex) {
  auto it = tc_.find(ifindex);
  if (it == tc_.end()) return absl::OkStatus();
  TcAttachment a = it->second;
  absl::Status status = absl::OkStatus();
  {
    QuietLibbpf quiet;
    for (auto point : kPoints) {
      struct bpf_program* prog =
          point == BPF_TC_INGRESS ? skel_->progs.fw_net_tc_in : skel_->progs.fw_net_tc_eg;
      struct bpf_prog_info info = {};
      __u32 len = sizeof(info);
      uint32_t our_id = 0;
      if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0) our_id = info.id;
      absl::StatusOr<bool> removed =
          DetachIfOurs(ifindex, point, [&](uint32_t id) { return id == our_id; });
      if (!removed.ok() && status.ok()) status = removed.status();
    }
  }
  // Final figures after the filters are gone; an interface that vanished keeps its last stats.
  Totals& totals = totals_[a.tenant_id][a.name];
  fw_net_counters final_counters{};
  if (ReadCounters(bpf_map__fd(skel_->maps.iface_counters), a.iface_slot, &final_counters).ok()) {
    Add(&totals.retired, final_counters);
  }
  absl::StatusOr<InterfaceStats> stats = ReadInterfaceStats(a.name, options_.sys_class_net);
  if (stats.ok() && stats->rx_dropped >= a.last_stats.rx_dropped &&
      stats->tx_dropped >= a.last_stats.tx_dropped) {
    a.last_stats = *stats;
  }
  // Host-side rx drops were sent by the tenant: tenant tx drops, and the other way round.
  totals.retired_tx_drops += Sub(a.last_stats.rx_dropped, a.stats_at_attach.rx_dropped);
  totals.retired_rx_drops += Sub(a.last_stats.tx_dropped, a.stats_at_attach.tx_dropped);
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.iface_slots), &ifindex) != 0 && errno != ENOENT &&
      status.ok()) {
    status = ErrnoStatus(errno, absl::StrCat("unmapping ifindex ", ifindex));
  }
  free_iface_slots_.push_back(a.iface_slot);
  tc_.erase(it);
  FW_LOG(Info, "net: stopped counting ", a.name, " (ifindex ", ifindex, ") for tenant ",
         a.tenant_id);
  return status;
}

absl::Status NetCollector::AttachCgroup(const Wanted& w) {
  const std::string dir = absl::StrCat(options_.cgroup_mounts.unified, "/", w.unified_path);
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening cgroup ", dir));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return ErrnoStatus(e, absl::StrCat("stat ", dir));
  }
  CgroupAttachment c;
  c.slot = w.slot;
  c.cgroup_id = st.st_ino;
  std::vector<fw_net_counters> zero(num_cpus_);
  absl::Status status = absl::OkStatus();
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.cgroup_counters), &c.slot, zero.data(),
                          BPF_ANY) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("clearing net cgroup slot ", c.slot));
  } else if (bpf_map_update_elem(bpf_map__fd(skel_->maps.cgroup_tenants), &c.cgroup_id, &c.slot,
                                 BPF_ANY) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("adding cgroup ", dir, " to cgroup_tenants"));
  }
  if (status.ok()) {
    __atomic_add_fetch(&skel_->bss->tenant_gen, 1, __ATOMIC_SEQ_CST);
    // bpf_link attachments are multi-program: others' cgroup programs keep running.
    c.ingress = bpf_program__attach_cgroup(skel_->progs.fw_net_cg_in, fd);
    if (!c.ingress)
      status = ErrnoStatus(errno, absl::StrCat("attaching cgroup_skb ingress to ", dir));
  }
  if (status.ok()) {
    c.egress = bpf_program__attach_cgroup(skel_->progs.fw_net_cg_eg, fd);
    if (!c.egress)
      status = ErrnoStatus(errno, absl::StrCat("attaching cgroup_skb egress to ", dir));
  }
  close(fd);
  cgroups_[w.tenant_id] = c;  // DetachCgroup undoes any part that got attached
  if (!status.ok()) {
    (void)DetachCgroup(w.tenant_id);
    return status;
  }
  FW_LOG(Info, "net: counting tenant ", w.tenant_id, " by cgroup_skb on ", dir);
  return absl::OkStatus();
}

absl::Status NetCollector::DetachCgroup(const std::string& tenant_id) {
  auto it = cgroups_.find(tenant_id);
  if (it == cgroups_.end()) return absl::OkStatus();
  CgroupAttachment c = it->second;
  if (c.ingress) bpf_link__destroy(c.ingress);
  if (c.egress) bpf_link__destroy(c.egress);
  fw_net_counters final_counters{};
  if (ReadCounters(bpf_map__fd(skel_->maps.cgroup_counters), c.slot, &final_counters).ok()) {
    Add(&totals_[tenant_id][""].retired, final_counters);
  }
  absl::Status status = absl::OkStatus();
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.cgroup_tenants), &c.cgroup_id) != 0 &&
      errno != ENOENT) {
    status =
        ErrnoStatus(errno, absl::StrCat("removing cgroup ", c.cgroup_id, " from cgroup_tenants"));
  }
  __atomic_add_fetch(&skel_->bss->tenant_gen, 1, __ATOMIC_SEQ_CST);
  cgroups_.erase(it);
  return status;
}

absl::Status NetCollector::Resolve(absl::Span<const TenantEntry> tenants) {
  last_resolve_ = absl::Now();
  ASSIGN_OR_RETURN(std::vector<LinkInfo> links, DumpLinks());
  absl::flat_hash_map<std::string, uint32_t> ifindex_by_name;
  for (const auto& l : links) ifindex_by_name[l.name] = l.ifindex;

  std::vector<Wanted> wanted;
  std::map<std::pair<uint64_t, uint64_t>, std::string> tcp_owner;  // netns -> tenant
  absl::flat_hash_map<uint32_t, size_t> owner_of;                  // ifindex -> index into wanted
  for (const auto& t : tenants) {
    Wanted w;
    w.tenant_id = t.tenant.id();
    w.slot = t.slot;
    auto add = [&](uint32_t ifindex, const std::string& name) {
      auto [it, fresh] = owner_of.emplace(ifindex, wanted.size());
      if (!fresh && it->second != wanted.size()) {
        FW_LOG(Debug, "net: ", name, " belongs to tenant ", wanted[it->second].tenant_id,
               "; not also to ", w.tenant_id);
        return;
      }
      w.interfaces[ifindex] = name;
    };
    // Named by config or by the tenant's source (a VM's taps); they may appear later.
    auto add_named = [&](const std::vector<std::string>& names) {
      for (const auto& name : names) {
        auto idx = ifindex_by_name.find(name);
        if (idx != ifindex_by_name.end()) add(idx->second, name);
      }
    };
    if (auto cfg = configured_.find(w.tenant_id); cfg != configured_.end()) add_named(cfg->second);
    add_named(t.declared_interfaces);
    TenantNetns netns;
    absl::StatusOr<TenantNetns> resolved =
        ResolveTenantNetns(t.tenant, options_.cgroup_mounts, links);
    if (!resolved.ok()) {
      // A transient failure (rtnetlink, /proc) changes nothing: keep what is attached.
      FW_LOG(Debug, "net: tenant ", w.tenant_id, ": ", resolved.status().message());
      for (const auto& [ifindex, a] : tc_) {
        if (a.tenant_id == w.tenant_id) add(ifindex, a.name);
      }
      w.cgroup = cgroups_.contains(w.tenant_id);
      wanted.push_back(std::move(w));
      continue;
    }
    netns = std::move(*resolved);
    if (netns.has_pid && !netns.host_netns) {
      seen_foreign_netns_.insert(w.tenant_id);
      // A namespace's TCP counters are one tenant's: the first resolved (by id).
      const std::pair<uint64_t, uint64_t> key{netns.netns.dev, netns.netns.ino};
      if (tcp_owner.emplace(key, w.tenant_id).first->second == w.tenant_id) {
        TrackTcp(w.tenant_id, netns);
      } else {
        tcp_.erase(w.tenant_id);
      }
    }
    if (!netns.has_pid && seen_foreign_netns_.contains(w.tenant_id)) netns.host_netns = false;
    if (options_.netns_discovery) {
      for (const auto& peer : netns.peers) add(peer.ifindex, peer.name);
    }
    // cgroup_skb sees every socket of the cgroup, in whatever namespace: only
    // for tenants sharing the host's, and only when no interface counts them.
    if (w.interfaces.empty() && netns.host_netns && !options_.cgroup_mounts.unified.empty()) {
      for (const auto& ref : t.tenant.cgroups()) {
        if (ref.hierarchy() != "unified") continue;
        w.cgroup = true;
        w.unified_path = ref.path();
      }
    }
    wanted.push_back(std::move(w));
  }

  auto counted = [&] {
    std::set<std::pair<std::string, std::string>> pairs;
    for (const auto& [ifindex, a] : tc_) pairs.emplace(a.tenant_id, a.name);
    return pairs;
  };
  const auto before = counted();
  absl::Status first_error = absl::OkStatus();
  auto note = [&](const absl::Status& s) {
    if (s.ok()) return;
    if (first_error.ok()) first_error = s;
  };
  // Detach what is no longer wanted, or wanted by someone else.
  std::vector<uint32_t> stale_tc;
  for (const auto& [ifindex, a] : tc_) {
    auto o = owner_of.find(ifindex);
    if (o == owner_of.end() || wanted[o->second].tenant_id != a.tenant_id ||
        wanted[o->second].interfaces[ifindex] != a.name) {
      stale_tc.push_back(ifindex);
    }
  }
  for (uint32_t ifindex : stale_tc) note(DetachTc(ifindex));
  absl::flat_hash_map<std::string, const Wanted*> by_id;
  for (const auto& w : wanted) by_id[w.tenant_id] = &w;
  std::vector<std::string> stale_cg;
  for (const auto& [id, c] : cgroups_) {
    auto w = by_id.find(id);
    if (w == by_id.end() || !w->second->cgroup || w->second->slot != c.slot) stale_cg.push_back(id);
  }
  for (const auto& id : stale_cg) note(DetachCgroup(id));
  for (auto it = totals_.begin(); it != totals_.end();) {
    if (by_id.contains(it->first)) {
      ++it;
    } else {
      it = totals_.erase(it);  // a removed tenant's history goes with it
    }
  }
  for (auto it = seen_foreign_netns_.begin(); it != seen_foreign_netns_.end();) {
    auto next = std::next(it);
    if (!by_id.contains(*it)) seen_foreign_netns_.erase(it);
    it = next;
  }
  for (auto it = tcp_.begin(); it != tcp_.end();) {
    auto next = std::next(it);
    if (!by_id.contains(it->first)) tcp_.erase(it);
    it = next;
  }
  // Attach what is new.
  for (const auto& w : wanted) {
    for (const auto& [ifindex, name] : w.interfaces) {
      if (tc_.contains(ifindex)) continue;
      absl::Status s = AttachTc(w.tenant_id, ifindex, name);
      if (!s.ok()) {
        (void)DetachTc(ifindex);
        note(s);
      }
    }
    if (w.cgroup && !cgroups_.contains(w.tenant_id)) note(AttachCgroup(w));
  }
  if (counted() != before) ++interfaces_generation_;
  return first_error;
}

void NetCollector::TcpTotals::Retire() {
  retired.out_segs += Sub(last.out_segs, base.out_segs);
  retired.retrans_segs += Sub(last.retrans_segs, base.retrans_segs);
}

void NetCollector::TrackTcp(const std::string& tenant_id, const TenantNetns& netns) {
  auto known = tcp_.find(tenant_id);
  if (known != tcp_.end() && known->second.netns == netns.netns) {
    known->second.pid = netns.pid;  // the same namespace, maybe through another process
    return;
  }
  absl::StatusOr<TcpSnmp> now = ReadTcpSnmpIn(netns.pid, netns.netns);
  if (!now.ok()) return;  // the process left: next time
  TcpTotals& t = tcp_[tenant_id];
  if (known != tcp_.end()) t.Retire();  // a new namespace: keep what the old one counted
  t.pid = netns.pid;
  t.netns = netns.netns;
  t.base = *now;  // counted from when first seen
  t.last = *now;
}

absl::Status NetCollector::SyncTenants(absl::Span<const TenantEntry> tenants) {
  if (!skel_) return absl::FailedPreconditionError("net collector is not running");
  return Resolve(tenants);
}

std::vector<std::string> NetCollector::InterfacesOf(const std::string& tenant_id) const {
  std::vector<std::string> out;
  for (const auto& [ifindex, a] : tc_) {
    if (a.tenant_id == tenant_id) out.push_back(a.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool NetCollector::CountedByCgroup(const std::string& tenant_id) const {
  return cgroups_.contains(tenant_id);
}

absl::Status NetCollector::Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) {
  if (!skel_) return absl::FailedPreconditionError("net collector is not running");
  absl::Status resolve_status = absl::OkStatus();
  if (absl::Now() - last_resolve_ >= options_.rescan_interval) resolve_status = Resolve(tenants);

  absl::flat_hash_map<std::string, std::vector<TcAttachment*>> tc_by_tenant;
  for (auto& [ifindex, a] : tc_) tc_by_tenant[a.tenant_id].push_back(&a);
  const int iface_fd = bpf_map__fd(skel_->maps.iface_counters);
  const int cgroup_fd = bpf_map__fd(skel_->maps.cgroup_counters);
  for (size_t i = 0; i < tenants.size(); ++i) {
    const std::string& id = tenants[i].tenant.id();
    std::map<std::string, v1::NetCounters> entries;
    auto add = [&](const std::string& ifname, const fw_net_counters& c, uint64_t rx_drops,
                   uint64_t tx_drops) {
      v1::NetCounters& e = entries[ifname];
      e.set_interface(ifname);
      e.set_rx_bytes(e.rx_bytes() + c.rx_bytes);
      e.set_tx_bytes(e.tx_bytes() + c.tx_bytes);
      e.set_rx_packets(e.rx_packets() + c.rx_packets);
      e.set_tx_packets(e.tx_packets() + c.tx_packets);
      e.set_rx_drops(e.rx_drops() + rx_drops);
      e.set_tx_drops(e.tx_drops() + tx_drops);
    };
    if (auto t = totals_.find(id); t != totals_.end()) {
      for (const auto& [ifname, totals] : t->second) {
        add(ifname, totals.retired, totals.retired_rx_drops, totals.retired_tx_drops);
      }
    }
    for (TcAttachment* a : tc_by_tenant[id]) {
      fw_net_counters c{};
      RETURN_IF_ERROR(ReadCounters(iface_fd, a->iface_slot, &c));
      absl::StatusOr<InterfaceStats> stats = ReadInterfaceStats(a->name, options_.sys_class_net);
      if (stats.ok()) a->last_stats = *stats;
      add(a->name, c, Sub(a->last_stats.tx_dropped, a->stats_at_attach.tx_dropped),
          Sub(a->last_stats.rx_dropped, a->stats_at_attach.rx_dropped));
    }
    if (auto c = cgroups_.find(id); c != cgroups_.end()) {
      fw_net_counters counters{};
      RETURN_IF_ERROR(ReadCounters(cgroup_fd, c->second.slot, &counters));
      add("", counters, 0, 0);  // drops are not visible to cgroup_skb
    }
    v1::TenantCounters* counters = report->mutable_tenants(static_cast<int>(i));
    for (auto& [ifname, e] : entries) *counters->mutable_net()->Add() = std::move(e);
    if (auto t = tcp_.find(id); t != tcp_.end()) {
      TcpTotals& tcp = t->second;
      // Read only while the process is still in the namespace counted.
      absl::StatusOr<TcpSnmp> now = ReadTcpSnmpIn(tcp.pid, tcp.netns);
      if (now.ok()) {
        if (now->out_segs < tcp.last.out_segs || now->retrans_segs < tcp.last.retrans_segs) {
          // Counters that fell are a new namespace under a reused inode
          // number (a restarted container): it counts from zero.
          tcp.Retire();
          tcp.base = TcpSnmp{};
        }
        tcp.last = *now;
      }
      v1::TcpCounters* out = counters->mutable_tcp();
      out->set_present(true);
      out->set_sent_segments(tcp.retired.out_segs + Sub(tcp.last.out_segs, tcp.base.out_segs));
      out->set_retransmitted_segments(tcp.retired.retrans_segs +
                                      Sub(tcp.last.retrans_segs, tcp.base.retrans_segs));
    }
  }
  return resolve_status;
}

void NetCollector::AddSelfCounters(v1::AgentSelfCounters* self) const {
  if (!skel_) return;
  for (struct bpf_program* prog : {skel_->progs.fw_net_tc_in, skel_->progs.fw_net_tc_eg,
                                   skel_->progs.fw_net_cg_in, skel_->progs.fw_net_cg_eg}) {
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
  v1::BpfMapFill* ifaces = self->add_maps();
  ifaces->set_name("net/iface_slots");
  ifaces->set_entries(tc_.size());
  ifaces->set_max_entries(options_.max_interfaces);
  v1::BpfMapFill* cgroups = self->add_maps();
  cgroups->set_name("net/cgroup_tenants");
  cgroups->set_entries(cgroups_.size());
  cgroups->set_max_entries(options_.max_tenants);
  self->set_lost_events(self->lost_events() +
                        __atomic_load_n(&skel_->bss->lost_events, __ATOMIC_RELAXED));
}

void NetCollector::DetachAll() {
  std::vector<uint32_t> ifindexes;
  for (const auto& [ifindex, a] : tc_) ifindexes.push_back(ifindex);
  for (uint32_t ifindex : ifindexes) {
    absl::Status s = DetachTc(ifindex);
    if (!s.ok()) FW_LOG(Warning, "net: ", s.message());
  }
  std::vector<std::string> ids;
  for (const auto& [id, c] : cgroups_) ids.push_back(id);
  for (const auto& id : ids) {
    absl::Status s = DetachCgroup(id);
    if (!s.ok()) FW_LOG(Warning, "net: ", s.message());
  }
}

absl::Status NetCollector::Stop() {
  if (skel_) {
    DetachAll();
    net_bpf__destroy(skel_);
    skel_ = nullptr;
    totals_.clear();
    state_ = CollectorState::kStopped;
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
