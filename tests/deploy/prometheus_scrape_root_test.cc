// The shipped monitoring against the real daemons: a controller and an agent
// on loopback (tests/e2e/harness.h) watch a cgroup tenant this test creates
// and keeps half a core busy. promtool lints both /metrics texts; a real
// Prometheus scrapes them every second with deploy/prometheus/fairwatch.rules.yml
// loaded; its HTTP API must return the tenant's CPU counter, its usage share,
// the recorded per-tenant rate, healthy rules and no alert; and every query
// of deploy/grafana/fairwatch-dashboard.json must read only metrics the
// daemons expose and parse in that Prometheus.
//
// Needs root (BPF, cgroups) and prometheus + promtool (deploy/install-deps.sh).
// Both tests share one stack, started by the first.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/tls.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/deploy/monitoring_checks.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/process.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::testing::deploy {
namespace {

namespace e2e = ::fairwatch::testing::e2e;
using google::protobuf::Struct;
using google::protobuf::Value;

const std::string kRules = std::string(FW_SOURCE_DIR) + "/deploy/prometheus/fairwatch.rules.yml";
const std::string kDashboard =
    std::string(FW_SOURCE_DIR) + "/deploy/grafana/fairwatch-dashboard.json";
constexpr absl::Duration kDataTimeout = absl::Seconds(45);

struct Sample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Everything the test starts; destroyed in reverse: Prometheus, the daemons,
// then the tenant's cgroups and workload.
struct Live {
  std::string dir;
  std::unique_ptr<e2e::Tenants> tenants;
  std::unique_ptr<e2e::Stack> stack;
  std::unique_ptr<Daemon> prometheus;
  int prometheus_port = 0;
  std::string tenant_id;

  ~Live() {
    prometheus.reset();
    stack.reset();
    tenants.reset();
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
  }

  std::string Logs() const {
    std::string out = stack != nullptr ? stack->Logs() : "";
    if (prometheus != nullptr) {
      absl::StrAppend(&out, "--- prometheus log ---\n", e2e::Tail(prometheus->Log(), 25));
    }
    return out;
  }

  // GET on Prometheus' API: the reply's "data", or why not.
  absl::StatusOr<Value> Api(const std::string& path, const httplib::Params& params = {}) const {
    httplib::Client client("127.0.0.1", prometheus_port);
    client.set_connection_timeout(2);
    client.set_read_timeout(10);
    auto reply = client.Get(path, params, httplib::Headers{});
    if (!reply) return absl::UnavailableError(absl::StrCat("GET ", path, ": no reply"));
    Struct root;
    auto parsed = google::protobuf::util::JsonStringToMessage(reply->body, &root);
    if (!parsed.ok()) {
      return absl::InternalError(absl::StrCat("GET ", path, ": HTTP ", reply->status,
                                              ", not JSON: ", e2e::Tail(reply->body, 3)));
    }
    if (StringField(root, "status") != "success") {
      return absl::InvalidArgumentError(absl::StrCat(
          "GET ", path, ": ", StringField(root, "errorType"), ": ", StringField(root, "error")));
    }
    const Value* data = Field(root, "data");
    return data != nullptr ? *data : Value();
  }

  // An instant query's samples (a scalar is one sample without labels).
  absl::StatusOr<std::vector<Sample>> Query(const std::string& promql) const {
    absl::StatusOr<Value> data = Api("/api/v1/query", {{"query", promql}});
    if (!data.ok()) return data.status();
    const Struct& d = data->struct_value();
    const Value* result = Field(d, "result");
    if (result == nullptr) return absl::InternalError("no result in " + promql + "'s reply");
    auto value_of = [](const Value& pair) {
      double v = 0;
      if (pair.list_value().values_size() == 2) {
        (void)absl::SimpleAtod(pair.list_value().values(1).string_value(), &v);
      }
      return v;
    };
    std::vector<Sample> samples;
    if (StringField(d, "resultType") == "scalar") {
      samples.push_back({{}, value_of(*result)});
      return samples;
    }
    for (const Value& entry : result->list_value().values()) {
      Sample s;
      if (const Value* metric = Field(entry.struct_value(), "metric")) {
        for (const auto& [k, v] : metric->struct_value().fields()) s.labels[k] = v.string_value();
      }
      if (const Value* value = Field(entry.struct_value(), "value")) s.value = value_of(*value);
      samples.push_back(std::move(s));
    }
    return samples;
  }

  // The first sample of `promql` once it has one with a value above `above`.
  std::optional<Sample> WaitForSample(const std::string& promql, double above = 0) const {
    std::optional<Sample> found;
    e2e::WaitUntil(
        [&] {
          absl::StatusOr<std::vector<Sample>> samples = Query(promql);
          if (!samples.ok()) return false;
          for (const Sample& s : *samples) {
            if (s.value > above) found = s;
          }
          return found.has_value();
        },
        kDataTimeout, absl::Milliseconds(500));
    return found;
  }
};

absl::StatusOr<std::string> FetchMetrics(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  client.set_read_timeout(10);
  auto reply = client.Get("/metrics");
  if (!reply || reply->status != 200) {
    return absl::UnavailableError(absl::StrCat("GET 127.0.0.1:", port, "/metrics failed"));
  }
  return reply->body;
}

// promtool reads the exposition on stdin and prints one line per problem.
CommandResult PromtoolCheckMetrics(const std::string& promtool, const std::string& text,
                                   const std::string& dir) {
  const std::string path = dir + "/metrics.txt";
  std::ofstream(path) << text;
  return RunCommand({"/bin/sh", "-c", absl::StrCat("exec ", promtool, " check metrics < ", path)});
}

class PrometheusScrapeRoot : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { live_.reset(); }

  void SetUp() override {
    if (!IsRoot()) GTEST_SKIP() << "needs root: the agent loads BPF; the test creates cgroups";
    promtool_ = e2e::Which("promtool");
    prometheus_ = e2e::Which("prometheus");
    if (promtool_.empty() || prometheus_.empty()) {
      GTEST_SKIP() << "prometheus and promtool are not installed (deploy/install-deps.sh)";
    }
    if (!start_error_.empty()) FAIL() << "the stack did not start: " << start_error_;
    if (live_ == nullptr) {
      auto live = std::make_unique<Live>();
      absl::Status started = Start(*live);
      if (!started.ok()) {
        start_error_ = absl::StrCat(started.message(), "\n", live->Logs());
        FAIL() << start_error_;
      }
      live_ = std::move(live);
    }
  }

  void TearDown() override {
    if (HasFailure() && live_ != nullptr) std::cerr << live_->Logs();
  }

  absl::Status Start(Live& live) {
    absl::StatusOr<e2e::TenantMounts> mounts = e2e::FindCgroupMounts();
    if (!mounts.ok()) return mounts.status();
    char tmpl[] = "/tmp/fwprom-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
    live.dir = tmpl;
    live.tenants = std::make_unique<e2e::Tenants>(*mounts);
    if (absl::Status added = live.tenants->Add("busy"); !added.ok()) return added;
    live.tenant_id = live.tenants->Id("busy");
    e2e::Stack::Options options;
    options.parents = {{live.tenants->prefix(), 1}};
    options.metrics = true;
    live.stack = std::make_unique<e2e::Stack>(
        e2e::Binaries{FW_AGENT_BIN, FW_CONTROLLER_BIN, FW_CLI_BIN}, live.dir, options);
    if (absl::Status up = live.stack->Start(1); !up.ok()) return up;
    absl::StatusOr<pid_t> busy = live.tenants->tree().SpawnWorkload("busy", 0.5);
    if (!busy.ok()) return busy.status();

    live.prometheus_port = PickFreePort();
    const std::string config = live.dir + "/prometheus.yml";
    {
      std::ofstream out(config);
      out << "global:\n"
          << "  scrape_interval: 1s\n"
          << "  scrape_timeout: 1s\n"
          << "  evaluation_interval: 1s\n"
          << "rule_files:\n"
          << "  - " << kRules << "\n"
          << "scrape_configs:\n"
          << "  - job_name: fairwatch-agent\n"
          << "    static_configs:\n"
          << "      - targets: ['127.0.0.1:" << live.stack->agent_metrics_port() << "']\n"
          << "  - job_name: fairwatch-controller\n"
          << "    static_configs:\n"
          << "      - targets: ['127.0.0.1:" << live.stack->controller_metrics_port() << "']\n";
      if (!out) return absl::InternalError("writing " + config);
    }
    live.prometheus = std::make_unique<Daemon>(
        std::vector<std::string>{
            prometheus_, "--config.file=" + config, "--storage.tsdb.path=" + live.dir + "/tsdb",
            absl::StrCat("--web.listen-address=127.0.0.1:", live.prometheus_port)},
        live.dir + "/prometheus.log");
    const absl::Time t0 = absl::Now();
    if (!live.prometheus->Start()) return absl::InternalError("cannot start " + prometheus_);
    const bool ready = e2e::WaitUntil(
        [&] {
          httplib::Client client("127.0.0.1", live.prometheus_port);
          client.set_connection_timeout(1);
          auto reply = client.Get("/-/ready");
          return (reply && reply->status == 200) || !live.prometheus->Running();
        },
        absl::Seconds(30), absl::Milliseconds(200));
    if (!ready || !live.prometheus->Running()) {
      return absl::UnavailableError("prometheus did not become ready");
    }
    std::cout << "prometheus ready after " << absl::FormatDuration(absl::Now() - t0) << "\n";
    return absl::OkStatus();
  }

  static std::unique_ptr<Live> live_;
  static std::string start_error_;
  std::string promtool_;
  std::string prometheus_;
};

std::unique_ptr<Live> PrometheusScrapeRoot::live_;
std::string PrometheusScrapeRoot::start_error_;

TEST_F(PrometheusScrapeRoot, DaemonsLintCleanAndPrometheusScrapesThemAndRunsTheRules) {
  const Live& live = *live_;
  const e2e::Stack& stack = *live.stack;
  // Lint: promtool's problems are naming, units, HELP/TYPE, counters' _total.
  for (const auto& [daemon, port] :
       {std::pair<const char*, int>{"agent", stack.agent_metrics_port()},
        {"controller", stack.controller_metrics_port()}}) {
    absl::StatusOr<std::string> text = FetchMetrics(port);
    ASSERT_TRUE(text.ok()) << text.status();
    const CommandResult lint = PromtoolCheckMetrics(promtool_, *text, live.dir);
    EXPECT_EQ(lint.exit_code, 0) << daemon << ": " << lint.out << lint.err;
    EXPECT_EQ(lint.out + lint.err, "") << daemon << " /metrics has lint problems";
    std::cout << daemon << " /metrics: " << text->size() << " bytes, promtool check metrics exit "
              << lint.exit_code << "\n";
  }

  const absl::Time t0 = absl::Now();
  const std::string tenant = absl::StrCat("tenant=\"", live.tenant_id, "\"");
  std::optional<Sample> cpu =
      live.WaitForSample(absl::StrCat("fairwatch_tenant_cpu_seconds_total{", tenant, "}"));
  ASSERT_TRUE(cpu.has_value()) << "no CPU seconds of " << live.tenant_id << " in Prometheus";
  EXPECT_EQ(cpu->labels["job"], "fairwatch-agent");
  std::cout << "tenant CPU counter in Prometheus after " << absl::FormatDuration(absl::Now() - t0)
            << ": " << cpu->value << " s\n";
  std::optional<Sample> share = live.WaitForSample(
      absl::StrCat("fairwatch_controller_tenant_usage_share{", tenant, ",resource=\"cpu\"}"));
  ASSERT_TRUE(share.has_value()) << "no usage share of " << live.tenant_id;
  EXPECT_EQ(share->labels["host"], stack.host_id());
  std::cout << "tenant CPU share of the host: " << share->value << "\n";

  const std::string host = absl::StrCat("host=\"", stack.host_id(), "\"");
  std::optional<Sample> connected =
      live.WaitForSample(absl::StrCat("fairwatch_controller_host_connected{", host, "}"));
  EXPECT_TRUE(connected.has_value() && connected->value == 1);
  std::optional<Sample> age = live.WaitForSample(
      absl::StrCat("time() - fairwatch_controller_host_last_report_timestamp_seconds{", host, "}"),
      -1);
  ASSERT_TRUE(age.has_value());
  EXPECT_LT(age->value, 5) << "seconds since the last report, agents report every second";
  for (const char* job : {"fairwatch-agent", "fairwatch-controller"}) {
    std::optional<Sample> up = live.WaitForSample(absl::StrCat("up{job=\"", job, "\"}"));
    EXPECT_TRUE(up.has_value()) << job << " is not up";
  }

  // Every rule of the file loaded and evaluated without error.
  absl::StatusOr<std::string> rules_text = ReadFileToString(kRules);
  ASSERT_TRUE(rules_text.ok());
  absl::StatusOr<RuleFile> file = ParseRuleFile(*rules_text);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> unhealthy;
  std::vector<std::string> without_guidance;  // alerts missing severity, summary or description
  size_t loaded = 0;
  e2e::WaitUntil(
      [&] {
        absl::StatusOr<Value> data = live.Api("/api/v1/rules");
        if (!data.ok()) return false;
        unhealthy.clear();
        without_guidance.clear();
        loaded = 0;
        const Value* groups = Field(data->struct_value(), "groups");
        if (groups == nullptr) return false;
        for (const Value& group : groups->list_value().values()) {
          for (const Value& rule : Field(group.struct_value(), "rules")->list_value().values()) {
            const Struct& r = rule.struct_value();
            ++loaded;
            if (StringField(r, "health") != "ok") {
              unhealthy.push_back(absl::StrCat(StringField(r, "name"), ": ",
                                               StringField(r, "health"), " ",
                                               StringField(r, "lastError")));
            }
            if (StringField(r, "type") == "alerting") {
              const Value* labels = Field(r, "labels");
              const Value* annotations = Field(r, "annotations");
              if (labels == nullptr || Field(labels->struct_value(), "severity") == nullptr ||
                  annotations == nullptr ||
                  Field(annotations->struct_value(), "summary") == nullptr ||
                  Field(annotations->struct_value(), "description") == nullptr) {
                without_guidance.push_back(StringField(r, "name"));
              }
            }
          }
        }
        return unhealthy.empty();
      },
      kDataTimeout, absl::Milliseconds(500));
  EXPECT_EQ(loaded, file->records.size() + file->alerts.size());
  EXPECT_TRUE(unhealthy.empty()) << absl::StrJoin(unhealthy, "\n");
  EXPECT_TRUE(without_guidance.empty()) << absl::StrJoin(without_guidance, ", ");
  std::cout << loaded << " rules loaded, all healthy: " << unhealthy.empty() << "\n";

  // A recording rule gives the tenant's cores, with the host joined in.
  std::optional<Sample> cores =
      live.WaitForSample(absl::StrCat("tenant:fairwatch_tenant_cpu_seconds:rate1m{", tenant, "}"));
  ASSERT_TRUE(cores.has_value()) << "the recording rule gave no series for " << live.tenant_id;
  EXPECT_EQ(cores->labels["host"], stack.host_id());
  std::cout << "tenant cores, first recorded rate[1m]: " << cores->value
            << " (rate() over a series younger than its range reads low)\n";

  // Units end to end: the agent's counter through Prometheus against the
  // kernel's over (nearly) the same 10 s. A wrong unit would be off by 1e3+;
  // the margin covers the windows' misalignment by a scrape or two.
  const std::map<std::string, double> kernel = live.tenants->CpuRates({"busy"}, absl::Seconds(10));
  absl::StatusOr<std::vector<Sample>> scraped =
      live.Query(absl::StrCat("rate(fairwatch_tenant_cpu_seconds_total{", tenant, "}[10s])"));
  ASSERT_TRUE(scraped.ok()) << scraped.status();
  ASSERT_EQ(scraped->size(), 1u);
  const double ratio = (*scraped)[0].value / kernel.at("busy");
  std::cout << "tenant cores over 10 s: Prometheus rate " << (*scraped)[0].value << ", kernel "
            << kernel.at("busy") << " (ratio " << ratio << ", workload duty 0.5)\n";
  EXPECT_GT(ratio, 0.65);
  EXPECT_LT(ratio, 1.35);

  // A healthy stack raises nothing, not even a pending alert (FairwatchControllerDown
  // may be pending for a moment before the first scrape, hence the wait).
  std::vector<std::string> active;
  e2e::WaitUntil(
      [&] {
        absl::StatusOr<Value> data = live.Api("/api/v1/alerts");
        if (!data.ok()) return false;
        active.clear();
        for (const Value& a : Field(data->struct_value(), "alerts")->list_value().values()) {
          const Value* labels = Field(a.struct_value(), "labels");
          active.push_back(absl::StrCat(StringField(labels->struct_value(), "alertname"), " (",
                                        StringField(a.struct_value(), "state"), ")"));
        }
        return active.empty();
      },
      absl::Seconds(15), absl::Milliseconds(500));
  EXPECT_TRUE(active.empty()) << "alerts on a healthy stack: " << absl::StrJoin(active, ", ");

  // An operator's limit opens a case: its series shows when, the agent's
  // answer is counted.
  const double before_s = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  CommandResult throttle = live_->stack->Cli({"throttle", live.tenant_id, "--host", stack.host_id(),
                                              "--cpu", "0.3", "--reason", "prometheus test"});
  ASSERT_EQ(throttle.exit_code, 0) << throttle.out << throttle.err;
  std::optional<Sample> opened = live.WaitForSample(
      absl::StrCat("fairwatch_controller_case_open_since_timestamp_seconds{", tenant, "}"));
  ASSERT_TRUE(opened.has_value()) << "no open-case series after a throttle";
  EXPECT_NEAR(opened->value, before_s, 5) << "opened at, Unix seconds";
  EXPECT_EQ(opened->labels["resource"], "cpu");
  EXPECT_EQ(opened->labels["host"], stack.host_id());
  EXPECT_FALSE(opened->labels["case"].empty());
  EXPECT_TRUE(live.WaitForSample("fairwatch_controller_acks_total{result=\"applied\"}").has_value())
      << "the agent's answer to the limit was not counted";
  std::cout << "case " << opened->labels["case"] << ": open-since series "
            << opened->value - before_s << " s after the throttle was issued\n";
}

TEST_F(PrometheusScrapeRoot, DashboardReadsOnlyLiveMetricsAndEveryQueryParses) {
  const Live& live = *live_;
  const e2e::Stack& stack = *live.stack;
  std::set<std::string> exposed{"up"};  // made by Prometheus for every target
  for (int port : {stack.agent_metrics_port(), stack.controller_metrics_port()}) {
    absl::StatusOr<std::string> text = FetchMetrics(port);
    ASSERT_TRUE(text.ok()) << text.status();
    for (const std::string& name : ExposedNames(*text)) exposed.insert(name);
  }
  absl::StatusOr<std::string> rules_text = ReadFileToString(kRules);
  ASSERT_TRUE(rules_text.ok());
  absl::StatusOr<RuleFile> rules = ParseRuleFile(*rules_text);
  ASSERT_TRUE(rules.ok()) << rules.status();
  absl::StatusOr<std::string> json = ReadFileToString(kDashboard);
  ASSERT_TRUE(json.ok());
  absl::StatusOr<Dashboard> dashboard = ParseDashboard(*json);
  ASSERT_TRUE(dashboard.ok()) << dashboard.status();
  ASSERT_FALSE(dashboard->queries.empty());

  // Wait for the recorded series the dashboard builds on.
  ASSERT_TRUE(
      live.WaitForSample(absl::StrCat("tenant:fairwatch_tenant_cpu_seconds:rate1m{tenant=\"",
                                      live.tenant_id, "\"}"))
          .has_value());
  // Panels that must show data on this stack: the host, the tenant's CPU
  // (share and cores), harm, the agent's cost.
  const std::vector<std::string> must_have_data = {
      "fairwatch_controller_host_connected",
      "resource=\"cpu\"",
      "tenant:fairwatch_tenant_cpu_seconds:rate1m",
      "tenant:fairwatch_tenant_runq_wait_seconds:rate1m",
      "instance:fairwatch_agent_cpu_seconds:rate1m",
      "fairwatch_agent_resident_memory_bytes"};
  size_t with_data = 0;
  for (const DashboardQuery& q : dashboard->queries) {
    const std::string promql = SubstituteVariables(q.expr, stack.host_id());
    EXPECT_THAT(MissingNames(MetricNamesIn(promql), exposed, *rules), ::testing::IsEmpty())
        << q.where << " reads metrics the live daemons do not expose: " << q.expr;
    absl::StatusOr<std::vector<Sample>> result = live.Query(promql);
    EXPECT_TRUE(result.ok()) << q.where << ": " << promql << "\n" << result.status();
    if (!result.ok()) continue;
    with_data += result->empty() ? 0 : 1;
    if (result->empty()) std::cout << "  no series (nothing of the kind here): " << q.where << "\n";
    for (const std::string& marker : must_have_data) {
      if (absl::StrContains(q.expr, marker) || absl::StrContains(q.where, "variable host")) {
        EXPECT_FALSE(result->empty()) << q.where << " shows nothing on a live stack: " << promql;
        break;
      }
    }
  }
  std::cout << dashboard->queries.size() << " dashboard queries parsed; " << with_data
            << " returned series on this stack\n";
}

}  // namespace
}  // namespace fairwatch::testing::deploy
