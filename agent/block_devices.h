// The host's whole-disk block devices, read from sysfs, and the DiskCapacity
// entries the agent announces in its Hello.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fairwatch/v1/config.pb.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::agent {

struct BlockDevice {
  std::string name;  // kernel name: "vda", "nvme0n1"
  uint32_t major = 0;
  uint32_t minor = 0;
  bool rotational = false;
  uint64_t size_bytes = 0;
};

// Parses a sysfs "dev" file ("254:0\n") or an override's "major:minor".
absl::StatusOr<v1::DeviceId> ParseDeviceNumber(absl::string_view text);

// Whole disks in `sys_block` (normally /sys/block) that the disk collector can
// see: request-based (an mq/ directory: not zram, dm-*, md*, brd) and with
// media (size > 0: not an unbound loop device or an empty drive). Sorted by name.
absl::StatusOr<std::vector<BlockDevice>> ListBlockDevices(
    const std::string& sys_block = "/sys/block");

// One DiskCapacity per device; capacity 0 means unknown. An override names a
// device by "major:minor" or kernel name; one that matches no listed device,
// or a device already overridden, is an error.
absl::StatusOr<std::vector<v1::DiskCapacity>> BuildDiskCapacities(
    const std::vector<BlockDevice>& devices,
    const google::protobuf::RepeatedPtrField<v1::DiskCapacityOverride>& overrides);

// One whole disk's cumulative counters from /proc/diskstats: bytes (sectors
// x 512) and completed requests per direction, and milliseconds with I/O in
// flight (io_ticks). Devices not in `devices` are left out.
absl::StatusOr<std::vector<v1::DiskCounters>> ParseDiskstats(
    absl::string_view text, const std::vector<BlockDevice>& devices);
absl::StatusOr<std::vector<v1::DiskCounters>> ReadDiskstats(
    const std::vector<BlockDevice>& devices, const std::string& path = "/proc/diskstats");

// The whole disk a device number belongs to (itself for a disk, the parent for
// a partition), resolved through `sys_dev_block` (normally /sys/dev/block).
absl::StatusOr<v1::DeviceId> WholeDiskOf(uint32_t major, uint32_t minor,
                                         const std::string& sys_dev_block = "/sys/dev/block");

}  // namespace fairwatch::agent
