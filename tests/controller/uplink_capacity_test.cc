// The uplink capacity learned from what a saturated uplink sent (docs/network.md).
#include "controller/uplink_capacity.h"

#include <gtest/gtest.h>

namespace fairwatch::controller {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

// One uplink's cumulative counters as the agent reports them.
google::protobuf::RepeatedPtrField<v1::NetCounters> Ens3(uint64_t tx_bytes, uint64_t drops) {
  google::protobuf::RepeatedPtrField<v1::NetCounters> net;
  v1::NetCounters* c = net.Add();
  c->set_interface("ens3");
  c->set_tx_bytes(tx_bytes);
  c->set_queue_drops(drops);
  return net;
}

v1::HostCapacity Uplink(double rx = 0, double tx = 0,
                        v1::CapacitySource source = v1::CAPACITY_SOURCE_UNSPECIFIED) {
  v1::HostCapacity capacity;
  v1::InterfaceCapacity* i = capacity.add_interfaces();
  i->set_name("ens3");
  i->set_rx_bytes_per_s(rx);
  i->set_tx_bytes_per_s(tx);
  i->set_source(source);
  return capacity;
}

TEST(UplinkCapacityLearner, UnknownUntilTheQueueOverflows) {
  UplinkCapacityLearner learner;
  learner.Observe(Ens3(0, 0), 1 * kSecond);
  learner.Observe(Ens3(5'000'000, 0), 2 * kSecond);  // 5 MB/s, nothing dropped
  v1::HostCapacity c = Uplink();
  learner.Fill(&c);
  EXPECT_EQ(c.interfaces(0).tx_bytes_per_s(), 0) << "a link that keeps up says nothing";
  EXPECT_EQ(c.interfaces(0).source(), v1::CAPACITY_SOURCE_UNSPECIFIED);
  EXPECT_FALSE(c.interfaces(0).saturated());
}

TEST(UplinkCapacityLearner, ThePeakOfTheSaturatedIntervalsBothWays) {
  UplinkCapacityLearner learner;
  learner.Observe(Ens3(0, 0), 1 * kSecond);
  // Saturated for half of the first interval, then for all of the next two.
  learner.Observe(Ens3(8'000'000, 50), 2 * kSecond);
  learner.Observe(Ens3(20'500'000, 220), 3 * kSecond);
  learner.Observe(Ens3(33'000'000, 400), 4 * kSecond);
  v1::HostCapacity c = Uplink();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.interfaces(0).tx_bytes_per_s(), 12.5e6);
  EXPECT_DOUBLE_EQ(c.interfaces(0).rx_bytes_per_s(), 12.5e6)
      << "a link's rate is the same both ways";
  EXPECT_EQ(c.interfaces(0).source(), v1::CAPACITY_LEARNED);
  EXPECT_TRUE(c.interfaces(0).saturated());
  // Quiet afterwards: the figure is kept, the link no longer saturated.
  learner.Observe(Ens3(35'000'000, 400), 5 * kSecond);
  c = Uplink();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.interfaces(0).tx_bytes_per_s(), 12.5e6);
  EXPECT_FALSE(c.interfaces(0).saturated());
}

TEST(UplinkCapacityLearner, ALowerSpeedIsFollowedOnceTheOldPeakAgesOut) {
  UplinkCapacityLearner learner;
  uint64_t tx = 0, drops = 0, t = kSecond;
  learner.Observe(Ens3(tx, drops), t);
  auto saturated_second = [&](uint64_t bytes) {
    tx += bytes;
    drops += 100;
    t += kSecond;
    learner.Observe(Ens3(tx, drops), t);
  };
  saturated_second(125'000'000);  // 1 Gb/s
  for (size_t i = 0; i + 1 < UplinkCapacityLearner::kWindow; ++i) saturated_second(12'500'000);
  v1::HostCapacity c = Uplink();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.interfaces(0).tx_bytes_per_s(), 125e6) << "still within the window";
  saturated_second(12'500'000);
  c = Uplink();
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.interfaces(0).tx_bytes_per_s(), 12.5e6) << "renegotiated to 100 Mb/s";
}

TEST(UplinkCapacityLearner, AKnownFigureWinsAndACounterThatWentBackTeachesNothing) {
  UplinkCapacityLearner learner;
  learner.Observe(Ens3(50'000'000, 1000), 1 * kSecond);
  learner.Observe(Ens3(1'000, 5), 2 * kSecond);  // counters reset (driver reload)
  v1::HostCapacity c = Uplink();
  learner.Fill(&c);
  EXPECT_EQ(c.interfaces(0).tx_bytes_per_s(), 0);
  learner.Observe(Ens3(10'001'000, 60), 3 * kSecond);
  c = Uplink(125e6, 125e6, v1::CAPACITY_LINK_SPEED);
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.interfaces(0).tx_bytes_per_s(), 125e6) << "the driver's speed wins";
  EXPECT_EQ(c.interfaces(0).source(), v1::CAPACITY_LINK_SPEED);
  c = Uplink(0, 50e6, v1::CAPACITY_CONFIGURED);
  learner.Fill(&c);
  EXPECT_DOUBLE_EQ(c.interfaces(0).tx_bytes_per_s(), 50e6) << "a configured rate wins";
  EXPECT_DOUBLE_EQ(c.interfaces(0).rx_bytes_per_s(), 10e6) << "the unknown direction is learned";
  EXPECT_EQ(c.interfaces(0).source(), v1::CAPACITY_LEARNED);
}

}  // namespace
}  // namespace fairwatch::controller
