// The disk capacity learned from the devices' own counters (docs/disk.md).
#include "controller/disk_capacity.h"

#include <gtest/gtest.h>

namespace fairwatch::controller {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

// One device's cumulative counters as the agent reports them.
google::protobuf::RepeatedPtrField<v1::DiskCounters> Disk(uint64_t bytes, uint64_t ops,
                                                          uint64_t busy_ms) {
  google::protobuf::RepeatedPtrField<v1::DiskCounters> disks;
  v1::DiskCounters* d = disks.Add();
  d->mutable_device()->set_major(254);
  d->mutable_device()->set_minor(0);
  d->set_write_bytes(bytes);
  d->set_write_ops(ops);
  d->set_busy_ms(busy_ms);
  return disks;
}

v1::HostCapacity Vda(double bandwidth = 0, double ops = 0) {
  v1::HostCapacity capacity;
  v1::DiskCapacity* d = capacity.add_disks();
  d->mutable_device()->set_major(254);
  d->mutable_device()->set_minor(0);
  d->set_name("vda");
  d->set_bandwidth_bytes_per_s(bandwidth);
  d->set_ops_per_s(ops);
  return capacity;
}

TEST(DiskCapacityLearner, UnknownUntilTheDeviceHasBeenBusy) {
  DiskCapacityLearner learner;
  learner.Observe(Disk(0, 0, 0), 1 * kSecond);
  learner.Observe(Disk(10'000'000, 100, 200), 2 * kSecond);  // 20 % busy
  v1::HostCapacity c = Vda();
  learner.Fill(&c);
  EXPECT_EQ(c.disks(0).bandwidth_bytes_per_s(), 0) << "a lightly used disk says nothing";
  EXPECT_EQ(c.disks(0).source(), v1::CAPACITY_SOURCE_UNSPECIFIED);
  EXPECT_DOUBLE_EQ(c.disks(0).busy_fraction(), 0.2);
}

TEST(DiskCapacityLearner, WhatABusyDeviceDeliversPerSecondOfBusyTime) {
  DiskCapacityLearner learner;
  learner.Observe(Disk(0, 0, 0), 1 * kSecond);
  // 2 s, busy 1.6 s of it: 400 MB and 4000 requests -> 250 MB/s, 2500 ops/s.
  learner.Observe(Disk(400'000'000, 4000, 1600), 3 * kSecond);
  v1::HostCapacity c = Vda();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.disks(0).bandwidth_bytes_per_s(), 250e6);
  EXPECT_DOUBLE_EQ(c.disks(0).ops_per_s(), 2500);
  EXPECT_EQ(c.disks(0).source(), v1::CAPACITY_LEARNED);
  // Idle afterwards: the last busy interval's figure is kept.
  learner.Observe(Disk(400'000'000, 4000, 1600), 4 * kSecond);
  c = Vda();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.disks(0).bandwidth_bytes_per_s(), 250e6);
  EXPECT_DOUBLE_EQ(c.disks(0).busy_fraction(), 0);
  // Busy again with small random requests: the capacity is what this mix gets.
  learner.Observe(Disk(440'000'000, 14000, 2600), 5 * kSecond);
  c = Vda();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.disks(0).bandwidth_bytes_per_s(), 40e6);
  EXPECT_DOUBLE_EQ(c.disks(0).ops_per_s(), 10000);
}

TEST(DiskCapacityLearner, AConfiguredFigureWinsAndOneLeftAtZeroIsLearned) {
  DiskCapacityLearner learner;
  learner.Observe(Disk(0, 0, 0), 1 * kSecond);
  learner.Observe(Disk(100'000'000, 1000, 1000), 2 * kSecond);
  v1::HostCapacity c = Vda(/*bandwidth=*/500e6, /*ops=*/0);
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.disks(0).bandwidth_bytes_per_s(), 500e6);
  EXPECT_DOUBLE_EQ(c.disks(0).ops_per_s(), 1000);
  EXPECT_EQ(c.disks(0).source(), v1::CAPACITY_CONFIGURED);
}

TEST(DiskCapacityLearner, CountersOrAClockGoingBackTeachNothing) {
  DiskCapacityLearner learner;
  learner.Observe(Disk(900'000'000, 9000, 9000), 10 * kSecond);
  learner.Observe(Disk(100, 1, 1), 11 * kSecond);  // a counter went back
  learner.Observe(Disk(200, 2, 2), 5 * kSecond);   // and the clock
  v1::HostCapacity c = Vda();
  learner.Fill(&c);
  EXPECT_EQ(c.disks(0).bandwidth_bytes_per_s(), 0);
  // From there on, forward again.
  learner.Observe(Disk(50'000'200, 502, 1002), 6 * kSecond);
  c = Vda();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.disks(0).bandwidth_bytes_per_s(), 50e6);
}

}  // namespace
}  // namespace fairwatch::controller
