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

}  // namespace
}  // namespace fairwatch::agent
