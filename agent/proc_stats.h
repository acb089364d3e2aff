// Host and agent-self figures read from /proc.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fairwatch::agent {

struct HostCpuTimes {
  uint64_t busy_ns = 0;
  uint64_t total_ns = 0;
};

// Parses the aggregate "cpu" line of /proc/stat text.
absl::StatusOr<HostCpuTimes> ParseProcStat(const std::string& text);
absl::StatusOr<HostCpuTimes> ReadHostCpuTimes(const std::string& path = "/proc/stat");

// The time all CPUs together have been idle since boot, in seconds (the
// second field of /proc/uptime text; 10 ms resolution).
absl::StatusOr<double> ParseUptimeIdle(absl::string_view text);
absl::StatusOr<double> ReadIdleSeconds(const char* path = "/proc/uptime");

struct SelfUsage {
  uint64_t cpu_ns = 0;
  uint64_t rss_bytes = 0;
};

// The calling process's user+system CPU time and resident set size.
absl::StatusOr<SelfUsage> ReadSelfUsage();

uint32_t OnlineCpuCount();
std::string Hostname();
uint64_t MonotonicNs();
int64_t UnixNs();

}  // namespace fairwatch::agent
