#include "agent/uplinks.h"

#include <linux/gen_stats.h>
#include <linux/pkt_sched.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "agent/rtnetlink.h"
#include "common/status.h"

namespace fairwatch::agent {

namespace {

// The counters nested in a qdisc's TCA_STATS2.
void ReadStats2(absl::string_view stats2, RootQdisc* q) {
  rtnl::ForEachAttr(stats2, [&](uint16_t type, absl::string_view v) {
    if (type == TCA_STATS_BASIC) {
      // struct gnet_stats_basic: u64 bytes, u32 packets.
      rtnl::AttrValue(v, &q->bytes);
      uint32_t packets = 0;
      if (v.size() >= 12 && rtnl::AttrValue(v.substr(8), &packets)) q->packets = packets;
    } else if (type == TCA_STATS_QUEUE) {
      struct gnet_stats_queue queue;
      if (rtnl::AttrValue(v, &queue)) {
        q->drops = queue.drops;
        q->backlog_bytes = queue.backlog;
      }
    }
  });
}

}  // namespace

std::vector<RootQdisc> ParseRootQdiscs(absl::string_view buffer) {
  std::vector<RootQdisc> out;
  rtnl::ForEachMessage(buffer, [&](const struct nlmsghdr& hdr, absl::string_view payload) {
    if (hdr.nlmsg_type == NLMSG_DONE || hdr.nlmsg_type == NLMSG_ERROR) return false;
    if (hdr.nlmsg_type != RTM_NEWQDISC) return true;
    struct tcmsg tcm;
    if (!rtnl::AttrValue(payload, &tcm) || tcm.tcm_parent != TC_H_ROOT) return true;
    RootQdisc& q = out.emplace_back();
    q.ifindex = static_cast<uint32_t>(tcm.tcm_ifindex);
    rtnl::ForEachAttr(payload.substr(rtnl::Align4(sizeof(tcm))),
                      [&](uint16_t type, absl::string_view value) {
                        if (type == TCA_KIND)
                          q.kind = std::string(value.substr(0, value.find('\0')));
                        if (type == TCA_STATS2) ReadStats2(value, &q);
                      });
    return true;
  });
  return out;
}

absl::StatusOr<std::vector<RootQdisc>> DumpRootQdiscs() {
  std::vector<RootQdisc> qdiscs;
  RETURN_IF_ERROR(rtnl::DumpAll<struct tcmsg>(RTM_GETQDISC, "the RTM_GETQDISC dump",
                                              [&](absl::string_view buf) {
                                                for (RootQdisc& q : ParseRootQdiscs(buf))
                                                  qdiscs.push_back(std::move(q));
                                              }));
  return qdiscs;
}

std::vector<v1::NetCounters> UplinkCounters(const std::vector<std::string>& uplinks,
                                            const std::vector<RootQdisc>& qdiscs,
                                            const std::string& sys_class_net) {
  std::vector<v1::NetCounters> out;
  for (const std::string& name : uplinks) {
    uint32_t ifindex = 0;
    std::ifstream index(absl::StrCat(sys_class_net, "/", name, "/ifindex"));
    if (!(index >> ifindex)) continue;
    absl::StatusOr<InterfaceStats> stats = ReadInterfaceStats(name, sys_class_net);
    if (!stats.ok()) continue;
    v1::NetCounters& c = out.emplace_back();
    c.set_interface(name);
    c.set_rx_bytes(stats->rx_bytes);
    c.set_tx_bytes(stats->tx_bytes);
    c.set_rx_packets(stats->rx_packets);
    c.set_tx_packets(stats->tx_packets);
    c.set_rx_drops(stats->rx_dropped);
    c.set_tx_drops(stats->tx_dropped);
    for (const RootQdisc& q : qdiscs) {
      if (q.ifindex == ifindex) c.set_queue_drops(q.drops);
    }
  }
  return out;
}

}  // namespace fairwatch::agent
