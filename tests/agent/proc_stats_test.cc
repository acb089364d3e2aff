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

TEST(Loadavg, RunnableIsTheFourthFieldsFirstHalf) {
  auto runnable = ParseLoadavgRunnable("0.58 1.25 1.68 3/612 31063\n");
  ASSERT_TRUE(runnable.ok()) << runnable.status();
  EXPECT_EQ(*runnable, 3u);
  EXPECT_FALSE(ParseLoadavgRunnable("0.58 1.25 1.68\n").ok());
  EXPECT_FALSE(ParseLoadavgRunnable("0.58 1.25 1.68 3 612\n").ok()) << "no '/'";
  EXPECT_FALSE(ParseLoadavgRunnable("0.58 1.25 1.68 x/612 1\n").ok());
}

TEST(Loadavg, TheHostCountsAtLeastItsReader) {
  auto runnable = ReadRunnableTasks();
  ASSERT_TRUE(runnable.ok()) << runnable.status();
  EXPECT_GE(*runnable, 1u);
  EXPECT_FALSE(ReadRunnableTasks("/nonexistent/loadavg").ok());
}

TEST(ProcStat, SelfUsageIsPositive) {
  auto self = ReadSelfUsage();
  ASSERT_TRUE(self.ok());
  EXPECT_GT(self->rss_bytes, 0u);
}

}  // namespace
}  // namespace fairwatch::agent
