// A disk's capacity learned from what it delivers (docs/disk.md, "Capacity"):
// with no disk_capacity configured, the bytes and requests a device completes
// per second of busy time (I/O in flight, /proc/diskstats io_ticks), taken
// from the last interval it was at least half busy. A busy device's current
// mix of requests is what it can deliver now: 2.6 GB/s of sequential writes,
// or 40 MB/s of random 4 KiB reads, on the same disk.
//
// Pure: fed one report's host counters at a time; no clock, no I/O.
#pragma once

#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "fairwatch/v1/types.pb.h"
#include "google/protobuf/repeated_ptr_field.h"

namespace fairwatch::controller {

class DiskCapacityLearner {
 public:
  // An interval in which a device had I/O in flight at least this share of
  // the time teaches its capacity.
  static constexpr double kMinBusy = 0.5;

  // Folds in one report's device counters (cumulative, HostCounters.disks),
  // taken at `monotonic_ns`. A counter or clock that went back starts that
  // device's next interval afresh.
  void Observe(const google::protobuf::RepeatedPtrField<v1::DiskCounters>& disks,
               uint64_t monotonic_ns);

  // Fills each device of `capacity` that the configuration left at 0 with
  // what was learned, and sets every device's source and busy fraction.
  void Fill(v1::HostCapacity* capacity) const;

 private:
  struct Device {
    uint64_t bytes = 0, ops = 0, busy_ms = 0, monotonic_ns = 0;
    double busy = 0;                        // the last interval's
    double bytes_per_s = 0, ops_per_s = 0;  // learned; 0: not yet
  };
  static uint64_t Key(const v1::DeviceId& id) {
    return (static_cast<uint64_t>(id.major()) << 32) | id.minor();
  }
  absl::flat_hash_map<uint64_t, Device> devices_;
};

}  // namespace fairwatch::controller
