// Pure parsing of interface data: a fake /sys/class/net, synthesized
// rtnetlink messages, a fake cgroup tree. No root needed.
#include "agent/net_interfaces.h"

#include <gtest/gtest.h>
#include <linux/gen_stats.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "agent/uplinks.h"

namespace fairwatch::agent {
namespace {

namespace fs = std::filesystem;

class FakeDir {
 public:
  FakeDir() {
    char tmpl[] = "/tmp/fw_net_test_XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  ~FakeDir() { fs::remove_all(root_); }
  void Write(const std::string& rel, const std::string& text) {
    fs::path p = fs::path(root_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

void AddInterface(FakeDir& dir, const std::string& name, int ifindex, int iflink, int type,
                  const std::string& speed, bool physical = false) {
  // A NIC's sysfs directory has a `device` link to its bus device.
  if (physical) dir.Write(name + "/device/vendor", "0x1af4\n");
  dir.Write(name + "/ifindex", absl::StrCat(ifindex, "\n"));
  dir.Write(name + "/iflink", absl::StrCat(iflink, "\n"));
  dir.Write(name + "/type", absl::StrCat(type, "\n"));
  if (!speed.empty()) dir.Write(name + "/speed", speed);
}

TEST(NetSysfs, ReadsIndexPeerTypeAndSpeedOfEachInterface) {
  FakeDir dir;
  AddInterface(dir, "lo", 1, 1, 772, "");
  AddInterface(dir, "eth0", 2, 2, 1, "25000\n", /*physical=*/true);
  AddInterface(dir, "veth1", 7, 3, 1, "-1\n");  // down: the kernel says -1
  AddInterface(dir, "tap0", 9, 9, 1, "");       // reading speed fails: file absent here
  dir.Write("bonding_masters", "");
  auto ifaces = ReadSysfsInterfaces(dir.root());
  ASSERT_TRUE(ifaces.ok()) << ifaces.status();
  ASSERT_EQ(ifaces->size(), 4u);
  EXPECT_EQ((*ifaces)[0].name, "eth0");
  EXPECT_EQ((*ifaces)[0].speed_mbps, 25000);
  EXPECT_TRUE((*ifaces)[0].physical);
  EXPECT_TRUE((*ifaces)[1].loopback);
  EXPECT_FALSE((*ifaces)[1].physical);
  EXPECT_EQ((*ifaces)[2].name, "tap0");
  EXPECT_EQ((*ifaces)[2].speed_mbps, -1);
  EXPECT_EQ((*ifaces)[3].name, "veth1");
  EXPECT_EQ((*ifaces)[3].ifindex, 7u);
  EXPECT_EQ((*ifaces)[3].iflink, 3u);
  EXPECT_EQ((*ifaces)[3].speed_mbps, -1);
  EXPECT_FALSE((*ifaces)[3].physical);
}

TEST(NetSysfs, MissingDirectoryIsAnError) {
  EXPECT_FALSE(ReadSysfsInterfaces("/nonexistent/sys/class/net").ok());
}

TEST(NetCapacity, UplinksAreTheCapacityInBytesPerSecond) {
  FakeDir dir;
  AddInterface(dir, "lo", 1, 1, 772, "");
  AddInterface(dir, "eth0", 2, 2, 1, "10000\n", /*physical=*/true);
  AddInterface(dir, "eth1", 3, 3, 1, "-1\n", /*physical=*/true);  // a NIC of unknown speed
  // A tenant's veth and a bridge report speeds too, but carry nothing the
  // uplinks do not: not capacity unless an operator names them.
  AddInterface(dir, "veth1", 7, 3, 1, "10000\n");
  AddInterface(dir, "br0", 8, 8, 1, "10000\n");
  AddInterface(dir, "shaped0", 9, 9, 1, "10000\n");
  v1::InterfaceCapacityOverride o;
  o.set_name("shaped0");
  o.set_tx_bytes_per_s(5e6);
  v1::InterfaceCapacityOverride absent;
  absent.set_name("nope0");
  absent.set_rx_bytes_per_s(1);
  auto caps = ReadInterfaceCapacities({o, absent}, dir.root());
  ASSERT_TRUE(caps.ok()) << caps.status();
  ASSERT_EQ(caps->size(), 3u);
  EXPECT_EQ((*caps)[0].name(), "eth0");
  EXPECT_DOUBLE_EQ((*caps)[0].rx_bytes_per_s(), 1.25e9);
  EXPECT_DOUBLE_EQ((*caps)[0].tx_bytes_per_s(), 1.25e9);
  EXPECT_EQ((*caps)[1].name(), "eth1");
  EXPECT_DOUBLE_EQ((*caps)[1].rx_bytes_per_s(), 0) << "unknown stays 0";
  EXPECT_EQ((*caps)[2].name(), "shaped0");
  EXPECT_DOUBLE_EQ((*caps)[2].rx_bytes_per_s(), 0)
      << "a virtual interface's own speed is no capacity";
  EXPECT_DOUBLE_EQ((*caps)[2].tx_bytes_per_s(), 5e6) << "override wins where set";
  EXPECT_EQ((*caps)[0].source(), v1::CAPACITY_LINK_SPEED);
  EXPECT_EQ((*caps)[1].source(), v1::CAPACITY_SOURCE_UNSPECIFIED) << "left to be learned";
  EXPECT_EQ((*caps)[2].source(), v1::CAPACITY_CONFIGURED);
}

TEST(NetCapacity, ANamedBondCountsItsPortsOnceAndExcludedNicsNotAtAll) {
  FakeDir dir;
  AddInterface(dir, "eth0", 2, 2, 1, "10000\n", /*physical=*/true);
  AddInterface(dir, "eth1", 3, 3, 1, "10000\n", /*physical=*/true);
  AddInterface(dir, "mgmt0", 4, 4, 1, "1000\n", /*physical=*/true);
  AddInterface(dir, "bond0", 5, 5, 1, "20000\n");
  for (const char* port : {"eth0", "eth1"}) {
    fs::create_directory_symlink("../bond0", fs::path(dir.root()) / port / "master");
  }
  v1::InterfaceCapacityOverride bond;
  bond.set_name("bond0");
  bond.set_rx_bytes_per_s(2e9);
  bond.set_tx_bytes_per_s(2e9);
  v1::InterfaceCapacityOverride mgmt;
  mgmt.set_name("mgmt0");
  mgmt.set_exclude(true);
  auto ifaces = ReadSysfsInterfaces(dir.root());
  ASSERT_TRUE(ifaces.ok()) << ifaces.status();
  EXPECT_EQ((*ifaces)[1].name, "eth0");
  EXPECT_EQ((*ifaces)[1].master, "bond0");
  auto caps = InterfaceCapacities(*ifaces, {bond, mgmt});
  ASSERT_EQ(caps.size(), 1u) << "the ports count through the bond; mgmt0 is excluded";
  EXPECT_EQ(caps[0].name(), "bond0");
  EXPECT_DOUBLE_EQ(caps[0].tx_bytes_per_s(), 2e9);
  // Without the override the ports are the uplinks (and the bond is virtual).
  caps = InterfaceCapacities(*ifaces, {mgmt});
  ASSERT_EQ(caps.size(), 2u);
  EXPECT_EQ(caps[0].name(), "eth0");
  EXPECT_EQ(caps[1].name(), "eth1");
}

TEST(NetCapacity, OverrideReplacesAKnownSpeed) {
  SysfsInterface eth{"eth0", 2, 2, 1000, false, true, ""};
  v1::InterfaceCapacityOverride o;
  o.set_name("eth0");
  o.set_rx_bytes_per_s(42);
  auto caps = InterfaceCapacities({eth}, {o});
  ASSERT_EQ(caps.size(), 1u);
  EXPECT_DOUBLE_EQ(caps[0].rx_bytes_per_s(), 42);
  EXPECT_DOUBLE_EQ(caps[0].tx_bytes_per_s(), 125e6);
}

TEST(NetTcpSnmp, ReadsOutAndRetransSegsByColumnName) {
  // As in /proc/net/snmp (kernel 6.x), the Ip/Icmp lines trimmed.
  const char* text =
      "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
      "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets "
      "CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n"
      "Tcp: 1 200 120000 -1 31 5 0 0 2 81927 108532 554 0 3 0\n"
      "Udp: InDatagrams NoPorts\nUdp: 4 0\n";
  absl::StatusOr<TcpSnmp> tcp = ParseTcpSnmp(text);
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_EQ(tcp->out_segs, 108532u);
  EXPECT_EQ(tcp->retrans_segs, 554u);
}

TEST(NetTcpSnmp, MissingOrMalformedTcpLinesAreErrors) {
  EXPECT_FALSE(ParseTcpSnmp("").ok());
  EXPECT_FALSE(ParseTcpSnmp("Tcp: OutSegs RetransSegs\n").ok()) << "no values line";
  EXPECT_FALSE(ParseTcpSnmp("Tcp: OutSegs RetransSegs\nTcp: 5\n").ok()) << "a column short";
  EXPECT_FALSE(ParseTcpSnmp("Tcp: OutSegs InSegs\nTcp: 5 6\n").ok()) << "no RetransSegs";
  EXPECT_FALSE(ParseTcpSnmp("Tcp: OutSegs RetransSegs\nTcp: 5 x\n").ok());
}

TEST(NetTcpSnmp, ReadsThisProcessNamespace) {
  absl::StatusOr<NetnsIdentity> own = NetnsOf("/proc/self/ns/net");
  ASSERT_TRUE(own.ok()) << own.status();
  absl::StatusOr<TcpSnmp> tcp = ReadTcpSnmpIn(getpid(), *own);
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_FALSE(ReadTcpSnmpIn(getpid(), NetnsIdentity{own->dev, own->ino + 1}).ok())
      << "another namespace's process";
  EXPECT_FALSE(ReadTcpSnmpIn(0, *own).ok());
}

TEST(NetSysfs, ReadsStatisticsOfOneInterface) {
  FakeDir dir;
  const char* files[] = {"rx_bytes",   "tx_bytes",   "rx_packets",
                         "tx_packets", "rx_dropped", "tx_dropped"};
  for (int i = 0; i < 6; ++i)
    dir.Write(absl::StrCat("v0/statistics/", files[i]), absl::StrCat(100 + i, "\n"));
  auto s = ReadInterfaceStats("v0", dir.root());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->rx_bytes, 100u);
  EXPECT_EQ(s->tx_bytes, 101u);
  EXPECT_EQ(s->rx_packets, 102u);
  EXPECT_EQ(s->tx_packets, 103u);
  EXPECT_EQ(s->rx_dropped, 104u);
  EXPECT_EQ(s->tx_dropped, 105u);
  EXPECT_FALSE(ReadInterfaceStats("gone0", dir.root()).ok());
}

// Builds RTM_NEWLINK messages the way the kernel lays them out.
class LinkMessageBuilder {
 public:
  void Link(int ifindex, const std::string& name, int link = -1, int netnsid = -2) {
    std::string msg(NLMSG_HDRLEN, '\0');
    struct ifinfomsg ifi {};
    ifi.ifi_index = ifindex;
    Append(&msg, &ifi, sizeof(ifi));
    Attr(&msg, IFLA_IFNAME, name.c_str(), name.size() + 1);
    if (link >= 0) Attr(&msg, IFLA_LINK, &link, 4);
    if (netnsid >= -1) Attr(&msg, IFLA_LINK_NETNSID, &netnsid, 4);
    Finish(&msg, RTM_NEWLINK);
  }
  // A qdisc as RTM_NEWQDISC dumps it: its kind and TCA_STATS2 with the
  // basic and queue counters nested.
  void Qdisc(int ifindex, uint32_t parent, const std::string& kind, uint64_t bytes,
             uint32_t packets, uint32_t drops, uint32_t backlog) {
    std::string msg(NLMSG_HDRLEN, '\0');
    struct tcmsg tcm {};
    tcm.tcm_ifindex = ifindex;
    tcm.tcm_parent = parent;
    Append(&msg, &tcm, sizeof(tcm));
    Attr(&msg, TCA_KIND, kind.c_str(), kind.size() + 1);
    std::string stats;
    struct gnet_stats_basic basic {};
    basic.bytes = bytes;
    basic.packets = packets;
    Attr(&stats, TCA_STATS_BASIC, &basic, sizeof(basic));
    struct gnet_stats_queue queue {};
    queue.drops = drops;
    queue.backlog = backlog;
    queue.overlimits = 77;
    Attr(&stats, TCA_STATS_QUEUE, &queue, sizeof(queue));
    Attr(&msg, TCA_STATS2 | NLA_F_NESTED, stats.data(), stats.size());
    Finish(&msg, RTM_NEWQDISC);
  }
  void Other(uint16_t type) {
    std::string msg(NLMSG_HDRLEN, '\0');
    msg.append(16, '\0');
    Finish(&msg, type);
  }
  std::string buffer;

 private:
  static void Append(std::string* msg, const void* data, size_t len) {
    msg->append(static_cast<const char*>(data), len);
    msg->append(NLMSG_ALIGN(len) - len, '\0');
  }
  static void Attr(std::string* msg, uint16_t type, const void* data, size_t len) {
    struct rtattr a {};
    a.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    a.rta_type = type;
    msg->append(reinterpret_cast<const char*>(&a), sizeof(a));
    Append(msg, data, len);
  }
  void Finish(std::string* msg, uint16_t type) {
    struct nlmsghdr h {};
    h.nlmsg_len = static_cast<uint32_t>(msg->size());
    h.nlmsg_type = type;
    memcpy(msg->data(), &h, sizeof(h));
    buffer += *msg;
  }
};

TEST(NetLinkParse, ReadsNamePeerIndexAndPeerNamespace) {
  LinkMessageBuilder b;
  b.Link(1, "lo");
  b.Link(5, "vethA", 2, 3);
  b.Other(RTM_NEWADDR);
  b.Link(6, "vethB", 2, 4);
  b.Other(NLMSG_DONE);
  b.Link(7, "after-done", 2, 3);
  auto links = ParseLinkMessages(b.buffer);
  ASSERT_EQ(links.size(), 3u);
  EXPECT_EQ(links[0].name, "lo");
  EXPECT_EQ(links[0].link_ifindex, 0u);
  EXPECT_EQ(links[0].link_netnsid, -1);
  EXPECT_EQ(links[1].ifindex, 5u);
  EXPECT_EQ(links[1].name, "vethA");
  EXPECT_EQ(links[1].link_ifindex, 2u);
  EXPECT_EQ(links[1].link_netnsid, 3);
  EXPECT_EQ(links[2].link_netnsid, 4);

  auto peers = PeersInNamespace(links, 3);
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0].name, "vethA");
  EXPECT_TRUE(PeersInNamespace(links, -1).empty()) << "no id: no peers";
}

TEST(NetLinkParse, TruncatedMessageEndsTheParseWithoutReadingPastIt) {
  LinkMessageBuilder b;
  b.Link(5, "vethA", 2, 3);
  b.Link(6, "vethB", 2, 4);
  std::string cut = b.buffer.substr(0, b.buffer.size() - 6);
  auto links = ParseLinkMessages(cut);
  ASSERT_EQ(links.size(), 1u);
  EXPECT_EQ(links[0].name, "vethA");
  EXPECT_TRUE(ParseLinkMessages("").empty());
  EXPECT_TRUE(ParseLinkMessages(std::string(3, 'x')).empty());
}

TEST(NetCgroupPid, FindsAProcessInTheCgroupOrItsDescendants) {
  FakeDir dir;
  dir.Write("t/cgroup.procs", "");
  dir.Write("t/emulator/cgroup.procs", "");
  dir.Write("t/vcpu0/cgroup.procs", "4242\n4243\n");
  auto pid = FirstPidInCgroup(dir.root() + "/t");
  ASSERT_TRUE(pid.ok()) << pid.status();
  ASSERT_TRUE(pid->has_value());
  EXPECT_EQ(**pid, 4242);

  dir.Write("empty/cgroup.procs", "");
  auto none = FirstPidInCgroup(dir.root() + "/empty");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(FirstPidInCgroup(dir.root() + "/missing").ok());
}

TEST(NetCgroupPid, DepthLimitStopsTheSearch) {
  FakeDir dir;
  dir.Write("t/cgroup.procs", "");
  dir.Write("t/a/cgroup.procs", "");
  dir.Write("t/a/b/cgroup.procs", "77\n");
  auto shallow = FirstPidInCgroup(dir.root() + "/t", 1);
  ASSERT_TRUE(shallow.ok());
  EXPECT_FALSE(shallow->has_value());
  auto deep = FirstPidInCgroup(dir.root() + "/t", 2);
  ASSERT_TRUE(deep.ok());
  EXPECT_EQ(deep->value_or(0), 77);
}

TEST(NetNamespace, OwnNamespaceEqualsItselfAndDiffersFromAFile) {
  auto self = NetnsOf("/proc/self/ns/net");
  ASSERT_TRUE(self.ok()) << self.status();
  auto again = NetnsOf(absl::StrCat("/proc/", getpid(), "/ns/net"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*self, *again);
  auto file = NetnsOf("/proc/self/status");
  ASSERT_TRUE(file.ok());
  EXPECT_FALSE(*self == *file);
}

TEST(UplinkQueues, ReadsTheRootQdiscsCountersAndSkipsTheRest) {
  LinkMessageBuilder b;
  b.Qdisc(2, TC_H_ROOT, "tbf", 88'000'000, 58'000, 1036, 122634);
  b.Qdisc(2, TC_H_INGRESS, "clsact", 5, 1, 0, 0);  // the agent's own tc hook
  b.Qdisc(3, 0x10001, "fq_codel", 9, 9, 9, 9);     // a child of an mq root
  b.Other(RTM_NEWLINK);
  b.Qdisc(3, TC_H_ROOT, "mq", 1'000, 10, 0, 0);
  b.Other(NLMSG_DONE);
  b.Qdisc(4, TC_H_ROOT, "after-done", 0, 0, 0, 0);
  std::vector<RootQdisc> q = ParseRootQdiscs(b.buffer);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].ifindex, 2u);
  EXPECT_EQ(q[0].kind, "tbf");
  EXPECT_EQ(q[0].bytes, 88'000'000u);
  EXPECT_EQ(q[0].packets, 58'000u);
  EXPECT_EQ(q[0].drops, 1036u);
  EXPECT_EQ(q[0].backlog_bytes, 122634u);
  EXPECT_EQ(q[1].ifindex, 3u);
  EXPECT_EQ(q[1].kind, "mq");
  EXPECT_EQ(q[1].drops, 0u);
  // A message cut short ends the parse without reading past it.
  std::string cut = b.buffer.substr(0, b.buffer.size() / 3);
  EXPECT_LE(ParseRootQdiscs(cut).size(), 1u);
}

TEST(UplinkQueues, ThisHostsRootQdiscsOverRtnetlink) {
  absl::StatusOr<std::vector<RootQdisc>> q = DumpRootQdiscs();
  ASSERT_TRUE(q.ok()) << q.status();
  bool lo = false;
  for (const RootQdisc& r : *q) lo = lo || (r.ifindex == 1 && r.kind == "noqueue");
  EXPECT_TRUE(lo) << "the loopback's root is noqueue";
}

TEST(UplinkQueues, CountersOfEachUplinkWithItsQueueDrops) {
  FakeDir dir;
  const char* files[] = {"rx_bytes",   "tx_bytes",   "rx_packets",
                         "tx_packets", "rx_dropped", "tx_dropped"};
  for (const char* name : {"ens3", "ens4"}) {
    for (int i = 0; i < 6; ++i) {
      dir.Write(absl::StrCat(name, "/statistics/", files[i]), absl::StrCat(100 + i, "\n"));
    }
  }
  dir.Write("ens3/ifindex", "2\n");
  dir.Write("ens4/ifindex", "3\n");
  RootQdisc tbf;
  tbf.ifindex = 2;
  tbf.drops = 17;
  std::vector<v1::NetCounters> c = UplinkCounters({"ens3", "ens4", "gone0"}, {tbf}, dir.root());
  ASSERT_EQ(c.size(), 2u) << "an uplink that is gone is left out";
  EXPECT_EQ(c[0].interface(), "ens3");
  EXPECT_EQ(c[0].tx_bytes(), 101u);
  EXPECT_EQ(c[0].tx_drops(), 105u);
  EXPECT_EQ(c[0].queue_drops(), 17u);
  EXPECT_EQ(c[1].interface(), "ens4");
  EXPECT_EQ(c[1].queue_drops(), 0u) << "no queue of its own";
}

}  // namespace
}  // namespace fairwatch::agent
