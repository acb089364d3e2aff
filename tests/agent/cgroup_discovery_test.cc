// Discovery against a fake cgroupfs: plain directories in a temp dir.
#include "agent/cgroup_discovery.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace fairwatch::agent {
namespace {

class FakeCgroupFs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fwfakecg-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    for (const char* h : {"cpu", "unified", "blkio"}) Mkdir(h);
    mounts_.layout = v1::CGROUP_LAYOUT_HYBRID;
    mounts_.unified = root_ + "/unified";
    mounts_.v1_by_controller["cpu"] = root_ + "/cpu";
    mounts_.v1_by_controller["blkio"] = root_ + "/blkio";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void Mkdir(const std::string& rel) { std::filesystem::create_directories(root_ + "/" + rel); }
  void Rmdir(const std::string& rel) { std::filesystem::remove_all(root_ + "/" + rel); }

  std::vector<v1::CgroupParentSource> Parents(std::initializer_list<const char*> paths) {
    std::vector<v1::CgroupParentSource> out;
    for (const char* p : paths) {
      v1::CgroupParentSource s;
      s.set_path(p);
      out.push_back(s);
    }
    return out;
  }

  std::string root_;
  CgroupMounts mounts_;
};

TEST_F(FakeCgroupFs, EachChildOfAParentIsATenant) {
  Mkdir("cpu/machine/vm-a");
  Mkdir("cpu/machine/vm-b/vcpu0");
  Mkdir("unified/machine/vm-a");
  CgroupParentDiscovery discovery(mounts_, "cpu", Parents({"machine"}));
  ASSERT_TRUE(discovery.Init().ok());
  auto tenants = discovery.Scan();
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  ASSERT_EQ(tenants->size(), 2u);
  const v1::Tenant& a = (*tenants)[0].tenant;
  EXPECT_EQ(a.id(), "machine/vm-a");
  EXPECT_EQ(a.name(), "vm-a");
  EXPECT_EQ(a.weight(), 1.0);
  ASSERT_EQ(a.cgroups_size(), 2) << "cpu plus the unified directory that exists";
  EXPECT_EQ(a.cgroups(0).hierarchy(), "cpu");
  EXPECT_EQ(a.cgroups(1).hierarchy(), "unified");
  struct stat st {};
  ASSERT_EQ(stat((root_ + "/cpu/machine/vm-a").c_str(), &st), 0);
  EXPECT_EQ((*tenants)[0].cpu_cgroup_id, st.st_ino) << "cgroup id is the directory inode";
  EXPECT_EQ((*tenants)[1].tenant.id(), "machine/vm-b") << "nested children are not tenants";
}

TEST_F(FakeCgroupFs, NewAndRemovedChildrenAreSeenOnNextScan) {
  Mkdir("cpu/machine/a");
  CgroupParentDiscovery discovery(mounts_, "cpu", Parents({"machine"}));
  ASSERT_TRUE(discovery.Init().ok());
  EXPECT_EQ(discovery.Scan()->size(), 1u);
  Mkdir("cpu/machine/b");
  EXPECT_EQ(discovery.Scan()->size(), 2u);
  Rmdir("cpu/machine/a");
  auto tenants = discovery.Scan();
  ASSERT_EQ(tenants->size(), 1u);
  EXPECT_EQ((*tenants)[0].tenant.id(), "machine/b");
}

TEST_F(FakeCgroupFs, MissingParentIsEmptyUntilItAppears) {
  CgroupParentDiscovery discovery(mounts_, "cpu", Parents({"later.slice"}));
  ASSERT_TRUE(discovery.Init().ok());
  auto tenants = discovery.Scan();
  ASSERT_TRUE(tenants.ok());
  EXPECT_TRUE(tenants->empty());
  Mkdir("cpu/later.slice/x");
  EXPECT_EQ(discovery.Scan()->size(), 1u);
}

TEST_F(FakeCgroupFs, FilesInParentAreNotTenants) {
  Mkdir("cpu/machine");
  FILE* f = fopen((root_ + "/cpu/machine/cpu.shares").c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  CgroupParentDiscovery discovery(mounts_, "cpu", Parents({"machine"}));
  ASSERT_TRUE(discovery.Init().ok());
  EXPECT_TRUE(discovery.Scan()->empty());
}

TEST_F(FakeCgroupFs, ParentAccountAndWeightApplyToItsTenants) {
  Mkdir("cpu/gold/t1");
  auto parents = Parents({"gold/"});
  parents[0].set_account("acme");
  parents[0].set_weight(3);
  CgroupParentDiscovery discovery(mounts_, "cpu", parents);
  ASSERT_TRUE(discovery.Init().ok());
  auto tenants = discovery.Scan();
  ASSERT_EQ(tenants->size(), 1u);
  EXPECT_EQ((*tenants)[0].tenant.id(), "gold/t1") << "trailing slash normalized";
  EXPECT_EQ((*tenants)[0].tenant.account(), "acme");
  EXPECT_EQ((*tenants)[0].tenant.weight(), 3.0);
}

TEST_F(FakeCgroupFs, UnifiedHierarchyDiscovery) {
  Mkdir("unified/machine/c1");
  CgroupParentDiscovery discovery(mounts_, "unified", Parents({"machine"}));
  ASSERT_TRUE(discovery.Init().ok());
  auto tenants = discovery.Scan();
  ASSERT_EQ(tenants->size(), 1u);
  EXPECT_EQ((*tenants)[0].tenant.cgroups(0).hierarchy(), "unified");
}

TEST(CgroupPath, RejectsEscapesAndAbsolutePaths) {
  for (const char* bad : {"", "/machine", "../etc", "a/../../b", "a/./b", "///"}) {
    EXPECT_EQ(NormalizeRelativeCgroupPath(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(*NormalizeRelativeCgroupPath("machine.slice//x/"), "machine.slice/x");
}

TEST_F(FakeCgroupFs, InitRejectsBadParentPath) {
  CgroupParentDiscovery discovery(mounts_, "cpu", Parents({"../escape"}));
  EXPECT_EQ(discovery.Init().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fairwatch::agent
