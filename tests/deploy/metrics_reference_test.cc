// docs/reference/metrics.md against what the daemons render: every metric
// family the agent and the controller expose is documented with its type and
// labels, every documented family is exposed, and the alerts and dashboard
// the page names as users of a metric do use it.
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/metrics.h"
#include "common/tls.h"
#include "controller/config.h"
#include "controller/metrics.h"
#include "controller/server.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"
#include "tests/controller/fake_agent.h"
#include "tests/controller/test_util.h"
#include "tests/deploy/doc_tables.h"

namespace fairwatch {
namespace {

using ::fairwatch::deploy_testing::CodeSpans;
using ::fairwatch::deploy_testing::DocRow;
using ::fairwatch::deploy_testing::FirstCodeSpan;
using ::fairwatch::deploy_testing::ReadDocRows;

const std::string kSource = FAIRWATCH_SOURCE_DIR;
const std::string kPage = kSource + "/docs/reference/metrics.md";
const std::string kRules = kSource + "/deploy/prometheus/fairwatch.rules.yml";
const std::string kDashboard = kSource + "/deploy/grafana/fairwatch-dashboard.json";

// One metric family as exposed: its type and the label names of its samples
// (`le` of histogram buckets left out).
struct Family {
  std::string type;
  std::set<std::string> labels;
  int samples = 0;
};

// Label names of a sample line's {...}, values skipped (escapes included).
std::set<std::string> LabelNames(absl::string_view labels) {
  std::set<std::string> names;
  size_t i = 0;
  while (i < labels.size()) {
    const size_t eq = labels.find('=', i);
    if (eq == absl::string_view::npos) break;
    names.insert(std::string(absl::StripAsciiWhitespace(labels.substr(i, eq - i))));
    i = eq + 2;  // past ="
    while (i < labels.size() && labels[i] != '"') i += labels[i] == '\\' ? 2 : 1;
    i += 2;  // past the closing quote and the comma
  }
  return names;
}

// Families of an exposition text, by name.
std::map<std::string, Family> ParseExposition(const std::string& text) {
  std::map<std::string, Family> families;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      EXPECT_EQ(parts.size(), 2u) << line;
      if (parts.size() == 2) families[parts[0]].type = parts[1];
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    const size_t end = line.find_first_of("{ ");
    std::string name(line.substr(0, end));
    if (!families.contains(name)) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        if (absl::EndsWith(name, suffix)) {
          const std::string base = name.substr(0, name.size() - strlen(suffix));
          if (families.contains(base)) name = base;
        }
      }
    }
    auto family = families.find(name);
    if (family == families.end()) {
      ADD_FAILURE() << "sample without a # TYPE line: " << line;
      continue;
    }
    ++family->second.samples;
    if (end != absl::string_view::npos && line[end] == '{') {
      const size_t close = line.rfind('}');
      for (const std::string& label : LabelNames(line.substr(end + 1, close - end - 1))) {
        if (label != "le") family->second.labels.insert(label);
      }
    }
  }
  return families;
}

std::string AgentExposition() {
  v1::Hello hello;
  hello.set_host_id("hv-1");
  hello.set_agent_version("1.2.3");
  hello.set_cpu_hierarchy("cpu");
  v1::UsageReport report;
  report.set_seq(42);
  v1::AgentSelfCounters* self = report.mutable_agent();
  self->set_cpu_ns(1'000'000'000);
  self->set_rss_bytes(30'000'000);
  v1::BpfProgramStats* program = self->add_programs();
  program->set_name("fw_cpu_runtime_btf");
  program->set_run_time_ns(5000);
  program->set_run_count(40);
  self->set_lost_events(3);
  self->set_tenant_slots_used(2);
  self->set_tenant_slots_max(4096);
  v1::BpfMapFill* map = self->add_maps();
  map->set_name("cpu/cgroup_slots");
  map->set_entries(7);
  map->set_max_entries(32768);
  self->set_tenants_unmeasured(1);
  self->mutable_enforcement()->set_in_force(1);
  self->mutable_enforcement()->set_applied(4);
  self->mutable_libvirt()->set_connected(true);
  self->mutable_libvirt()->set_events(9);
  v1::TenantCounters* tenant = report.add_tenants();
  tenant->set_tenant_id("0b5c1d52-6a4f-4e57-9b1e-2f0b8c3c9d11");
  tenant->mutable_cpu()->set_usage_ns(2'000'000'000);
  tenant->mutable_cpu()->set_runq_wait_ns(1'000'000);
  tenant->mutable_cpu()->set_runq_waits(100);
  tenant->mutable_cpu()->set_throttled_ns(0);
  tenant->mutable_cpu_pressure()->set_some_total_us(10);
  tenant->mutable_io_pressure()->set_some_total_us(20);
  v1::DiskCounters* disk = tenant->add_disks();
  disk->mutable_device()->set_major(253);
  disk->set_read_bytes(4096);
  v1::NetCounters* net = tenant->add_net();
  net->set_interface("vnet0");
  net->set_rx_bytes(1500);
  v1::TenantInventory inventory;
  v1::Tenant* t = inventory.add_upserted();
  t->set_id(tenant->tenant_id());
  t->set_name("web-1");
  t->set_account("acme");
  agent::ReporterStats stats;
  stats.connected = true;
  stats.connects = 1;
  stats.buffered = 1;
  return agent::RenderAgentMetrics(hello, report, inventory, stats);
}

// The controller's /metrics from a real server with a store: one host
// streaming, two tenants, and an operator's throttle (an open case).
class ControllerExposition {
 public:
  std::string Render() {
    using controller::testing::FakeAgent;
    using controller::testing::MakeHello;
    using controller::testing::MakeInventory;
    using controller::testing::MakeReport;
    using controller::testing::MakeTenant;
    auto store = controller::SqliteStore::Open(dir_.Join("controller.db"));
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return "";
    store_ = std::move(*store);
    v1::ControllerConfig config;
    config.set_listen_address("127.0.0.1:0");
    config.set_insecure_plaintext(true);
    controller::ApplyControllerDefaults(&config);
    auto server = controller::ControllerServer::Start(config, grpc::InsecureServerCredentials(),
                                                      store_.get());
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return "";
    server_ = std::move(*server);
    agent_ = std::make_unique<FakeAgent>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
    constexpr int64_t kEpoch = 1'700'000'000'000'000'000;
    constexpr uint64_t kSecond = 1'000'000'000;
    EXPECT_TRUE(agent_->Hello(MakeHello("hv-1", kEpoch, 2)).has_value());
    EXPECT_TRUE(agent_->Inventory(
        MakeInventory(true, {MakeTenant("hog", "hog-vm"), MakeTenant("web", "web-vm")})));
    for (uint64_t seq = 1; seq <= 3; ++seq) {
      EXPECT_EQ(
          agent_->Report(MakeReport(
              seq, seq * kSecond, {{"hog", seq * 15 * kSecond / 10}, {"web", seq * kSecond / 2}})),
          seq);
    }
    controller::Judge* judge = server_->judge();
    EXPECT_NE(judge, nullptr);
    if (judge == nullptr) return "";
    absl::StatusOr<controller::ResolvedTenant> hog = judge->Resolve("hv-1", "hog");
    EXPECT_TRUE(hog.ok()) << hog.status();
    if (!hog.ok()) return "";
    auto cases = judge->Throttle(*hog, {{v1::RESOURCE_CPU, 0.5}}, "operator:docs",
                                 "metrics reference test", absl::Now());
    EXPECT_TRUE(cases.ok()) << cases.status();
    return controller::RenderControllerMetrics(
        controller::CollectControllerMetrics(*server_, store_.get(), 100));
  }

  ~ControllerExposition() {
    agent_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

 private:
  controller::testing::TempDir dir_;
  std::unique_ptr<controller::SqliteStore> store_;
  std::unique_ptr<controller::ControllerServer> server_;
  std::unique_ptr<controller::testing::FakeAgent> agent_;
};

struct DocMetric {
  DocRow row;
  std::string type;
  std::set<std::string> labels;
  std::string used_by;
};

// The page's rows under the heading that names `daemon` ("fairwatch-agent").
std::map<std::string, DocMetric> Documented(const std::string& daemon) {
  std::string error;
  std::vector<DocRow> rows = ReadDocRows(kPage, &error);
  EXPECT_TRUE(error.empty()) << error;
  std::map<std::string, DocMetric> out;
  for (DocRow& row : rows) {
    if (!absl::StrContains(row.section, absl::StrCat("`", daemon, "`"))) continue;
    const std::optional<std::string> name = FirstCodeSpan(row.cells[0]);
    if (!name.has_value() || !absl::StartsWith(*name, "fairwatch_")) continue;
    EXPECT_EQ(row.cells.size(), 5u)
        << kPage << ":" << row.line << ": expected | name | type | labels | meaning | used by |";
    if (row.cells.size() != 5) continue;
    EXPECT_FALSE(out.contains(*name)) << kPage << ":" << row.line << ": `" << *name << "` twice";
    DocMetric metric;
    metric.type = row.cells[1];
    for (const std::string& label : CodeSpans(row.cells[2])) metric.labels.insert(label);
    metric.used_by = row.cells[4];
    metric.row = std::move(row);
    out.emplace(*name, std::move(metric));
  }
  return out;
}

void ExpectDocumented(const std::string& daemon, const std::map<std::string, Family>& exposed) {
  const std::map<std::string, DocMetric> documented = Documented(daemon);
  ASSERT_FALSE(documented.empty())
      << kPage << " has no table under a heading naming `" << daemon << "`";
  for (const auto& [name, family] : exposed) {
    auto doc = documented.find(name);
    if (doc == documented.end()) {
      ADD_FAILURE() << daemon << " exposes `" << name << "` (" << family.type
                    << ", labels: " << absl::StrJoin(family.labels, ", ") << ") but " << kPage
                    << " does not document it under " << daemon;
      continue;
    }
    const std::string where = absl::StrCat(kPage, ":", doc->second.row.line, ": `", name, "`");
    EXPECT_EQ(doc->second.type, family.type) << where << ": type";
    if (family.samples == 0) {
      ADD_FAILURE() << where << ": no sample in the test's exposition, so its labels were not "
                    << "checked; extend the sample data in " << __FILE__;
      continue;
    }
    EXPECT_EQ(absl::StrJoin(doc->second.labels, ","), absl::StrJoin(family.labels, ","))
        << where << ": labels (documented vs exposed; `le` of histograms not listed)";
  }
  for (const auto& [name, doc] : documented) {
    EXPECT_TRUE(exposed.contains(name))
        << kPage << ":" << doc.row.line << ": `" << name << "` is documented under " << daemon
        << " but " << daemon << " does not expose it";
  }
}

TEST(MetricsReference, EveryAgentFamilyIsDocumentedWithItsTypeAndLabels) {
  ExpectDocumented("fairwatch-agent", ParseExposition(AgentExposition()));
}

TEST(MetricsReference, EveryControllerFamilyIsDocumentedWithItsTypeAndLabels) {
  ControllerExposition controller;
  const std::string text = controller.Render();
  ASSERT_FALSE(text.empty());
  ExpectDocumented("fairwatch-controller", ParseExposition(text));
}

// A documented family for a name as a query writes it (histogram series
// carry _bucket, _sum, _count).
std::string FamilyOf(const std::string& name, const std::map<std::string, DocMetric>& documented) {
  if (documented.contains(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(name, suffix)) {
      std::string base = name.substr(0, name.size() - strlen(suffix));
      if (documented.contains(base)) return base;
    }
  }
  return name;
}

// Identifiers of a PromQL expression: metric and recorded names, functions,
// labels ("rate", "fairwatch_x_total", "tenant:fairwatch_x:rate1m", "host").
std::vector<std::string> Identifiers(absl::string_view expr) {
  std::vector<std::string> out;
  size_t i = 0;
  auto starts = [](char c) { return absl::ascii_isalpha(c) || c == '_' || c == ':'; };
  auto continues = [](char c) { return absl::ascii_isalnum(c) || c == '_' || c == ':'; };
  while (i < expr.size()) {
    if (!starts(expr[i]) || (i > 0 && (continues(expr[i - 1]) || expr[i - 1] == '$'))) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < expr.size() && continues(expr[end])) ++end;
    out.emplace_back(expr.substr(i, end - i));
    i = end;
  }
  return out;
}

// One rule of the rules file: "record" or "alert", its name, its expr.
struct Rule {
  std::string kind;
  std::string name;
  std::string expr;
};

size_t Indent(absl::string_view line) {
  size_t n = 0;
  while (n < line.size() && line[n] == ' ') ++n;
  return n;
}

// The rules of a Prometheus rules file, in order. Knows the subset of YAML
// such files use: "- record: x" / "- alert: x" items, "expr:" on one line or
// as a block (>-, |) of lines indented deeper than the key.
std::vector<Rule> ParseRules(const std::string& text) {
  std::vector<Rule> rules;
  bool in_expr = false;
  size_t expr_indent = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (in_expr && (stripped.empty() || Indent(line) > expr_indent)) {
      absl::StrAppend(&rules.back().expr, " ", stripped);
      continue;
    }
    in_expr = false;
    if (absl::StartsWith(stripped, "#")) continue;
    for (const char* kind : {"record", "alert"}) {
      const std::string key = absl::StrCat("- ", kind, ":");
      if (absl::StartsWith(stripped, key)) {
        rules.push_back(
            {kind, std::string(absl::StripAsciiWhitespace(stripped.substr(key.size()))), ""});
      }
    }
    if (absl::StartsWith(stripped, "expr:") && !rules.empty()) {
      absl::string_view rest = absl::StripAsciiWhitespace(stripped.substr(5));
      in_expr = rest == ">-" || rest == ">" || rest == "|" || rest == "|-";
      expr_indent = Indent(line);
      if (!in_expr) rules.back().expr = std::string(rest);
    }
  }
  return rules;
}

// The metric families an expression uses, through recorded series too.
std::set<std::string> MetricsOf(absl::string_view expr,
                                const std::map<std::string, std::set<std::string>>& recorded,
                                const std::map<std::string, DocMetric>& documented) {
  std::set<std::string> metrics;
  for (const std::string& id : Identifiers(expr)) {
    if (auto r = recorded.find(id); r != recorded.end()) {
      metrics.insert(r->second.begin(), r->second.end());
    } else if (absl::StartsWith(id, "fairwatch_")) {
      metrics.insert(FamilyOf(id, documented));
    }
  }
  return metrics;
}

// Recorded series -> the metric families behind them (rules may use earlier
// recorded series, as the file's own order allows).
std::map<std::string, std::set<std::string>> RecordedMetrics(
    const std::vector<Rule>& rules, const std::map<std::string, DocMetric>& documented) {
  std::map<std::string, std::set<std::string>> recorded;
  for (const Rule& rule : rules) {
    if (rule.kind == "record") recorded[rule.name] = MetricsOf(rule.expr, recorded, documented);
  }
  return recorded;
}

// The strings of every "expr" and "query" of a Grafana dashboard (JSON
// escapes are left in; they do not touch identifiers).
std::vector<std::string> DashboardQueries(const std::string& json) {
  std::vector<std::string> queries;
  for (const char* key : {"\"expr\"", "\"query\""}) {
    size_t at = 0;
    while ((at = json.find(key, at)) != std::string::npos) {
      at += strlen(key);
      while (at < json.size() && (json[at] == ' ' || json[at] == ':')) ++at;
      if (at >= json.size() || json[at] != '"') continue;
      size_t end = ++at;
      while (end < json.size() && json[end] != '"') end += json[end] == '\\' ? 2 : 1;
      queries.push_back(json.substr(at, end - at));
      at = end;
    }
  }
  return queries;
}

std::map<std::string, DocMetric> AllDocumented() {
  std::map<std::string, DocMetric> all = Documented("fairwatch-agent");
  all.merge(Documented("fairwatch-controller"));
  return all;
}

TEST(MetricsReference, AlertsNamedOnThePageUseTheMetricAndEveryAlertMetricIsDocumented) {
  const std::string text = ReadFileToString(kRules).value_or("");
  if (text.empty()) GTEST_SKIP() << kRules << " is not there (yet)";
  const std::map<std::string, DocMetric> documented = AllDocumented();
  const std::vector<Rule> rules = ParseRules(text);
  const std::map<std::string, std::set<std::string>> recorded = RecordedMetrics(rules, documented);
  // An alert may have several rules (one per signal): their metrics together.
  std::map<std::string, std::set<std::string>> alert_metrics;
  for (const Rule& rule : rules) {
    if (rule.kind != "alert") continue;
    EXPECT_FALSE(rule.expr.empty()) << "alert " << rule.name << ": no expr found in " << kRules;
    alert_metrics[rule.name].merge(MetricsOf(rule.expr, recorded, documented));
  }
  ASSERT_FALSE(alert_metrics.empty()) << kRules << " has no `- alert:` rule";
  // The page's table of alerts lists exactly the rules file's.
  std::string error;
  std::set<std::string> listed;
  for (const DocRow& row : ReadDocRows(kPage, &error)) {
    if (!absl::StartsWith(row.section, "Alerts")) continue;
    const std::optional<std::string> name = FirstCodeSpan(row.cells[0]);
    if (name.has_value()) listed.insert(*name);
  }
  for (const auto& [alert, metrics] : alert_metrics) {
    EXPECT_TRUE(listed.contains(alert))
        << "alert " << alert << " is not in the \"Alerts\" table of " << kPage;
  }
  for (const std::string& alert : listed) {
    EXPECT_TRUE(alert_metrics.contains(alert))
        << kPage << " lists alert " << alert << ", which " << kRules << " does not have";
  }
  for (const auto& [alert, metrics] : alert_metrics) {
    for (const std::string& metric : metrics) {
      auto doc = documented.find(metric);
      if (doc == documented.end()) {
        ADD_FAILURE() << "alert " << alert << " uses `" << metric << "`, which " << kPage
                      << " does not document";
        continue;
      }
      EXPECT_TRUE(absl::StrContains(doc->second.used_by, absl::StrCat("`", alert, "`")))
          << kPage << ":" << doc->second.row.line << ": `" << metric << "` is used by alert "
          << alert << "; name it in the \"used by\" column";
    }
  }
  for (const auto& [metric, doc] : documented) {
    for (const std::string& span : CodeSpans(doc.used_by)) {
      if (!absl::StartsWith(span, "Fairwatch")) continue;
      auto alert = alert_metrics.find(span);
      if (alert == alert_metrics.end()) {
        ADD_FAILURE() << kPage << ":" << doc.row.line << ": alert " << span << " named for `"
                      << metric << "` is not in " << kRules;
        continue;
      }
      EXPECT_TRUE(alert->second.contains(metric)) << kPage << ":" << doc.row.line << ": alert "
                                                  << span << " does not use `" << metric << "`";
    }
  }
}

TEST(MetricsReference, DashboardMetricsAreDocumentedAsUsedByTheDashboard) {
  const std::string dashboard = ReadFileToString(kDashboard).value_or("");
  if (dashboard.empty()) GTEST_SKIP() << kDashboard << " is not there (yet)";
  const std::map<std::string, DocMetric> documented = AllDocumented();
  // The dashboard reads recorded series of the rules file too.
  const std::map<std::string, std::set<std::string>> recorded =
      RecordedMetrics(ParseRules(ReadFileToString(kRules).value_or("")), documented);
  std::set<std::string> used;
  const std::vector<std::string> queries = DashboardQueries(dashboard);
  ASSERT_FALSE(queries.empty()) << kDashboard << " has no \"expr\" or \"query\"";
  for (const std::string& query : queries) {
    for (const std::string& id : Identifiers(query)) {
      if (absl::StrContains(id, ':')) {
        EXPECT_TRUE(recorded.contains(id))
            << "the dashboard reads `" << id << "`, which " << kRules << " does not record";
      }
    }
    used.merge(MetricsOf(query, recorded, documented));
  }
  for (const std::string& metric : used) {
    auto doc = documented.find(metric);
    if (doc == documented.end()) {
      ADD_FAILURE() << "the dashboard uses `" << metric << "`, which " << kPage
                    << " does not document";
      continue;
    }
    EXPECT_TRUE(absl::StrContains(doc->second.used_by, "dashboard"))
        << kPage << ":" << doc->second.row.line << ": `" << metric
        << "` is on the dashboard; say so in the \"used by\" column";
  }
  for (const auto& [metric, doc] : documented) {
    if (!absl::StrContains(doc.used_by, "dashboard")) continue;
    EXPECT_TRUE(used.contains(metric))
        << kPage << ":" << doc.row.line << ": `" << metric
        << "` is said to be on the dashboard but " << kDashboard << " does not use it";
  }
}

}  // namespace
}  // namespace fairwatch
