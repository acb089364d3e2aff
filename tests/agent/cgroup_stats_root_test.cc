// Root: CFS throttling and PSI read from real cgroup files. A tenant capped by
// its own cpu.cfs_quota_us shows throttling (self-inflicted); a tenant sharing
// a CPU with a neighbour shows cpu pressure without throttling.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/cgroup_discovery.h"
#include "agent/cgroup_layout.h"
#include "agent/cgroup_stats_collector.h"
#include "agent/runq_collector.h"
#include "agent/tenant_registry.h"
#include "common/histogram.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::agent {
namespace {

using fairwatch::testing::TestCgroupTree;

// A busy loop pinned to `cpu` inside every cgroup.procs in `procs_files`;
// killed and reaped when this goes out of scope.
class PinnedHog {
 public:
  PinnedHog(const std::vector<std::string>& procs_files, int cpu) {
    int ready[2];
    if (pipe(ready) != 0) return;
    pid_ = fork();
    if (pid_ < 0) return;
    if (pid_ == 0) {
      close(ready[0]);
      char ok = 1;
      for (const auto& file : procs_files) {
        int fd = open(file.c_str(), O_WRONLY);
        if (fd < 0 || write(fd, "0", 1) != 1) ok = 0;
        if (fd >= 0) close(fd);
      }
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (sched_setaffinity(0, sizeof(set), &set) != 0) ok = 0;
      if (write(ready[1], &ok, 1) != 1) _exit(1);
      volatile uint64_t sink = 0;
      while (true) sink = sink + 1;
    }
    close(ready[1]);
    char ok = 0;
    if (read(ready[0], &ok, 1) != 1 || !ok) Kill();
    close(ready[0]);
  }
  ~PinnedHog() { Kill(); }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool ok() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

class CgroupStatsRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fairwatch::testing::IsRoot()) GTEST_SKIP() << "needs root: creates cgroups";
    auto mounts = ReadCgroupMounts();
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    mounts_ = *mounts;
    auto hierarchy = ChooseCpuHierarchy(mounts_, "auto");
    ASSERT_TRUE(hierarchy.ok());
    hierarchy_ = *hierarchy;
    cpu_mount_ = *mounts_.MountOf(hierarchy_);
    std::vector<std::string> tree_mounts{cpu_mount_};
    if (!mounts_.unified.empty() && mounts_.unified != cpu_mount_) {
      tree_mounts.push_back(mounts_.unified);
    }
    tree_ = std::make_unique<TestCgroupTree>(tree_mounts, fairwatch::testing::UniqueCgroupPrefix());
  }

  void Discover() {
    v1::CgroupParentSource parent;
    parent.set_path(tree_->prefix());
    CgroupParentDiscovery discovery(mounts_, hierarchy_, {parent});
    ASSERT_TRUE(discovery.Init().ok());
    auto found = discovery.Scan();
    ASSERT_TRUE(found.ok()) << found.status();
    registry_ = std::make_unique<TenantRegistry>(1024);
    registry_->Apply(std::move(*found));
    stats_ = std::make_unique<CgroupStatsCollector>(CgroupStatsOptions{mounts_, hierarchy_});
    ASSERT_TRUE(stats_->Init().ok());
    ASSERT_TRUE(stats_->SyncTenants(registry_->tenants()).ok());
  }

  v1::UsageReport Collect() {
    v1::UsageReport report;
    for (const auto& t : registry_->tenants()) report.add_tenants()->set_tenant_id(t.tenant.id());
    EXPECT_TRUE(stats_->Collect(registry_->tenants(), &report).ok());
    if (runq_) {
      EXPECT_TRUE(runq_->Collect(registry_->tenants(), &report).ok());
    }
    return report;
  }

  const v1::TenantCounters& Of(const v1::UsageReport& r, const std::string& name) {
    for (int i = 0; i < r.tenants_size(); ++i) {
      if (registry_->tenants()[i].tenant.name() == name) return r.tenants(i);
    }
    ADD_FAILURE() << "no tenant " << name;
    return r.tenants(0);
  }

  // Files kept open per tenant of this tree: cpu.pressure and io.pressure
  // (unified), cpu.stat (where CPU is attributed), and the CPU time counter
  // unless that is the same cpu.stat (v2): on a hybrid host the tree has no
  // cpuacct directory, so it is the unified cpu.stat, a file of its own.
  size_t FilesPerTenant() const {
    const bool unified = !mounts_.unified.empty();
    return (unified ? 2 : 0) + 1 + (unified && hierarchy_ != "unified" ? 1 : 0);
  }

  std::vector<std::string> ProcsFiles(const std::string& child) {
    std::vector<std::string> out{tree_->PathIn(cpu_mount_, child) + "/cgroup.procs"};
    if (!mounts_.unified.empty() && mounts_.unified != cpu_mount_) {
      out.push_back(tree_->PathIn(mounts_.unified, child) + "/cgroup.procs");
    }
    return out;
  }

  CgroupMounts mounts_;
  std::string hierarchy_;
  std::string cpu_mount_;
  std::unique_ptr<TestCgroupTree> tree_;
  std::unique_ptr<TenantRegistry> registry_;
  std::unique_ptr<CgroupStatsCollector> stats_;
  std::unique_ptr<RunqCollector> runq_;
};

TEST_F(CgroupStatsRoot, OwnQuotaShowsThrottlingGrowingAndOtherSignalsAsTheyAre) {
  ASSERT_TRUE(tree_->Create({"capped"}).ok());
  if (hierarchy_ == "cpu") {
    ASSERT_TRUE(tree_->WriteFile(cpu_mount_, "capped", "cpu.cfs_period_us", "100000").ok());
    ASSERT_TRUE(tree_->WriteFile(cpu_mount_, "capped", "cpu.cfs_quota_us", "20000").ok());
  } else {
    ASSERT_TRUE(tree_->WriteFile(cpu_mount_, "capped", "cpu.max", "20000 100000").ok());
  }
  ASSERT_TRUE(tree_->SpawnWorkload("capped", 1.0).ok());
  Discover();
  RunqCollectorOptions options;
  options.use_v1_cpu = hierarchy_ == "cpu";
  options.max_tenants = 16;
  runq_ = std::make_unique<RunqCollector>(options);
  ASSERT_TRUE(runq_->Init().ok());
  ASSERT_TRUE(runq_->SyncTenants(registry_->tenants()).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  const v1::UsageReport a = Collect();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const v1::UsageReport b = Collect();
  const auto& before = Of(a, "capped");
  const auto& after = Of(b, "capped");
  const uint64_t periods = after.cpu().nr_periods() - before.cpu().nr_periods();
  const uint64_t throttled = after.cpu().nr_throttled() - before.cpu().nr_throttled();
  const double throttled_ms = (after.cpu().throttled_ns() - before.cpu().throttled_ns()) / 1e6;
  const std::vector<uint64_t> hist(after.cpu().runq_wait_hist().buckets().begin(),
                                   after.cpu().runq_wait_hist().buckets().end());
  const std::vector<uint64_t> hist0(before.cpu().runq_wait_hist().buckets().begin(),
                                    before.cpu().runq_wait_hist().buckets().end());
  const uint64_t waits = after.cpu().runq_waits() - before.cpu().runq_waits();
  std::cout << "capped at 20 % over 2 s: " << periods << " periods, " << throttled << " throttled, "
            << throttled_ms << " ms throttled; cpu some "
            << (after.cpu_pressure().some_total_us() - before.cpu_pressure().some_total_us()) / 1e3
            << " ms (present " << after.cpu_pressure().present() << "), run-queue wait "
            << (after.cpu().runq_wait_ns() - before.cpu().runq_wait_ns()) / 1e6 << " ms over "
            << waits << " waits, p99 " << Log2Quantile(Log2Delta(hist, hist0), 0.99) / 1e3
            << " us\n";
  // 2 s = 20 periods of 100 ms; a busy loop allowed 20 ms of each is throttled in each.
  EXPECT_GE(periods, 15u);
  EXPECT_GE(throttled, 15u);
  EXPECT_LE(throttled, periods);
  // Up to 80 ms of every 100 ms period is spent throttled: ~1.6 s on an idle
  // machine, less when other load keeps the loop from using its quota early.
  EXPECT_GT(throttled_ms, 200);
  EXPECT_LT(throttled_ms, 2100);
}

TEST_F(CgroupStatsRoot, CpuContentionShowsPressureInUnifiedDirWithoutThrottling) {
  if (mounts_.unified.empty()) GTEST_SKIP() << "no cgroup2 mount: no per-cgroup PSI";
  ASSERT_TRUE(tree_->Create({"victim", "neighbour", "idle"}).ok());
  ASSERT_TRUE(tree_->SpawnWorkload("idle", 0.0).ok());
  Discover();
  const v1::UsageReport a = Collect();
  ASSERT_TRUE(Of(a, "victim").cpu_pressure().present())
      << "kernel without PSI (psi=0) or without cgroup2 pressure files";
  EXPECT_TRUE(Of(a, "victim").io_pressure().present());
  {
    PinnedHog victim(ProcsFiles("victim"), 0);
    PinnedHog neighbour(ProcsFiles("neighbour"), 0);
    ASSERT_TRUE(victim.ok());
    ASSERT_TRUE(neighbour.ok());
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  const v1::UsageReport b = Collect();
  auto some_ms = [&](const std::string& name) {
    return (Of(b, name).cpu_pressure().some_total_us() -
            Of(a, name).cpu_pressure().some_total_us()) /
           1e3;
  };
  std::cout << "2 s of two busy loops on CPU 0: cpu some victim " << some_ms("victim")
            << " ms, neighbour " << some_ms("neighbour") << " ms, idle " << some_ms("idle")
            << " ms; victim throttled "
            << Of(b, "victim").cpu().nr_throttled() - Of(a, "victim").cpu().nr_throttled()
            << " periods\n";
  // Each waits roughly half the time; the machine's other load only adds to it.
  EXPECT_GT(some_ms("victim"), 300);
  EXPECT_GT(some_ms("neighbour"), 300);
  EXPECT_LT(some_ms("idle"), 50) << "a task that never wakes is never stalled";
  EXPECT_EQ(Of(b, "victim").cpu().nr_throttled(), Of(a, "victim").cpu().nr_throttled())
      << "no quota: contention is not throttling";
  // CPU time from the kernel's counter: the two share CPU 0 for 2 s.
  auto cpu_ms = [&](const std::string& name) {
    return static_cast<double>(Of(b, name).cpu().usage_ns() - Of(a, name).cpu().usage_ns()) / 1e6;
  };
  std::cout << "CPU time: victim " << cpu_ms("victim") << " ms, neighbour " << cpu_ms("neighbour")
            << " ms, idle " << cpu_ms("idle") << " ms\n";
  EXPECT_GT(cpu_ms("victim"), 600);
  EXPECT_GT(cpu_ms("neighbour"), 600);
  EXPECT_LT(cpu_ms("victim") + cpu_ms("neighbour"), 2100) << "one CPU for 2 s";
  EXPECT_LT(cpu_ms("idle"), 5);
}

TEST_F(CgroupStatsRoot, RemovedCgroupIsReportedAbsentWithoutError) {
  if (mounts_.unified.empty()) GTEST_SKIP() << "no cgroup2 mount";
  ASSERT_TRUE(tree_->Create({"gone"}).ok());
  Discover();
  EXPECT_EQ(stats_->open_files(), FilesPerTenant());
  ASSERT_TRUE(tree_->RemoveChild("gone").ok());
  const v1::UsageReport r = Collect();
  EXPECT_FALSE(Of(r, "gone").cpu_pressure().present());
  EXPECT_FALSE(Of(r, "gone").io_pressure().present());
  EXPECT_EQ(Of(r, "gone").cpu().nr_periods(), 0u);
  EXPECT_EQ(Of(r, "gone").cpu().usage_ns(), 0u) << "its counter is gone with it";
}

// Cost of one Collect for many tenants: a pread per file kept open
// (cpu.pressure, io.pressure, cpu.stat, the CPU time counter).
TEST_F(CgroupStatsRoot, CollectFor500TenantsTakesUnder100Ms) {
  constexpr int kTenants = 500;
  std::vector<std::string> names;
  for (int i = 0; i < kTenants; ++i) names.push_back(absl::StrCat("t", i));
  ASSERT_TRUE(tree_->Create(names).ok());
  Discover();
  ASSERT_EQ(registry_->tenants().size(), static_cast<size_t>(kTenants));
  const size_t files = stats_->open_files();
  v1::UsageReport report;
  for (const auto& t : registry_->tenants()) report.add_tenants()->set_tenant_id(t.tenant.id());
  ASSERT_TRUE(stats_->Collect(registry_->tenants(), &report).ok());  // warm
  constexpr int kRounds = 5;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_TRUE(stats_->Collect(registry_->tenants(), &report).ok());
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() /
      kRounds;
  std::cout << kTenants << " tenants, " << files << " open files: " << ms << " ms per Collect ("
            << ms * 1e3 / kTenants << " us per tenant)\n";
  EXPECT_EQ(files, FilesPerTenant() * kTenants);
  EXPECT_TRUE(report.tenants(kTenants - 1).cpu_pressure().present() || mounts_.unified.empty());
  EXPECT_LT(ms, 100);
}

}  // namespace
}  // namespace fairwatch::agent
