#include "cli/format.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fairwatch::cli {
namespace {

std::string Sanitize(absl::string_view text) {
  std::string clean(text);
  for (char& c : clean) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) c = '?';
  }
  return clean;
}

// Byte offset where the first max_chars code points of text end.
size_t PrefixBytes(absl::string_view text, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xc0) == 0x80) continue;
    if (chars == max_chars) return i;
    ++chars;
  }
  return text.size();
}

}  // namespace

size_t DisplayWidth(absl::string_view text) {
  return std::count_if(text.begin(), text.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; });
}

std::string RenderTable(const std::vector<Column>& columns,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size() + 1);
  std::vector<std::string> header;
  for (const Column& column : columns) header.push_back(column.header);
  cells.push_back(std::move(header));
  for (const auto& row : rows) {
    std::vector<std::string> clean;
    for (size_t i = 0; i < columns.size(); ++i) {
      clean.push_back(i < row.size() ? Sanitize(row[i]) : "");
    }
    cells.push_back(std::move(clean));
  }

  std::vector<size_t> widths(columns.size(), 0);
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], DisplayWidth(row[i]));
  }

  std::string out;
  for (const auto& row : cells) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      const std::string padding(widths[i] - DisplayWidth(row[i]), ' ');
      if (columns[i].align == Align::kRight) {
        absl::StrAppend(&line, padding, row[i]);
      } else {
        absl::StrAppend(&line, row[i], padding);
      }
    }
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string TruncateMiddle(absl::string_view text, size_t max_width) {
  static constexpr absl::string_view kEllipsis = "...";
  const size_t width = DisplayWidth(text);
  if (width <= max_width) return std::string(text);
  if (max_width <= kEllipsis.size()) return std::string(kEllipsis.substr(0, max_width));
  const size_t keep = max_width - kEllipsis.size();
  const size_t head_chars = keep / 2;
  const size_t tail_chars = keep - head_chars;
  const size_t head_end = PrefixBytes(text, head_chars);
  const size_t tail_begin = PrefixBytes(text, width - tail_chars);
  return absl::StrCat(text.substr(0, head_end), kEllipsis, text.substr(tail_begin));
}

std::string FormatCoarseDuration(absl::Duration duration) {
  const int64_t seconds = std::max<int64_t>(0, absl::ToInt64Seconds(duration));
  if (seconds < 60) return absl::StrCat(seconds, "s");
  if (seconds < 3600) return absl::StrCat(seconds / 60, "m");
  if (seconds < 86400) return absl::StrCat(seconds / 3600, "h");
  return absl::StrCat(seconds / 86400, "d");
}

std::string FormatPercent(double fraction) {
  if (!std::isfinite(fraction)) return "-";
  return absl::StrFormat("%.1f%%", fraction * 100);
}

std::string FormatSeconds(double seconds) { return absl::StrCat(FormatDecimal(seconds, 1), "s"); }

std::string FormatWeight(double weight) { return FormatDecimal(weight == 0 ? 1 : weight, 2); }

std::string RenderBar(double fraction, int width_chars) {
  if (!std::isfinite(fraction)) fraction = 0;
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(std::lround(fraction * width_chars));
  return absl::StrCat("[", std::string(filled, '#'), std::string(width_chars - filled, ' '), "]");
}

std::string FormatHostState(bool connected, int64_t last_report_unix_ns, absl::Time now) {
  std::string state = connected ? "up" : "down";
  if (last_report_unix_ns <= 0) return state;
  const std::string age = FormatCoarseDuration(now - absl::FromUnixNanos(last_report_unix_ns));
  return connected ? absl::StrCat(state, " ", age, " ago") : absl::StrCat(state, " ", age);
}

std::string FormatTimestampUtc(absl::Time time) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", time, absl::UTCTimeZone());
}

std::string LayoutName(v1::CgroupLayout layout) {
  switch (layout) {
    case v1::CGROUP_LAYOUT_V2:
      return "v2";
    case v1::CGROUP_LAYOUT_HYBRID:
      return "hybrid";
    case v1::CGROUP_LAYOUT_V1:
      return "v1";
    default:
      return "-";
  }
}

std::string SourceName(v1::TenantSource source) {
  switch (source) {
    case v1::TENANT_SOURCE_CGROUP_PARENT:
      return "cgroup-parent";
    case v1::TENANT_SOURCE_LIBVIRT:
      return "libvirt";
    case v1::TENANT_SOURCE_STATIC:
      return "static";
    default:
      return "-";
  }
}

std::string FormatCgroups(const google::protobuf::RepeatedPtrField<v1::CgroupRef>& cgroups,
                          size_t max_width) {
  // (path, hierarchies) in order of first appearance.
  std::vector<std::pair<std::string, std::vector<std::string>>> by_path;
  for (const v1::CgroupRef& ref : cgroups) {
    auto it = std::find_if(by_path.begin(), by_path.end(),
                           [&](const auto& entry) { return entry.first == ref.path(); });
    if (it == by_path.end()) {
      by_path.push_back({ref.path(), {}});
      it = by_path.end() - 1;
    }
    it->second.push_back(ref.hierarchy().empty() ? "?" : ref.hierarchy());
  }
  std::vector<std::string> entries;
  for (const auto& [path, hierarchies] : by_path) {
    entries.push_back(absl::StrCat(absl::StrJoin(hierarchies, "+"), ":", path));
  }
  if (entries.empty()) return "-";
  return TruncateMiddle(absl::StrJoin(entries, ","), max_width);
}

namespace {

struct NamedResource {
  const char* name;
  v1::Resource resource;
};

// The first name of a resource is the one shown.
constexpr NamedResource kResourceNames[] = {
    {"cpu", v1::RESOURCE_CPU},
    {"disk", v1::RESOURCE_DISK_BANDWIDTH},
    {"disk-iops", v1::RESOURCE_DISK_IOPS},
    {"net-rx", v1::RESOURCE_NET_RX},
    {"net-tx", v1::RESOURCE_NET_TX},
    {"net", v1::RESOURCE_NET_TX},
};

}  // namespace

std::string ResourceName(v1::Resource resource) {
  for (const NamedResource& r : kResourceNames) {
    if (r.resource == resource) return r.name;
  }
  return "-";
}

bool ParseResourceName(absl::string_view name, v1::Resource* resource) {
  for (const NamedResource& r : kResourceNames) {
    if (name == r.name) {
      *resource = r.resource;
      return true;
    }
  }
  return false;
}

std::vector<std::string> ResourceNames() {
  std::vector<std::string> names;
  for (const NamedResource& r : kResourceNames) names.emplace_back(r.name);
  return names;
}

}  // namespace fairwatch::cli
