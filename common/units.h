// Amounts as operators read them, in case records (the controller's reasons)
// and on the CLI alike: one place, so a case says "12.3 MB/s" wherever it is
// shown.
#pragma once

#include <string>

#include "fairwatch/v1/types.pb.h"

namespace fairwatch {

// Fixed decimals with trailing zeros removed: (2.50, 2) -> "2.5", (3, 1) -> "3".
std::string FormatDecimal(double value, int max_decimals);
std::string FormatCores(double cores);            // "1.25"
std::string FormatBytesRate(double bytes_per_s);  // SI units: "0 B/s", "12.5 MB/s"
std::string FormatRate(double per_s);             // "0/s", "12.5/s", "3.2k/s"
std::string FormatNanos(double ns);               // "850ns", "5.1us", "1.5ms", "2.3s"
// A value in the resource's unit: "0.73 cores", "12.5 MB/s", "150/s".
std::string FormatAmount(double value, v1::Resource resource);

}  // namespace fairwatch
