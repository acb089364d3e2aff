#include "controller/fleet_state.h"

#include <atomic>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/histogram.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::MakeHello;
using ::fairwatch::controller::testing::MakeInventory;
using ::fairwatch::controller::testing::MakeReport;
using ::fairwatch::controller::testing::MakeTenant;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kSecond = 1'000'000'000;
constexpr int64_t kEpoch = 1'700'000'000'000'000'000;
const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

FleetOptions Options(uint32_t window = 5, uint32_t history = 120,
                     absl::Duration stale = absl::Minutes(10)) {
  FleetOptions options;
  options.window_intervals = window;
  options.history_reports = history;
  options.host_stale = stale;
  return options;
}

class FleetStateTest : public ::testing::Test {
 protected:
  explicit FleetStateTest(FleetOptions options = Options()) : fleet_(options) {}

  void Hello(const std::string& host = "h1", int64_t epoch = kEpoch, uint64_t connection = 1,
             uint32_t cpus = 4) {
    ASSERT_TRUE(fleet_.OnHello(MakeHello(host, epoch, cpus), connection, kT0).ok());
  }
  void Ingest(const v1::UsageReport& report, const std::string& host = "h1") {
    absl::StatusOr<ReportOutcome> outcome = fleet_.IngestReport(host, report);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    ASSERT_EQ(*outcome, ReportOutcome::kIngested);
  }
  // Reports seq 1..n at 1 s intervals; tenant "t" uses `cores` throughout.
  void IngestSteady(int n, double cores, uint64_t first_seq = 1) {
    for (int i = 0; i < n; ++i) {
      const uint64_t mono = (first_seq + i) * kSecond;
      Ingest(MakeReport(first_seq + i, mono,
                        {{"t", static_cast<uint64_t>(cores * static_cast<double>(mono))}}));
    }
  }
  CpuRate Cpu(const std::string& tenant = "t", uint32_t window = 0,
              const std::string& host = "h1") {
    absl::StatusOr<CpuRate> rate = fleet_.TenantCpu(host, tenant, window);
    EXPECT_TRUE(rate.ok()) << rate.status();
    return rate.ok() ? *rate : CpuRate{};
  }

  FleetState fleet_;
};

TEST_F(FleetStateTest, SingleReportGivesNoRate) {
  Hello();
  Ingest(MakeReport(1, kSecond, {{"t", 5 * kSecond}}));
  const CpuRate rate = Cpu();
  EXPECT_EQ(rate.cores, 0);
  EXPECT_EQ(rate.window_s, 0);
  EXPECT_EQ(rate.usage_ns, 5 * kSecond);
}

TEST_F(FleetStateTest, RateIsUsageDeltaOverMonotonicDeltaAcrossDefaultWindow) {
  Hello();
  IngestSteady(10, 0.5);
  const CpuRate rate = Cpu();
  EXPECT_DOUBLE_EQ(rate.cores, 0.5);
  EXPECT_DOUBLE_EQ(rate.window_s, 5.0);
  EXPECT_EQ(rate.usage_ns, 5 * kSecond);
}

TEST_F(FleetStateTest, ShortHistoryUsesOldestAvailableReport) {
  Hello();
  IngestSteady(3, 1.5);
  const CpuRate rate = Cpu();
  EXPECT_DOUBLE_EQ(rate.cores, 1.5);
  EXPECT_DOUBLE_EQ(rate.window_s, 2.0);
}

TEST_F(FleetStateTest, WindowOverrideSelectsSpan) {
  Hello();
  // Usage 1 core for reports 1..6, then 3 cores for reports 7..10.
  uint64_t usage = 0;
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    if (seq > 1) usage += (seq <= 6 ? 1 : 3) * kSecond;
    Ingest(MakeReport(seq, seq * kSecond, {{"t", usage}}));
  }
  struct Case {
    uint32_t window;
    double cores;
    double window_s;
  };
  for (const Case& c : {Case{1, 3.0, 1.0}, Case{4, 3.0, 4.0}, Case{6, (4 * 3.0 + 2) / 6, 6.0},
                        Case{9, (4 * 3.0 + 5) / 9, 9.0}, Case{50, (4 * 3.0 + 5) / 9, 9.0}}) {
    SCOPED_TRACE(absl::StrCat("window ", c.window));
    const CpuRate rate = Cpu("t", c.window);
    EXPECT_NEAR(rate.cores, c.cores, 1e-12);
    EXPECT_DOUBLE_EQ(rate.window_s, c.window_s);
  }
}

TEST_F(FleetStateTest, WindowBeyondHistoryIsInvalidArgument) {
  Hello();
  IngestSteady(3, 1);
  absl::StatusOr<CpuRate> rate = fleet_.TenantCpu("h1", "t", 120);
  EXPECT_EQ(rate.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rate.status().message(), HasSubstr("119 intervals"));
  EXPECT_TRUE(fleet_.TenantCpu("h1", "t", 119).ok());
}

class SmallHistoryTest : public FleetStateTest {
 protected:
  SmallHistoryTest() : FleetStateTest(Options(/*window=*/2, /*history=*/4)) {}
};

TEST_F(SmallHistoryTest, RingKeepsOnlyTheLastReports) {
  Hello();
  // Rate changes every report; only the newest 4 may influence the result.
  uint64_t usage = 0;
  for (uint64_t seq = 1; seq <= 11; ++seq) {
    usage += seq * kSecond / 10;
    Ingest(MakeReport(seq, seq * kSecond, {{"t", usage}}));
  }
  // Window 3 spans reports 8..11: (0.9 + 1.0 + 1.1) / 3.
  EXPECT_NEAR(Cpu("t", 3).cores, 1.0, 1e-12);
  EXPECT_NEAR(Cpu("t", 2).cores, 1.05, 1e-12);
  EXPECT_EQ(fleet_.TenantCpu("h1", "t", 4).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SmallHistoryTest, TenantsGoneFromWholeHistoryAreForgotten) {
  Hello();
  Ingest(MakeReport(1, kSecond, {{"gone", 1}, {"t", 1}}));
  for (uint64_t seq = 2; seq <= 8; ++seq) Ingest(MakeReport(seq, seq * kSecond, {{"t", seq}}));
  EXPECT_EQ(fleet_.TenantCpu("h1", "gone", 0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FleetStateTest, CounterResetWithinEpochRestartsSeries) {
  Hello();
  Ingest(MakeReport(1, 1 * kSecond, {{"t", 10 * kSecond}}));
  Ingest(MakeReport(2, 2 * kSecond, {{"t", 11 * kSecond}}));
  Ingest(MakeReport(3, 3 * kSecond, {{"t", kSecond / 5}}));  // cgroup recreated
  CpuRate at_reset = Cpu();
  EXPECT_EQ(at_reset.cores, 0);
  EXPECT_EQ(at_reset.window_s, 0);
  Ingest(MakeReport(4, 4 * kSecond, {{"t", kSecond / 5 + kSecond / 2}}));
  const CpuRate after = Cpu();
  EXPECT_DOUBLE_EQ(after.cores, 0.5);
  EXPECT_DOUBLE_EQ(after.window_s, 1.0);
}

TEST_F(FleetStateTest, ResetOfOneTenantLeavesOthersIntact) {
  Hello();
  Ingest(MakeReport(1, 1 * kSecond, {{"a", 9 * kSecond}, {"b", 0}}));
  Ingest(MakeReport(2, 2 * kSecond, {{"a", 1}, {"b", kSecond}}));
  Ingest(MakeReport(3, 3 * kSecond, {{"a", 1 + kSecond}, {"b", 2 * kSecond}}));
  EXPECT_DOUBLE_EQ(Cpu("a").window_s, 1.0);
  EXPECT_DOUBLE_EQ(Cpu("b").window_s, 2.0);
  EXPECT_DOUBLE_EQ(Cpu("b").cores, 1.0);
}

TEST_F(FleetStateTest, TenantMissingFromAReportRestartsItsSeries) {
  Hello();
  Ingest(MakeReport(1, 1 * kSecond, {{"t", 0}, {"o", 0}}));
  Ingest(MakeReport(2, 2 * kSecond, {{"o", 0}}));
  Ingest(MakeReport(3, 3 * kSecond, {{"t", 4 * kSecond}, {"o", 0}}));
  EXPECT_EQ(Cpu().window_s, 0);
  Ingest(MakeReport(4, 4 * kSecond, {{"t", 5 * kSecond}, {"o", 0}}));
  EXPECT_DOUBLE_EQ(Cpu().cores, 1.0);
  EXPECT_DOUBLE_EQ(Cpu().window_s, 1.0);
}

TEST_F(FleetStateTest, TenantAppearingLateHasRateOnlyFromItsSecondReport) {
  Hello();
  IngestSteady(3, 1);
  v1::UsageReport report = MakeReport(4, 4 * kSecond, {{"t", 4 * kSecond}, {"late", 100}});
  Ingest(report);
  EXPECT_EQ(Cpu("late").window_s, 0);
  Ingest(MakeReport(5, 5 * kSecond, {{"t", 5 * kSecond}, {"late", 100 + kSecond / 4}}));
  EXPECT_DOUBLE_EQ(Cpu("late").cores, 0.25);
  EXPECT_DOUBLE_EQ(Cpu("late").window_s, 1.0);
}

TEST_F(FleetStateTest, DuplicateOrOlderSeqIsIgnored) {
  Hello();
  IngestSteady(4, 0.5);
  for (uint64_t seq : {1u, 3u, 4u}) {
    absl::StatusOr<ReportOutcome> outcome =
        fleet_.IngestReport("h1", MakeReport(seq, seq * kSecond, {{"t", 1000 * kSecond}}));
    ASSERT_TRUE(outcome.ok());
    EXPECT_EQ(*outcome, ReportOutcome::kDuplicate) << "seq " << seq;
  }
  EXPECT_DOUBLE_EQ(Cpu().cores, 0.5);
  EXPECT_EQ(fleet_.GetHost("h1")->last_report_seq(), 4u);
}

TEST_F(FleetStateTest, SeqGapIsAcceptedSinceCountersAreCumulative) {
  Hello();
  Ingest(MakeReport(1, 1 * kSecond, {{"t", 0}}));
  Ingest(MakeReport(5, 5 * kSecond, {{"t", 2 * kSecond}}));
  EXPECT_DOUBLE_EQ(Cpu().cores, 0.5);
  EXPECT_DOUBLE_EQ(Cpu().window_s, 4.0);
  // The gap is on the host's record: 2, 3 and 4 never arrived.
  EXPECT_EQ(fleet_.GetHost("h1")->first_report_seq(), 1u);
  EXPECT_EQ(fleet_.GetHost("h1")->reports_missing(), 3u);
  Ingest(MakeReport(6, 6 * kSecond, {{"t", 3 * kSecond}}));
  EXPECT_EQ(fleet_.GetHost("h1")->reports_missing(), 3u);
}

TEST_F(FleetStateTest, EpochChangeDropsHistoryAndSeq) {
  Hello();
  IngestSteady(5, 1);
  absl::StatusOr<HelloResult> again = fleet_.OnHello(MakeHello("h1", kEpoch + 1), 2, kT0);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->epoch_changed);
  EXPECT_EQ(again->last_report_seq, 0u);
  EXPECT_EQ(fleet_.GetHost("h1")->last_report_seq(), 0u);
  EXPECT_EQ(fleet_.GetHost("h1")->first_report_seq(), 0u);
  EXPECT_EQ(fleet_.TenantCpu("h1", "t", 0).status().code(), absl::StatusCode::kNotFound);
  // The new epoch starts again at seq 1 with small counters.
  Ingest(MakeReport(1, 100 * kSecond, {{"t", kSecond}}));
  EXPECT_EQ(Cpu().window_s, 0);
  Ingest(MakeReport(2, 102 * kSecond, {{"t", 2 * kSecond}}));
  EXPECT_DOUBLE_EQ(Cpu().cores, 0.5);
}

TEST_F(FleetStateTest, ReconnectInSameEpochKeepsSeqAndHistory) {
  Hello("h1", kEpoch, /*connection=*/1);
  IngestSteady(5, 2);
  EXPECT_TRUE(fleet_.OnDisconnect("h1", 1, kT0 + absl::Seconds(1)));
  EXPECT_FALSE(fleet_.GetHost("h1")->connected());
  absl::StatusOr<HelloResult> again = fleet_.OnHello(MakeHello("h1", kEpoch), 2, kT0);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->epoch_changed);
  EXPECT_FALSE(again->replaced_connection);
  EXPECT_EQ(again->last_report_seq, 5u);
  EXPECT_TRUE(fleet_.GetHost("h1")->connected());
  EXPECT_DOUBLE_EQ(Cpu().cores, 2.0);
  IngestSteady(1, 2, /*first_seq=*/6);
  EXPECT_DOUBLE_EQ(Cpu().cores, 2.0);
}

TEST_F(FleetStateTest, LateDisconnectOfReplacedStreamKeepsHostConnected) {
  Hello("h1", kEpoch, 1);
  absl::StatusOr<HelloResult> second = fleet_.OnHello(MakeHello("h1", kEpoch), 2, kT0);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->replaced_connection);
  EXPECT_FALSE(fleet_.OnDisconnect("h1", 1, kT0));
  EXPECT_TRUE(fleet_.GetHost("h1")->connected());
  EXPECT_TRUE(fleet_.OnDisconnect("h1", 2, kT0));
  EXPECT_FALSE(fleet_.GetHost("h1")->connected());
}

TEST_F(FleetStateTest, MonotonicClockGoingBackwardsRestartsWindows) {
  Hello();
  IngestSteady(3, 1);
  Ingest(MakeReport(4, 1 * kSecond, {{"t", 4 * kSecond}}));
  EXPECT_EQ(Cpu().window_s, 0);
  Ingest(MakeReport(5, 2 * kSecond, {{"t", 4 * kSecond + kSecond / 2}}));
  EXPECT_DOUBLE_EQ(Cpu().cores, 0.5);
}

TEST_F(FleetStateTest, InvalidReportsAreRejectedWithoutChangingState) {
  Hello();
  IngestSteady(2, 1);
  EXPECT_EQ(fleet_.IngestReport("h1", MakeReport(0, 9 * kSecond, {})).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<ReportOutcome> empty_id =
      fleet_.IngestReport("h1", MakeReport(3, 3 * kSecond, {{"t", 3 * kSecond}, {"", 1}}));
  EXPECT_EQ(empty_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty_id.status().message(), HasSubstr("tenant #1"));
  EXPECT_EQ(fleet_.GetHost("h1")->last_report_seq(), 2u);
  EXPECT_EQ(fleet_.IngestReport("nobody", MakeReport(1, 1, {})).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(FleetStateTest, HelloWithoutHostIdIsInvalidArgument) {
  EXPECT_EQ(fleet_.OnHello(MakeHello("", kEpoch), 1, kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fleet_.host_count(), 0u);
}

std::vector<std::string> TenantIds(const FleetState& fleet, const std::string& host) {
  std::vector<std::string> ids;
  absl::StatusOr<std::vector<v1::TenantInfo>> tenants = fleet.ListTenants(host);
  EXPECT_TRUE(tenants.ok()) << tenants.status();
  if (!tenants.ok()) return ids;
  for (const v1::TenantInfo& info : *tenants) ids.push_back(info.tenant().id());
  return ids;
}

TEST_F(FleetStateTest, FullInventoryReplacesAndKeepsFirstSeenOfSurvivors) {
  Hello();
  ASSERT_TRUE(fleet_
                  .ApplyInventory(
                      "h1", MakeInventory(true, {MakeTenant("a", "A"), MakeTenant("b", "B")}), kT0)
                  .ok());
  ASSERT_TRUE(
      fleet_
          .ApplyInventory("h1", MakeInventory(true, {MakeTenant("b", "B2"), MakeTenant("c", "C")}),
                          kT0 + absl::Seconds(5))
          .ok());
  std::vector<v1::TenantInfo> tenants = *fleet_.ListTenants("h1");
  ASSERT_EQ(tenants.size(), 2u);
  EXPECT_EQ(tenants[0].tenant().id(), "b");
  EXPECT_EQ(tenants[0].tenant().name(), "B2");
  EXPECT_EQ(tenants[0].first_seen_unix_ns(), absl::ToUnixNanos(kT0));
  EXPECT_EQ(tenants[1].tenant().id(), "c");
  EXPECT_EQ(tenants[1].first_seen_unix_ns(), absl::ToUnixNanos(kT0 + absl::Seconds(5)));
  EXPECT_EQ(fleet_.GetHost("h1")->tenant_count(), 2u);
}

TEST_F(FleetStateTest, DeltaInventoryUpsertsAndRemoves) {
  Hello();
  ASSERT_TRUE(fleet_
                  .ApplyInventory(
                      "h1", MakeInventory(true, {MakeTenant("a", "A"), MakeTenant("b", "B")}), kT0)
                  .ok());
  ASSERT_TRUE(
      fleet_
          .ApplyInventory("h1",
                          MakeInventory(false, {MakeTenant("a", "A-renamed"), MakeTenant("d", "D")},
                                        {"b", "never-known"}),
                          kT0)
          .ok());
  EXPECT_THAT(TenantIds(fleet_, "h1"), ElementsAre("a", "d"));
  EXPECT_EQ(fleet_.ListTenants("h1")->front().tenant().name(), "A-renamed");
}

TEST_F(FleetStateTest, InventoryErrors) {
  EXPECT_EQ(fleet_.ApplyInventory("h1", MakeInventory(true, {}), kT0).code(),
            absl::StatusCode::kFailedPrecondition);
  Hello();
  absl::Status empty_id = fleet_.ApplyInventory(
      "h1", MakeInventory(false, {MakeTenant("a", "A"), MakeTenant("", "nameless")}), kT0);
  EXPECT_EQ(empty_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty_id.message(), HasSubstr("nameless"));
  EXPECT_TRUE(TenantIds(fleet_, "h1").empty());
  EXPECT_EQ(fleet_.ListTenants("unknown").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FleetStateTest, ListTenantsWithoutFilterCoversAllHosts) {
  Hello("h1");
  Hello("h2", kEpoch, 2);
  ASSERT_TRUE(fleet_.ApplyInventory("h1", MakeInventory(true, {MakeTenant("a", "A")}), kT0).ok());
  ASSERT_TRUE(fleet_.ApplyInventory("h2", MakeInventory(true, {MakeTenant("b", "B")}), kT0).ok());
  std::vector<v1::TenantInfo> all = *fleet_.ListTenants("");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].host_id(), "h1");
  EXPECT_EQ(all[1].host_id(), "h2");
}

TEST_F(FleetStateTest, HostInfoSummarisesReportsAndInventory) {
  Hello("h1", kEpoch, 1, /*cpus=*/8);
  ASSERT_TRUE(fleet_
                  .ApplyInventory("h1",
                                  MakeInventory(true, {MakeTenant("a", "A"), MakeTenant("b", "B"),
                                                       MakeTenant("idle", "I")}),
                                  kT0)
                  .ok());
  Ingest(MakeReport(1, 1 * kSecond, {{"a", 0}, {"b", 0}}));
  Ingest(MakeReport(2, 3 * kSecond, {{"a", kSecond}, {"b", 3 * kSecond}}));
  absl::StatusOr<v1::HostInfo> info = fleet_.GetHost("h1");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->hostname(), "h1.example");
  EXPECT_EQ(info->capacity().cpus(), 8u);
  EXPECT_TRUE(info->connected());
  EXPECT_EQ(info->last_report_seq(), 2u);
  EXPECT_EQ(info->last_report_unix_ns(),
            1'700'000'000'000'000'000 + 3 * static_cast<int64_t>(kSecond));
  EXPECT_EQ(info->tenant_count(), 3u);
  EXPECT_DOUBLE_EQ(info->cpu_used_cores(), 2.0);
  EXPECT_EQ(info->first_seen_unix_ns(), absl::ToUnixNanos(kT0));
}

TEST_F(FleetStateTest, TopCpuHasRowsForReportedAndInventoriedTenants) {
  Hello("h1", kEpoch, 1, /*cpus=*/4);
  ASSERT_TRUE(fleet_
                  .ApplyInventory(
                      "h1",
                      MakeInventory(true, {MakeTenant("a", "Alpha"), MakeTenant("idle", "Idle")}),
                      kT0)
                  .ok());
  Ingest(MakeReport(1, 1 * kSecond, {{"a", 0}, {"unlisted", 0}}));
  Ingest(MakeReport(2, 2 * kSecond, {{"a", 2 * kSecond}, {"unlisted", kSecond / 10}}));
  absl::StatusOr<std::vector<v1::TopRow>> rows = fleet_.TopCpu("h1", 0);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 3u);
  std::map<std::string, v1::TopRow> by_id;
  for (const v1::TopRow& row : *rows) by_id[row.tenant_id()] = row;
  EXPECT_EQ(by_id["a"].tenant_name(), "Alpha");
  EXPECT_DOUBLE_EQ(by_id["a"].cpu_cores(), 2.0);
  EXPECT_DOUBLE_EQ(by_id["a"].cpu_host_fraction(), 0.5);
  EXPECT_DOUBLE_EQ(by_id["a"].window_s(), 1.0);
  EXPECT_EQ(by_id["a"].cpu_usage_ns(), 2 * kSecond);
  EXPECT_DOUBLE_EQ(by_id["unlisted"].cpu_cores(), 0.1);
  EXPECT_EQ(by_id["idle"].cpu_cores(), 0);
  EXPECT_EQ(by_id["idle"].window_s(), 0);
  EXPECT_EQ(fleet_.TopCpu("nope", 0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FleetStateTest, IngestStatsCountReportsSamplesDuplicatesAndRejects) {
  Hello();
  Ingest(MakeReport(1, 1 * kSecond, {{"a", 1}, {"b", 2}}));
  Ingest(MakeReport(2, 2 * kSecond, {{"a", 3}, {"b", 4}, {"c", 5}}));
  EXPECT_EQ(*fleet_.IngestReport("h1", MakeReport(2, 2 * kSecond, {{"a", 3}})),
            ReportOutcome::kDuplicate);
  EXPECT_FALSE(fleet_.IngestReport("h1", MakeReport(0, 3 * kSecond, {{"a", 4}})).ok());
  EXPECT_FALSE(fleet_.IngestReport("nobody", MakeReport(3, 3 * kSecond, {{"a", 4}})).ok());
  Ingest(MakeReport(3, 3 * kSecond, {{"a", 5}, {"a", 6}}));  // listed twice: one sample
  const FleetIngestStats stats = fleet_.ingest_stats();
  EXPECT_EQ(stats.reports_ingested, 3u);
  EXPECT_EQ(stats.reports_duplicate, 1u);
  EXPECT_EQ(stats.reports_rejected, 2u);
  EXPECT_EQ(stats.tenant_samples_ingested, 2u + 3u + 1u);
}

// Counters with run-queue and latency histograms, two disks (the second only
// from t = 3), pressure and drops, all moving differently with `t`.
v1::TenantCounters RichCounters(const std::string& id, uint64_t t) {
  v1::TenantCounters c;
  c.set_tenant_id(id);
  v1::CpuCounters* cpu = c.mutable_cpu();
  cpu->set_usage_ns(t * kSecond / 3);
  cpu->set_runq_wait_ns(t * t * 1'000'000);
  cpu->set_runq_waits(t * 700);
  for (uint64_t b = 0; b < 30; ++b) {
    // Some buckets go down between reports: a delta then takes the newer count.
    cpu->mutable_runq_wait_hist()->add_buckets(b < 8 ? 0 : (t * t * (b % 7 + 1) * 13) % 997);
  }
  cpu->set_throttled_ns(t * 50'000'000);
  cpu->set_nr_periods(t * 10);
  cpu->set_nr_throttled(t * 3);
  c.mutable_cpu_pressure()->set_present(true);
  c.mutable_cpu_pressure()->set_some_total_us(t * 120'000);
  c.mutable_io_pressure()->set_present(true);
  c.mutable_io_pressure()->set_some_total_us(t * t * 40'000);
  for (uint32_t minor : {0u, 16u}) {
    if (minor == 16 && t < 3) continue;
    v1::DiskCounters* disk = c.add_disks();
    disk->mutable_device()->set_major(8);
    disk->mutable_device()->set_minor(minor);
    disk->set_read_bytes(t * 4096 * (minor + 1));
    for (uint64_t b = 0; b < 26; ++b) {
      disk->mutable_latency()->add_buckets(b < 14 ? 0 : t * (b + minor) * 5);
    }
  }
  v1::NetCounters* net = c.add_net();
  net->set_interface("tap0");
  net->set_rx_drops(t * 3);
  net->set_tx_drops(t * t);
  c.mutable_tcp()->set_present(true);
  c.mutable_tcp()->set_sent_segments(t * 1000);
  c.mutable_tcp()->set_retransmitted_segments(t * t * 10);
  return c;
}

TEST_F(FleetStateTest, LastIntervalHarmIsTheDeltaOfTheTwoNewestReports) {
  Hello();
  std::vector<v1::TenantCounters> at(4);
  for (uint64_t t = 1; t <= 3; ++t) {
    v1::UsageReport report = MakeReport(t, t * kSecond, {});
    at[t] = RichCounters("a", t);
    *report.add_tenants() = at[t];
    Ingest(report);
  }
  absl::StatusOr<HostInterval> interval = fleet_.LastInterval("h1");
  ASSERT_TRUE(interval.ok()) << interval.status();
  ASSERT_EQ(interval->tenants.size(), 1u);
  ASSERT_TRUE(interval->tenants[0].has_harm);
  const v1::HarmSignals& harm = interval->tenants[0].harm;

  // The same arithmetic from common/histogram, report 2 -> 3 (one second).
  const v1::TenantCounters& to = at[3];
  const v1::TenantCounters& from = at[2];
  const v1::Log2Histogram runq = Log2Delta(to.cpu().runq_wait_hist(), from.cpu().runq_wait_hist());
  EXPECT_DOUBLE_EQ(harm.runq_wait_p50_ns(), Log2Quantile(runq, 0.5));
  EXPECT_DOUBLE_EQ(harm.runq_wait_p99_ns(), Log2Quantile(runq, 0.99));
  EXPECT_GT(harm.runq_wait_p99_ns(), 0);
  EXPECT_FALSE(harm.runq_untraced()) << "an agent that does not say traced all of it";
  EXPECT_DOUBLE_EQ(harm.runq_wait_ns_per_s(), 9e6 - 4e6);
  EXPECT_DOUBLE_EQ(harm.runq_waits_per_s(), 700);
  EXPECT_TRUE(harm.cpu_psi_present());
  EXPECT_DOUBLE_EQ(harm.cpu_psi_some_fraction(), 0.12);
  EXPECT_DOUBLE_EQ(harm.io_psi_some_fraction(), (9 - 4) * 0.04);
  EXPECT_DOUBLE_EQ(harm.throttled_ns_per_s(), 50e6);
  EXPECT_DOUBLE_EQ(harm.throttled_periods_fraction(), 0.3);
  std::vector<uint64_t> io;
  AddHistogram(Log2Delta(to.disks(0).latency(), from.disks(0).latency()), &io);
  AddHistogram(to.disks(1).latency(), &io);  // new device: all of its count
  EXPECT_DOUBLE_EQ(harm.io_latency_p50_ns(), Log2Quantile(io, 0.5));
  EXPECT_DOUBLE_EQ(harm.io_latency_p99_ns(), Log2Quantile(io, 0.99));
  EXPECT_DOUBLE_EQ(harm.net_drops_per_s(), 3 + (9 - 4));
  EXPECT_TRUE(harm.tcp_present());
  EXPECT_DOUBLE_EQ(harm.tcp_retransmits_per_s(), 90 - 40);

  // The operator's detail over one interval shows the same harm.
  absl::StatusOr<v1::TenantDetail> detail = fleet_.GetTenant("h1", "a", 1);
  ASSERT_TRUE(detail.ok()) << detail.status();
  EXPECT_EQ(detail->harm().SerializeAsString(), harm.SerializeAsString());
  EXPECT_EQ(detail->disks_size(), 2);
  EXPECT_EQ(detail->interfaces_size(), 1);
}

// Adaptive run-queue tracing (agent/runq_gate.h): rates over the part of the
// interval that was traced; an interval traced for under a quarter of it
// says nothing of run-queue waits, and the rest of its harm is unchanged.
TEST_F(FleetStateTest, RunqSignalsAreOverTheTracedPartOfTheInterval) {
  Hello();
  const uint64_t traced_ms[] = {0, 0, 2000, 2500, 2600};  // cumulative, at t = 1..4
  std::vector<v1::TenantCounters> at(4);
  auto ingest = [&](uint64_t t) {
    v1::UsageReport report = MakeReport(t, t * kSecond, {});
    report.mutable_host()->set_runq_traced_ns(traced_ms[t] * 1'000'000);
    at[t] = RichCounters("a", t);
    at[t].mutable_cpu()->set_runq_wait_attributed(true);
    v1::RunqWaitCause* cause = at[t].mutable_cpu()->add_runq_wait_by();
    cause->set_holder(v1::RunqWaitCause::HOLDER_HOST);
    cause->set_wait_ns(t * 1'000'000);
    *report.add_tenants() = at[t];
    Ingest(report);
  };
  ingest(1);
  ingest(2);
  absl::StatusOr<HostInterval> half = fleet_.LastInterval("h1");
  ASSERT_TRUE(half.ok()) << half.status();
  const v1::HarmSignals& traced = half->tenants[0].harm;
  EXPECT_FALSE(traced.runq_untraced());
  // 1 s of interval, all of it traced (2 s cumulative since 0 at t = 1 is
  // capped at the interval): per second as without the field.
  EXPECT_DOUBLE_EQ(traced.runq_wait_ns_per_s(), 4e6 - 1e6);
  EXPECT_DOUBLE_EQ(traced.runq_host_wait_ns_per_s(), 1e6);

  ingest(3);  // 0.5 s of 1 s traced: rates over that half
  absl::StatusOr<HostInterval> part = fleet_.LastInterval("h1");
  ASSERT_TRUE(part.ok()) << part.status();
  const v1::HarmSignals& partly = part->tenants[0].harm;
  EXPECT_FALSE(partly.runq_untraced());
  EXPECT_DOUBLE_EQ(partly.runq_wait_ns_per_s(), (9e6 - 4e6) / 0.5);
  EXPECT_DOUBLE_EQ(partly.runq_waits_per_s(), 700 / 0.5);
  EXPECT_DOUBLE_EQ(partly.runq_host_wait_ns_per_s(), 1e6 / 0.5);
  EXPECT_TRUE(partly.runq_attributed());

  // 0.1 s of the next second: unknown, not zero harm.
  v1::UsageReport report = MakeReport(4, 4 * kSecond, {});
  report.mutable_host()->set_runq_traced_ns(traced_ms[4] * 1'000'000);
  *report.add_tenants() = RichCounters("a", 4);
  Ingest(report);
  absl::StatusOr<HostInterval> barely = fleet_.LastInterval("h1");
  ASSERT_TRUE(barely.ok()) << barely.status();
  const v1::HarmSignals& unknown = barely->tenants[0].harm;
  EXPECT_TRUE(unknown.runq_untraced());
  EXPECT_EQ(unknown.runq_wait_p99_ns(), 0);
  EXPECT_EQ(unknown.runq_wait_ns_per_s(), 0);
  EXPECT_FALSE(unknown.runq_attributed());
  EXPECT_EQ(unknown.runq_host_wait_ns_per_s(), 0);
  EXPECT_DOUBLE_EQ(unknown.cpu_psi_some_fraction(), 0.12) << "PSI is read every interval";
}

TEST_F(FleetStateTest, LastIntervalListsTheNewestReportsTenantsById) {
  Hello();
  Ingest(MakeReport(1, 1 * kSecond, {{"c", 1}, {"a", 1}, {"b", 1}}));
  Ingest(MakeReport(2, 2 * kSecond, {{"b", 2}, {"d", 2}, {"a", 2}}));
  absl::StatusOr<HostInterval> interval = fleet_.LastInterval("h1");
  ASSERT_TRUE(interval.ok()) << interval.status();
  std::vector<std::string> ids;
  for (const TenantInterval& t : interval->tenants) {
    ids.push_back(t.id);
    EXPECT_EQ(t.has_harm, t.id != "d") << t.id << ": only tenants in both reports";
  }
  EXPECT_THAT(ids, ElementsAre("a", "b", "d"));
}

TEST_F(FleetStateTest, LastIntervalHasNamesAndWeightsOfTheInventoryAsItIsNow) {
  Hello();
  v1::Tenant a = MakeTenant("a", "Alpha");
  a.set_weight(2);
  ASSERT_TRUE(fleet_.ApplyInventory("h1", MakeInventory(true, {a}), kT0).ok());
  Ingest(MakeReport(1, 1 * kSecond, {{"a", 1}}));
  Ingest(MakeReport(2, 2 * kSecond, {{"a", 2}}));
  auto only = [this]() -> TenantInterval {
    absl::StatusOr<HostInterval> interval = fleet_.LastInterval("h1");
    EXPECT_TRUE(interval.ok()) << interval.status();
    if (!interval.ok() || interval->tenants.size() != 1) return {};
    return interval->tenants[0];
  };
  EXPECT_EQ(only().name, "Alpha");
  EXPECT_EQ(only().weight, 2);
  // Changed after the newest report: seen at once.
  a.set_name("Renamed");
  a.set_weight(3);
  ASSERT_TRUE(fleet_.ApplyInventory("h1", MakeInventory(false, {a}), kT0).ok());
  EXPECT_EQ(only().name, "Renamed");
  EXPECT_EQ(only().weight, 3);
  Ingest(MakeReport(3, 3 * kSecond, {{"a", 3}}));
  EXPECT_EQ(only().name, "Renamed");
  v1::TenantInventory removal;
  removal.add_removed_ids("a");
  ASSERT_TRUE(fleet_.ApplyInventory("h1", removal, kT0).ok());
  EXPECT_TRUE(only().name.empty());
  EXPECT_EQ(only().weight, 1);
}

TEST_F(FleetStateTest, LastIntervalNeedsTwoReportsAfterTheClockWentBackwards) {
  Hello();
  Ingest(MakeReport(1, 10 * kSecond, {{"a", 1}}));
  Ingest(MakeReport(2, 11 * kSecond, {{"a", 2}}));
  ASSERT_TRUE(fleet_.LastInterval("h1").ok());
  Ingest(MakeReport(3, 5 * kSecond, {{"a", 3}}));
  EXPECT_EQ(fleet_.LastInterval("h1").status().code(), absl::StatusCode::kFailedPrecondition);
  Ingest(MakeReport(4, 6 * kSecond, {{"a", 4}}));
  absl::StatusOr<HostInterval> interval = fleet_.LastInterval("h1");
  ASSERT_TRUE(interval.ok()) << interval.status();
  EXPECT_EQ(interval->seq, 4u);
  EXPECT_DOUBLE_EQ(interval->seconds, 1.0);
  ASSERT_EQ(interval->tenants.size(), 1u);
  EXPECT_TRUE(interval->tenants[0].has_harm);
}

class StaleHostTest : public FleetStateTest {
 protected:
  StaleHostTest() : FleetStateTest(Options(5, 120, absl::Seconds(30))) {}
};

TEST_F(StaleHostTest, DisconnectedHostsExpireAfterHostStale) {
  Hello("gone", kEpoch, 1);
  Hello("back", kEpoch, 2);
  Hello("up", kEpoch, 3);
  ASSERT_TRUE(fleet_.OnDisconnect("gone", 1, kT0));
  ASSERT_TRUE(fleet_.OnDisconnect("back", 2, kT0));
  EXPECT_TRUE(fleet_.ExpireStaleHosts(kT0 + absl::Seconds(29)).empty());
  ASSERT_TRUE(fleet_.OnHello(MakeHello("back", kEpoch), 4, kT0 + absl::Seconds(29)).ok());
  EXPECT_THAT(fleet_.ExpireStaleHosts(kT0 + absl::Seconds(30)), ElementsAre("gone"));
  EXPECT_THAT(fleet_.ExpireStaleHosts(kT0 + absl::Hours(10)), ElementsAre());
  std::vector<std::string> hosts;
  for (const v1::HostInfo& info : fleet_.ListHosts()) hosts.push_back(info.host_id());
  EXPECT_THAT(hosts, ElementsAre("back", "up"));
}

TEST(FleetStateConcurrency, ParallelIngestAndQueriesStayConsistent) {
  FleetState fleet(Options());
  constexpr int kHosts = 4;
  constexpr int kReports = 300;
  for (int h = 0; h < kHosts; ++h) {
    ASSERT_TRUE(fleet.OnHello(MakeHello(absl::StrCat("h", h), kEpoch), h + 1, kT0).ok());
  }
  std::vector<std::thread> threads;
  for (int h = 0; h < kHosts; ++h) {
    threads.emplace_back([&fleet, h] {
      const std::string host = absl::StrCat("h", h);
      for (uint64_t seq = 1; seq <= kReports; ++seq) {
        v1::UsageReport report;
        report.set_seq(seq);
        report.set_monotonic_ns(seq * kSecond);
        for (int t = 0; t < 20; ++t) {
          v1::TenantCounters* counters = report.add_tenants();
          counters->set_tenant_id(absl::StrCat("t", t));
          counters->mutable_cpu()->set_usage_ns(seq * kSecond / 4);
        }
        ASSERT_TRUE(fleet.IngestReport(host, report).ok());
      }
    });
  }
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) {
      for (const v1::HostInfo& info : fleet.ListHosts()) {
        EXPECT_GE(info.cpu_used_cores(), 0);
        EXPECT_LE(info.cpu_used_cores(), 20 * 0.25 + 1e-9);
      }
      ASSERT_TRUE(fleet.TopCpu("", 0).ok());
    }
  });
  for (std::thread& thread : threads) thread.join();
  done = true;
  reader.join();
  for (const v1::HostInfo& info : fleet.ListHosts()) {
    EXPECT_EQ(info.last_report_seq(), static_cast<uint64_t>(kReports));
    EXPECT_NEAR(info.cpu_used_cores(), 5.0, 1e-9);
  }
}

}  // namespace
}  // namespace fairwatch::controller
