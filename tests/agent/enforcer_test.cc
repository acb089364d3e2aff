// The enforcer's logic without root: limits on libvirt VM tenants through a
// fake VmTuning (what libvirt would hold), a fake clock for leases, the
// journal in a temp dir; and the path and protection checks.
#include "agent/enforcer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "agent/cgroup_dir.h"
#include "fairwatch/v1/journal.pb.h"

namespace fairwatch::agent {

// For gtest's messages (found by argument-dependent lookup, so not in the
// anonymous namespace).
void PrintTo(const VmDiskThrottle& t, std::ostream* os) {
  *os << "{total " << t.total << ", read " << t.read << ", write " << t.write << "}";
}

namespace {

class FakeVms : public VmTuning {
 public:
  std::map<std::string, VmCpuQuota> vms;
  int sets = 0;
  absl::StatusOr<VmCpuQuota> GetCpuQuota(const std::string& uuid) override {
    auto it = vms.find(uuid);
    if (it == vms.end()) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    return it->second;
  }
  absl::Status SetCpuQuota(const std::string& uuid, int64_t quota_us) override {
    auto it = vms.find(uuid);
    if (it == vms.end()) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    ++sets;
    it->second.quota_us = quota_us;
    return absl::OkStatus();
  }
  std::map<std::string, uint64_t> shares;  // uuid -> live cpu_shares (1024 unless set)
  absl::StatusOr<uint64_t> GetCpuShares(const std::string& uuid) override {
    if (!vms.contains(uuid)) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    return shares.contains(uuid) ? shares[uuid] : 1024;
  }
  absl::Status SetCpuShares(const std::string& uuid, uint64_t value) override {
    if (!vms.contains(uuid)) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    ++sets;
    shares[uuid] = value;
    return absl::OkStatus();
  }
  // (uuid, host device "M:m") -> guest disks on it; a uuid in `no_iotune`
  // belongs to a driver without QEMU's throttle.
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> guest_disks;
  std::set<std::string> no_iotune;
  absl::StatusOr<std::vector<std::string>> GuestDisksOn(const std::string& uuid,
                                                        const v1::DeviceId& device) override {
    if (!vms.contains(uuid)) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    if (no_iotune.contains(uuid)) return absl::UnimplementedError("not a QEMU domain");
    auto it = guest_disks.find({uuid, absl::StrCat(device.major(), ":", device.minor())});
    return it == guest_disks.end() ? std::vector<std::string>{} : it->second;
  }
  // (uuid, guest disk, unit) -> QEMU's throttle, as libvirt keeps it.
  std::map<std::tuple<std::string, std::string, VmDiskUnit>, VmDiskThrottle> iotune;
  absl::StatusOr<VmDiskThrottle> GetDiskThrottle(const std::string& uuid, const std::string& target,
                                                 VmDiskUnit unit) override {
    if (!vms.contains(uuid)) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    return iotune[{uuid, target, unit}];
  }
  absl::Status SetDiskThrottle(const std::string& uuid, const std::string& target, VmDiskUnit unit,
                               const VmDiskThrottle& throttle) override {
    if (!vms.contains(uuid)) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    if (target == "broken") return absl::UnavailableError("libvirt: I/O error");
    if (throttle.total > 0 && (throttle.read > 0 || throttle.write > 0)) {
      return absl::InvalidArgumentError("total and read/write cannot be set at the same time");
    }
    ++sets;
    iotune[{uuid, target, unit}] = throttle;
    return absl::OkStatus();
  }
  // (uuid, field, device) -> value, as libvirt keeps a domain's blkio tuning.
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> blkio;
  absl::StatusOr<uint64_t> GetBlkioThrottle(const std::string& uuid, const std::string& field,
                                            const std::string& device) override {
    if (!vms.contains(uuid)) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    auto it = blkio.find({uuid, field, device});
    return it == blkio.end() ? 0 : it->second;
  }
  absl::Status SetBlkioThrottle(const std::string& uuid, const std::string& field,
                                const std::string& device, uint64_t value) override {
    if (!vms.contains(uuid)) return absl::NotFoundError(absl::StrCat("no domain ", uuid));
    if (device == "/dev/broken") return absl::UnavailableError("libvirt: I/O error");
    ++sets;
    blkio[{uuid, field, device}] = value;
    return absl::OkStatus();
  }
};

constexpr char kVm[] = "6c1b3c8e-2a43-4a41-9f0e-0c4b2b6f7a11";

TenantEntry VmTenant(const std::string& uuid) {
  TenantEntry t;
  t.tenant.set_id(uuid);
  t.tenant.set_source(v1::TENANT_SOURCE_LIBVIRT);
  return t;
}

TenantEntry CgroupTenant(const std::string& id, const std::string& path) {
  TenantEntry t;
  t.tenant.set_id(id);
  t.tenant.set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
  v1::CgroupRef* ref = t.tenant.add_cgroups();
  ref->set_hierarchy("cpu");
  ref->set_path(path);
  return t;
}

v1::LimitCommand Apply(const std::string& tenant, double cores, int64_t lease_ms,
                       const std::string& id = "c1") {
  v1::LimitCommand c;
  c.set_command_id(id);
  c.set_kind(v1::LimitCommand::KIND_APPLY);
  c.mutable_limit()->set_tenant_id(tenant);
  c.mutable_limit()->set_resource(v1::RESOURCE_CPU);
  c.mutable_limit()->set_value(cores);
  c.set_lease_ms(lease_ms);
  return c;
}

v1::LimitCommand Clear(const std::string& tenant) {
  v1::LimitCommand c = Apply(tenant, 0, 0, "clear");
  c.set_kind(v1::LimitCommand::KIND_CLEAR);
  return c;
}

class EnforcerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/enforcer-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    vms_.vms[kVm] = VmCpuQuota{100000, -1};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Enforcer> Make() {
    EnforcerOptions o;
    o.cpu_hierarchy = "cpu";
    o.mounts.v1_by_controller["cpu"] = "/nonexistent-cgroup-mount";
    o.state_dir = dir_;
    o.own_cgroups = {{"cpu", "agents/fairwatch"}};
    o.protected_cgroups = {"tenants/vip"};
    o.vm = &vms_;
    o.now = [this] { return now_; };
    auto e = Enforcer::Create(std::move(o));
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }

  std::string dir_;
  FakeVms vms_;
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(EnforcerTest, AppliesReadsBackAndClearRestoresTheOriginal) {
  auto e = Make();
  e->SetTenants({VmTenant(kVm)});
  v1::LimitAck ack = e->Handle(Apply(kVm, 0.5, 30'000));
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_EQ(ack.command_id(), "c1");
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), 0.5);
  EXPECT_EQ(vms_.vms[kVm].quota_us, 50000);
  ASSERT_EQ(e->InForce().size(), 1u);
  EXPECT_EQ(e->InForce()[0].original(), "-1");

  // A step down keeps the original from before the first change.
  ack = e->Handle(Apply(kVm, 0.25, 30'000, "c2"));
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), 0.25);
  EXPECT_EQ(e->InForce()[0].original(), "-1");
  EXPECT_EQ(e->InForce()[0].command_id(), "c2");

  ack = e->Handle(Clear(kVm));
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_EQ(vms_.vms[kVm].quota_us, -1);
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), 0) << "unlimited again";
  EXPECT_TRUE(e->InForce().empty());
  EXPECT_EQ(e->stats().cleared, 1u);
  // Clearing again is not an error: nothing of ours is there.
  EXPECT_EQ(e->Handle(Clear(kVm)).status_code(), 0);
}

TEST_F(EnforcerTest, NeverLoosensAStricterLimitThatWasThere) {
  vms_.vms[kVm].quota_us = 20000;  // the customer's plan: 0.2 cores
  auto e = Make();
  e->SetTenants({VmTenant(kVm)});
  v1::LimitAck ack = e->Handle(Apply(kVm, 0.5, 30'000));
  ASSERT_EQ(ack.status_code(), 0);
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), 0.2) << "the ack says what is really in effect";
  EXPECT_EQ(vms_.vms[kVm].quota_us, 20000);
  e->Handle(Clear(kVm));
  EXPECT_EQ(vms_.vms[kVm].quota_us, 20000);
}

TEST_F(EnforcerTest, AnUnrenewedLeaseEndsAndTheOriginalComesBack) {
  auto e = Make();
  e->SetTenants({VmTenant(kVm)});
  ASSERT_EQ(e->Handle(Apply(kVm, 0.5, 10'000)).status_code(), 0);
  now_ += absl::Seconds(6);
  ASSERT_EQ(e->Handle(Apply(kVm, 0.5, 10'000, "renew")).status_code(), 0);
  now_ += absl::Seconds(9);
  e->ExpireLeases();
  EXPECT_EQ(vms_.vms[kVm].quota_us, 50000) << "renewed 9 s ago with a 10 s lease";
  now_ += absl::Seconds(2);
  e->ExpireLeases();
  EXPECT_EQ(vms_.vms[kVm].quota_us, -1);
  EXPECT_TRUE(e->InForce().empty());
  EXPECT_EQ(e->stats().expired, 1u);
}

TEST_F(EnforcerTest, ARestartReappliesWhatIsLeasedAndRevertsWhatExpired) {
  constexpr char kOther[] = "0f0e0d0c-0b0a-4908-8706-050403020100";
  vms_.vms[kOther] = VmCpuQuota{100000, -1};
  {
    auto e = Make();
    e->SetTenants({VmTenant(kVm), VmTenant(kOther)});
    ASSERT_EQ(e->Handle(Apply(kVm, 0.5, 60'000)).status_code(), 0);
    ASSERT_EQ(e->Handle(Apply(kOther, 0.3, 5'000)).status_code(), 0);
    // Gone without clean-up, as after SIGKILL: the journal is all that is left.
  }
  vms_.vms[kVm].quota_us = -1;  // the VM was restarted meanwhile: libvirt's default
  now_ += absl::Seconds(10);
  auto e = Make();
  ASSERT_EQ(e->InForce().size(), 2u);
  e->SetTenants({VmTenant(kVm), VmTenant(kOther)});
  EXPECT_EQ(vms_.vms[kVm].quota_us, 50000) << "still leased: in force again";
  EXPECT_EQ(e->stats().reapplied, 1u);
  e->ExpireLeases();
  EXPECT_EQ(vms_.vms[kOther].quota_us, -1) << "lease ended while the agent was down";
  ASSERT_EQ(e->InForce().size(), 1u);
  EXPECT_EQ(e->InForce()[0].tenant_id(), kVm);
}

TEST_F(EnforcerTest, ATenantThatComesBackGetsItsLeasedLimitAgain) {
  auto e = Make();
  e->SetTenants({VmTenant(kVm)});
  ASSERT_EQ(e->Handle(Apply(kVm, 0.5, 60'000)).status_code(), 0);
  e->SetTenants({});
  vms_.vms[kVm].quota_us = -1;  // restarted by its owner
  e->SetTenants({VmTenant(kVm)});
  EXPECT_EQ(vms_.vms[kVm].quota_us, 50000);
}

TEST_F(EnforcerTest, RefusalsWriteNothing) {
  auto e = Make();
  e->SetTenants({VmTenant(kVm), CgroupTenant("vip", "tenants/vip/db"),
                 CgroupTenant("sys", "system.slice/cron.service"), CgroupTenant("up", "agents"),
                 CgroupTenant("root", "")});
  struct Case {
    v1::LimitCommand command;
    absl::StatusCode code;
    const char* says;
  };
  v1::LimitCommand net = Apply(kVm, 1e6, 30'000);
  net.mutable_limit()->set_resource(v1::RESOURCE_NET_TX);
  v1::LimitCommand disk = Apply(kVm, 1e6, 30'000);
  disk.mutable_limit()->set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  v1::LimitCommand unknown_kind = Apply(kVm, 0.5, 30'000);
  unknown_kind.set_kind(v1::LimitCommand::KIND_UNSPECIFIED);
  const Case cases[] = {
      {Apply("stranger", 0.5, 30'000), absl::StatusCode::kNotFound,
       "not one this agent discovered"},
      {Apply(kVm, 0.5, 0), absl::StatusCode::kInvalidArgument, "needs a lease"},
      {Apply(kVm, 0.5, 48LL * 3600 * 1000), absl::StatusCode::kInvalidArgument, "needs a lease"},
      {Apply(kVm, -1, 30'000), absl::StatusCode::kInvalidArgument, "not a positive amount"},
      {Apply(kVm, std::nan(""), 30'000), absl::StatusCode::kInvalidArgument, "not a positive"},
      {Apply("vip", 0.5, 30'000), absl::StatusCode::kPermissionDenied,
       "protected by the agent's config"},
      {Apply("sys", 0.5, 30'000), absl::StatusCode::kPermissionDenied, "system.slice"},
      {Apply("up", 0.5, 30'000), absl::StatusCode::kPermissionDenied, "fairwatch agent itself"},
      {Apply("root", 0.5, 30'000), absl::StatusCode::kPermissionDenied, "root cgroup"},
      {net, absl::StatusCode::kUnimplemented, "network limits are off"},
      {disk, absl::StatusCode::kFailedPrecondition, "no block device is known"},
      {unknown_kind, absl::StatusCode::kInvalidArgument, "unknown kind"},
  };
  for (const Case& c : cases) {
    v1::LimitAck ack = e->Handle(c.command);
    EXPECT_EQ(ack.status_code(), static_cast<int>(c.code))
        << c.says << ": " << ack.status_message();
    EXPECT_NE(ack.status_message().find(c.says), std::string::npos) << ack.status_message();
  }
  EXPECT_EQ(vms_.sets, 0);
  EXPECT_TRUE(e->InForce().empty());
  EXPECT_FALSE(std::filesystem::exists(e->journal_path())) << "nothing was ever recorded";
  EXPECT_EQ(e->stats().refused, std::size(cases));
}

TEST_F(EnforcerTest, VmDiskLimitsGoThroughQemusThrottleSharedByTheGuestDisksOfADevice) {
  auto e = Make();
  TenantEntry vm = VmTenant(kVm);
  v1::DeviceId* sda = vm.tenant.add_disks();
  sda->set_major(8);
  vms_.guest_disks[{kVm, "8:0"}] = {"vda", "vdb"};
  using Key = std::tuple<std::string, std::string, VmDiskUnit>;
  const Key vda{kVm, "vda", VmDiskUnit::kBytes}, vdb{kVm, "vdb", VmDiskUnit::kBytes};
  vms_.iotune[vda] = {0, 3'000'000, 0};  // its plan: 3 MB/s of reads on vda
  e->SetTenants({vm});

  v1::LimitCommand bw = Apply(kVm, 10e6, 30'000);
  bw.mutable_limit()->set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  v1::LimitAck ack = e->Handle(bw);
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  // Two guest disks on the device: 5 MB/s each, together the 10 asked.
  EXPECT_EQ(vms_.iotune[vda], (VmDiskThrottle{0, 3'000'000, 5'000'000}))
      << "a per-direction plan stays, the stricter read kept";
  EXPECT_EQ(vms_.iotune[vdb], (VmDiskThrottle{5'000'000, 0, 0}));
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), 10e6);
  ASSERT_EQ(e->InForce().size(), 1u);
  EXPECT_EQ(e->InForce()[0].knob(), v1::AppliedLimit::KNOB_LIBVIRT_DISK_IOTUNE);
  EXPECT_EQ(e->InForce()[0].original(), "vda=0,3000000,0 vdb=0,0,0");

  // A step down and a restart of the agent keep the original.
  bw.mutable_limit()->set_value(4e6);
  ASSERT_EQ(e->Handle(bw).status_code(), 0);
  EXPECT_EQ(vms_.iotune[vdb], (VmDiskThrottle{2'000'000, 0, 0}));
  e = Make();
  e->SetTenants({vm});
  v1::LimitCommand clear = Clear(kVm);
  clear.mutable_limit()->set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  ASSERT_EQ(e->Handle(clear).status_code(), 0);
  EXPECT_EQ(vms_.iotune[vda], (VmDiskThrottle{0, 3'000'000, 0}));
  EXPECT_EQ(vms_.iotune[vdb], (VmDiskThrottle{}));

  // IOPS have their own triple; a second device whose disk fails: the first
  // is put back, nothing stays in force.
  v1::DeviceId* sdb = vm.tenant.add_disks();
  sdb->set_major(8);
  sdb->set_minor(16);
  vms_.guest_disks[{kVm, "8:16"}] = {"broken"};
  e->SetTenants({vm});
  v1::LimitCommand iops = Apply(kVm, 300, 30'000);
  iops.mutable_limit()->set_resource(v1::RESOURCE_DISK_IOPS);
  ack = e->Handle(iops);
  EXPECT_EQ(ack.status_code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ((vms_.iotune[{kVm, "vda", VmDiskUnit::kIops}]), VmDiskThrottle{});
  EXPECT_EQ(vms_.iotune[vda], (VmDiskThrottle{0, 3'000'000, 0})) << "bytes untouched";
  EXPECT_TRUE(e->InForce().empty());
}

// The weight lever: the tenant's own weight scaled down (never below the
// knob's floor), beside a cap on the same resource; each lever cleared on its
// own, or both by a CLEAR that names none.
TEST_F(EnforcerTest, TheWeightLeverScalesTheTenantsOwnWeightBesideACap) {
  const std::string mount = dir_ + "-cpu";
  const std::string tenant_dir = mount + "/tenants/web";
  std::filesystem::create_directories(tenant_dir);
  auto put = [&](const char* file, const std::string& text) {
    std::ofstream(absl::StrCat(tenant_dir, "/", file)) << text;
  };
  auto get = [&](const char* file) {
    std::ifstream in(absl::StrCat(tenant_dir, "/", file));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  put("cpu.shares", "2048\n");
  put("cpu.cfs_quota_us", "-1\n");
  put("cpu.cfs_period_us", "100000\n");
  EnforcerOptions o;
  o.mounts.v1_by_controller["cpu"] = mount;
  o.cpu_hierarchy = "cpu";
  o.state_dir = dir_;
  o.own_cgroups = {{"cpu", "agents/fairwatch"}};
  o.vm = &vms_;
  o.now = [this] { return now_; };
  auto made = Enforcer::Create(std::move(o));
  ASSERT_TRUE(made.ok()) << made.status();
  Enforcer& e = **made;
  e.SetTenants({CgroupTenant("tenants/web", "tenants/web"), VmTenant(kVm)});

  v1::LimitCommand weight = Apply("tenants/web", 0.01, 30'000, "w");
  weight.mutable_limit()->set_lever(v1::LEVER_WEIGHT);
  v1::LimitAck ack = e.Handle(weight);
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_EQ(get("cpu.shares"), "20") << "1 % of its own 2048";
  put("cpu.shares", "20\n");
  EXPECT_DOUBLE_EQ(ack.in_effect().value(), 20.0 / 2048);
  weight.mutable_limit()->set_value(0.0001);
  ASSERT_EQ(e.Handle(weight).status_code(), 0);
  EXPECT_EQ(get("cpu.shares"), "2") << "never below the kernel's floor";
  put("cpu.shares", "2\n");
  ASSERT_EQ(e.Handle(Apply("tenants/web", 0.5, 30'000, "cap")).status_code(), 0);
  EXPECT_EQ(get("cpu.cfs_quota_us"), "50000");
  ASSERT_EQ(e.InForce().size(), 2u) << "a weight and a cap, side by side";

  v1::LimitCommand clear_weight = Clear("tenants/web");
  clear_weight.mutable_limit()->set_lever(v1::LEVER_WEIGHT);
  ASSERT_EQ(e.Handle(clear_weight).status_code(), 0);
  EXPECT_EQ(get("cpu.shares"), "2048") << "its own weight back";
  EXPECT_EQ(e.InForce().size(), 1u) << "the cap stays";
  put("cpu.cfs_quota_us", "50000\n");
  ASSERT_EQ(e.Handle(weight).status_code(), 0);
  ASSERT_EQ(e.Handle(Clear("tenants/web")).status_code(), 0);
  EXPECT_EQ(get("cpu.shares"), "2048");
  EXPECT_EQ(get("cpu.cfs_quota_us"), "-1");
  EXPECT_TRUE(e.InForce().empty()) << "a CLEAR naming no lever takes back every lever";

  // A VM's weight is libvirt's cpu_shares.
  v1::LimitCommand vm_weight = Apply(kVm, 0.05, 30'000, "vw");
  vm_weight.mutable_limit()->set_lever(v1::LEVER_WEIGHT);
  ASSERT_EQ(e.Handle(vm_weight).status_code(), 0);
  EXPECT_EQ(vms_.shares[kVm], 51u);
  // Refused: a weight above the tenant's own, and a weight on disk.
  vm_weight.mutable_limit()->set_value(2);
  EXPECT_EQ(e.Handle(vm_weight).status_code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  vm_weight.mutable_limit()->set_value(0.5);
  vm_weight.mutable_limit()->set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  EXPECT_EQ(e.Handle(vm_weight).status_code(), static_cast<int>(absl::StatusCode::kUnimplemented));
  now_ += absl::Seconds(31);
  e.ExpireLeases();
  EXPECT_EQ(vms_.shares[kVm], 1024u) << "lease ended: its own weight again";
  std::filesystem::remove_all(mount);
}

// A domain whose driver has no QEMU throttle (or no guest disk on the
// device): its own blkio cgroup, as for a cgroup tenant.
TEST_F(EnforcerTest, VmDiskLimitFallsBackToItsCgroupWhereLibvirtHasNoDiskThrottle) {
  const std::string mount = dir_ + "-blkio";
  const std::string vm_dir = mount + "/machine/lxc-1-ct.libvirt-lxc";
  std::filesystem::create_directories(vm_dir);
  for (const char* f : {"blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"}) {
    std::ofstream(absl::StrCat(vm_dir, "/", f)) << "";
  }
  EnforcerOptions o;
  o.mounts.v1_by_controller["blkio"] = mount;
  o.disk_hierarchy = "blkio";
  o.state_dir = dir_;
  o.own_cgroups = {{"blkio", ""}};
  o.vm = &vms_;
  o.now = [this] { return now_; };
  auto made = Enforcer::Create(std::move(o));
  ASSERT_TRUE(made.ok()) << made.status();
  TenantEntry vm = VmTenant(kVm);
  vm.tenant.add_disks()->set_major(8);
  v1::CgroupRef* ref = vm.tenant.add_cgroups();
  ref->set_hierarchy("blkio");
  ref->set_path("machine/lxc-1-ct.libvirt-lxc");
  vms_.no_iotune.insert(kVm);
  (*made)->SetTenants({vm});
  v1::LimitCommand bw = Apply(kVm, 6e6, 30'000);
  bw.mutable_limit()->set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  v1::LimitAck ack = (*made)->Handle(bw);
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_EQ((*made)->InForce()[0].knob(), v1::AppliedLimit::KNOB_CGROUP1_BLKIO_THROTTLE);
  std::ifstream in(vm_dir + "/blkio.throttle.write_bps_device");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "8:0 6000000");
  EXPECT_EQ(vms_.sets, 0) << "nothing through libvirt";
  std::filesystem::remove_all(mount);
}

// cgroup v2's files as plain files in a directory standing in for the
// unified mount (this machine's unified hierarchy has no cpu or io
// controller): what is read, written and restored, byte for byte.
TEST_F(EnforcerTest, CgroupV2CpuMaxAndIoMaxAreWrittenAndRestoredAsTheKernelSpellsThem) {
  const std::string mount = dir_ + "-unified";
  const std::string tenant_dir = mount + "/machine/vm1";
  std::filesystem::create_directories(tenant_dir);
  auto put = [&](const char* file, const std::string& text) {
    std::ofstream(absl::StrCat(tenant_dir, "/", file)) << text;
  };
  auto get = [&](const char* file) {
    std::ifstream in(absl::StrCat(tenant_dir, "/", file));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text;
  };
  put("cpu.max", "max 100000\n");
  put("io.max", "");
  EnforcerOptions o;
  o.mounts.unified = mount;
  o.cpu_hierarchy = "unified";
  o.disk_hierarchy = "unified";
  v1::DeviceId disk;
  disk.set_major(8);
  o.host_disks = {disk};
  o.state_dir = dir_;
  o.own_cgroups = {{"unified", "system.slice/fairwatch-agent.service"}};
  o.now = [this] { return now_; };
  auto made = Enforcer::Create(std::move(o));
  ASSERT_TRUE(made.ok()) << made.status();
  Enforcer& e = **made;
  TenantEntry t;
  t.tenant.set_id("machine/vm1");
  t.tenant.set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
  v1::CgroupRef* ref = t.tenant.add_cgroups();
  ref->set_hierarchy("unified");
  ref->set_path("machine/vm1");
  e.SetTenants({t});

  // CPU: quota in the period that was there; read back from the file.
  v1::LimitAck ack = e.Handle(Apply("machine/vm1", 0.5, 30'000));
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_EQ(get("cpu.max"), "50000 100000");
  put("cpu.max", "50000 100000\n");  // as the kernel shows it
  EXPECT_DOUBLE_EQ(e.InForce()[0].value(), 0.5);
  ASSERT_EQ(e.Handle(Clear("machine/vm1")).status_code(), 0);
  EXPECT_EQ(get("cpu.max"), "max 100000");

  // Disk: one io.max line for the device, only the keys of the resource.
  v1::LimitCommand bw = Apply("machine/vm1", 8e6, 30'000);
  bw.mutable_limit()->set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  ack = e.Handle(bw);
  EXPECT_EQ(get("io.max"), "8:0 rbps=8000000 wbps=8000000");
  put("io.max", "8:0 rbps=8000000 wbps=8000000 riops=max wiops=max\n");
  v1::LimitCommand bw_clear = Clear("machine/vm1");
  bw_clear.mutable_limit()->set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  ASSERT_EQ(e.Handle(bw_clear).status_code(), 0);
  EXPECT_EQ(get("io.max"), "8:0 rbps=max wbps=max");

  // A stricter IOPS rule of the customer's stays stricter, and comes back.
  put("io.max", "8:0 rbps=max wbps=max riops=100 wiops=max\n");
  v1::LimitCommand iops = Apply("machine/vm1", 300, 30'000);
  iops.mutable_limit()->set_resource(v1::RESOURCE_DISK_IOPS);
  ack = e.Handle(iops);
  ASSERT_EQ(ack.status_code(), 0) << ack.status_message();
  EXPECT_EQ(get("io.max"), "8:0 riops=100 wiops=300");
  now_ += absl::Seconds(31);
  e.ExpireLeases();
  EXPECT_EQ(get("io.max"), "8:0 riops=100 wiops=max") << "lease ended: the original again";
  std::filesystem::remove_all(mount);
}

TEST_F(EnforcerTest, AJournalThatDoesNotParseIsAnErrorNotAFreshStart) {
  std::filesystem::create_directories(dir_);
  std::ofstream(absl::StrCat(dir_, "/limits.journal")) << "\xff\xff\xff garbage";
  EnforcerOptions o;
  o.state_dir = dir_;
  o.own_cgroups = {{"cpu", ""}};
  auto e = Enforcer::Create(std::move(o));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(e.status().message().find("limits.journal"), std::string::npos);
}

TEST_F(EnforcerTest, AJournalFromBeforeThisBootIsIgnored) {
  // Whatever it holds (here garbage, as a write torn by a power cut could
  // leave), its limits went with the boot that wrote it.
  std::filesystem::create_directories(dir_);
  const std::string path = absl::StrCat(dir_, "/limits.journal");
  std::ofstream(path) << "\xff\xff\xff torn";
  const struct timespec long_ago[2] = {{1'000'000'000, 0}, {1'000'000'000, 0}};  // 2001
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), long_ago, 0), 0);
  EnforcerOptions o;
  o.state_dir = dir_;
  o.own_cgroups = {{"cpu", ""}};
  auto e = Enforcer::Create(std::move(o));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ((*e)->stats().in_force, 0u);
}

TEST_F(EnforcerTest, AJournalOfAnotherBootIsIgnoredWhateverItsAge) {
  // Fresh mtime, parses, names a limit: but another boot wrote it (its
  // kernel, and the limit, are gone), so nothing is reapplied or reverted.
  std::filesystem::create_directories(dir_);
  v1::LimitJournal journal;
  journal.set_version(1);
  journal.set_boot_id("00000000-0000-0000-0000-000000000000");
  v1::AppliedLimit* l = journal.add_limits();
  l->set_tenant_id("t1");
  l->set_resource(v1::RESOURCE_CPU);
  std::ofstream(absl::StrCat(dir_, "/limits.journal"), std::ios::binary)
      << journal.SerializeAsString();
  EnforcerOptions o;
  o.state_dir = dir_;
  o.own_cgroups = {{"cpu", ""}};
  auto e = Enforcer::Create(std::move(o));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ((*e)->stats().in_force, 0u);
}

TEST(ProtectionReason, BuiltInsConfigAndTheAgentsOwnCgroup) {
  const std::vector<std::string> extra = {"tenants/vip"};
  EXPECT_EQ(ProtectionReason("machine/vm1", extra, "agents/fw"), "");
  EXPECT_EQ(ProtectionReason("tenants/vipx", extra, ""), "") << "a prefix, not the same cgroup";
  EXPECT_NE(ProtectionReason("", extra, ""), "");
  EXPECT_NE(ProtectionReason("/", extra, ""), "");
  EXPECT_NE(ProtectionReason("system.slice", extra, ""), "");
  EXPECT_NE(ProtectionReason("user.slice/user-1000.slice", extra, ""), "");
  EXPECT_NE(ProtectionReason("init.scope", extra, ""), "");
  EXPECT_NE(ProtectionReason("tenants/vip/db", extra, ""), "");
  EXPECT_NE(ProtectionReason("agents", extra, "agents/fw"), "") << "an ancestor of the agent";
  EXPECT_NE(ProtectionReason("agents/fw", extra, "agents/fw"), "");
  EXPECT_EQ(ProtectionReason("agents/fw/child", extra, "agents/fw"), "")
      << "below the agent is not the agent";
}

TEST(ParseProcCgroup, HybridAndUnified) {
  auto m =
      ParseProcCgroup("12:cpu,cpuacct:/agents/fw\n4:blkio:/\n1:name=systemd:/x\n0::/fw.scope\n");
  EXPECT_EQ(m["cpu"], "agents/fw");
  EXPECT_EQ(m["cpuacct"], "agents/fw");
  EXPECT_EQ(m["blkio"], "");
  EXPECT_EQ(m["systemd"], "x");
  EXPECT_EQ(m["unified"], "fw.scope");
}

TEST(CgroupDir, ResolvesComponentByComponentAndNeverFollowsALink) {
  const std::string root = absl::StrCat(::testing::TempDir(), "/cgroupdir-", getpid());
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root + "/mount/a/b");
  std::filesystem::create_directories(root + "/outside");
  std::ofstream(root + "/outside/cpu.max") << "max 100000\n";
  std::ofstream(root + "/mount/a/b/cpu.max") << "max 100000\n";
  std::filesystem::create_directory_symlink(root + "/outside", root + "/mount/a/escape");
  std::filesystem::create_symlink(root + "/outside/cpu.max", root + "/mount/a/cpu.max");

  auto ok = CgroupDir::Open(root + "/mount", "a/b");
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto text = ok->Read("cpu.max");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "max 100000");
  EXPECT_TRUE(ok->Write("cpu.max", "50000 100000").ok());

  EXPECT_EQ(CgroupDir::Open(root + "/mount", "a/escape").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CgroupDir::Open(root + "/mount", "a/../../outside").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CgroupDir::Open(root + "/mount", "/a").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CgroupDir::Open(root + "/mount", "a/missing").status().code(),
            absl::StatusCode::kNotFound);
  auto a = CgroupDir::Open(root + "/mount", "a");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->Write("cpu.max", "1 100000").ok()) << "a symlinked control file";
  EXPECT_FALSE(a->Write("../outside/cpu.max", "1 100000").ok());
  std::ifstream in(root + "/outside/cpu.max");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "max 100000") << "nothing written outside";
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace fairwatch::agent
