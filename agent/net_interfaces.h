// A tenant's host-side network interfaces and the host's interface capacity.
//
// Interfaces of a tenant come from config (tenant_interfaces) and from its
// network namespace: a pid from the tenant's cgroup.procs gives the namespace;
// if it is not the agent's own, the host-netns links whose peer lives in that
// namespace (veth: IFLA_LINK_NETNSID equal to the namespace's id as the host
// sees it, from RTM_GETNSID) are its host-side interfaces. Everything is read
// from the host namespace over rtnetlink: no setns, no thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/cgroup_layout.h"
#include "fairwatch/v1/config.pb.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::agent {

inline constexpr char kSysClassNet[] = "/sys/class/net";

// One interface as /sys/class/net shows it (the sysfs mount's namespace).
struct SysfsInterface {
  std::string name;
  uint32_t ifindex = 0;
  uint32_t iflink = 0;      // peer's ifindex (in the peer's namespace) for veth
  int64_t speed_mbps = -1;  // -1: unknown (virtual, down, or unreadable)
  bool loopback = false;    // type 772 (ARPHRD_LOOPBACK)
  bool physical = false;    // backed by a device (<if>/device exists): a NIC, not a veth/tap/bridge
  std::string master;       // the bond or bridge it is a port of (<if>/master), if any
};

// Lists <dir>/*: ifindex, iflink, type and speed of each interface.
absl::StatusOr<std::vector<SysfsInterface>> ReadSysfsInterfaces(
    const std::string& sys_class_net = kSysClassNet);

// /sys/class/net/<if>/statistics as the interface sees it (host side).
struct InterfaceStats {
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  uint64_t rx_packets = 0;
  uint64_t tx_packets = 0;
  uint64_t rx_dropped = 0;
  uint64_t tx_dropped = 0;
};
absl::StatusOr<InterfaceStats> ReadInterfaceStats(const std::string& name,
                                                  const std::string& sys_class_net = kSysClassNet);

// The host's network capacity: its uplinks. An uplink is a physical interface
// (its speed in Mb/s as bytes/s in both directions when known, else 0) or any
// interface named by an override (a bond, a bridge, a shaped link). Virtual
// interfaces are not capacity: tenants' veths and taps report 10 Gb/s each,
// bonds and bridges carry what their physical ports carry. An override wins
// field by field where it is non-zero (a virtual interface's other direction
// stays 0, unknown); a port of an overridden bond or bridge counts only
// through it; an override with `exclude` removes a physical interface.
// Sorted by name.
std::vector<v1::InterfaceCapacity> InterfaceCapacities(
    const std::vector<SysfsInterface>& interfaces,
    const std::vector<v1::InterfaceCapacityOverride>& overrides);
absl::StatusOr<std::vector<v1::InterfaceCapacity>> ReadInterfaceCapacities(
    const std::vector<v1::InterfaceCapacityOverride>& overrides,
    const std::string& sys_class_net = kSysClassNet);

// One link from an RTM_GETLINK dump of the agent's namespace.
struct LinkInfo {
  uint32_t ifindex = 0;
  std::string name;
  uint32_t link_ifindex = 0;  // IFLA_LINK: the peer's ifindex, 0 if none
  int32_t link_netnsid = -1;  // IFLA_LINK_NETNSID: the peer's namespace, -1 if same/none
};

// Parses a buffer of RTM_NEWLINK messages (as a dump returns them). Other
// message types are skipped; a truncated message ends the parse.
std::vector<LinkInfo> ParseLinkMessages(absl::string_view buffer);

// Links of the agent's network namespace (rtnetlink dump).
absl::StatusOr<std::vector<LinkInfo>> DumpLinks();
// The id the agent's namespace gives the namespace open at netns_fd, or -1
// when it has none (no link connects the two).
absl::StatusOr<int32_t> NetnsIdOf(int netns_fd);

// Host-side links whose peer lives in namespace nsid.
std::vector<LinkInfo> PeersInNamespace(const std::vector<LinkInfo>& host_links, int32_t nsid);

// A process of the cgroup at dir or (breadth first, a few levels) of one of
// its descendants; nullopt when the subtree has none.
absl::StatusOr<std::optional<pid_t>> FirstPidInCgroup(const std::string& dir, int max_depth = 3);

// Whether pid's network namespace is the agent's own.
struct NetnsIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  bool operator==(const NetnsIdentity&) const = default;
};
absl::StatusOr<NetnsIdentity> NetnsOf(const std::string& proc_ns_net_path);

// Where a tenant's processes live, network-wise.
struct TenantNetns {
  bool has_pid = false;         // false: no process in the tenant's cgroups yet
  bool host_netns = true;       // the agent's own namespace (or unknown)
  pid_t pid = 0;                // with has_pid: one of its processes
  NetnsIdentity netns;          // with has_pid: that process's namespace
  std::vector<LinkInfo> peers;  // host-side peers of its namespace's interfaces
};

// A network namespace's TCP counters, from the Tcp: lines of
// /proc/<pid>/net/snmp (that process's namespace).
struct TcpSnmp {
  uint64_t out_segs = 0;
  uint64_t retrans_segs = 0;
};
absl::StatusOr<TcpSnmp> ParseTcpSnmp(absl::string_view text);
// The counters of process `pid`'s namespace, if it is still in `netns`
// (one open of /proc/<pid>, so a reused pid cannot mix two processes).
absl::StatusOr<TcpSnmp> ReadTcpSnmpIn(pid_t pid, const NetnsIdentity& netns);

// Finds a pid of the tenant (any of its CgroupRefs), its namespace, and when
// that is not the agent's, the host-side peers among host_links.
absl::StatusOr<TenantNetns> ResolveTenantNetns(const v1::Tenant& tenant, const CgroupMounts& mounts,
                                               const std::vector<LinkInfo>& host_links);

}  // namespace fairwatch::agent
