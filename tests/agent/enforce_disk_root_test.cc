// Root: disk limits on real cgroups. fio does direct I/O on a file of the
// test's own from a test cgroup; the enforcer's bandwidth and IOPS limits
// must hold it to within 10 %, measured by the kernel's own per-cgroup I/O
// counters, and a clear must remove every trace of them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/block_devices.h"
#include "agent/cgroup_layout.h"
#include "agent/disk_collector.h"
#include "agent/enforcer.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::agent {
namespace {

using fairwatch::testing::TestCgroupTree;

bool HaveProgram(const char* name) {
  return system(absl::StrCat("command -v ", name, " >/dev/null 2>&1").c_str()) == 0;
}

struct IoCount {
  double read_bytes = 0, write_bytes = 0, read_ops = 0, write_ops = 0;
};

class EnforceDiskRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fairwatch::testing::IsRoot()) GTEST_SKIP() << "needs root: creates and limits cgroups";
    if (!HaveProgram("fio")) GTEST_SKIP() << "needs fio";
    auto mounts = ReadCgroupMounts();
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    mounts_ = *mounts;
    auto hierarchy = ChooseDiskHierarchy(mounts_);
    ASSERT_TRUE(hierarchy.ok()) << hierarchy.status();
    hierarchy_ = *hierarchy;
    mount_ = *mounts_.MountOf(hierarchy_);
    file_ = absl::StrCat("/var/tmp/fw-enforce-disk-", getpid());
    // 64 MiB laid out before any limit, outside the test cgroup.
    ASSERT_EQ(system(absl::StrCat("dd if=/dev/urandom of=", file_,
                                  " bs=1M count=64 conv=fsync status=none")
                         .c_str()),
              0);
    struct stat st {};
    ASSERT_EQ(stat(file_.c_str(), &st), 0);
    if (major(st.st_dev) == 0) GTEST_SKIP() << "/var/tmp is not on a block device";
    auto disk = WholeDiskOf(major(st.st_dev), minor(st.st_dev));
    ASSERT_TRUE(disk.ok()) << disk.status();
    disk_ = *disk;
    dev_ = absl::StrCat(disk_.major(), ":", disk_.minor());
    tree_ = std::make_unique<TestCgroupTree>(std::vector<std::string>{mount_},
                                             fairwatch::testing::UniqueCgroupPrefix());
    ASSERT_TRUE(tree_->Create({"io"}).ok());
    if (hierarchy_ == "unified" &&
        !tree_->WriteFile(mount_, "", "cgroup.subtree_control", "+io").ok()) {
      GTEST_SKIP() << "the io controller is not delegated to " << mount_;
    }
    state_dir_ = absl::StrCat(::testing::TempDir(), "/enforce-disk-", getpid());
    std::filesystem::remove_all(state_dir_);
    EnforcerOptions o;
    o.mounts = mounts_;
    o.cpu_hierarchy = "unused";
    o.disk_hierarchy = hierarchy_;
    o.host_disks = {disk_};
    o.state_dir = state_dir_;
    auto e = Enforcer::Create(std::move(o));
    ASSERT_TRUE(e.ok()) << e.status();
    enforcer_ = std::move(*e);
    TenantEntry t;
    t.tenant.set_id(absl::StrCat(tree_->prefix(), "/io"));
    t.tenant.set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
    v1::CgroupRef* ref = t.tenant.add_cgroups();
    ref->set_hierarchy(hierarchy_);
    ref->set_path(t.tenant.id());
    enforcer_->SetTenants({t});
    tenant_ = t.tenant.id();
  }
  void TearDown() override {
    tree_.reset();
    if (!file_.empty()) unlink(file_.c_str());
    std::filesystem::remove_all(state_dir_);
  }

  v1::LimitAck Command(v1::LimitCommand::Kind kind, v1::Resource resource, double value) {
    v1::LimitCommand c;
    c.set_command_id("disk");
    c.set_kind(kind);
    c.mutable_limit()->set_tenant_id(tenant_);
    c.mutable_limit()->set_resource(resource);
    c.mutable_limit()->set_value(value);
    c.set_lease_ms(60'000);
    return enforcer_->Handle(c);
  }

  // The kernel's per-cgroup I/O counters on the test's disk.
  IoCount Counters() {
    IoCount c;
    if (hierarchy_ == "blkio") {
      for (const auto& [file, is_bytes] : {std::pair{"blkio.throttle.io_service_bytes", true},
                                           {"blkio.throttle.io_serviced", false}}) {
        auto text = tree_->ReadFile(mount_, "io", file);
        for (absl::string_view line : absl::StrSplit(text.value_or(""), '\n')) {
          std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
          double v = 0;
          if (f.size() != 3 || f[0] != dev_ || !absl::SimpleAtod(f[2], &v)) continue;
          if (f[1] == "Read") (is_bytes ? c.read_bytes : c.read_ops) = v;
          if (f[1] == "Write") (is_bytes ? c.write_bytes : c.write_ops) = v;
        }
      }
      return c;
    }
    auto text = tree_->ReadFile(mount_, "io", "io.stat");
    for (absl::string_view line : absl::StrSplit(text.value_or(""), '\n')) {
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.empty() || f[0] != dev_) continue;
      for (size_t i = 1; i < f.size(); ++i) {
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(f[i], '=');
        double v = 0;
        if (!absl::SimpleAtod(kv.second, &v)) continue;
        if (kv.first == "rbytes") c.read_bytes = v;
        if (kv.first == "wbytes") c.write_bytes = v;
        if (kv.first == "rios") c.read_ops = v;
        if (kv.first == "wios") c.write_ops = v;
      }
    }
    return c;
  }

  // Runs fio in the tenant for a while and returns the rate the kernel
  // counted over the steady middle: bytes/s or ops/s of `rw`'s direction.
  double Rate(const std::string& rw, const std::string& bs, bool ops) {
    auto pid = tree_->SpawnCommand(
        "io", {"fio", "--name=fw", absl::StrCat("--filename=", file_), "--size=64M",
               absl::StrCat("--rw=", rw), absl::StrCat("--bs=", bs), "--direct=1",
               "--ioengine=psync", "--time_based", "--runtime=30", "--output=/dev/null"});
    EXPECT_TRUE(pid.ok()) << pid.status();
    absl::SleepFor(absl::Seconds(2));  // fio started, throttle in its steady state
    const IoCount a = Counters();
    const absl::Time t0 = absl::Now();
    absl::SleepFor(absl::Seconds(4));
    const IoCount b = Counters();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
    tree_->KillWorkloads();
    const bool write = rw.find("write") != std::string::npos;
    if (ops) return ((write ? b.write_ops - a.write_ops : b.read_ops - a.read_ops)) / seconds;
    return ((write ? b.write_bytes - a.write_bytes : b.read_bytes - a.read_bytes)) / seconds;
  }

  // The limit rules the kernel holds for the disk, as one string.
  std::string Rules() {
    std::string all;
    const std::vector<const char*> files =
        hierarchy_ == "blkio" ? std::vector<const char*>{"blkio.throttle.read_bps_device",
                                                         "blkio.throttle.write_bps_device",
                                                         "blkio.throttle.read_iops_device",
                                                         "blkio.throttle.write_iops_device"}
                              : std::vector<const char*>{"io.max"};
    for (const char* f : files)
      absl::StrAppend(&all, tree_->ReadFile(mount_, "io", f).value_or(""));
    return all;
  }

  CgroupMounts mounts_;
  std::string hierarchy_, mount_, file_, dev_, state_dir_, tenant_;
  v1::DeviceId disk_;
  std::unique_ptr<TestCgroupTree> tree_;
  std::unique_ptr<Enforcer> enforcer_;
};

TEST_F(EnforceDiskRoot, BandwidthLimitHoldsDirectReadsAndWritesWithinTenPercent) {
  const std::string before = Rules();
  constexpr double kLimit = 8e6;
  v1::LimitAck ack = Command(v1::LimitCommand::KIND_APPLY, v1::RESOURCE_DISK_BANDWIDTH, kLimit);
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), kLimit) << "read back from the kernel";
  for (const char* rw : {"read", "write"}) {
    const double rate = Rate(rw, "64k", false);
    std::cout << "fio direct " << rw << " under " << kLimit / 1e6 << " MB/s: " << rate / 1e6
              << " MB/s (" << 100 * (rate / kLimit - 1) << " %)\n";
    EXPECT_NEAR(rate, kLimit, 0.10 * kLimit) << rw;
  }
  ack = Command(v1::LimitCommand::KIND_CLEAR, v1::RESOURCE_DISK_BANDWIDTH, 0);
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_EQ(Rules(), before) << "no rule of ours left";
  const double free_rate = Rate("read", "64k", false);
  std::cout << "fio direct read after the clear: " << free_rate / 1e6 << " MB/s\n";
  EXPECT_GT(free_rate, 1.5 * kLimit);
}

TEST_F(EnforceDiskRoot, IopsLimitHoldsRandomReadsWithinTenPercent) {
  constexpr double kLimit = 150;
  v1::LimitAck ack = Command(v1::LimitCommand::KIND_APPLY, v1::RESOURCE_DISK_IOPS, kLimit);
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), kLimit);
  const double rate = Rate("randread", "4k", true);
  std::cout << "fio direct randread under " << kLimit << " IOPS: " << rate << " IOPS ("
            << 100 * (rate / kLimit - 1) << " %)\n";
  EXPECT_NEAR(rate, kLimit, 0.10 * kLimit);
  ASSERT_EQ(Command(v1::LimitCommand::KIND_CLEAR, v1::RESOURCE_DISK_IOPS, 0).status_code(), 0);
  EXPECT_TRUE(enforcer_->InForce().empty());
}

}  // namespace
}  // namespace fairwatch::agent
