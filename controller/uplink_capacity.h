// An uplink's capacity learned from what it carries (docs/network.md,
// "Capacity"): with neither a configured rate nor a speed from its driver
// (virtio-net reports none), the most an uplink sent in an interval in which
// its transmit queue overflowed (root qdisc drops). A queue overflows only
// when packets arrive faster than the link sends them, so what it sent
// meanwhile is what it can carry. The peak over the last kWindow such
// intervals: an interval saturated for part of its length sends less, and a
// link renegotiated to a lower speed is followed once the old peak ages out.
// The same figure stands for the receive direction, which shows no queue of
// the host's: an Ethernet link's rate is the same both ways.
//
// Pure: fed one report's host counters at a time; no clock, no I/O.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "fairwatch/v1/types.pb.h"
#include "google/protobuf/repeated_ptr_field.h"

namespace fairwatch::controller {

class UplinkCapacityLearner {
 public:
  static constexpr size_t kWindow = 30;  // saturated intervals remembered

  // Folds in one report's uplink counters (cumulative, HostCounters.net),
  // taken at `monotonic_ns`. A counter or clock that went back starts that
  // uplink's next interval afresh.
  void Observe(const google::protobuf::RepeatedPtrField<v1::NetCounters>& uplinks,
               uint64_t monotonic_ns);

  // Fills each direction of each uplink of `capacity` left at 0 (unknown)
  // with what was learned, and marks the uplinks saturated in the last interval.
  void Fill(v1::HostCapacity* capacity) const;

 private:
  struct Uplink {
    uint64_t tx_bytes = 0, queue_drops = 0, monotonic_ns = 0;
    bool saturated = false;    // the last interval's
    std::deque<double> peaks;  // tx bytes/s of the last saturated intervals
  };
  absl::flat_hash_map<std::string, Uplink> uplinks_;
};

}  // namespace fairwatch::controller
