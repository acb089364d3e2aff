// The controller's /metrics: gathered from a real server with a store and an
// agent stream, rendered, and served over HTTP on 127.0.0.1.
#include <httplib.h>

#include <string>

#include "absl/strings/str_cat.h"
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

constexpr int64_t kEpoch = 1'700'000'000'000'000'000;
constexpr uint64_t kSecond = 1'000'000'000;

class ControllerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
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
