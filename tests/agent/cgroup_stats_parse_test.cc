// PSI and cpu.stat parsing, and the collector against a fake cgroupfs in a
// temp dir (no root).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent/cgroup_stats_collector.h"

namespace fairwatch::agent {
namespace {

TEST(ParsePressure, ReadsSomeAndFullTotals) {
  auto t = ParsePressure(
      "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n"
      "full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->has_some);
  EXPECT_EQ(t->some_total_us, 123456u);
  EXPECT_TRUE(t->has_full);
  EXPECT_EQ(t->full_total_us, 789u);
}

TEST(ParsePressure, OldKernelCpuPressureHasOnlySome) {
  auto t = ParsePressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->some_total_us, 42u);
  EXPECT_FALSE(t->has_full);
  EXPECT_EQ(t->full_total_us, 0u);
}

TEST(ParsePressure, RejectsTextWithoutTotals) {
  EXPECT_FALSE(ParsePressure("").ok());
  EXPECT_FALSE(ParsePressure("garbage\n").ok());
  EXPECT_FALSE(ParsePressure("some avg10=0.00 total=abc\n").ok());
  EXPECT_FALSE(ParsePressure("some avg10=0.00 avg60=0.00\n").ok());
}

TEST(ParseCpuStatThrottling, V1CountsThrottledTimeInNs) {
  auto c = ParseCpuStatThrottling(
      "nr_periods 100\nnr_throttled 80\nthrottled_time 1234567890\nnr_bursts 0\nburst_time 0\n");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->present);
  EXPECT_EQ(c->nr_periods, 100u);
  EXPECT_EQ(c->nr_throttled, 80u);
  EXPECT_EQ(c->throttled_ns, 1234567890u);
}

TEST(ParseCpuStatThrottling, V2ConvertsThrottledUsecToNs) {
  auto c = ParseCpuStatThrottling(
      "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\nnr_periods 7\nnr_throttled 3\n"
      "throttled_usec 2500\nnr_bursts 0\nburst_usec 0\n");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->present);
  EXPECT_EQ(c->nr_periods, 7u);
  EXPECT_EQ(c->nr_throttled, 3u);
  EXPECT_EQ(c->throttled_ns, 2'500'000u);
}

TEST(ParseCpuStatThrottling, V2WithoutCpuControllerHasNoBandwidthFields) {
  auto c = ParseCpuStatThrottling(
      "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\ncore_sched.force_idle_usec 0\n");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->present);
  EXPECT_EQ(c->nr_throttled, 0u);
}

TEST(ParseCpuStatThrottling, RejectsNonNumericValue) {
  EXPECT_FALSE(ParseCpuStatThrottling("nr_periods x\nnr_throttled 1\nthrottled_time 1\n").ok());
}

TEST(ParseCpuTime, ReadsCpuacctNanosecondsAndCpuStatMicroseconds) {
  EXPECT_EQ(*ParseCpuTime("123456789012\n", false), 123456789012u);
  EXPECT_EQ(*ParseCpuTime("usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\n", true), 5'000'000u);
  EXPECT_FALSE(ParseCpuTime("user_usec 4000\n", true).ok()) << "no usage_usec";
  EXPECT_FALSE(ParseCpuTime("usage_usec x\n", true).ok());
  EXPECT_FALSE(ParseCpuTime("usage_usec 18446744073709551615\n", true).ok()) << "overflows ns";
  EXPECT_FALSE(ParseCpuTime("", false).ok());
  EXPECT_FALSE(ParseCpuTime("12 34\n", false).ok());
}

// A fake hybrid layout: <tmp>/unified/<t>/{cpu,io}.pressure and <tmp>/cpu/<t>/cpu.stat.
class CgroupStatsFakeFs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fw-cgstats-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    mounts_.layout = v1::CGROUP_LAYOUT_HYBRID;
    mounts_.unified = root_ + "/unified";
    mounts_.v1_by_controller["cpu"] = root_ + "/cpu";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::string& rel, const std::string& text) {
    std::filesystem::path p = root_ + "/" + rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }

  TenantEntry Tenant(const std::string& name, bool with_unified) {
    TenantEntry t;
    t.tenant.set_id("vms/" + name);
    t.tenant.set_name(name);
    t.slot = slot_++;
    auto* cpu = t.tenant.add_cgroups();
    cpu->set_hierarchy("cpu");
    cpu->set_path("vms/" + name);
    cpu->set_id(100 + t.slot);
    if (with_unified) {
      auto* u = t.tenant.add_cgroups();
      u->set_hierarchy("unified");
      u->set_path("vms/" + name);
      u->set_id(200 + t.slot);
    }
    return t;
  }

  std::string root_;
  CgroupMounts mounts_;
  uint32_t slot_ = 0;
};

TEST_F(CgroupStatsFakeFs, FillsPressureAndThrottlingAndSeesUpdatesThroughOpenFiles) {
  Write("unified/vms/a/cpu.pressure",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=10\n");
  Write("unified/vms/a/io.pressure",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=2000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=20\n");
  Write("cpu/vms/a/cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n");
  CgroupStatsCollector collector({mounts_, "cpu"});
  ASSERT_TRUE(collector.Init().ok());
  std::vector<TenantEntry> tenants{Tenant("a", true)};
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  EXPECT_EQ(collector.open_files(), 3u);

  v1::UsageReport report;
  report.add_tenants();
  ASSERT_TRUE(collector.Collect(tenants, &report).ok());
  const auto& t = report.tenants(0);
  EXPECT_TRUE(t.cpu_pressure().present());
  EXPECT_EQ(t.cpu_pressure().some_total_us(), 1000u);
  EXPECT_EQ(t.cpu_pressure().full_total_us(), 10u);
  EXPECT_EQ(t.io_pressure().some_total_us(), 2000u);
  EXPECT_EQ(t.io_pressure().full_total_us(), 20u);
  EXPECT_EQ(t.cpu().nr_periods(), 10u);
  EXPECT_EQ(t.cpu().nr_throttled(), 4u);
  EXPECT_EQ(t.cpu().throttled_ns(), 5000u);

  // Rewritten in place (same inode, longer text): the kept fd reads the new content.
  {
    std::ofstream(root_ + "/cpu/vms/a/cpu.stat", std::ios::in | std::ios::out)
        << "nr_periods 123456\nnr_throttled 65432\nthrottled_time 987654321\n";
  }
  v1::UsageReport second;
  second.add_tenants();
  ASSERT_TRUE(collector.Collect(tenants, &second).ok());
  EXPECT_EQ(second.tenants(0).cpu().nr_throttled(), 65432u);
  EXPECT_EQ(second.tenants(0).cpu().throttled_ns(), 987654321u);
}

TEST_F(CgroupStatsFakeFs, TenantWithoutUnifiedDirHasPressureAbsent) {
  Write("cpu/vms/b/cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n");
  CgroupStatsCollector collector({mounts_, "cpu"});
  ASSERT_TRUE(collector.Init().ok());
  std::vector<TenantEntry> tenants{Tenant("b", false)};
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  v1::UsageReport report;
  report.add_tenants();
  ASSERT_TRUE(collector.Collect(tenants, &report).ok());
  EXPECT_FALSE(report.tenants(0).cpu_pressure().present());
  EXPECT_FALSE(report.tenants(0).io_pressure().present());
  EXPECT_EQ(collector.open_files(), 1u);
}

TEST_F(CgroupStatsFakeFs, VanishedFilesAreQuietAndRemovedTenantsCloseTheirFiles) {
  Write("unified/vms/c/cpu.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n");
  Write("unified/vms/c/io.pressure", "garbage\n");
  // No cpu.stat for c at all: throttling stays zero.
  CgroupStatsCollector collector({mounts_, "cpu"});
  ASSERT_TRUE(collector.Init().ok());
  std::vector<TenantEntry> tenants{Tenant("c", true)};
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  v1::UsageReport report;
  report.add_tenants();
  ASSERT_TRUE(collector.Collect(tenants, &report).ok());
  EXPECT_TRUE(report.tenants(0).cpu_pressure().present());
  EXPECT_FALSE(report.tenants(0).io_pressure().present()) << "unparsable file: absent";
  EXPECT_EQ(report.tenants(0).cpu().nr_periods(), 0u);

  ASSERT_TRUE(collector.SyncTenants({}).ok());
  EXPECT_EQ(collector.open_files(), 0u);
}

// CPU time from the kernel's counter: cpuacct.usage (ns) in a separate cpuacct
// hierarchy; a tenant with no cpuacct directory falls back to the unified
// cpu.stat; one with neither has no CPU time here (the CPU program's).
TEST_F(CgroupStatsFakeFs, CpuTimeFromCpuacctOrTheUnifiedCpuStat) {
  mounts_.v1_by_controller["cpuacct"] = root_ + "/cpuacct";
  Write("cpuacct/vms/a/cpuacct.usage", "987654321\n");
  Write("unified/vms/b/cpu.stat", "usage_usec 4321\nuser_usec 4000\nsystem_usec 321\n");
  CgroupStatsCollector collector({mounts_, "cpu"});
  ASSERT_TRUE(collector.Init().ok());
  std::vector<TenantEntry> tenants{Tenant("a", false), Tenant("b", true), Tenant("c", false)};
  auto* acct = tenants[0].tenant.add_cgroups();
  acct->set_hierarchy("cpuacct");
  acct->set_path("vms/a");
  acct->set_id(300);
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  v1::UsageReport report;
  for (int i = 0; i < 3; ++i) report.add_tenants();
  ASSERT_TRUE(collector.Collect(tenants, &report).ok());
  EXPECT_EQ(report.tenants(0).cpu().usage_ns(), 987654321u);
  EXPECT_EQ(report.tenants(1).cpu().usage_ns(), 4'321'000u);
  EXPECT_EQ(report.tenants(2).cpu().usage_ns(), 0u);

  {  // the counter grows: read again through the kept descriptor
    std::ofstream(root_ + "/cpuacct/vms/a/cpuacct.usage", std::ios::in | std::ios::out)
        << "1987654321\n";
  }
  v1::UsageReport second;
  for (int i = 0; i < 3; ++i) second.add_tenants();
  ASSERT_TRUE(collector.Collect(tenants, &second).ok());
  EXPECT_EQ(second.tenants(0).cpu().usage_ns(), 1987654321u);

  CgroupStatsOptions off{mounts_, "cpu"};
  off.read_cpu_time = false;  // probes.cpu_time "bpf": the program counts everyone
  CgroupStatsCollector without(off);
  ASSERT_TRUE(without.Init().ok());
  ASSERT_TRUE(without.SyncTenants(tenants).ok());
  v1::UsageReport third;
  for (int i = 0; i < 3; ++i) third.add_tenants();
  ASSERT_TRUE(without.Collect(tenants, &third).ok());
  EXPECT_EQ(third.tenants(0).cpu().usage_ns(), 0u);
}

// On v2 the usage and the throttling are one file, read once per interval.
TEST_F(CgroupStatsFakeFs, UnifiedCpuStatGivesUsageAndThrottlingFromOneRead) {
  Write("unified/vms/d/cpu.stat",
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 7\nnr_throttled 3\n"
        "throttled_usec 40\n");
  CgroupStatsCollector collector({mounts_, "unified"});
  ASSERT_TRUE(collector.Init().ok());
  TenantEntry t;
  t.tenant.set_id("vms/d");
  auto* u = t.tenant.add_cgroups();
  u->set_hierarchy("unified");
  u->set_path("vms/d");
  u->set_id(9);
  std::vector<TenantEntry> tenants{t};
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  v1::UsageReport report;
  report.add_tenants();
  ASSERT_TRUE(collector.Collect(tenants, &report).ok());
  EXPECT_EQ(report.tenants(0).cpu().usage_ns(), 2'500'000u);
  EXPECT_EQ(report.tenants(0).cpu().nr_throttled(), 3u);
  EXPECT_EQ(report.tenants(0).cpu().throttled_ns(), 40'000u);
  EXPECT_EQ(collector.open_files(), 1u) << "cpu.stat once (no pressure files in this fake)";
}

TEST(CgroupStatsCollector, RejectsUnknownCpuHierarchy) {
  CgroupMounts mounts;
  mounts.unified = "/sys/fs/cgroup";
  CgroupStatsCollector collector({mounts, "blkio"});
  EXPECT_FALSE(collector.Init().ok());
  EXPECT_EQ(collector.state(), CollectorState::kFailed);
}

}  // namespace
}  // namespace fairwatch::agent
