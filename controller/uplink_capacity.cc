#include "controller/uplink_capacity.h"

#include <algorithm>

namespace fairwatch::controller {

void UplinkCapacityLearner::Observe(
    const google::protobuf::RepeatedPtrField<v1::NetCounters>& uplinks, uint64_t monotonic_ns) {
  for (const v1::NetCounters& c : uplinks) {
    auto [it, fresh] = uplinks_.try_emplace(c.interface());
    Uplink& u = it->second;
    const bool forward = !fresh && monotonic_ns > u.monotonic_ns && c.tx_bytes() >= u.tx_bytes &&
                         c.queue_drops() >= u.queue_drops;
    u.saturated = false;
    if (forward) {
      const double seconds = static_cast<double>(monotonic_ns - u.monotonic_ns) / 1e9;
      u.saturated = c.queue_drops() > u.queue_drops;
      if (u.saturated) {
        u.peaks.push_back(static_cast<double>(c.tx_bytes() - u.tx_bytes) / seconds);
        if (u.peaks.size() > kWindow) u.peaks.pop_front();
      }
    }
    u.tx_bytes = c.tx_bytes();
    u.queue_drops = c.queue_drops();
    u.monotonic_ns = monotonic_ns;
  }
}

void UplinkCapacityLearner::Fill(v1::HostCapacity* capacity) const {
  for (v1::InterfaceCapacity& cap : *capacity->mutable_interfaces()) {
    auto it = uplinks_.find(cap.name());
    if (it == uplinks_.end()) continue;
    const Uplink& u = it->second;
    cap.set_saturated(u.saturated);
    if (u.peaks.empty()) continue;
    const double learned = *std::max_element(u.peaks.begin(), u.peaks.end());
    if (learned <= 0) continue;
    bool filled = false;
    if (cap.tx_bytes_per_s() <= 0) {
      cap.set_tx_bytes_per_s(learned);
      filled = true;
    }
    if (cap.rx_bytes_per_s() <= 0) {
      cap.set_rx_bytes_per_s(learned);
      filled = true;
    }
    if (filled) cap.set_source(v1::CAPACITY_LEARNED);
  }
}

}  // namespace fairwatch::controller
