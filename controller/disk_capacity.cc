#include "controller/disk_capacity.h"

#include <algorithm>

namespace fairwatch::controller {

void DiskCapacityLearner::Observe(const google::protobuf::RepeatedPtrField<v1::DiskCounters>& disks,
                                  uint64_t monotonic_ns) {
  for (const v1::DiskCounters& d : disks) {
    const uint64_t bytes = d.read_bytes() + d.write_bytes();
    const uint64_t ops = d.read_ops() + d.write_ops();
    auto [it, fresh] = devices_.try_emplace(Key(d.device()));
    Device& dev = it->second;
    const bool forward = !fresh && monotonic_ns > dev.monotonic_ns && bytes >= dev.bytes &&
                         ops >= dev.ops && d.busy_ms() >= dev.busy_ms;
    if (forward) {
      const double seconds = static_cast<double>(monotonic_ns - dev.monotonic_ns) / 1e9;
      dev.busy = std::min(1.0, static_cast<double>(d.busy_ms() - dev.busy_ms) / 1e3 / seconds);
      if (dev.busy >= kMinBusy) {
        // The utilisation law: what it delivered over the time it was busy.
        dev.bytes_per_s = static_cast<double>(bytes - dev.bytes) / seconds / dev.busy;
        dev.ops_per_s = static_cast<double>(ops - dev.ops) / seconds / dev.busy;
      }
    }
    dev.bytes = bytes;
    dev.ops = ops;
    dev.busy_ms = d.busy_ms();
    dev.monotonic_ns = monotonic_ns;
  }
}

void DiskCapacityLearner::Fill(v1::HostCapacity* capacity) const {
  for (v1::DiskCapacity& disk : *capacity->mutable_disks()) {
    const bool configured = disk.bandwidth_bytes_per_s() > 0 || disk.ops_per_s() > 0;
    if (configured) disk.set_source(v1::CAPACITY_CONFIGURED);
    auto it = devices_.find(Key(disk.device()));
    if (it == devices_.end()) continue;
    const Device& dev = it->second;
    disk.set_busy_fraction(dev.busy);
    if (dev.bytes_per_s <= 0 && dev.ops_per_s <= 0) continue;
    // A configured figure wins; one left at 0 is learned.
    if (disk.bandwidth_bytes_per_s() <= 0) disk.set_bandwidth_bytes_per_s(dev.bytes_per_s);
    if (disk.ops_per_s() <= 0) disk.set_ops_per_s(dev.ops_per_s);
    if (!configured) disk.set_source(v1::CAPACITY_LEARNED);
  }
}

}  // namespace fairwatch::controller
