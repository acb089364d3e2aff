#include "agent/libvirt_domain.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

// The functions stay; the macros would rewrite DeviceId's accessors.
#undef major
#undef minor

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/cgroup_discovery.h"

namespace fairwatch::agent {
namespace {

// "major:minor" of the device holding `path`.
std::string DeviceOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(gnu_dev_major(st.st_dev), ":", gnu_dev_minor(st.st_dev));
}

constexpr char kVmXml[] = R"(<domain type='qemu' id='7'>
  <name>web-1</name>
  <uuid>0b5c1d52-6a4f-4e57-9b1e-2f0b8c3c9d11</uuid>
  <memory unit='KiB'>131072</memory>
  <cputune>
    <shares>2048</shares>
    <global_period>100000</global_period>
    <global_quota>30000</global_quota>
  </cputune>
  <resource><partition>/machine</partition></resource>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='/var/lib/images/web-1.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/sdb'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/image'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
    </disk>
    <interface type='ethernet'>
      <target dev='tap-web1'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <source bridge='br0'/>
      <target dev='vnet3'/>
    </interface>
    <interface type='vhostuser'>
      <source type='unix' path='/run/vhost.sock' mode='server'/>
    </interface>
  </devices>
</domain>)";

TEST(ParseDomainXml, ReadsIdentityPartitionInterfacesDisksAndShares) {
  absl::StatusOr<DomainInfo> info = ParseDomainXml(kVmXml);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->uuid, "0b5c1d52-6a4f-4e57-9b1e-2f0b8c3c9d11");
  EXPECT_EQ(info->name, "web-1");
  EXPECT_EQ(info->partition, "/machine");
  EXPECT_EQ(info->interfaces, (std::vector<std::string>{"tap-web1", "vnet3"}));
  ASSERT_EQ(info->disks.size(), 2u);  // the network disk and the empty cdrom have no host path
  EXPECT_EQ(info->disks[0].target, "vda");
  EXPECT_EQ(info->disks[0].source, "/var/lib/images/web-1.img");
  EXPECT_FALSE(info->disks[0].block);
  EXPECT_EQ(info->disks[1].source, "/dev/sdb");
  EXPECT_TRUE(info->disks[1].block);
  ASSERT_TRUE(info->cpu_shares.has_value());
  EXPECT_EQ(*info->cpu_shares, 2048u);
}

TEST(ParseDomainXml, MinimalDomainHasNoOptionalParts) {
  absl::StatusOr<DomainInfo> info =
      ParseDomainXml("<domain type='test'><name>a</name><uuid>u-1</uuid></domain>");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->partition.empty());
  EXPECT_TRUE(info->interfaces.empty());
  EXPECT_TRUE(info->disks.empty());
  EXPECT_FALSE(info->cpu_shares.has_value());
}

TEST(ParseDomainXml, RejectsBrokenOrIncompleteXml) {
  EXPECT_FALSE(ParseDomainXml("<domain><name>a</name>").ok());
  EXPECT_FALSE(ParseDomainXml("").ok());
  EXPECT_FALSE(ParseDomainXml("<domain><name>a</name></domain>").ok());  // no uuid
  absl::StatusOr<DomainInfo> bad_shares = ParseDomainXml(
      "<domain><name>a</name><uuid>u</uuid><cputune><shares>lots</shares></cputune></domain>");
  ASSERT_FALSE(bad_shares.ok());
  EXPECT_NE(bad_shares.status().message().find("shares"), std::string::npos);
}

// Which guest disks live on which whole host disk: two images on one disk
// (a partition of it, as /sys/dev/block shows a partition), one missing.
TEST(GuestDisksOn, NamesTheGuestDisksWhoseSourceIsOnTheDevice) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/guest-disks-", getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/a.img") << "a";
  std::ofstream(dir + "/b.img") << "b";
  const std::string dev = DeviceOf(dir + "/a.img");
  ASSERT_FALSE(dev.empty());
  if (absl::StartsWith(dev, "0:")) GTEST_SKIP() << "the temp dir is not on a block device";
  // The file system's device as a partition of disk 7:42.
  const std::string sys = dir + "/sys";
  const std::string part = absl::StrCat(sys, "/", dev);
  std::filesystem::create_directories(part);
  std::ofstream(part + "/partition") << "1\n";
  std::ofstream(part + "/../dev") << "7:42\n";
  DomainInfo info;
  info.disks = {{"vda", dir + "/a.img", false},
                {"vdb", dir + "/missing.img", false},
                {"vdc", dir + "/b.img", false}};
  v1::DeviceId disk;
  disk.set_major(7);
  disk.set_minor(42);
  EXPECT_EQ(GuestDisksOn(info, disk, sys), (std::vector<std::string>{"vda", "vdc"}));
  ASSERT_EQ(DomainHostDisks(info, sys).size(), 1u) << "one host disk, once";
  EXPECT_EQ(DomainHostDisks(info, sys)[0].minor(), 42u);
  disk.set_minor(43);
  EXPECT_TRUE(GuestDisksOn(info, disk, sys).empty());
  std::filesystem::remove_all(dir);
}

TEST(ParseProcCgroup, HybridAndUnifiedLines) {
  const char* text =
      "12:blkio:/machine/qemu-3-web.libvirt-qemu\n"
      "11:cpu,cpuacct:/machine/qemu-3-web.libvirt-qemu/emulator\n"
      "2:name=systemd:/\n"
      "0::/machine/qemu-3-web.libvirt-qemu/emulator\n";
  auto paths = ParseProcCgroup(text);
  EXPECT_EQ(paths["blkio"], "/machine/qemu-3-web.libvirt-qemu");
  EXPECT_EQ(paths["cpu"], "/machine/qemu-3-web.libvirt-qemu/emulator");
  EXPECT_EQ(paths["cpuacct"], "/machine/qemu-3-web.libvirt-qemu/emulator");
  EXPECT_EQ(paths["unified"], "/machine/qemu-3-web.libvirt-qemu/emulator");
  EXPECT_FALSE(paths.contains("name=systemd"));
  EXPECT_FALSE(paths.contains("systemd"));
}

TEST(VmCgroupPath, ChildOfThePartition) {
  EXPECT_EQ(*VmCgroupPath("/machine/qemu-3-web.libvirt-qemu/emulator", "/machine"),
            "machine/qemu-3-web.libvirt-qemu");
  EXPECT_EQ(*VmCgroupPath("/machine/qemu-3-web.libvirt-qemu", "/machine"),
            "machine/qemu-3-web.libvirt-qemu");
  // systemd hosts: the scope holds libvirt's own sub-directory.
  EXPECT_EQ(*VmCgroupPath("/machine.slice/machine-qemu\\x2d1\\x2dweb.scope/libvirt/emulator",
                          "/machine.slice"),
            "machine.slice/machine-qemu\\x2d1\\x2dweb.scope");
  // Nested partitions.
  EXPECT_EQ(*VmCgroupPath("/tenants/gold/qemu-1-a.libvirt-qemu/vcpu0", "/tenants/gold"),
            "tenants/gold/qemu-1-a.libvirt-qemu");
}

TEST(VmCgroupPath, WithoutPartitionDropsLibvirtThreadDirectory) {
  EXPECT_EQ(*VmCgroupPath("/machine/qemu-3-web.libvirt-qemu/emulator", ""),
            "machine/qemu-3-web.libvirt-qemu");
  EXPECT_EQ(*VmCgroupPath("/x/vm/vcpu12", ""), "x/vm");
  EXPECT_EQ(*VmCgroupPath("/x/vm/iothread1", "/other"), "x/vm");
  EXPECT_EQ(*VmCgroupPath("/x/vm/vcpux", ""), "x/vm/vcpux");  // not a thread directory
  // A partition that is only a name prefix is not the parent.
  EXPECT_EQ(*VmCgroupPath("/machine2/vm/emulator", "/machine"), "machine2/vm");
  EXPECT_FALSE(VmCgroupPath("/", "/machine").ok());
  EXPECT_FALSE(VmCgroupPath("/emulator", "").ok());
}

TEST(IsLibvirtMachineCgroup, LibvirtsOwnDirectoryNames) {
  EXPECT_TRUE(IsLibvirtMachineCgroup("qemu-3-web.libvirt-qemu"));
  EXPECT_TRUE(IsLibvirtMachineCgroup("machine-qemu\\x2d3\\x2dweb.scope"));
  EXPECT_TRUE(IsLibvirtMachineCgroup("lxc-7-box.libvirt-lxc"));
  EXPECT_FALSE(IsLibvirtMachineCgroup("web"));
  EXPECT_FALSE(IsLibvirtMachineCgroup("docker-abc.scope"));
  EXPECT_FALSE(IsLibvirtMachineCgroup("qemu-3-web"));
}

TEST(WeightFromCpuShares, RelativeToTheControllerDefault) {
  EXPECT_DOUBLE_EQ(WeightFromCpuShares(1024, "cpu"), 1.0);
  EXPECT_DOUBLE_EQ(WeightFromCpuShares(2048, "cpu"), 2.0);
  EXPECT_DOUBLE_EQ(WeightFromCpuShares(100, "unified"), 1.0);
  EXPECT_DOUBLE_EQ(WeightFromCpuShares(50, "unified"), 0.5);
  EXPECT_DOUBLE_EQ(WeightFromCpuShares(0, "cpu"), 1.0);
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fw-libvirt-domain-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& rel, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(dir_ + "/" + rel).parent_path());
    std::ofstream(dir_ + "/" + rel) << text;
  }
  std::string dir_;
};

using ReadQemuPidTest = TempDir;

TEST_F(ReadQemuPidTest, ReadsThePidFileAndRejectsGarbage) {
  Write("run/web.pid", "4242\n");
  Write("run/bad.pid", "not-a-pid");
  EXPECT_EQ(*ReadQemuPid(dir_ + "/run", "web"), 4242);
  EXPECT_EQ(ReadQemuPid(dir_ + "/run", "bad").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadQemuPid(dir_ + "/run", "none").status().code(), absl::StatusCode::kNotFound);
}

using VmCgroupRefsTest = TempDir;

TEST_F(VmCgroupRefsTest, OneRefPerMountedHierarchyCpuFirst) {
  // A fake hybrid layout: cpu and cpuacct share one mount, blkio and unified
  // have their own; the VM's directories exist in all but unified.
  const std::string vm = "machine/qemu-1-web.libvirt-qemu";
  std::filesystem::create_directories(dir_ + "/cg/cpu,cpuacct/" + vm + "/emulator");
  std::filesystem::create_directories(dir_ + "/cg/blkio/" + vm);
  std::filesystem::create_directories(dir_ + "/cg/unified");
  Write("proc/99/cgroup",
        "5:blkio:/" + vm + "\n4:cpu,cpuacct:/" + vm + "/emulator\n0::/" + vm + "/emulator\n");
  CgroupMounts mounts;
  mounts.layout = v1::CGROUP_LAYOUT_HYBRID;
  mounts.unified = dir_ + "/cg/unified";
  mounts.v1_by_controller["cpu"] = dir_ + "/cg/cpu,cpuacct";
  mounts.v1_by_controller["cpuacct"] = dir_ + "/cg/cpu,cpuacct";
  mounts.v1_by_controller["blkio"] = dir_ + "/cg/blkio";

  absl::StatusOr<std::vector<v1::CgroupRef>> refs =
      VmCgroupRefs(mounts, "cpu", 99, "/machine", dir_ + "/proc");
  ASSERT_TRUE(refs.ok()) << refs.status();
  ASSERT_EQ(refs->size(), 2u);  // cpuacct is the cpu mount again; unified has no directory
  EXPECT_EQ((*refs)[0].hierarchy(), "cpu");
  EXPECT_EQ((*refs)[0].path(), vm);
  EXPECT_NE((*refs)[0].id(), 0u);
  EXPECT_EQ((*refs)[1].hierarchy(), "blkio");
  EXPECT_EQ((*refs)[1].path(), vm);

  // Without a directory in the CPU hierarchy the VM cannot be measured.
  EXPECT_FALSE(VmCgroupRefs(mounts, "unified", 99, "/machine", dir_ + "/proc").ok());
  EXPECT_FALSE(VmCgroupRefs(mounts, "cpu", 100, "/machine", dir_ + "/proc").ok());
}

TEST(MergeTenantSources, EarlierSourceWinsOnIdOrCgroup) {
  auto make = [](const std::string& id, const std::string& hierarchy, uint64_t cgroup) {
    DiscoveredTenant t;
    t.tenant.set_id(id);
    v1::CgroupRef* ref = t.tenant.add_cgroups();
    ref->set_hierarchy(hierarchy);
    ref->set_id(cgroup);
    t.cpu_cgroup_id = cgroup;
    return t;
  };
  std::vector<DiscoveredTenant> vms{make("uuid-b", "cpu", 10), make("uuid-a", "cpu", 11)};
  std::vector<DiscoveredTenant> cgroups{
      make("machine/qemu-1-b.libvirt-qemu", "cpu", 10),  // the VM's own cgroup
      make("machine/other", "cpu", 12),
      make("machine/same-id-other-hierarchy", "unified", 11),  // ids are per hierarchy
  };
  std::vector<std::string> dropped;
  std::vector<DiscoveredTenant> merged = MergeTenantSources({vms, cgroups}, &dropped);
  std::vector<std::string> ids;
  for (const auto& t : merged) ids.push_back(t.tenant.id());
  EXPECT_EQ(ids, (std::vector<std::string>{"machine/other", "machine/same-id-other-hierarchy",
                                           "uuid-a", "uuid-b"}));
  EXPECT_EQ(dropped, (std::vector<std::string>{"machine/qemu-1-b.libvirt-qemu"}));
}

}  // namespace
}  // namespace fairwatch::agent
