// Pure text helpers for the CLI's tables: alignment, numbers, durations, bars.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/units.h"
#include "fairwatch/v1/types.pb.h"
#include "google/protobuf/repeated_field.h"

namespace fairwatch::cli {

// Amounts: common/units.h (the controller words its case records with them too).
using fairwatch::FormatAmount;
using fairwatch::FormatBytesRate;
using fairwatch::FormatCores;
using fairwatch::FormatDecimal;
using fairwatch::FormatNanos;
using fairwatch::FormatRate;

enum class Align { kLeft, kRight };

struct Column {
  std::string header;
  Align align = Align::kLeft;
};

// Columns separated by two spaces, no trailing blanks. Control characters in
// cells become '?' so names taken from hosts cannot drive the terminal.
std::string RenderTable(const std::vector<Column>& columns,
                        const std::vector<std::vector<std::string>>& rows);

// Terminal columns taken by UTF-8 text, counting one per code point.
size_t DisplayWidth(absl::string_view text);

// Keeps both ends: "machine/qemu-1-vm...libvirt-qemu".
std::string TruncateMiddle(absl::string_view text, size_t max_width);

// Largest single unit, rounded down: "0s", "59s", "5m", "2h", "3d".
std::string FormatCoarseDuration(absl::Duration duration);

std::string FormatPercent(double fraction);  // 0.125 -> "12.5%"
std::string FormatSeconds(double seconds);   // "5s", "4.9s"
std::string FormatWeight(double weight);     // 0 is the default, shown as "1"

// "[####      ]" with width_chars cells inside the brackets; fraction clamped to [0, 1].
std::string RenderBar(double fraction, int width_chars);

// "up 3s ago" / "down 5m"; without a report time just "up" / "down".
std::string FormatHostState(bool connected, int64_t last_report_unix_ns, absl::Time now);

std::string FormatTimestampUtc(absl::Time time);  // "2024-05-01T12:00:00Z"

std::string LayoutName(v1::CgroupLayout layout);  // "v2", "hybrid", "v1", "-"
std::string SourceName(v1::TenantSource source);  // "cgroup-parent", "libvirt", "static", "-"

// The CLI's resource names: "cpu", "disk", "disk-iops", "net-rx", "net-tx"
// ("net" is read as net-tx). ResourceName gives "-" for an unknown one.
std::string ResourceName(v1::Resource resource);
bool ParseResourceName(absl::string_view name, v1::Resource* resource);
std::vector<std::string> ResourceNames();  // every name ParseResourceName takes

// "hierarchy:path" entries joined by ','; hierarchies that share a path are
// merged ("cpu+blkio:machine/vm1") and the result is cut to max_width.
std::string FormatCgroups(const google::protobuf::RepeatedPtrField<v1::CgroupRef>& cgroups,
                          size_t max_width);

}  // namespace fairwatch::cli
