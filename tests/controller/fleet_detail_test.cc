// Top by resource and the per-tenant detail (harm signals, devices, interfaces).
#include <cmath>

#include "common/histogram.h"
#include "controller/fleet_state.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::MakeHello;
using ::fairwatch::controller::testing::MakeInventory;
using ::fairwatch::controller::testing::MakeTenant;
using ::testing::HasSubstr;

constexpr uint64_t kSecond = 1'000'000'000;
constexpr int64_t kEpoch = 1'700'000'000'000'000'000;
const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// Counters of one tenant at second `t`, growing at fixed rates.
v1::TenantCounters Counters(const std::string& id, uint64_t t, double disk_write_bps,
                            double net_rx_bps, uint64_t runq_slow_waits) {
  v1::TenantCounters c;
  c.set_tenant_id(id);
  c.mutable_cpu()->set_usage_ns(t * kSecond / 2);
  c.mutable_cpu()->set_runq_waits(t * 100);
  c.mutable_cpu()->set_runq_wait_ns(t * 100 * 4000);
  // 100 waits per second of ~4 us (bucket 12) and some of ~1 ms (bucket 20).
  auto* hist = c.mutable_cpu()->mutable_runq_wait_hist();
  hist->mutable_buckets()->Resize(32, 0);
  hist->set_buckets(12, t * (100 - runq_slow_waits));
  hist->set_buckets(20, t * runq_slow_waits);
  c.mutable_cpu()->set_nr_periods(t * 10);
  c.mutable_cpu()->set_nr_throttled(t * 5);
  c.mutable_cpu()->set_throttled_ns(t * 200'000'000);
  c.mutable_cpu_pressure()->set_present(true);
  c.mutable_cpu_pressure()->set_some_total_us(t * 250'000);
  v1::DiskCounters* disk = c.add_disks();
  disk->mutable_device()->set_major(254);
  disk->mutable_device()->set_minor(0);
  disk->set_write_bytes(static_cast<uint64_t>(disk_write_bps * static_cast<double>(t)));
  disk->set_write_ops(t * 10);
  disk->mutable_latency()->mutable_buckets()->Resize(32, 0);
  disk->mutable_latency()->set_buckets(17, t * 10);  // ~128-256 us
  v1::NetCounters* net = c.add_net();
  net->set_interface("veth-a");
  net->set_rx_bytes(static_cast<uint64_t>(net_rx_bps * static_cast<double>(t)));
  net->set_rx_packets(t * 1000);
  net->set_rx_drops(t * 2);
  return c;
}

class FleetDetailTest : public ::testing::Test {
 protected:
  FleetDetailTest() : fleet_(Options()) {}
  static FleetOptions Options() {
    FleetOptions o;
    o.window_intervals = 5;
    o.history_reports = 30;
    return o;
  }
  void SetUp() override {
    v1::Hello hello = MakeHello("h1", kEpoch, 4);
    auto* disk = hello.mutable_capacity()->add_disks();
    disk->set_bandwidth_bytes_per_s(100e6);
    disk->set_ops_per_s(1000);
    auto* nic = hello.mutable_capacity()->add_interfaces();
    nic->set_name("eth0");
    nic->set_rx_bytes_per_s(125e6);
    nic->set_tx_bytes_per_s(125e6);
    ASSERT_TRUE(fleet_.OnHello(hello, 1, kT0).ok());
    ASSERT_TRUE(
        fleet_
            .ApplyInventory("h1", MakeInventory(true, {MakeTenant("a", "a"), MakeTenant("b", "b")}),
                            kT0)
            .ok());
    for (uint64_t t = 1; t <= 8; ++t) {
      v1::UsageReport report;
      report.set_seq(t);
      report.set_monotonic_ns(t * kSecond);
      *report.add_tenants() = Counters("a", t, 50e6, 1e6, 10);
      *report.add_tenants() = Counters("b", t, 5e6, 20e6, 0);
      ASSERT_TRUE(fleet_.IngestReport("h1", report).ok());
    }
  }
  FleetState fleet_;
};

TEST_F(FleetDetailTest, TopRanksByTheRequestedResourceAndItsShareOfCapacity) {
  auto disk = fleet_.Top("h1", 0, v1::RESOURCE_DISK_BANDWIDTH);
  ASSERT_TRUE(disk.ok()) << disk.status();
  ASSERT_EQ(disk->size(), 2u);
  for (const v1::TopRow& row : *disk) {
    const double expected = row.tenant_id() == "a" ? 50e6 : 5e6;
    EXPECT_NEAR(row.value(), expected, 1) << row.tenant_id();
    EXPECT_NEAR(row.host_fraction(), expected / 100e6, 1e-9) << row.tenant_id();
    EXPECT_NEAR(row.disk_write_ops_per_s(), 10, 1e-9);
    EXPECT_NEAR(row.cpu_cores(), 0.5, 1e-9) << "every resource is filled";
  }
  auto net = fleet_.Top("h1", 0, v1::RESOURCE_NET_RX);
  ASSERT_TRUE(net.ok());
  for (const v1::TopRow& row : *net) {
    const double expected = row.tenant_id() == "a" ? 1e6 : 20e6;
    EXPECT_NEAR(row.value(), expected, 1);
    EXPECT_NEAR(row.host_fraction(), expected / 125e6, 1e-9);
    EXPECT_NEAR(row.net_drops_per_s(), 2, 1e-9);
  }
  auto tx = fleet_.Top("h1", 0, v1::RESOURCE_NET_TX);
  ASSERT_TRUE(tx.ok());
  for (const v1::TopRow& row : *tx) EXPECT_EQ(row.value(), 0);
}

TEST_F(FleetDetailTest, UnknownCapacityGivesNoShare) {
  v1::Hello bare = MakeHello("h2", kEpoch, 2);
  ASSERT_TRUE(fleet_.OnHello(bare, 2, kT0).ok());
  for (uint64_t t = 1; t <= 3; ++t) {
    v1::UsageReport report;
    report.set_seq(t);
    report.set_monotonic_ns(t * kSecond);
    *report.add_tenants() = Counters("x", t, 10e6, 0, 0);
    ASSERT_TRUE(fleet_.IngestReport("h2", report).ok());
  }
  auto rows = fleet_.Top("h2", 0, v1::RESOURCE_DISK_BANDWIDTH);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_NEAR((*rows)[0].value(), 10e6, 1);
  EXPECT_EQ((*rows)[0].host_fraction(), 0);
}

TEST_F(FleetDetailTest, TenantDetailHasHarmSignalsFromHistogramDeltas) {
  auto detail = fleet_.GetTenant("h1", "a", 0);
  ASSERT_TRUE(detail.ok()) << detail.status();
  EXPECT_NEAR(detail->window_s(), 5.0, 1e-9);
  const v1::HarmSignals& harm = detail->harm();
  // 90 of 100 waits per second in [4096, 8192) ns, 10 in [1, 2) ms.
  EXPECT_GE(harm.runq_wait_p50_ns(), 4096);
  EXPECT_LT(harm.runq_wait_p50_ns(), 8192);
  EXPECT_GE(harm.runq_wait_p99_ns(), 1 << 20);
  EXPECT_LT(harm.runq_wait_p99_ns(), 1 << 21);
  EXPECT_NEAR(harm.runq_waits_per_s(), 100, 1e-9);
  EXPECT_TRUE(harm.cpu_psi_present());
  EXPECT_NEAR(harm.cpu_psi_some_fraction(), 0.25, 1e-9);
  EXPECT_FALSE(harm.io_psi_present());
  EXPECT_NEAR(harm.throttled_ns_per_s(), 2e8, 1);
  EXPECT_NEAR(harm.throttled_periods_fraction(), 0.5, 1e-9);
  EXPECT_GE(harm.io_latency_p50_ns(), 1 << 17);
  EXPECT_LT(harm.io_latency_p50_ns(), 1 << 18);
  EXPECT_NEAR(harm.net_drops_per_s(), 2, 1e-9);
  ASSERT_EQ(detail->disks_size(), 1);
  EXPECT_EQ(detail->disks(0).device().major(), 254u);
  EXPECT_NEAR(detail->disks(0).write_bytes_per_s(), 50e6, 1);
  ASSERT_EQ(detail->interfaces_size(), 1);
  EXPECT_EQ(detail->interfaces(0).interface(), "veth-a");
  EXPECT_NEAR(detail->interfaces(0).rx_packets_per_s(), 1000, 1e-9);
  EXPECT_EQ(detail->info().tenant().id(), "a");
  EXPECT_NEAR(detail->usage().cpu_cores(), 0.5, 1e-9);
}

TEST_F(FleetDetailTest, TenantFoundByNameWithoutHostAndAmbiguityIsAnError) {
  ASSERT_TRUE(fleet_.GetTenant("", "b", 0).ok());
  EXPECT_EQ(fleet_.GetTenant("", "nobody", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fleet_.GetTenant("", "", 0).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(fleet_.OnHello(MakeHello("h2", kEpoch, 2), 2, kT0).ok());
  ASSERT_TRUE(fleet_.ApplyInventory("h2", MakeInventory(true, {MakeTenant("a", "a")}), kT0).ok());
  auto ambiguous = fleet_.GetTenant("", "a", 0);
  EXPECT_EQ(ambiguous.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ambiguous.status().message(), HasSubstr("h1/a"));
  EXPECT_TRUE(fleet_.GetTenant("h2", "a", 0).ok());
}

TEST(Log2Quantile, InterpolatesInsideTheBucket) {
  std::vector<uint64_t> buckets(16, 0);
  buckets[10] = 100;  // [1024, 2048)
  EXPECT_NEAR(Log2Quantile(buckets, 0.5), 1536, 1e-9);
  EXPECT_NEAR(Log2Quantile(buckets, 1.0), 2048, 1e-9);
  EXPECT_EQ(Log2Quantile(std::vector<uint64_t>(8, 0), 0.5), 0);
  buckets[0] = 100;
  EXPECT_LT(Log2Quantile(buckets, 0.25), 2) << "bucket 0 holds [0, 2)";
}

TEST(Log2Delta, RestartedBucketCountsItsNewValue) {
  v1::Log2Histogram newer, older;
  newer.add_buckets(5);
  newer.add_buckets(3);
  older.add_buckets(2);
  older.add_buckets(7);
  const v1::Log2Histogram delta = Log2Delta(newer, older);
  EXPECT_EQ(std::vector<uint64_t>(delta.buckets().begin(), delta.buckets().end()),
            (std::vector<uint64_t>{3, 3}));
}

}  // namespace
}  // namespace fairwatch::controller
