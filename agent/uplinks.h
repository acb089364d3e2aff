// The host's uplinks of unknown capacity as the host sees them, every sample:
// what each sent and received (/sys/class/net/<if>/statistics) and how many
// packets its root queueing discipline dropped (rtnetlink, RTM_GETQDISC:
// TCA_STATS2). A
// transmit queue that overflows is a saturated link, and what it sent
// meanwhile is what it can carry: the controller learns an uplink's capacity
// from that when nobody configured it and the driver reports no speed
// (docs/network.md, "Capacity").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/net_interfaces.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::agent {

// A root qdisc's counters (an mq root sums its per-queue children).
struct RootQdisc {
  uint32_t ifindex = 0;
  std::string kind;  // TCA_KIND: "fq_codel", "mq", "tbf", "noqueue"
  uint64_t bytes = 0;
  uint64_t packets = 0;
  uint32_t drops = 0;
  uint32_t backlog_bytes = 0;
};

// Parses a buffer of RTM_NEWQDISC messages (as a dump returns them), keeping
// the root qdiscs (parent TC_H_ROOT); ingress/clsact and child qdiscs are
// skipped, as are other message types; a truncated message ends the parse.
std::vector<RootQdisc> ParseRootQdiscs(absl::string_view buffer);

// Every root qdisc of the agent's network namespace, by one dump. Not a get
// per interface: the kernel answers a qdisc get with a notification that also
// goes to every RTNLGRP_TC listener (NetworkManager, `tc monitor`), once a
// second per uplink.
absl::StatusOr<std::vector<RootQdisc>> DumpRootQdiscs();

// HostCounters.net for `uplinks` (their names): byte, packet and drop
// counters from sysfs, queue_drops from `qdiscs` (0 for an interface with no
// queue of its own). An uplink that is gone or unreadable is left out.
std::vector<v1::NetCounters> UplinkCounters(const std::vector<std::string>& uplinks,
                                            const std::vector<RootQdisc>& qdiscs,
                                            const std::string& sys_class_net = kSysClassNet);

}  // namespace fairwatch::agent
