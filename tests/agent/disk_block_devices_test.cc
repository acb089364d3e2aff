// Block device listing and capacity overrides against a fake sysfs tree.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent/block_devices.h"
#include "agent/disk_collector.h"

namespace fairwatch::agent {
namespace {

namespace fs = std::filesystem;

class FakeSysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fw-disk-sysfs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "devices");
    fs::create_directories(root_ / "block");
    fs::create_directories(root_ / "dev/block");
  }
  void TearDown() override { fs::remove_all(root_); }

  static void Write(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }

  // A disk as the kernel lays it out: the real directory under devices/,
  // symlinked from block/<name> and dev/block/<maj:min>.
  fs::path AddDisk(const std::string& name, const std::string& dev, uint64_t sectors,
                   bool request_based = true, bool rotational = false) {
    fs::path dir = root_ / "devices" / name;
    Write(dir / "dev", dev + "\n");
    Write(dir / "size", std::to_string(sectors) + "\n");
    Write(dir / "queue/rotational", rotational ? "1\n" : "0\n");
    if (request_based) fs::create_directories(dir / "mq/0");
    fs::create_directory_symlink(dir, root_ / "block" / name);
    fs::create_directory_symlink(dir, root_ / "dev/block" / dev);
    return dir;
  }
  void AddPartition(const fs::path& disk, const std::string& name, const std::string& dev) {
    fs::path dir = disk / name;
    Write(dir / "dev", dev + "\n");
    Write(dir / "partition", "1\n");
    fs::create_directory_symlink(dir, root_ / "dev/block" / dev);
  }

  fs::path root_;
};

TEST(ParseDeviceNumber, AcceptsSysfsDevFileAndRejectsJunk) {
  auto id = ParseDeviceNumber("254:16\n");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->major(), 254u);
  EXPECT_EQ(id->minor(), 16u);
  for (const char* bad : {"", "254", "254:", ":1", "a:b", "1:2:3", "-1:0", "8:1048576"}) {
    EXPECT_FALSE(ParseDeviceNumber(bad).ok()) << bad;
  }
}

TEST_F(FakeSysfs, ListsRequestBasedDisksWithMediaSortedByName) {
  AddDisk("vda", "254:0", 2048, true, false);
  AddDisk("sda", "8:0", 4096, true, true);
  AddDisk("zram0", "253:0", 1024, /*request_based=*/false);
  AddDisk("dm-0", "252:0", 1024, /*request_based=*/false);
  AddDisk("loop0", "7:0", 0);    // unbound loop device
  AddDisk("loop1", "7:1", 100);  // loop device with a backing file
  auto devices = ListBlockDevices((root_ / "block").string());
  ASSERT_TRUE(devices.ok()) << devices.status();
  std::vector<std::string> names;
  for (const auto& d : *devices) names.push_back(d.name);
  EXPECT_EQ(names, (std::vector<std::string>{"loop1", "sda", "vda"}));
  EXPECT_EQ((*devices)[1].major, 8u);
  EXPECT_EQ((*devices)[1].minor, 0u);
  EXPECT_TRUE((*devices)[1].rotational);
  EXPECT_FALSE((*devices)[2].rotational);
  EXPECT_EQ((*devices)[2].size_bytes, 2048u * 512);
}

TEST(ParseDiskstats, ReadsTheListedWholeDisksBytesRequestsAndBusyTime) {
  // Lines as 6.x prints them (20 fields): a disk, its partition, a device
  // not listed.
  const char* text =
      " 254       0 vda 3020 1187 249526 1544 53102 41760 6891258 95012 0 52316 102210 0 0 0 0 "
      "3309 5653\n"
      " 254       1 vda1 2900 1187 245000 1500 53000 41760 6890000 95000 0 52300 102100 0 0 0 0 "
      "0 0\n"
      "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
  BlockDevice vda;
  vda.name = "vda";
  vda.major = 254;
  vda.minor = 0;
  auto disks = ParseDiskstats(text, {vda});
  ASSERT_TRUE(disks.ok()) << disks.status();
  ASSERT_EQ(disks->size(), 1u);
  const v1::DiskCounters& d = (*disks)[0];
  EXPECT_EQ(d.read_ops(), 3020u);
  EXPECT_EQ(d.read_bytes(), 249526u * 512);
  EXPECT_EQ(d.write_ops(), 53102u);
  EXPECT_EQ(d.write_bytes(), 6891258u * 512);
  EXPECT_EQ(d.busy_ms(), 52316u);
  EXPECT_FALSE(ParseDiskstats(" 254 0 vda 1 2 3\n", {vda}).ok()) << "too few fields";
  EXPECT_FALSE(ParseDiskstats(" 254 0 vda x 0 0 0 0 0 0 0 0 0 0 0 0 0\n", {vda}).ok());
}

TEST(ReadDiskstats, ThisHostsFileParses) {
  auto devices = ListBlockDevices();
  ASSERT_TRUE(devices.ok()) << devices.status();
  auto disks = ReadDiskstats(*devices);
  ASSERT_TRUE(disks.ok()) << disks.status();
  EXPECT_EQ(disks->size(), devices->size()) << "every listed disk has a diskstats line";
}

TEST_F(FakeSysfs, MissingSysBlockIsAnError) {
  EXPECT_FALSE(ListBlockDevices((root_ / "nope").string()).ok());
}

TEST_F(FakeSysfs, PartitionResolvesToItsWholeDisk) {
  fs::path vda = AddDisk("vda", "254:0", 2048);
  AddPartition(vda, "vda1", "254:1");
  auto disk = WholeDiskOf(254, 1, (root_ / "dev/block").string());
  ASSERT_TRUE(disk.ok()) << disk.status();
  EXPECT_EQ(disk->major(), 254u);
  EXPECT_EQ(disk->minor(), 0u);
  auto self = WholeDiskOf(254, 0, (root_ / "dev/block").string());
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(self->minor(), 0u);
  EXPECT_EQ(WholeDiskOf(9, 9, (root_ / "dev/block").string()).status().code(),
            absl::StatusCode::kNotFound);
}

std::vector<BlockDevice> TwoDisks() {
  BlockDevice vda{"vda", 254, 0, false, 1 << 30};
  BlockDevice sdb{"sdb", 8, 16, true, 1 << 30};
  return {sdb, vda};
}

google::protobuf::RepeatedPtrField<v1::DiskCapacityOverride> Overrides(
    const std::vector<std::tuple<std::string, double, double>>& list) {
  google::protobuf::RepeatedPtrField<v1::DiskCapacityOverride> out;
  for (const auto& [device, bw, ops] : list) {
    v1::DiskCapacityOverride* o = out.Add();
    o->set_device(device);
    o->set_bandwidth_bytes_per_s(bw);
    o->set_ops_per_s(ops);
  }
  return out;
}

TEST(BuildDiskCapacities, WithoutOverridesCapacityIsUnknown) {
  auto caps = BuildDiskCapacities(TwoDisks(), {});
  ASSERT_TRUE(caps.ok()) << caps.status();
  ASSERT_EQ(caps->size(), 2u);
  EXPECT_EQ((*caps)[0].name(), "sdb");
  EXPECT_EQ((*caps)[0].device().major(), 8u);
  EXPECT_EQ((*caps)[0].device().minor(), 16u);
  EXPECT_EQ((*caps)[0].bandwidth_bytes_per_s(), 0);
  EXPECT_EQ((*caps)[1].ops_per_s(), 0);
}

TEST(BuildDiskCapacities, OverridesMatchByNumberOrName) {
  auto caps = BuildDiskCapacities(TwoDisks(), Overrides({{"254:0", 5e8, 2e4}, {"sdb", 1e8, 150}}));
  ASSERT_TRUE(caps.ok()) << caps.status();
  EXPECT_EQ((*caps)[1].name(), "vda");
  EXPECT_EQ((*caps)[1].bandwidth_bytes_per_s(), 5e8);
  EXPECT_EQ((*caps)[1].ops_per_s(), 2e4);
  EXPECT_EQ((*caps)[0].bandwidth_bytes_per_s(), 1e8);
  EXPECT_EQ((*caps)[0].ops_per_s(), 150);
}

TEST(BuildDiskCapacities, OverrideOfAbsentDeviceIsAnErrorNamingIt) {
  for (const char* device : {"nvme0n1", "8:17", "vda1"}) {
    auto caps = BuildDiskCapacities(TwoDisks(), Overrides({{device, 1e8, 0}}));
    ASSERT_FALSE(caps.ok()) << device;
    EXPECT_EQ(caps.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(caps.status().message().find(device), absl::string_view::npos)
        << caps.status().message();
  }
}

TEST(BuildDiskCapacities, SameDeviceTwiceOrNegativeOrMalformedIsAnError) {
  EXPECT_FALSE(BuildDiskCapacities(TwoDisks(), Overrides({{"vda", 1, 0}, {"254:0", 2, 0}})).ok());
  EXPECT_FALSE(BuildDiskCapacities(TwoDisks(), Overrides({{"vda", -1, 0}})).ok());
  EXPECT_FALSE(BuildDiskCapacities(TwoDisks(), Overrides({{"254:x", 1, 0}})).ok());
}

TEST(ChooseDiskHierarchy, PrefersV1BlkioThenUnified) {
  CgroupMounts hybrid;
  hybrid.unified = "/sys/fs/cgroup/unified";
  hybrid.v1_by_controller["blkio"] = "/sys/fs/cgroup/blkio";
  EXPECT_EQ(*ChooseDiskHierarchy(hybrid), "blkio");
  CgroupMounts v2;
  v2.unified = "/sys/fs/cgroup";
  EXPECT_EQ(*ChooseDiskHierarchy(v2), "unified");
  EXPECT_FALSE(ChooseDiskHierarchy(CgroupMounts{}).ok());
}

}  // namespace
}  // namespace fairwatch::agent
