// Per-tenant network bytes and packets from net.bpf.c, drops from sysfs.
//
// Tenants with host-side interfaces (configured, or found as the host-side
// peers of the veths in the tenant's network namespace) are counted by tc
// classifiers on those interfaces, one NetCounters entry per interface.
// Tenants in the host network namespace with a unified cgroup and no
// interfaces of their own are counted by cgroup_skb programs on that cgroup,
// one entry with an empty interface name. See docs/network.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "agent/cgroup_layout.h"
#include "agent/collector.h"
#include "agent/net_interfaces.h"
#include "bpf/fw_net.h"
#include "fairwatch/v1/config.pb.h"

struct net_bpf;  // the generated skeleton
struct bpf_link;

namespace fairwatch::agent {

struct NetCollectorOptions {
  uint32_t max_tenants = 4096;
  // Host-side interfaces counted at once; per-CPU counters cost 32 B * CPUs each.
  uint32_t max_interfaces = 1024;
  // AgentConfig.tenant_interfaces.
  std::vector<v1::TenantInterfaces> tenant_interfaces;
  // !AgentConfig.probes.disable_netns_interface_discovery.
  bool netns_discovery = true;
  // Where the hierarchies are mounted: any of a tenant's cgroups gives a pid
  // for its namespace; the unified mount (empty: none) is where cgroup_skb attaches.
  CgroupMounts cgroup_mounts;
  // Interfaces can appear after their tenant: Collect re-resolves this often.
  absl::Duration rescan_interval = absl::Seconds(2);
  std::string sys_class_net = kSysClassNet;
};

class NetCollector : public Collector {
 public:
  explicit NetCollector(NetCollectorOptions options);
  ~NetCollector() override;

  absl::string_view name() const override { return "net"; }
  // Loads the programs and removes tc filters a previous agent left behind.
  absl::Status Init() override;
  // Attaches and detaches as tenants and their interfaces come and go.
  absl::Status SyncTenants(absl::Span<const TenantEntry> tenants) override;
  absl::Status Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) override;
  void AddSelfCounters(v1::AgentSelfCounters* self) const override;
  // Detaches every tc filter and cgroup program of ours.
  absl::Status Stop() override;

  // Host-side interfaces currently counted for a tenant, sorted (for
  // Tenant.interfaces in the inventory).
  std::vector<std::string> InterfacesOf(const std::string& tenant_id) const;
  // Bumped whenever any tenant's interface set changes.
  uint64_t interfaces_generation() const { return interfaces_generation_; }
  // Whether the tenant is counted by cgroup_skb now.
  bool CountedByCgroup(const std::string& tenant_id) const;

  // Removes tc filters of ours (our handle and priority, a program named
  // fw_net_tc_*) from clsact ingress/egress of every interface in the agent's
  // network namespace; returns how many. Others' filters and qdiscs stay.
  static absl::StatusOr<int> RemoveStaleTcFilters();

 private:
  struct TcAttachment {
    std::string tenant_id;
    std::string name;
    uint32_t ifindex = 0;
    uint32_t iface_slot = 0;
    InterfaceStats stats_at_attach;  // drops count from attach, like the BPF counters
    InterfaceStats last_stats;
  };
  struct CgroupAttachment {
    uint32_t slot = 0;
    uint64_t cgroup_id = 0;
    struct bpf_link* ingress = nullptr;
    struct bpf_link* egress = nullptr;
  };
  // Cumulative counters of one tenant on one interface ("" = cgroup_skb),
  // including earlier incarnations of the interface (same name, new ifindex).
  struct Totals {
    fw_net_counters retired{};
    uint64_t retired_rx_drops = 0;
    uint64_t retired_tx_drops = 0;
  };
  struct Wanted {
    std::string tenant_id;
    uint32_t slot = 0;
    std::map<uint32_t, std::string> interfaces;  // ifindex -> name
    bool cgroup = false;
    std::string unified_path;
  };

  // TCP counters of a tenant in a namespace of its own, cumulative across
  // namespaces (a restarted container gets a new one, counting from zero).
  struct TcpTotals {
    pid_t pid = 0;        // a process in it, from the last resolve
    NetnsIdentity netns;  // the namespace counted now
    TcpSnmp base;         // its counters when first seen
    TcpSnmp last;         // at the last read
    TcpSnmp retired;      // counted in earlier namespaces
    void Retire();        // adds what the namespace counted so far to `retired`
  };

  absl::Status Resolve(absl::Span<const TenantEntry> tenants);
  void TrackTcp(const std::string& tenant_id, const TenantNetns& netns);
  absl::Status AttachTc(const std::string& tenant_id, uint32_t ifindex, const std::string& name);
  absl::Status DetachTc(uint32_t ifindex);
  absl::Status AttachCgroup(const Wanted& w);
  absl::Status DetachCgroup(const std::string& tenant_id);
  absl::Status ReadCounters(int map_fd, uint32_t key, fw_net_counters* out) const;
  void DetachAll();

  NetCollectorOptions options_;
  struct net_bpf* skel_ = nullptr;
  int num_cpus_ = 0;
  absl::flat_hash_map<std::string, std::vector<std::string>> configured_;  // tenant -> names
  absl::flat_hash_map<uint32_t, TcAttachment> tc_;                         // by ifindex
  std::vector<uint32_t> free_iface_slots_;  // FIFO: the longest-free slot is reused first
  absl::flat_hash_map<std::string, CgroupAttachment> cgroups_;   // by tenant id
  std::map<std::string, std::map<std::string, Totals>> totals_;  // tenant -> interface
  absl::Time last_resolve_ = absl::InfinitePast();
  uint64_t interfaces_generation_ = 0;
  // Tenants once seen in a namespace of their own: with no process left they
  // stay off cgroup_skb (a restarting container must not flap between modes).
  absl::flat_hash_set<std::string> seen_foreign_netns_;
  absl::flat_hash_map<std::string, TcpTotals> tcp_;  // by tenant id
};

}  // namespace fairwatch::agent
