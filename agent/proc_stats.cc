#include "agent/proc_stats.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"

namespace fairwatch::agent {

absl::StatusOr<HostCpuTimes> ParseProcStat(const std::string& text) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, "cpu ")) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    if (fields.size() < 5) break;
    static const long ticks_per_s = sysconf(_SC_CLK_TCK);
    const uint64_t ns_per_tick = 1'000'000'000ULL / static_cast<uint64_t>(ticks_per_s);
    HostCpuTimes times;
    // guest and guest_nice are already inside user and nice.
    size_t last = std::min<size_t>(fields.size(), 9);
    for (size_t i = 1; i < last; ++i) {
      uint64_t ticks = 0;
      if (!absl::SimpleAtoi(fields[i], &ticks)) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad /proc/stat cpu field '", fields[i], "'"));
      }
      times.total_ns += ticks * ns_per_tick;
      // idle (4) and iowait (5) are not busy.
      if (i != 4 && i != 5) times.busy_ns += ticks * ns_per_tick;
    }
    return times;
  }
  return absl::InvalidArgumentError("no aggregate 'cpu' line in /proc/stat");
}

absl::StatusOr<HostCpuTimes> ReadHostCpuTimes(const std::string& path) {
  std::ifstream in(path);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseProcStat(buffer.str());
}

absl::StatusOr<double> ParseUptimeIdle(absl::string_view text) {
  // "66163.59 42787.94"
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(text), ' ', absl::SkipEmpty());
  double idle = 0;
  if (fields.size() < 2 || !absl::SimpleAtod(fields[1], &idle) || !(idle >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("no idle time in /proc/uptime: '", absl::CEscape(text), "'"));
  }
  return idle;
}

absl::StatusOr<double> ReadIdleSeconds(const char* path) {
  // Read ten times a second: a plain read, no stream.
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", path));
  char buffer[128];
  const ssize_t n = read(fd, buffer, sizeof(buffer) - 1);
  const int read_errno = errno;
  close(fd);
  if (n < 0) return ErrnoStatus(read_errno, absl::StrCat("reading ", path));
  return ParseUptimeIdle(absl::string_view(buffer, static_cast<size_t>(n)));
}

absl::StatusOr<SelfUsage> ReadSelfUsage() {
  SelfUsage usage;
  struct rusage ru {};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return ErrnoStatus(errno, "getrusage");
  auto tv_ns = [](const timeval& tv) {
    return static_cast<uint64_t>(tv.tv_sec) * 1'000'000'000ULL +
           static_cast<uint64_t>(tv.tv_usec) * 1000ULL;
  };
  usage.cpu_ns = tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0;
  uint64_t resident_pages = 0;
  if (statm >> size_pages >> resident_pages) {
    usage.rss_bytes = resident_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  }
  return usage;
}

uint32_t OnlineCpuCount() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<uint32_t>(n) : 1;
}

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

uint64_t MonotonicNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

int64_t UnixNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000LL + ts.tv_nsec;
}

}  // namespace fairwatch::agent
