#include "agent/cgroup_layout.h"

#include <gtest/gtest.h>

namespace fairwatch::agent {
namespace {

constexpr char kHybrid[] =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "37 30 0:34 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

constexpr char kPureV2[] =
    "25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";

constexpr char kCombinedV1[] =
    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n";

TEST(CgroupLayout, HybridHostHasV1ControllersAndUnified) {
  auto mounts = ParseMountInfo(kHybrid);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_EQ(mounts->layout, v1::CGROUP_LAYOUT_HYBRID);
  EXPECT_EQ(mounts->unified, "/sys/fs/cgroup/unified");
  EXPECT_EQ(*mounts->MountOf("cpu"), "/sys/fs/cgroup/cpu");
  EXPECT_EQ(*mounts->MountOf("blkio"), "/sys/fs/cgroup/blkio");
  EXPECT_FALSE(mounts->MountOf("systemd").ok()) << "named hierarchies are not controllers";
  EXPECT_EQ(*ChooseCpuHierarchy(*mounts, "auto"), "cpu");
  EXPECT_EQ(*ChooseCpuHierarchy(*mounts, "unified"), "unified");
}

TEST(CgroupLayout, PureV2AttributesInUnified) {
  auto mounts = ParseMountInfo(kPureV2);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_EQ(mounts->layout, v1::CGROUP_LAYOUT_V2);
  EXPECT_EQ(*ChooseCpuHierarchy(*mounts, "auto"), "unified");
  EXPECT_EQ(ChooseCpuHierarchy(*mounts, "cpu").status().code(), absl::StatusCode::kNotFound);
}

TEST(CgroupLayout, CombinedV1MountServesBothControllers) {
  auto mounts = ParseMountInfo(kCombinedV1);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_EQ(mounts->layout, v1::CGROUP_LAYOUT_V1);
  EXPECT_EQ(*mounts->MountOf("cpu"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(*mounts->MountOf("cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
}

TEST(CgroupLayout, NoCgroupMountIsAnError) {
  auto mounts = ParseMountInfo("22 1 0:21 / /proc rw - proc proc rw\n");
  EXPECT_EQ(mounts.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CgroupLayout, UnknownHierarchyRequestIsRejected) {
  auto mounts = ParseMountInfo(kHybrid);
  ASSERT_TRUE(mounts.ok());
  EXPECT_EQ(ChooseCpuHierarchy(*mounts, "memory").status().code(),
            absl::StatusCode::kInvalidArgument);
}

v1::Tenant TenantIn(std::initializer_list<const char*> hierarchies, const char* path = "t/a") {
  v1::Tenant t;
  t.set_id(path);
  uint64_t id = 10;
  for (const char* h : hierarchies) {
    v1::CgroupRef* ref = t.add_cgroups();
    ref->set_hierarchy(h);
    ref->set_path(path);
    ref->set_id(id++);
  }
  return t;
}

TEST(KernelCpuTimeFile, V1ReadsCpuacctUsageAndFallsBackToTheUnifiedCpuStat) {
  auto mounts = ParseMountInfo(kHybrid);
  ASSERT_TRUE(mounts.ok());
  auto acct = KernelCpuTimeFile(TenantIn({"cpu", "cpuacct", "unified"}), "cpu", *mounts);
  ASSERT_TRUE(acct.has_value());
  EXPECT_EQ(acct->path, "/sys/fs/cgroup/cpuacct/t/a/cpuacct.usage");
  EXPECT_FALSE(acct->microseconds);
  EXPECT_EQ(acct->cgroup_id, 11u);
  // A libvirt VM on this host kind: cpu and unified directories, no cpuacct one.
  auto vm = KernelCpuTimeFile(TenantIn({"cpu", "unified"}), "cpu", *mounts);
  ASSERT_TRUE(vm.has_value());
  EXPECT_EQ(vm->path, "/sys/fs/cgroup/unified/t/a/cpu.stat");
  EXPECT_TRUE(vm->microseconds);
  EXPECT_FALSE(KernelCpuTimeFile(TenantIn({"cpu", "blkio"}), "cpu", *mounts).has_value())
      << "no directory with a counter: the CPU program's";
  EXPECT_FALSE(KernelCpuTimeFile(TenantIn({"cpu", "unified"}, ""), "cpu", *mounts).has_value())
      << "a hierarchy's root is the host's";
}

TEST(KernelCpuTimeFile, CoMountedCpuacctIsReadInTheCpuDirectory) {
  auto mounts = ParseMountInfo(kCombinedV1);
  ASSERT_TRUE(mounts.ok());
  auto file = KernelCpuTimeFile(TenantIn({"cpu"}), "cpu", *mounts);
  ASSERT_TRUE(file.has_value());
  EXPECT_EQ(file->path, "/sys/fs/cgroup/cpu,cpuacct/t/a/cpuacct.usage");
}

TEST(KernelCpuTimeFile, V2ReadsCpuStat) {
  auto mounts = ParseMountInfo(kPureV2);
  ASSERT_TRUE(mounts.ok());
  auto file = KernelCpuTimeFile(TenantIn({"unified"}), "unified", *mounts);
  ASSERT_TRUE(file.has_value());
  EXPECT_EQ(file->path, "/sys/fs/cgroup/t/a/cpu.stat");
  EXPECT_TRUE(file->microseconds);
}

}  // namespace
}  // namespace fairwatch::agent
