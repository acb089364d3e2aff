#include "tests/e2e/harness.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/cgroup_layout.h"
#include "cli/format.h"
#include "google/protobuf/util/json_util.h"

namespace fairwatch::testing::e2e {
namespace {

std::atomic<bool> g_interrupted{false};

void OnSignal(int /*signo*/) { g_interrupted.store(true); }

void ThrowIfInterrupted() {
  if (g_interrupted.load()) throw Interrupted{};
}

// Set once before any Stack starts (SetAgentWrapper).
std::vector<std::string>& AgentWrapper() {
  static std::vector<std::string> wrapper;
  return wrapper;
}

}  // namespace

void SetAgentWrapper(std::vector<std::string> wrapper) { AgentWrapper() = std::move(wrapper); }

std::string Tail(const std::string& text, size_t lines) {
  size_t at = text.size();
  for (size_t n = 0; n <= lines && at > 0; ++n) {
    at = text.rfind('\n', at - 1);
    if (at == std::string::npos) return text;
  }
  return text.substr(at + 1);
}

void InstallInterruptHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int signo : {SIGINT, SIGTERM, SIGHUP}) sigaction(signo, &sa, nullptr);
  // A closed stdout (the demo piped into head) must not kill us before cleanup.
  signal(SIGPIPE, SIG_IGN);
}

void Pause(absl::Duration d) {
  const absl::Time end = absl::Now() + d;
  while (absl::Now() < end) {
    ThrowIfInterrupted();
    absl::SleepFor(std::min(absl::Milliseconds(50), end - absl::Now()));
  }
  ThrowIfInterrupted();
}

bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout, absl::Duration every) {
  const absl::Time end = absl::Now() + timeout;
  while (true) {
    ThrowIfInterrupted();
    if (done()) return true;
    if (absl::Now() >= end) return false;
    Pause(std::min(every, end - absl::Now()));
  }
}

void Narrator::Say(absl::string_view what) const {
  if (!on_) return;
  std::printf("[%6.1f s] %.*s\n", absl::ToDoubleSeconds(absl::Now() - t0_),
              static_cast<int>(what.size()), what.data());
  std::fflush(stdout);
}

void Narrator::Show(absl::string_view block) const {
  if (!on_) return;
  for (absl::string_view line : absl::StrSplit(block, '\n', absl::SkipEmpty())) {
    std::printf("            %.*s\n", static_cast<int>(line.size()), line.data());
  }
  std::fflush(stdout);
}

bool Outcome::Check(bool ok, absl::string_view what) {
  if (!ok) failures_.emplace_back(what);
  return ok;
}

void Outcome::Figure(const std::string& name, double value, absl::string_view unit) {
  figures_.push_back({name, value, std::string(unit)});
}

std::vector<std::string> TenantMounts::all() const {
  std::vector<std::string> out{cpu};
  for (const std::string* m : {&cpu_counter, &blkio}) {
    if (!m->empty() && std::find(out.begin(), out.end(), *m) == out.end()) out.push_back(*m);
  }
  return out;
}

absl::StatusOr<TenantMounts> FindCgroupMounts() {
  absl::StatusOr<agent::CgroupMounts> mounts = agent::ReadCgroupMounts();
  if (!mounts.ok()) return mounts.status();
  absl::StatusOr<std::string> hierarchy = agent::ChooseCpuHierarchy(*mounts, "auto");
  if (!hierarchy.ok()) return hierarchy.status();
  TenantMounts out;
  out.cpu_hierarchy = *hierarchy;
  absl::StatusOr<std::string> cpu = mounts->MountOf(*hierarchy);
  if (!cpu.ok()) return cpu.status();
  out.cpu = *cpu;
  if (*hierarchy == "cpu") {
    absl::StatusOr<std::string> cpuacct = mounts->MountOf("cpuacct");
    if (!cpuacct.ok()) return absl::FailedPreconditionError("hybrid host without cpuacct");
    out.cpu_counter = *cpuacct;
    absl::StatusOr<std::string> blkio = mounts->MountOf("blkio");
    if (blkio.ok()) out.blkio = *blkio;
  } else {
    out.cpu_counter = *cpu;
    out.blkio = *cpu;
  }
  return out;
}

Tenants::Tenants(TenantMounts mounts)
    : mounts_(std::move(mounts)), tree_(mounts_.all(), UniqueCgroupPrefix()) {}

absl::Status Tenants::Add(const std::string& name) {
  absl::Status made = tree_.Create({});
  if (!made.ok()) return made;
  return tree_.AddChild(name);
}

absl::Status Tenants::Run(const std::string& name, const std::vector<std::string>& argv) {
  absl::StatusOr<pid_t> pid = tree_.SpawnCommand(name, argv);
  return pid.ok() ? absl::OkStatus() : pid.status();
}

absl::StatusOr<pid_t> Tenants::Spawn(const std::string& name,
                                     const std::vector<std::string>& argv) {
  return tree_.SpawnCommand(name, argv);
}

void Tenants::Stop(const std::string& name) { tree_.KillIn(name); }

std::optional<uint64_t> Tenants::CpuNs(const std::string& name) const {
  if (mounts_.cpu_hierarchy == "cpu") {
    absl::StatusOr<std::string> text = tree_.ReadFile(mounts_.cpu_counter, name, "cpuacct.usage");
    uint64_t ns = 0;
    if (text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &ns)) return ns;
    return std::nullopt;
  }
  absl::StatusOr<std::string> text = tree_.ReadFile(mounts_.cpu_counter, name, "cpu.stat");
  if (!text.ok()) return std::nullopt;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    std::vector<absl::string_view> kv = absl::StrSplit(line, ' ');
    uint64_t us = 0;
    if (kv.size() == 2 && kv[0] == "usage_usec" && absl::SimpleAtoi(kv[1], &us)) return us * 1000;
  }
  return std::nullopt;
}

std::optional<double> Tenants::CpuLimit(const std::string& name) const {
  if (mounts_.cpu_hierarchy == "cpu") {
    absl::StatusOr<std::string> quota = tree_.ReadFile(mounts_.cpu, name, "cpu.cfs_quota_us");
    absl::StatusOr<std::string> period = tree_.ReadFile(mounts_.cpu, name, "cpu.cfs_period_us");
    int64_t q = -1;
    int64_t p = 0;
    if (!quota.ok() || !period.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*quota), &q) ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(*period), &p) || q < 0 || p <= 0) {
      return std::nullopt;
    }
    return static_cast<double>(q) / static_cast<double>(p);
  }
  absl::StatusOr<std::string> max = tree_.ReadFile(mounts_.cpu, name, "cpu.max");
  if (!max.ok()) return std::nullopt;
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(*max), ' ', absl::SkipEmpty());
  double q = 0;
  double p = 0;
  if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &q) || !absl::SimpleAtod(parts[1], &p) ||
      p <= 0) {
    return std::nullopt;  // "max 100000"
  }
  return q / p;
}

std::optional<double> Tenants::CpuWeight(const std::string& name) const {
  const bool v1 = mounts_.cpu_hierarchy == "cpu";
  absl::StatusOr<std::string> text =
      tree_.ReadFile(mounts_.cpu, name, v1 ? "cpu.shares" : "cpu.weight");
  double w = 0;
  if (!text.ok() || !absl::SimpleAtod(absl::StripAsciiWhitespace(*text), &w)) return std::nullopt;
  return w / (v1 ? 1024.0 : 100.0);
}

std::string Tenants::CpuHeldBack(const std::string& name) const {
  std::vector<std::string> how;
  if (std::optional<double> cap = CpuLimit(name)) {
    how.push_back(absl::StrCat("quota ", cli::FormatAmount(*cap, v1::RESOURCE_CPU)));
  }
  if (std::optional<double> w = CpuWeight(name); w && *w < 1) {
    how.push_back(absl::StrCat("weight ", cli::FormatPercent(*w), " of a plain cgroup's"));
  }
  return absl::StrJoin(how, ", ");
}

std::map<std::string, double> Tenants::CpuRates(const std::vector<std::string>& names,
                                                absl::Duration span) const {
  std::map<std::string, std::optional<uint64_t>> before;
  for (const std::string& n : names) before[n] = CpuNs(n);
  const absl::Time t0 = absl::Now();
  Pause(span);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  std::map<std::string, double> rates;
  for (const std::string& n : names) {
    const std::optional<uint64_t> after = CpuNs(n);
    rates[n] = before[n] && after && *after >= *before[n]
                   ? static_cast<double>(*after - *before[n]) / 1e9 / seconds
                   : std::nan("");
  }
  return rates;
}

bool ParseJsonInto(const std::string& text, google::protobuf::Message* out, std::string* error) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(text, out, options);
  if (!status.ok() && error != nullptr) *error = std::string(status.message());
  return status.ok();
}

Stack::Stack(Binaries binaries, std::string dir, Options options)
    : binaries_(std::move(binaries)), dir_(std::move(dir)), options_(std::move(options)) {
  address_ = absl::StrCat("127.0.0.1:", PickFreePort());
  state_dir_ = dir_ + "/agent-state";
  if (options_.metrics) {
    agent_metrics_port_ = PickFreePort();
    do {
      controller_metrics_port_ = PickFreePort();
    } while (controller_metrics_port_ > 0 && controller_metrics_port_ == agent_metrics_port_);
  }
}

namespace {

std::string MetricsAddress(int port) { return port > 0 ? absl::StrCat("127.0.0.1:", port) : "off"; }

}  // namespace

Stack::~Stack() {
  agent_.reset();  // first: it clears nothing on exit, but stops writing
  controller_.reset();
}

absl::Status Stack::StartController() {
  const std::string config = dir_ + "/controller.textproto";
  {
    std::ofstream out(config);
    out << "listen_address: \"" << address_ << "\"\n"
        << "insecure_plaintext: true\n"
        << "database_path: \"" << dir_ << "/controller.db\"\n"
        << "metrics_address: \"" << MetricsAddress(controller_metrics_port_) << "\"\n"
        << "fairness {\n"
        << options_.fairness << "\n}\n";
    if (!out) return absl::InternalError("writing " + config);
  }
  std::vector<std::string> argv = {binaries_.controller, "--config", config};
  // FW_SCENARIO_CONTROLLER_LOG=debug: how every interval was judged, in controller.log.
  if (const char* level = getenv("FW_SCENARIO_CONTROLLER_LOG"); level != nullptr) {
    argv.insert(argv.end(), {"--log-level", level});
  }
  controller_ = std::make_unique<Daemon>(std::move(argv), dir_ + "/controller.log");
  if (!controller_->Start()) return absl::InternalError("cannot start " + binaries_.controller);
  // Up when it answers.
  if (!WaitUntil([&] { return Cli({"hosts"}).exit_code == 0 || !controller_->Running(); },
                 absl::Seconds(15), absl::Milliseconds(100)) ||
      !controller_->Running()) {
    return absl::InternalError(
        absl::StrCat("the controller did not come up; its log:\n", Tail(controller_->Log(), 20)));
  }
  return absl::OkStatus();
}

void Stack::KillController() {
  if (controller_) controller_->Kill();
}

absl::Status Stack::Start(size_t tenants) {
  absl::Status up = StartController();
  if (!up.ok()) return up;
  const std::string config = dir_ + "/agent.textproto";
  {
    std::ofstream out(config);
    out << "controller_address: \"" << address_ << "\"\n"
        << "insecure_plaintext: true\n"
        << "host_id: \"" << host_id_ << "\"\n"
        << "metrics_address: \"" << MetricsAddress(agent_metrics_port_) << "\"\n"
        << "state_dir: \"" << state_dir_ << "\"\n";
    for (const auto& [path, weight] : options_.parents) {
      out << "cgroup_parents { path: \"" << path << "\" weight: " << weight << " }\n";
    }
    out << options_.agent_extra << "\n";
    if (!out) return absl::InternalError("writing " + config);
  }
  std::vector<std::string> argv = AgentWrapper();
  argv.insert(argv.end(), {binaries_.agent, "--config", config});
  agent_ = std::make_unique<Daemon>(std::move(argv), dir_ + "/agent.log");
  if (!agent_->Start()) return absl::InternalError("cannot start " + binaries_.agent);
  if (!WaitForTenants(tenants, absl::Seconds(30))) {
    return absl::DeadlineExceededError(absl::StrCat("the agent did not report ", tenants,
                                                    " tenants within 30 s; its log:\n",
                                                    Tail(agent_->Log(), 20)));
  }
  return absl::OkStatus();
}

bool Stack::WaitForTenants(size_t n, absl::Duration timeout) {
  return WaitUntil(
      [&] {
        v1::ListTenantsResponse tenants;
        return CliJson({"tenants", "--host", host_id_}, &tenants) &&
               static_cast<size_t>(tenants.tenants_size()) == n;
      },
      timeout, absl::Milliseconds(200));
}

CommandResult Stack::Cli(const std::vector<std::string>& args) {
  std::vector<std::string> with_operator{"--operator", "scenario"};
  with_operator.insert(with_operator.end(), args.begin(), args.end());
  return RunCliJson(binaries_.cli, address_, with_operator);
}

CommandResult Stack::CliTable(const std::vector<std::string>& args) {
  std::vector<std::string> argv{binaries_.cli, "--insecure-plaintext", "--controller",
                                address_,      "--operator",           "scenario"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

bool Stack::ControllerRunning() { return controller_ && controller_->Running(); }

std::optional<std::vector<v1::Case>> Stack::Cases(const std::string& tenant_id) {
  std::vector<std::string> args{"cases", "--limit", "1000", "--host", host_id_};
  if (!tenant_id.empty()) {
    args.push_back("--tenant");
    args.push_back(tenant_id);
  }
  v1::ListCasesResponse response;
  if (!CliJson(args, &response)) return std::nullopt;
  std::vector<v1::Case> cases(response.cases().begin(), response.cases().end());
  std::sort(cases.begin(), cases.end(),
            [](const v1::Case& a, const v1::Case& b) { return a.case_id() < b.case_id(); });
  return cases;
}

std::optional<v1::HostInfo> Stack::Host() {
  v1::ListHostsResponse hosts;
  if (!CliJson({"hosts"}, &hosts)) return std::nullopt;
  for (const v1::HostInfo& h : hosts.hosts()) {
    if (h.host_id() == host_id_) return h;
  }
  return std::nullopt;
}

std::string Stack::Logs() const {
  std::string out;
  if (controller_) absl::StrAppend(&out, "--- controller log ---\n", Tail(controller_->Log(), 25));
  if (agent_) absl::StrAppend(&out, "--- agent log ---\n", Tail(agent_->Log(), 25));
  return out;
}

std::vector<v1::Case> CaseWatcher::Poll() {
  std::optional<std::vector<v1::Case>> read = stack_->Cases();
  last_ok_ = read.has_value();
  std::vector<v1::Case> cases = read ? std::move(*read) : std::vector<v1::Case>{};
  for (const v1::Case& c : cases) {
    std::string& said = seen_[c.case_id()];
    const std::string who = absl::StrCat("case ", c.case_id(), " (", c.tenant_name(), ", ",
                                         cli::ResourceName(c.resource()), ")");
    if (said.empty()) {
      const v1::CaseAction* first = c.actions_size() > 0 ? &c.actions(0) : nullptr;
      narrator_->Say(
          absl::StrCat(who, " opened by ", c.opened_by(), c.dry_run() ? " as a dry run" : "", ": ",
                       first != nullptr ? first->reason() : std::string("(no action yet)")));
    }
    // Each action once, with the agent's answer once it has one.
    std::vector<std::string> lines;
    for (const v1::CaseAction& a : c.actions()) {
      if (a.kind() == v1::ACTION_KIND_RENEW) continue;
      lines.push_back(absl::StrCat(a.action_id(), ":", a.ack()));
    }
    const std::string state = absl::StrCat(absl::StrJoin(lines, ","), "|", c.state());
    if (state == said) continue;
    const std::vector<std::string> before = absl::StrSplit(said, absl::ByAnyChar(",|"));
    for (const v1::CaseAction& a : c.actions()) {
      if (a.kind() == v1::ACTION_KIND_RENEW) continue;
      const std::string key = absl::StrCat(a.action_id(), ":", a.ack());
      if (std::find(before.begin(), before.end(), key) != before.end()) continue;
      if (a.ack() == v1::ACK_STATE_PENDING) continue;  // said when answered
      narrator_->Say(absl::StrCat(who, ": ", DescribeAction(c, a)));
    }
    if (c.state() == v1::CASE_STATE_CLOSED &&
        said.find(absl::StrCat("|", v1::CASE_STATE_CLOSED)) == std::string::npos) {
      narrator_->Say(absl::StrCat(who, " closed: ", c.close_reason()));
    }
    said = state;
  }
  return cases;
}

std::string Which(const std::string& tool) {
  const char* path = getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir, "/", tool);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string Seconds(double s) { return absl::StrFormat("%.2f s", s); }
std::string Cores(double c) { return absl::StrFormat("%.2f cores", c); }

std::string DescribeAction(const v1::Case& c, const v1::CaseAction& a) {
  std::string what;
  switch (a.kind()) {
    case v1::ACTION_KIND_LIMIT:
      what = a.limit() > 0 ? absl::StrCat("limit ", cli::FormatAmount(a.limit(), c.resource()))
                           : absl::StrCat("weight lowered to ", cli::FormatPercent(a.weight()),
                                          " of its own (the kernel serves the neighbours first)");
      break;
    case v1::ACTION_KIND_STEP_DOWN:
      what = absl::StrCat(a.weight() > 0 ? "capped at " : "stepped down to ",
                          cli::FormatAmount(a.limit(), c.resource()), " (", a.reason(), ")");
      break;
    case v1::ACTION_KIND_STEP_UP:
      what = absl::StrCat("stepped up to ", cli::FormatAmount(a.limit(), c.resource()));
      break;
    case v1::ACTION_KIND_RELEASE:
      what = "limit removed";
      break;
    case v1::ACTION_KIND_SKIP:
      what = absl::StrCat("left alone (", a.reason(), ")");
      break;
    default:
      what = "?";
  }
  switch (a.ack()) {
    case v1::ACK_STATE_APPLIED:
      absl::StrAppend(&what, ", applied by the agent");
      if (a.has_in_effect()) {
        absl::StrAppend(&what, " (in effect ",
                        a.weight() > 0 && a.limit() == 0
                            ? absl::StrCat("weight ", cli::FormatPercent(a.in_effect()))
                            : cli::FormatAmount(a.in_effect(), c.resource()),
                        ")");
      }
      break;
    case v1::ACK_STATE_FAILED:
      absl::StrAppend(&what, ", FAILED on the agent: ", a.ack_message());
      break;
    case v1::ACK_STATE_NOT_SENT:
      absl::StrAppend(&what, a.dry_run() ? ", not sent (dry run)" : ", nothing sent");
      break;
    default:
      break;
  }
  return what;
}

double Since(absl::Time t0, int64_t unix_ns) {
  return absl::ToDoubleSeconds(absl::FromUnixNanos(unix_ns) - t0);
}

std::vector<int64_t> LimitChangeTimes(const std::vector<v1::Case>& cases) {
  std::vector<int64_t> times;
  for (const v1::Case& c : cases) {
    for (const v1::CaseAction& a : c.actions()) {
      if (a.kind() == v1::ACTION_KIND_LIMIT || a.kind() == v1::ACTION_KIND_STEP_DOWN ||
          a.kind() == v1::ACTION_KIND_STEP_UP || a.kind() == v1::ACTION_KIND_RELEASE) {
        times.push_back(a.at_unix_ns());
      }
    }
  }
  std::sort(times.begin(), times.end());
  return times;
}

}  // namespace fairwatch::testing::e2e
