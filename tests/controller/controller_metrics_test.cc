// The controller's /metrics: gathered from a real server with a store and an
// agent stream, rendered, and served over HTTP on 127.0.0.1.
#include <httplib.h>

#include <cmath>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/prometheus.h"
#include "controller/metrics.h"
#include "controller/server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"
#include "tests/controller/fake_agent.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::FakeAgent;
using ::fairwatch::controller::testing::MakeHello;
using ::fairwatch::controller::testing::MakeInventory;
using ::fairwatch::controller::testing::MakeReport;
using ::fairwatch::controller::testing::MakeTenant;
using ::fairwatch::controller::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kEpoch = 1'700'000'000'000'000'000;
constexpr uint64_t kSecond = 1'000'000'000;

class ControllerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    start_ = absl::Now();
    auto store = SqliteStore::Open(dir_.Join("controller.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    v1::ControllerConfig config;
    config.set_listen_address("127.0.0.1:0");
    config.set_insecure_plaintext(true);
    config.set_window_intervals(2);
    config.set_history_reports(10);
    config.set_max_message_bytes(1 << 20);
    config.set_host_stale_ms(600'000);
    auto server = ControllerServer::Start(config, grpc::InsecureServerCredentials(), store_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    // hog uses 1.5 of 2 cores, victim 0.5.
    agent_ = std::make_unique<FakeAgent>(channel_);
    ASSERT_TRUE(agent_->Hello(MakeHello("hv", kEpoch, 2)).has_value());
    ASSERT_TRUE(agent_->Inventory(
        MakeInventory(true, {MakeTenant("hog", "hog-vm"), MakeTenant("victim", "victim-vm")})));
    for (uint64_t seq = 1; seq <= 3; ++seq) {
      ASSERT_EQ(agent_->Report(
                    MakeReport(seq, seq * kSecond,
                               {{"hog", seq * 15 * kSecond / 10}, {"victim", seq * kSecond / 2}})),
                seq);
    }
  }

  void TearDown() override {
    agent_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  absl::Time start_;
  TempDir dir_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<ControllerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<FakeAgent> agent_;
};

TEST_F(ControllerMetricsTest, FleetJudgeAndStoreFiguresAreExposed) {
  ControllerMetrics m = CollectControllerMetrics(*server_, store_.get(), 100);
  EXPECT_EQ(m.hosts_connected, 1u);
  EXPECT_EQ(m.tenants, 2u);
  ASSERT_EQ(m.shares.size(), 2u) << "CPU only: the fake host declares no disks or interfaces";
  EXPECT_EQ(m.shares[0].tenant_id, "hog");
  EXPECT_NEAR(m.shares[0].share, 0.75, 1e-9);
  EXPECT_NEAR(m.shares[1].share, 0.25, 1e-9);
  EXPECT_TRUE(m.judging);
  EXPECT_GE(m.store.writes, 2u) << "the Hello and the inventory";

  const std::string text = RenderControllerMetrics(m);
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_hosts{state=\"connected\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_tenant_usage_share{host=\"hv\",name=\"hog-vm\","
                              "resource=\"cpu\",tenant=\"hog\"} 0.75\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_cases_open{resource=\"cpu\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_store_write_seconds_bucket{le=\"+Inf\"} "));
  EXPECT_THAT(text, HasSubstr("# TYPE fairwatch_controller_store_write_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_dry_run{resource=\"cpu\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_reports_total{outcome=\"ingested\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_tenant_samples_total 6\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_ingest_lag_seconds_count 3\n"));

  // The largest shares are kept when the series are capped.
  ControllerMetrics capped = CollectControllerMetrics(*server_, store_.get(), 1);
  ASSERT_EQ(capped.shares.size(), 1u);
  EXPECT_EQ(capped.shares[0].tenant_id, "hog");
  EXPECT_EQ(capped.shares_dropped, 1u);
  EXPECT_TRUE(CollectControllerMetrics(*server_, store_.get(), -1).shares.empty());
}

// The value of the one sample of `text` that starts with `series` (name and
// labels, as rendered); NaN when there is none.
double SampleValue(const std::string& text, const std::string& series) {
  const std::string prefix = series + " ";
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    double value = 0;
    if (absl::ConsumePrefix(&line, prefix) && absl::SimpleAtod(line, &value)) return value;
  }
  return std::nan("");
}

TEST_F(ControllerMetricsTest, HostsShowConnectionAndLastReportIngestTime) {
  // A second host that says Hello and never reports.
  auto quiet = std::make_unique<FakeAgent>(channel_);
  ASSERT_TRUE(quiet->Hello(MakeHello("quiet", kEpoch, 2)).has_value());
  ControllerMetrics m = CollectControllerMetrics(*server_, store_.get(), 100);
  ASSERT_EQ(m.hosts.size(), 2u);
  EXPECT_EQ(m.hosts[0].host_id, "hv");
  EXPECT_GE(m.hosts[0].last_report_ingested, start_) << "controller clock, not the report's";
  EXPECT_LE(m.hosts[0].last_report_ingested, absl::Now());
  EXPECT_EQ(m.hosts[1].last_report_ingested, absl::InfinitePast());

  std::string text = RenderControllerMetrics(m);
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_host_connected{host=\"hv\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_host_connected{host=\"quiet\"} 1\n"));
  const double last =
      SampleValue(text, "fairwatch_controller_host_last_report_timestamp_seconds{host=\"hv\"}");
  EXPECT_NEAR(last, absl::ToDoubleSeconds(m.hosts[0].last_report_ingested - absl::UnixEpoch()),
              1e-3);
  EXPECT_THAT(text, Not(HasSubstr("timestamp_seconds{host=\"quiet\"}")))
      << "a host that never reported has no last-report series";

  // Its stream ends: still listed, now 0.
  ASSERT_TRUE(quiet->Close().ok());
  for (int i = 0; i < 200 && text.find("connected{host=\"quiet\"} 0\n") == std::string::npos; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    text = RenderControllerMetrics(CollectControllerMetrics(*server_, store_.get(), 100));
  }
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_host_connected{host=\"quiet\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_hosts{state=\"disconnected\"} 1\n"));
}

TEST_F(ControllerMetricsTest, EachOpenCaseShowsWhenItOpened) {
  Judge* judge = server_->judge();
  ASSERT_NE(judge, nullptr);
  EXPECT_THAT(RenderControllerMetrics(CollectControllerMetrics(*server_, store_.get(), 100)),
              Not(HasSubstr("fairwatch_controller_case_open_since_timestamp_seconds{")));
  absl::StatusOr<ResolvedTenant> hog = judge->Resolve("hv", "hog");
  ASSERT_TRUE(hog.ok()) << hog.status();
  const absl::Time opened = absl::FromUnixSeconds(1'800'000'000) + absl::Milliseconds(250);
  auto cases =
      judge->Throttle(*hog, {{v1::RESOURCE_CPU, 0.5}}, "operator:test", "metrics test", opened);
  ASSERT_TRUE(cases.ok()) << cases.status();
  ASSERT_EQ(cases->size(), 1u);

  ControllerMetrics m = CollectControllerMetrics(*server_, store_.get(), 100);
  ASSERT_EQ(m.open_cases.size(), 1u);
  EXPECT_EQ(m.open_cases[0].case_id, (*cases)[0].case_id());
  EXPECT_EQ(m.open_cases[0].tenant_name, "hog-vm");
  const std::string text = RenderControllerMetrics(m);
  EXPECT_THAT(text, HasSubstr(absl::StrCat(
                        "fairwatch_controller_case_open_since_timestamp_seconds{case=\"",
                        (*cases)[0].case_id(),
                        "\",host=\"hv\",name=\"hog-vm\",resource=\"cpu\",tenant=\"hog\"} "
                        "1800000000.25\n")));
  EXPECT_THAT(text, HasSubstr("fairwatch_controller_cases_open{resource=\"cpu\"} 1\n"));

  // Closed: its series goes.
  ASSERT_TRUE(
      judge->Release("hv", "hog", {}, "operator:test", "done", opened + absl::Seconds(1)).ok());
  EXPECT_THAT(RenderControllerMetrics(CollectControllerMetrics(*server_, store_.get(), 100)),
              Not(HasSubstr("fairwatch_controller_case_open_since_timestamp_seconds{")));
}

TEST_F(ControllerMetricsTest, ServedOverHttpAtEachScrape) {
  MetricsServer metrics("fairwatch-controller");
  ControllerServer* server = server_.get();
  Store* store = store_.get();
  metrics.SetRenderer([server, store] {
    return RenderControllerMetrics(CollectControllerMetrics(*server, store, 100));
  });
  ASSERT_TRUE(metrics.Start("127.0.0.1:0").ok());
  httplib::Client client("127.0.0.1", metrics.port());
  auto first = client.Get("/metrics");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_THAT(first->body, HasSubstr("fairwatch_controller_tenants 2\n"));
  // A new tenant shows at the next scrape.
  ASSERT_TRUE(agent_->Inventory(MakeInventory(false, {MakeTenant("third", "third-vm")})));
  std::string body;
  for (int i = 0; i < 100 && body.find("fairwatch_controller_tenants 3\n") == std::string::npos;
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    auto next = client.Get("/metrics");
    ASSERT_TRUE(next);
    body = next->body;
  }
  EXPECT_THAT(body, HasSubstr("fairwatch_controller_tenants 3\n"));
  metrics.Stop();
}

}  // namespace
}  // namespace fairwatch::controller
