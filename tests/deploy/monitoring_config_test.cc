// What deploy/prometheus and deploy/grafana ship, checked without root or a
// running daemon: every metric the rules and the dashboard read is one the
// agent or the controller renders (from sample data filling every family),
// the dashboard is sound Grafana JSON, each alert tells the operator what to
// do, and promtool finds nothing to lint in the daemons' exposition.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent/metrics.h"
#include "common/tls.h"
#include "controller/metrics.h"
#include "tests/deploy/monitoring_checks.h"
#include "tests/e2e/process.h"

namespace fairwatch::testing::deploy {
namespace {

const std::string kRules = std::string(FW_SOURCE_DIR) + "/deploy/prometheus/fairwatch.rules.yml";
const std::string kDashboard =
    std::string(FW_SOURCE_DIR) + "/deploy/grafana/fairwatch-dashboard.json";

// Series Prometheus makes itself for every target.
const std::set<std::string>& Synthetic() {
  static const auto* names = new std::set<std::string>{"up"};
  return *names;
}

// An agent exposition with every family it can show: a tenant with disks and
// interfaces, BPF programs and maps, libvirt, limits.
std::string AgentText() {
  v1::Hello hello;
  hello.set_host_id("hv-1");
  hello.set_agent_version("test");
  hello.set_cpu_hierarchy("unified");
  v1::UsageReport report;
  report.set_seq(42);
  v1::AgentSelfCounters* self = report.mutable_agent();
  self->set_cpu_ns(2'000'000'000);
  self->set_rss_bytes(30 << 20);
  v1::BpfProgramStats* program = self->add_programs();
  program->set_name("cpu/handle_stat_runtime");
  program->set_run_time_ns(5'000'000);
  program->set_run_count(1000);
  v1::BpfMapFill* map = self->add_maps();
  map->set_name("cpu/tenant_roots");
  map->set_entries(3);
  map->set_max_entries(4096);
  self->set_lost_events(1);
  self->set_tenant_slots_used(3);
  self->set_tenant_slots_max(4096);
  self->mutable_libvirt()->set_connected(true);
  self->mutable_enforcement()->set_in_force(1);
  self->mutable_enforcement()->set_applied(2);
  v1::TenantCounters* t = report.add_tenants();
  t->set_tenant_id("machine.slice/vm-a");
  t->mutable_cpu()->set_usage_ns(7'000'000'000);
  t->mutable_cpu()->set_runq_wait_ns(1'000'000);
  t->mutable_cpu()->set_runq_waits(10);
  t->mutable_cpu_pressure()->set_present(true);
  t->mutable_io_pressure()->set_present(true);
  v1::DiskCounters* disk = t->add_disks();
  disk->mutable_device()->set_major(8);
  disk->set_read_bytes(4096);
  v1::NetCounters* net = t->add_net();
  net->set_interface("vnet0");
  net->set_rx_bytes(1500);
  v1::TenantInventory inventory;
  v1::Tenant* tenant = inventory.add_upserted();
  tenant->set_id("machine.slice/vm-a");
  tenant->set_name("vm-a");
  tenant->set_account("acme");
  agent::ReporterStats stats;
  stats.connected = true;
  stats.connects = 1;
  return agent::RenderAgentMetrics(hello, report, inventory, stats);
}

// A controller exposition with every family: hosts (one never reported), a
// share per resource, an open case, actions and acks.
std::string ControllerText() {
  controller::ControllerMetrics m;
  m.hosts_connected = 1;
  m.hosts_disconnected = 1;
  m.tenants = 2;
  m.hosts.push_back({"hv-1", true, 2, absl::Now()});
  m.hosts.push_back({"hv-2", false, 0, absl::InfinitePast()});
  for (v1::Resource r : {v1::RESOURCE_CPU, v1::RESOURCE_DISK_BANDWIDTH, v1::RESOURCE_DISK_IOPS,
                         v1::RESOURCE_NET_RX, v1::RESOURCE_NET_TX}) {
    m.shares.push_back({"hv-1", "machine.slice/vm-a", "vm-a", r, 0.5});
  }
  m.judging = true;
  m.judge.cases_opened = 1;
  m.judge.actions[{"limit", "sent"}] = 1;
  m.judge.acks_applied = 1;
  m.judge.open_cases[v1::RESOURCE_CPU] = 1;
  m.open_cases.push_back(
      {7, "hv-1", "machine.slice/vm-a", "vm-a", v1::RESOURCE_CPU, absl::Now() - absl::Minutes(5)});
  m.store.writes = 3;
  m.store.write_seconds = 0.002;
  m.link.streams_opened = 1;
  return controller::RenderControllerMetrics(m);
}

std::set<std::string> Exposed() {
  std::set<std::string> names = ExposedNames(AgentText());
  for (const std::string& n : ExposedNames(ControllerText())) names.insert(n);
  names.insert(Synthetic().begin(), Synthetic().end());
  return names;
}

RuleFile Rules() {
  absl::StatusOr<std::string> text = ReadFileToString(kRules);
  EXPECT_TRUE(text.ok()) << text.status();
  absl::StatusOr<RuleFile> rules = ParseRuleFile(text.value_or(""));
  EXPECT_TRUE(rules.ok()) << rules.status();
  return rules.value_or(RuleFile{});
}

TEST(PromqlNames, FindsMetricsNotFunctionsKeywordsOrLabels) {
  struct Case {
    std::string expr;
    std::set<std::string> names;
  };
  const Case cases[] = {
      {"up", {"up"}},
      {R"(rate(fairwatch_tenant_cpu_seconds_total{tenant=~"a|b", name!="x{y}"}[5m]))",
       {"fairwatch_tenant_cpu_seconds_total"}},
      {"sum by (le, instance) (rate(x_bucket[1m])) > 0.5e-3 and on (host) y offset 5m == 1",
       {"x_bucket", "y"}},
      {"sum(a) without (device) / ignoring (tenant) group_left (host, name) b:rec:rate1m",
       {"a", "b:rec:rate1m"}},
      {R"pq(label_replace(m, "host", "$1", "host_id", "(.*)") unless topk(3, n) or bool_metric)pq",
       {"m", "n", "bool_metric"}},
      {"time() - ts_seconds > 3600", {"ts_seconds"}},
      {"histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(MetricNamesIn(c.expr), c.names) << c.expr;
  }
}

TEST(PromqlNames, RecordedNamesCountWhenTheirSourcesExist) {
  RuleFile rules;
  rules.records.push_back({"a:x:rate1m", "rate(x[1m])", {}});
  rules.records.push_back({"b:a:sum", "sum(a:x:rate1m)", {}});
  rules.records.push_back({"c:gone:rate1m", "rate(gone[1m])", {}});
  EXPECT_THAT(MissingNames({"a:x:rate1m", "b:a:sum", "c:gone:rate1m", "typo"}, {"x"}, rules),
              ::testing::ElementsAre("c:gone:rate1m", "typo"));
}

TEST(PrometheusRules, EveryMetricTheyReadIsExported) {
  const std::set<std::string> exposed = Exposed();
  const RuleFile rules = Rules();
  EXPECT_GE(rules.records.size(), 10u);
  EXPECT_GE(rules.alerts.size(), 8u);
  for (const std::vector<Rule>* list : {&rules.records, &rules.alerts}) {
    for (const Rule& r : *list) {
      const std::set<std::string> names = MetricNamesIn(r.expr);
      EXPECT_FALSE(names.empty()) << r.name;
      EXPECT_THAT(MissingNames(names, exposed, rules), ::testing::IsEmpty())
          << "rule " << r.name << " reads metrics no daemon exports: " << r.expr;
    }
  }
}

TEST(PrometheusRules, EveryAlertHasSeveritySummaryAndDescription) {
  std::set<std::string> alerts;
  for (const Rule& r : Rules().alerts) {
    alerts.insert(r.name);
    for (const char* key : {"severity", "summary", "description"}) {
      EXPECT_EQ(r.keys.count(key), 1u) << r.name << " has no " << key;
    }
  }
  for (const char* name :
       {"FairwatchAgentDown", "FairwatchControllerDown", "FairwatchReportsLagging",
        "FairwatchBpfEventsLost", "FairwatchCaseOpenTooLong", "FairwatchLimitFailed",
        "FairwatchTenantsUnmeasured", "FairwatchStoreWriteErrors"}) {
    EXPECT_EQ(alerts.count(name), 1u) << name;
  }
}

TEST(GrafanaDashboard, IsSoundJsonWithDatasourceAndHostVariables) {
  absl::StatusOr<std::string> text = ReadFileToString(kDashboard);
  ASSERT_TRUE(text.ok()) << text.status();
  absl::StatusOr<Dashboard> dashboard = ParseDashboard(*text);
  ASSERT_TRUE(dashboard.ok()) << dashboard.status();
  EXPECT_THAT(dashboard->problems, ::testing::IsEmpty());
  EXPECT_GE(dashboard->schema_version, 36);
  EXPECT_EQ(dashboard->variables["datasource"], "datasource");
  EXPECT_EQ(dashboard->variables["host"], "query");
  EXPECT_GE(dashboard->panel_datasources.size(), 20u);
  for (const auto& [id, uid] : dashboard->panel_datasources) {
    EXPECT_EQ(uid, "${datasource}") << "panel " << id;
  }
  for (const DashboardQuery& q : dashboard->queries) {
    // After Grafana's substitution no variable is left: a misspelt one would be.
    EXPECT_THAT(SubstituteVariables(q.expr, "hv-1"), ::testing::Not(::testing::HasSubstr("$")))
        << q.where << ": " << q.expr;
  }
}

TEST(GrafanaDashboard, EveryMetricItReadsIsExported) {
  absl::StatusOr<std::string> text = ReadFileToString(kDashboard);
  ASSERT_TRUE(text.ok()) << text.status();
  absl::StatusOr<Dashboard> dashboard = ParseDashboard(*text);
  ASSERT_TRUE(dashboard.ok()) << dashboard.status();
  const std::set<std::string> exposed = Exposed();
  const RuleFile rules = Rules();
  std::set<std::string> read;
  for (const DashboardQuery& q : dashboard->queries) {
    const std::set<std::string> names = MetricNamesIn(SubstituteVariables(q.expr, "hv-1"));
    EXPECT_FALSE(names.empty()) << q.where << ": " << q.expr;
    EXPECT_THAT(MissingNames(names, exposed, rules), ::testing::IsEmpty())
        << q.where << " reads metrics no daemon exports: " << q.expr;
    read.insert(names.begin(), names.end());
  }
  // The rows the dashboard promises.
  for (const char* name :
       {"fairwatch_controller_host_connected",
        "fairwatch_controller_host_last_report_timestamp_seconds",
        "fairwatch_controller_tenant_usage_share", "tenant:fairwatch_tenant_cpu_seconds:rate1m",
        "tenant:fairwatch_tenant_runq_wait_seconds:rate1m", "fairwatch_controller_cases_open",
        "fairwatch_controller_actions_total", "instance:fairwatch_agent_cpu_seconds:rate1m"}) {
    EXPECT_EQ(read.count(name), 1u) << name;
  }
}

// promtool reads the exposition on stdin; prints one line per problem.
CommandResult PromtoolCheckMetrics(const std::string& promtool, const std::string& text) {
  char path[] = "/tmp/fw-metrics-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return CommandResult{};
  close(fd);
  std::ofstream(path) << text;
  CommandResult r =
      RunCommand({"/bin/sh", "-c", absl::StrCat("exec ", promtool, " check metrics < ", path)});
  unlink(path);
  return r;
}

std::string FindPromtool() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    std::string path = absl::StrCat(dir, "/promtool");
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

TEST(DaemonMetrics, PromtoolFindsNoLintProblems) {
  const std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool is not installed (deploy/install-deps.sh)";
  for (const auto& [daemon, text] : {std::pair<const char*, std::string>{"agent", AgentText()},
                                     {"controller", ControllerText()}}) {
    CommandResult r = PromtoolCheckMetrics(promtool, text);
    EXPECT_EQ(r.exit_code, 0) << daemon << ": " << r.out << r.err;
    EXPECT_EQ(r.out + r.err, "") << daemon;
  }
}

}  // namespace
}  // namespace fairwatch::testing::deploy
