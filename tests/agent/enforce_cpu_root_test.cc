// Root: CPU limits on real cgroups. stress-ng wants two cores in a test
// cgroup; the enforcer's limit must hold it to within 5 %, and lease end,
// clear and an agent killed with SIGKILL must leave the right value behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/cgroup_layout.h"
#include "agent/enforcer.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::agent {
namespace {

using fairwatch::testing::TestCgroupTree;

v1::LimitCommand Command(const std::string& tenant, v1::LimitCommand::Kind kind, double cores,
                         int64_t lease_ms) {
  v1::LimitCommand c;
  c.set_command_id(absl::StrCat("cmd-", tenant, "-", cores));
  c.set_kind(kind);
  c.mutable_limit()->set_tenant_id(tenant);
  c.mutable_limit()->set_resource(v1::RESOURCE_CPU);
  c.mutable_limit()->set_value(cores);
  c.set_lease_ms(lease_ms);
  return c;
}

class EnforceCpuRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fairwatch::testing::IsRoot()) GTEST_SKIP() << "needs root: creates and limits cgroups";
    auto mounts = ReadCgroupMounts();
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    mounts_ = *mounts;
    auto hierarchy = ChooseCpuHierarchy(mounts_, "auto");
    ASSERT_TRUE(hierarchy.ok()) << hierarchy.status();
    hierarchy_ = *hierarchy;
    auto cpu_mount = mounts_.MountOf(hierarchy_);
    ASSERT_TRUE(cpu_mount.ok());
    cpu_mount_ = *cpu_mount;
    std::vector<std::string> tree_mounts{cpu_mount_};
    if (hierarchy_ == "cpu") {
      auto acct = mounts_.MountOf("cpuacct");
      ASSERT_TRUE(acct.ok()) << "v1 cpu without cpuacct";
      acct_mount_ = *acct;
      if (acct_mount_ != cpu_mount_) tree_mounts.push_back(acct_mount_);
    }
    tree_ = std::make_unique<TestCgroupTree>(tree_mounts, fairwatch::testing::UniqueCgroupPrefix());
    ASSERT_TRUE(tree_->Create({"a", "b"}).ok());
    state_dir_ = absl::StrCat(::testing::TempDir(), "/enforce-root-", getpid());
    std::filesystem::remove_all(state_dir_);
  }
  void TearDown() override {
    tree_.reset();  // kills what ran in the test cgroups, removes them
    std::filesystem::remove_all(state_dir_);
  }

  std::unique_ptr<Enforcer> Make(std::vector<std::string> protected_cgroups = {}) {
    EnforcerOptions o;
    o.mounts = mounts_;
    o.cpu_hierarchy = hierarchy_;
    o.state_dir = state_dir_;
    o.protected_cgroups = std::move(protected_cgroups);
    auto e = Enforcer::Create(std::move(o));
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok()) return nullptr;
    (*e)->SetTenants({Tenant("a"), Tenant("b")});
    return std::move(*e);
  }

  TenantEntry Tenant(const std::string& child) {
    TenantEntry t;
    t.tenant.set_id(absl::StrCat(tree_->prefix(), "/", child));
    t.tenant.set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
    v1::CgroupRef* ref = t.tenant.add_cgroups();
    ref->set_hierarchy(hierarchy_);
    ref->set_path(t.tenant.id());
    return t;
  }
  std::string Id(const std::string& child) { return absl::StrCat(tree_->prefix(), "/", child); }

  // The quota knob as the kernel shows it: "-1"/"max" when unlimited.
  std::string Quota(const std::string& child) {
    const bool v2 = hierarchy_ == "unified";
    auto text = tree_->ReadFile(cpu_mount_, child, v2 ? "cpu.max" : "cpu.cfs_quota_us");
    EXPECT_TRUE(text.ok()) << text.status();
    // cpu.max is "<quota> <period>"; the quota alone.
    std::vector<std::string> fields =
        absl::StrSplit(absl::StripAsciiWhitespace(text.value_or("")), ' ');
    return fields[0] == "max" ? "-1" : fields[0];
  }
  absl::Status SetQuota(const std::string& child, int64_t quota_us) {
    if (hierarchy_ == "unified") {
      return tree_->WriteFile(cpu_mount_, child, "cpu.max",
                              quota_us < 0 ? "max 100000" : absl::StrCat(quota_us, " 100000"));
    }
    return tree_->WriteFile(cpu_mount_, child, "cpu.cfs_quota_us", absl::StrCat(quota_us));
  }
  // The kernel's CPU time of the cgroup, in seconds.
  double CpuSeconds(const std::string& child) {
    if (hierarchy_ == "unified") {
      auto text = tree_->ReadFile(cpu_mount_, child, "cpu.stat");
      for (absl::string_view line : absl::StrSplit(text.value_or(""), '\n')) {
        uint64_t us = 0;
        if (absl::ConsumePrefix(&line, "usage_usec ") && absl::SimpleAtoi(line, &us))
          return us / 1e6;
      }
      ADD_FAILURE() << "no usage_usec";
      return 0;
    }
    auto text = tree_->ReadFile(acct_mount_, child, "cpuacct.usage");
    uint64_t ns = 0;
    EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(text.value_or("")), &ns));
    return ns / 1e9;
  }
  double MeasureCores(const std::string& child, absl::Duration window) {
    const double cpu0 = CpuSeconds(child);
    const absl::Time t0 = absl::Now();
    absl::SleepFor(window);
    return (CpuSeconds(child) - cpu0) / absl::ToDoubleSeconds(absl::Now() - t0);
  }

  CgroupMounts mounts_;
  std::string hierarchy_, cpu_mount_, acct_mount_, state_dir_;
  std::unique_ptr<TestCgroupTree> tree_;
};

TEST_F(EnforceCpuRoot, ALimitHoldsStressNgToWithinFivePercent) {
  auto started = tree_->SpawnCommand("a", {"stress-ng", "--cpu", "2", "--quiet"});
  ASSERT_TRUE(started.ok()) << started.status();
  absl::SleepFor(absl::Milliseconds(500));
  auto e = Make();
  for (double limit : {0.5, 0.25}) {
    v1::LimitAck ack = e->Handle(Command(Id("a"), v1::LimitCommand::KIND_APPLY, limit, 60'000));
    ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
    EXPECT_NEAR(ack.in_effect().value(), limit, 1e-9) << "read back from the kernel";
    absl::SleepFor(absl::Milliseconds(500));
    const double used = MeasureCores("a", absl::Seconds(4));
    std::cout << "limit " << limit << " cores: stress-ng --cpu 2 used " << used << " cores ("
              << 100 * (used / limit - 1) << " %)\n";
    EXPECT_NEAR(used, limit, 0.05 * limit);
  }
  EXPECT_EQ(e->Handle(Command(Id("a"), v1::LimitCommand::KIND_CLEAR, 0, 0)).status_code(), 0);
  EXPECT_EQ(Quota("a"), "-1");
  const double free_use = MeasureCores("a", absl::Seconds(2));
  EXPECT_GT(free_use, 0.9) << "unlimited again: it takes a core or more";
}

TEST_F(EnforceCpuRoot, LeaseEndAndClearRestoreWhatWasThere) {
  ASSERT_TRUE(SetQuota("b", 80'000).ok());  // b had 0.8 cores before fairwatch
  auto e = Make();
  ASSERT_EQ(e->Handle(Command(Id("a"), v1::LimitCommand::KIND_APPLY, 0.3, 1'200)).status_code(), 0);
  ASSERT_EQ(e->Handle(Command(Id("b"), v1::LimitCommand::KIND_APPLY, 0.3, 60'000)).status_code(),
            0);
  EXPECT_EQ(Quota("a"), "30000");
  EXPECT_EQ(Quota("b"), "30000");
  e->ExpireLeases();
  EXPECT_EQ(Quota("a"), "30000") << "lease still running";
  absl::SleepFor(absl::Milliseconds(1'400));
  e->ExpireLeases();
  EXPECT_EQ(Quota("a"), "-1") << "lease ended: unlimited, as before";
  EXPECT_EQ(Quota("b"), "30000");
  ASSERT_EQ(e->Handle(Command(Id("b"), v1::LimitCommand::KIND_CLEAR, 0, 0)).status_code(), 0);
  EXPECT_EQ(Quota("b"), "80000") << "cleared: its own 0.8 cores again";
  EXPECT_TRUE(e->InForce().empty());
}

TEST_F(EnforceCpuRoot, AnAgentKilledWithSigkillReappliesLeasedAndRevertsExpired) {
  // The first agent: applies, then dies without any clean-up.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto e = Make();
    if (e == nullptr) _exit(2);
    if (e->Handle(Command(Id("a"), v1::LimitCommand::KIND_APPLY, 0.4, 60'000)).status_code() != 0 ||
        e->Handle(Command(Id("b"), v1::LimitCommand::KIND_APPLY, 0.2, 1'000)).status_code() != 0) {
      _exit(3);
    }
    raise(SIGKILL);
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_EQ(Quota("a"), "40000");
  EXPECT_EQ(Quota("b"), "20000");
  // Meanwhile someone reset a (as libvirt does when a VM restarts); b's lease ends.
  ASSERT_TRUE(SetQuota("a", -1).ok());
  absl::SleepFor(absl::Milliseconds(1'200));

  auto e = Make();  // the restarted agent: journal read, tenants discovered
  EXPECT_EQ(Quota("a"), "40000") << "still leased: applied again";
  e->ExpireLeases();
  EXPECT_EQ(Quota("b"), "-1") << "expired while the agent was down: reverted";
  ASSERT_EQ(e->InForce().size(), 1u);
  EXPECT_EQ(e->stats().reapplied, 1u);
  EXPECT_EQ(e->stats().expired, 1u);
}

TEST_F(EnforceCpuRoot, AProtectedCgroupIsRefusedAndNotWritten) {
  auto e = Make({tree_->prefix()});
  v1::LimitAck ack = e->Handle(Command(Id("a"), v1::LimitCommand::KIND_APPLY, 0.3, 60'000));
  EXPECT_EQ(ack.status_code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_NE(ack.status_message().find("protected"), std::string::npos) << ack.status_message();
  EXPECT_EQ(Quota("a"), "-1");
  ack = e->Handle(
      Command(absl::StrCat(tree_->prefix(), "/../a"), v1::LimitCommand::KIND_APPLY, 0.3, 60'000));
  EXPECT_EQ(ack.status_code(), static_cast<int>(absl::StatusCode::kNotFound)) << "not a tenant";
}

}  // namespace
}  // namespace fairwatch::agent
