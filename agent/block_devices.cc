#include "agent/block_devices.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(buffer.str()));
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

absl::StatusOr<v1::DeviceId> ParseDeviceNumber(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(absl::StripAsciiWhitespace(text), ':');
  uint32_t major = 0;
  uint32_t minor = 0;
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty() ||
      !absl::SimpleAtoi(parts[0], &major) || !absl::SimpleAtoi(parts[1], &minor) ||
      minor >= (1u << 20) || major >= (1u << 12)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a block device number (major:minor)"));
  }
  v1::DeviceId id;
  id.set_major(major);
  id.set_minor(minor);
  return id;
}

absl::StatusOr<std::vector<BlockDevice>> ListBlockDevices(const std::string& sys_block) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir(sys_block.c_str()), closedir);
  if (!dir) return ErrnoStatus(errno, absl::StrCat("listing block devices in ", sys_block));
  std::vector<BlockDevice> out;
  while (struct dirent* entry = readdir(dir.get())) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string base = absl::StrCat(sys_block, "/", name);
    // A device that vanished while listing is simply not there.
    absl::StatusOr<std::string> dev = ReadSmallFile(base + "/dev");
    if (!dev.ok()) continue;
    // Bio-based devices (zram, dm, md, brd) never complete requests: nothing to count.
    if (!IsDirectory(base + "/mq")) continue;
    absl::StatusOr<std::string> size = ReadSmallFile(base + "/size");
    uint64_t sectors = 0;
    if (!size.ok() || !absl::SimpleAtoi(*size, &sectors) || sectors == 0) continue;
    ASSIGN_OR_RETURN(v1::DeviceId id, ParseDeviceNumber(*dev));
    BlockDevice device;
    device.name = name;
    device.major = id.major();
    device.minor = id.minor();
    device.size_bytes = sectors * 512;  // sysfs sizes are in 512-byte sectors
    absl::StatusOr<std::string> rotational = ReadSmallFile(base + "/queue/rotational");
    device.rotational = rotational.ok() && *rotational == "1";
    out.push_back(std::move(device));
  }
  std::sort(out.begin(), out.end(),
            [](const BlockDevice& a, const BlockDevice& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<std::vector<v1::DiskCapacity>> BuildDiskCapacities(
    const std::vector<BlockDevice>& devices,
    const google::protobuf::RepeatedPtrField<v1::DiskCapacityOverride>& overrides) {
  std::vector<v1::DiskCapacity> out;
  for (const auto& d : devices) {
    v1::DiskCapacity capacity;
    capacity.mutable_device()->set_major(d.major);
    capacity.mutable_device()->set_minor(d.minor);
    capacity.set_name(d.name);
    out.push_back(std::move(capacity));
  }
  std::set<size_t> overridden;
  for (const auto& o : overrides) {
    if (o.bandwidth_bytes_per_s() < 0 || o.ops_per_s() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("disk_capacity for '", o.device(), "' must not be negative"));
    }
    const bool by_number = absl::StrContains(o.device(), ':');
    v1::DeviceId id;
    if (by_number) {
      ASSIGN_OR_RETURN(id, ParseDeviceNumber(o.device()));
    }
    size_t match = out.size();
    for (size_t i = 0; i < out.size(); ++i) {
      const bool hit = by_number ? (out[i].device().major() == id.major() &&
                                    out[i].device().minor() == id.minor())
                                 : out[i].name() == o.device();
      if (hit) {
        match = i;
        break;
      }
    }
    if (match == out.size()) {
      std::vector<std::string> known;
      for (const auto& d : devices)
        known.push_back(absl::StrCat(d.name, " (", d.major, ":", d.minor, ")"));
      return absl::InvalidArgumentError(
          absl::StrCat("disk_capacity names device '", o.device(),
                       "', which is not a whole disk that completes requests on this host; known: ",
                       known.empty() ? "none" : absl::StrJoin(known, ", ")));
    }
    if (!overridden.insert(match).second) {
      return absl::InvalidArgumentError(absl::StrCat("disk_capacity names device '", o.device(),
                                                     "' (", out[match].name(), ") twice"));
    }
    out[match].set_bandwidth_bytes_per_s(o.bandwidth_bytes_per_s());
    out[match].set_ops_per_s(o.ops_per_s());
    out[match].set_source(v1::CAPACITY_CONFIGURED);
  }
  return out;
}

absl::StatusOr<std::vector<v1::DiskCounters>> ParseDiskstats(
    absl::string_view text, const std::vector<BlockDevice>& devices) {
  std::vector<v1::DiskCounters> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // major minor name, then reads completed (3), merged, sectors read (5),
    // ms reading, writes completed (7), merged, sectors written (9), ms
    // writing, in flight, io_ticks (12), ... (Documentation/admin-guide/iostats.rst)
    if (f.size() < 14) {
      return absl::InvalidArgumentError(absl::StrCat(
          "diskstats line with ", f.size(), " fields (at least 14 expected): '", line, "'"));
    }
    uint32_t major = 0, minor = 0;
    uint64_t reads = 0, read_sectors = 0, writes = 0, write_sectors = 0, io_ticks = 0;
    if (!absl::SimpleAtoi(f[0], &major) || !absl::SimpleAtoi(f[1], &minor) ||
        !absl::SimpleAtoi(f[3], &reads) || !absl::SimpleAtoi(f[5], &read_sectors) ||
        !absl::SimpleAtoi(f[7], &writes) || !absl::SimpleAtoi(f[9], &write_sectors) ||
        !absl::SimpleAtoi(f[12], &io_ticks)) {
      return absl::InvalidArgumentError(absl::StrCat("unreadable diskstats line: '", line, "'"));
    }
    const bool listed = std::any_of(devices.begin(), devices.end(), [&](const BlockDevice& d) {
      return d.major == major && d.minor == minor;
    });
    if (!listed) continue;
    v1::DiskCounters& c = out.emplace_back();
    c.mutable_device()->set_major(major);
    c.mutable_device()->set_minor(minor);
    c.set_read_bytes(read_sectors * 512);
    c.set_write_bytes(write_sectors * 512);
    c.set_read_ops(reads);
    c.set_write_ops(writes);
    c.set_busy_ms(io_ticks);
  }
  return out;
}

absl::StatusOr<std::vector<v1::DiskCounters>> ReadDiskstats(const std::vector<BlockDevice>& devices,
                                                            const std::string& path) {
  std::ifstream in(path);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseDiskstats(buffer.str(), devices);
}

absl::StatusOr<v1::DeviceId> WholeDiskOf(uint32_t major, uint32_t minor,
                                         const std::string& sys_dev_block) {
  const std::string base = absl::StrCat(sys_dev_block, "/", major, ":", minor);
  if (!Exists(base)) {
    return absl::NotFoundError(
        absl::StrCat("no block device ", major, ":", minor, " in ", sys_dev_block));
  }
  // A partition's sysfs directory sits inside its disk's and has a "partition" file.
  if (!Exists(base + "/partition")) {
    v1::DeviceId id;
    id.set_major(major);
    id.set_minor(minor);
    return id;
  }
  ASSIGN_OR_RETURN(std::string dev, ReadSmallFile(base + "/../dev"));
  return ParseDeviceNumber(dev);
}

}  // namespace fairwatch::agent
