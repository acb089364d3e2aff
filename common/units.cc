#include "common/units.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fairwatch {
namespace {

// value scaled by 1000s with one of `units`, e.g. 12500 -> "12.5" + units[1].
std::string Scaled(double value, const std::vector<const char*>& units) {
  size_t unit = 0;
  while (value >= 1000 && unit + 1 < units.size()) {
    value /= 1000;
    ++unit;
  }
  return absl::StrCat(FormatDecimal(value, value < 10 ? 2 : 1), units[unit]);
}

}  // namespace

std::string FormatDecimal(double value, int max_decimals) {
  if (!std::isfinite(value)) return "-";
  std::string text = absl::StrFormat("%.*f", max_decimals, value);
  if (text.find('.') != std::string::npos) {
    text.erase(text.find_last_not_of('0') + 1);
    if (text.back() == '.') text.pop_back();
  }
  if (text == "-0") text = "0";
  return text;
}

std::string FormatCores(double cores) {
  if (!std::isfinite(cores)) return "-";
  return absl::StrFormat("%.2f", cores);
}

std::string FormatBytesRate(double bytes_per_s) {
  if (bytes_per_s <= 0) return "0 B/s";
  return Scaled(bytes_per_s, {" B/s", " kB/s", " MB/s", " GB/s", " TB/s"});
}

std::string FormatRate(double per_s) {
  if (per_s <= 0) return "0/s";
  return Scaled(per_s, {"/s", "k/s", "M/s", "G/s"});
}

std::string FormatNanos(double ns) {
  if (ns <= 0) return "0";
  return Scaled(ns, {"ns", "us", "ms", "s"});
}

std::string FormatAmount(double value, v1::Resource resource) {
  switch (resource) {
    case v1::RESOURCE_CPU:
      return absl::StrCat(FormatCores(value), " cores");
    case v1::RESOURCE_DISK_IOPS:
      return FormatRate(value);
    default:
      return FormatBytesRate(value);
  }
}

}  // namespace fairwatch
