#include "agent/proc_stats.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace fairwatch::agent {
namespace {

TEST(ProcStat, BusyExcludesIdleAndIowait) {
  // user nice system idle iowait irq softirq steal guest guest_nice
  auto times = ParseProcStat("cpu  100 10 50 800 40 0 0 0 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n");
  ASSERT_TRUE(times.ok()) << times.status();
  const uint64_t tick_ns = 1'000'000'000ULL / sysconf(_SC_CLK_TCK);
  EXPECT_EQ(times->busy_ns, 160 * tick_ns);
  EXPECT_EQ(times->total_ns, 1000 * tick_ns) << "guest time is already in user";
}

TEST(ProcStat, MissingCpuLineIsAnError) {
  EXPECT_FALSE(ParseProcStat("intr 1 2 3\n").ok());
  EXPECT_FALSE(ParseProcStat("cpu  1 x 3 4\n").ok());
}

TEST(Uptime, IdleIsTheSecondField) {
  auto idle = ParseUptimeIdle("66163.59 42787.94\n");
  ASSERT_TRUE(idle.ok()) << idle.status();
  EXPECT_DOUBLE_EQ(*idle, 42787.94);
  EXPECT_FALSE(ParseUptimeIdle("66163.59\n").ok());
  EXPECT_FALSE(ParseUptimeIdle("66163.59 x\n").ok());
  EXPECT_FALSE(ParseUptimeIdle("66163.59 -1\n").ok());
}

TEST(Uptime, IdleTimeOnlyGrows) {
  auto before = ReadIdleSeconds();
  ASSERT_TRUE(before.ok()) << before.status();
  usleep(50'000);
  auto after = ReadIdleSeconds();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GE(*after, *before);
  EXPECT_FALSE(ReadIdleSeconds("/nonexistent/uptime").ok());
}

TEST(ProcStat, SelfUsageIsPositive) {
  auto self = ReadSelfUsage();
  ASSERT_TRUE(self.ok());
  EXPECT_GT(self->rss_bytes, 0u);
}

}  // namespace
}  // namespace fairwatch::agent
