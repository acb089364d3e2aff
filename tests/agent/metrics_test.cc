#include "agent/metrics.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace fairwatch::agent {
namespace {

v1::UsageReport Report() {
  v1::UsageReport report;
  report.set_seq(7);
  report.mutable_agent()->set_cpu_ns(1'500'000'000);
  report.mutable_agent()->set_rss_bytes(20'000'000);
  v1::TenantCounters* t = report.add_tenants();
  t->set_tenant_id("machine/vm-\"a\"");
  t->mutable_cpu()->set_usage_ns(12'345'678'901'234);
  v1::DiskCounters* d = t->add_disks();
  d->mutable_device()->set_major(254);
  d->set_write_bytes(98'765'432'109'876);
  v1::NetCounters* n = t->add_net();
  n->set_rx_bytes(5);
  return report;
}

TEST(AgentMetrics, EveryLineIsACommentOrASample) {
  v1::Hello hello;
  hello.set_host_id("hv-1");
  v1::TenantInventory inventory;
  inventory.add_upserted()->set_id("machine/vm-\"a\"");
  const std::string text = RenderAgentMetrics(hello, Report(), inventory, ReporterStats{});
  int samples = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "# HELP ") || absl::StartsWith(line, "# TYPE ")) continue;
    ++samples;
    ASSERT_TRUE(absl::StartsWith(line, "fairwatch_")) << line;
    const size_t space = line.rfind(' ');
    ASSERT_NE(space, absl::string_view::npos) << line;
    double value = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &value)) << line;
  }
  EXPECT_GT(samples, 10);
}

TEST(AgentMetrics, LargeCountersKeepEveryDigitAndLabelsAreEscaped) {
  const std::string text = RenderAgentMetrics(v1::Hello(), Report(), v1::TenantInventory(), {});
  EXPECT_TRUE(absl::StrContains(text, "tenant=\"machine/vm-\\\"a\\\"\"")) << text;
  EXPECT_TRUE(absl::StrContains(text, " 12345.678901234\n")) << "cpu seconds, full precision";
  EXPECT_TRUE(absl::StrContains(text, "device=\"254:0\"")) << text;
  EXPECT_TRUE(absl::StrContains(text, " 98765432109876\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "interface=\"cgroup\"")) << text;
}

TEST(AgentMetrics, LibvirtSourceSeriesOnlyWhenLibvirtIsASource) {
  v1::UsageReport report = Report();
  EXPECT_FALSE(absl::StrContains(RenderAgentMetrics(v1::Hello(), report, {}, {}), "libvirt"));
  v1::LibvirtSourceCounters* lv = report.mutable_agent()->mutable_libvirt();
  lv->set_connected(true);
  lv->set_connection_lost(2);
  lv->set_events(41);
  lv->set_unresolved_domains(1);
  const std::string text = RenderAgentMetrics(v1::Hello(), report, {}, {});
  EXPECT_TRUE(absl::StrContains(text, "fairwatch_agent_libvirt_connected 1\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "fairwatch_agent_libvirt_connection_lost_total 2\n"));
  EXPECT_TRUE(absl::StrContains(text, "fairwatch_agent_libvirt_events_total 41\n"));
  EXPECT_TRUE(absl::StrContains(text, "fairwatch_agent_libvirt_unresolved_domains 1\n"));
}

TEST(AgentMetrics, LimitsInForceAndCommandsByOutcome) {
  v1::UsageReport report = Report();
  v1::EnforcementCounters* limits = report.mutable_agent()->mutable_enforcement();
  limits->set_in_force(3);
  limits->set_applied(17);
  limits->set_refused(2);
  limits->set_expired(1);
  const std::string text = RenderAgentMetrics(v1::Hello(), report, {}, {});
  EXPECT_TRUE(absl::StrContains(text, "fairwatch_agent_limits_in_force 3\n")) << text;
  EXPECT_TRUE(
      absl::StrContains(text, "fairwatch_agent_limit_commands_total{outcome=\"applied\"} 17\n"));
  EXPECT_TRUE(
      absl::StrContains(text, "fairwatch_agent_limit_commands_total{outcome=\"refused\"} 2\n"));
  EXPECT_TRUE(
      absl::StrContains(text, "fairwatch_agent_limit_commands_total{outcome=\"expired\"} 1\n"));
  EXPECT_TRUE(
      absl::StrContains(text, "fairwatch_agent_limit_commands_total{outcome=\"failed\"} 0\n"));
}

TEST(AgentMetrics, EscapeHandlesBackslashQuoteNewline) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

TEST(MetricsServer, RejectsAnAddressWithoutPort) {
  MetricsServer server;
  EXPECT_EQ(server.Start("localhost").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fairwatch::agent
