#include "cli/app.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/format.h"
#include "cli/views.h"
#include "common/status.h"
#include "common/tls.h"
#include "fairwatch/v1/config.pb.h"
#include "fairwatch/v1/operator.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace fairwatch::cli {
namespace {

std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "RequestStop runs in a signal handler");

// A fleet-wide tenant list is far bigger than gRPC's 4 MiB default.
constexpr int kMaxReceiveBytes = 256 << 20;
constexpr absl::Duration kStopPollInterval = absl::Milliseconds(50);
constexpr absl::string_view kClearScreen = "\033[H\033[2J";

struct GlobalOptions {
  std::string controller = "127.0.0.1:7400";
  bool insecure_plaintext = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string output = "table";
  double timeout_s = 5;
  std::string operator_name;
};

// Who runs the CLI, for the audit log: $SUDO_USER behind sudo, else the
// login name.
std::string DefaultOperator() {
  for (const char* variable : {"SUDO_USER", "USER", "LOGNAME"}) {
    const char* value = std::getenv(variable);
    if (value != nullptr && *value != '\0') return value;
  }
  if (const passwd* pw = getpwuid(getuid()); pw != nullptr) return pw->pw_name;
  return absl::StrCat("uid", getuid());
}

struct TopOptions {
  std::string host_id;
  std::string resource = "cpu";
  uint32_t limit = 0;
  uint32_t window_intervals = 0;
  bool once = false;
  double interval_s = 1;
};

std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"\r\n", " "}, {"\n", " "}, {"\r", " "}});
}

// Owns the channel for one invocation and turns failed calls into one-line
// messages and exit codes.
class ControllerSession {
 public:
  ControllerSession(const GlobalOptions& options, std::ostream& err)
      : options_(options), err_(err) {}

  absl::Status Connect() {
    v1::TlsConfig tls;
    tls.set_ca_file(options_.tls_ca);
    tls.set_cert_file(options_.tls_cert);
    tls.set_key_file(options_.tls_key);
    ASSIGN_OR_RETURN(auto credentials, MakeChannelCredentials(tls, options_.insecure_plaintext));
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
    channel_ = grpc::CreateCustomChannel(options_.controller, credentials, args);
    stub_ = v1::Operator::NewStub(channel_);
    return absl::OkStatus();
  }

  v1::Operator::Stub& stub() { return *stub_; }

  // Every call fails fast when the controller cannot be reached instead of
  // waiting for it to appear.
  std::unique_ptr<grpc::ClientContext> NewContext() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(options_.timeout_s)));
    context->set_wait_for_ready(false);
    return context;
  }

  int Fail(absl::string_view command, const grpc::Status& status) const {
    const bool never_connected = channel_->GetState(false) != GRPC_CHANNEL_READY;
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && never_connected)) {
      err_ << "fairwatch: cannot reach controller at " << options_.controller << ": "
           << OneLine(status.error_message())
           << " (is fairwatch-controller running? TLS/--insecure-plaintext must match the "
              "controller)\n";
      return kExitUnreachable;
    }
    std::string message = OneLine(status.error_message());
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      absl::StrAppend(&message, " (--timeout ", FormatSeconds(options_.timeout_s), ")");
    }
    err_ << "fairwatch: " << command << ": "
         << absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) << ": "
         << message << "\n";
    return kExitRpcError;
  }

 private:
  const GlobalOptions& options_;
  std::ostream& err_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Operator::Stub> stub_;
};

// The response as JSON or as the table render() makes of it.
int Print(absl::string_view command, const GlobalOptions& options,
          const google::protobuf::Message& response, const std::function<std::string()>& render,
          std::ostream& out, std::ostream& err) {
  if (options.output != "json") {
    out << render() << std::flush;
    return kExitOk;
  }
  absl::StatusOr<std::string> json = ToJson(response);
  if (!json.ok()) {
    err << "fairwatch: " << command << ": " << OneLine(json.status().message()) << "\n";
    return kExitRpcError;
  }
  out << *json << "\n" << std::flush;
  return kExitOk;
}

int RunHosts(const GlobalOptions& options, ControllerSession& session, std::ostream& out,
             std::ostream& err) {
  v1::ListHostsResponse response;
  const grpc::Status status =
      session.stub().ListHosts(session.NewContext().get(), v1::ListHostsRequest(), &response);
  if (!status.ok()) return session.Fail("hosts", status);
  return Print(
      "hosts", options, response, [&] { return HostsTable(response, absl::Now()); }, out, err);
}

int RunTenants(const GlobalOptions& options, const std::string& host_id, ControllerSession& session,
               std::ostream& out, std::ostream& err) {
  v1::ListTenantsRequest request;
  request.set_host_id(host_id);
  v1::ListTenantsResponse response;
  const grpc::Status status =
      session.stub().ListTenants(session.NewContext().get(), request, &response);
  if (!status.ok()) return session.Fail("tenants", status);
  return Print(
      "tenants", options, response, [&] { return TenantsTable(response); }, out, err);
}

int RunCases(const GlobalOptions& options, const v1::ListCasesRequest& request,
             ControllerSession& session, std::ostream& out, std::ostream& err) {
  v1::ListCasesResponse response;
  const grpc::Status status =
      session.stub().ListCases(session.NewContext().get(), request, &response);
  if (!status.ok()) return session.Fail("cases", status);
  return Print(
      "cases", options, response, [&] { return CasesTable(response, absl::Now()); }, out, err);
}

int RunCase(const GlobalOptions& options, uint64_t case_id, ControllerSession& session,
            std::ostream& out, std::ostream& err) {
  v1::GetCaseRequest request;
  request.set_case_id(case_id);
  v1::Case response;
  const grpc::Status status =
      session.stub().GetCase(session.NewContext().get(), request, &response);
  if (!status.ok()) return session.Fail("case", status);
  return Print(
      "case", options, response, [&] { return CaseReport(response); }, out, err);
}

int RunTenant(const GlobalOptions& options, const v1::GetTenantRequest& request,
              ControllerSession& session, std::ostream& out, std::ostream& err) {
  v1::TenantDetail response;
  const grpc::Status status =
      session.stub().GetTenant(session.NewContext().get(), request, &response);
  if (!status.ok()) return session.Fail("tenant", status);
  return Print(
      "tenant", options, response, [&] { return TenantReport(response); }, out, err);
}

// Sends one operator action and prints what came of it.
template <typename Request, typename Response>
int RunAction(absl::string_view command, const GlobalOptions& options, ControllerSession& session,
              grpc::Status (v1::Operator::Stub::*call)(grpc::ClientContext*, const Request&,
                                                       Response*),
              const Request& request, const std::function<std::string(const Response&)>& render,
              std::ostream& out, std::ostream& err) {
  Response response;
  const grpc::Status status =
      (session.stub().*call)(session.NewContext().get(), request, &response);
  if (!status.ok()) return session.Fail(command, status);
  return Print(
      command, options, response, [&] { return render(response); }, out, err);
}

// False when a stop was requested before the time was up.
bool SleepUnlessStopped(absl::Duration duration) {
  const absl::Time until = absl::Now() + duration;
  while (!stop_requested.load()) {
    const absl::Duration left = until - absl::Now();
    if (left <= absl::ZeroDuration()) return true;
    absl::SleepFor(std::min(left, kStopPollInterval));
  }
  return false;
}

int RunTop(const GlobalOptions& options, const TopOptions& top, ControllerSession& session,
           std::ostream& out, std::ostream& err, bool out_is_terminal) {
  v1::TopRequest request;
  request.set_host_id(top.host_id);
  v1::Resource resource = v1::RESOURCE_CPU;
  ParseResourceName(top.resource, &resource);  // checked by the parser
  request.set_resource(resource);
  request.set_limit(top.limit);
  request.set_window_intervals(top.window_intervals);
  const bool json = options.output == "json";

  for (bool first_frame = true;; first_frame = false) {
    v1::TopResponse response;
    const grpc::Status status = session.stub().Top(session.NewContext().get(), request, &response);
    if (!status.ok()) return session.Fail("top", status);

    if (json || top.once) {
      const int code = Print(
          "top", options, response, [&] { return TopTable(response); }, out, err);
      if (code != kExitOk || top.once) return code;
    } else {
      const absl::Time computed = response.computed_unix_ns() > 0
                                      ? absl::FromUnixNanos(response.computed_unix_ns())
                                      : absl::Now();
      std::string header = absl::StrCat(FormatTimestampUtc(computed), "  ", options.controller,
                                        "  top ", top.resource);
      std::string frame;
      if (out_is_terminal) {
        frame = absl::StrCat(kClearScreen, header, "  (every ", FormatSeconds(top.interval_s),
                             ", Ctrl-C quits)\n\n", TopTable(response));
      } else {
        frame = absl::StrCat(first_frame ? "" : "\n", "# ", header, "\n", TopTable(response));
      }
      out << frame << std::flush;
    }
    if (!SleepUnlessStopped(absl::Seconds(top.interval_s))) return kExitOk;
  }
}

}  // namespace

void RequestStop() { stop_requested.store(true); }

int RunCli(int argc, char** argv, std::ostream& out, std::ostream& err, bool out_is_terminal) {
  stop_requested.store(false);
  GlobalOptions options;
  TopOptions top;
  std::string tenants_host_id;

  CLI::App app{"Operator CLI of fairwatch, the resource fairness monitor.", "fairwatch"};
  app.fallthrough();
  app.require_subcommand(1);
  app.set_version_flag("--version", absl::StrCat("fairwatch ", FAIRWATCH_VERSION));
  app.footer("Example: fairwatch --insecure-plaintext top --once");
  app.add_option("--controller", options.controller, "Controller address: host:port or unix:/path")
      ->envname("FAIRWATCH_CONTROLLER")
      ->capture_default_str();
  CLI::Option* insecure =
      app.add_flag("--insecure-plaintext", options.insecure_plaintext,
                   "Talk to the controller without TLS (it must serve plaintext too)")
          ->envname("FAIRWATCH_INSECURE_PLAINTEXT");
  CLI::Option* tls_ca = app.add_option("--tls-ca", options.tls_ca,
                                       "PEM roots to verify the controller with "
                                       "(default: the system's)")
                            ->check(CLI::ExistingFile);
  CLI::Option* tls_cert =
      app.add_option("--tls-cert", options.tls_cert, "PEM client certificate, for mutual TLS")
          ->check(CLI::ExistingFile);
  CLI::Option* tls_key =
      app.add_option("--tls-key", options.tls_key, "PEM client key")->check(CLI::ExistingFile);
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
  insecure->excludes(tls_ca)->excludes(tls_cert)->excludes(tls_key);
  app.add_option("-o,--output", options.output, "Output format: table or json")
      ->check(CLI::IsMember(std::vector<std::string>{"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "Seconds to wait for each answer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  CLI::App* hosts = app.add_subcommand("hosts", "List the hosts known to the controller");
  hosts->footer("Example: fairwatch --insecure-plaintext hosts");

  CLI::App* tenants = app.add_subcommand("tenants", "List tenants and their cgroups");
  tenants->add_option("--host", tenants_host_id, "Only this host (default: all)");
  tenants->footer("Example: fairwatch --insecure-plaintext tenants --host hv-12");

  CLI::App* top_command =
      app.add_subcommand("top", "Show tenants by resource use, refreshed until Ctrl-C");
  top_command->add_option("--host", top.host_id, "Only this host (default: all)");
  const std::vector<std::string> resource_names = ResourceNames();
  top_command
      ->add_option("--resource", top.resource,
                   "Resource to rank by: cpu, disk (bytes/s), disk-iops, net-rx, net-tx "
                   "(net = net-tx)")
      ->check(CLI::IsMember(resource_names))
      ->capture_default_str();
  top_command->add_option("--limit", top.limit, "Rows to show (0: all)")->capture_default_str();
  top_command
      ->add_option("--window", top.window_intervals,
                   "Report intervals to compute rates over (0: the controller's default)")
      ->capture_default_str();
  top_command->add_flag("--once", top.once, "Print one frame and exit");
  top_command->add_option("--interval", top.interval_s, "Seconds between refreshes")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  top_command->footer("Example: fairwatch --insecure-plaintext top --once --limit 10");

  v1::GetTenantRequest tenant_request;
  CLI::App* tenant_command = app.add_subcommand(
      "tenant", "One tenant in full: usage per resource and the harm it suffers");
  tenant_command->add_option("id", *tenant_request.mutable_tenant_id(), "Tenant id or name")
      ->required();
  tenant_command->add_option("--host", *tenant_request.mutable_host_id(),
                             "Host of the tenant (needed when the id is not unique)");
  uint32_t tenant_window = 0;
  tenant_command->add_option("--window", tenant_window,
                             "Report intervals to compute rates over (0: the default)");
  tenant_command->footer(
      "Example: fairwatch --insecure-plaintext tenant machine.slice/vm-a --host hv-12");

  v1::ListCasesRequest cases_request;
  CLI::App* cases_command = app.add_subcommand(
      "cases", "Fairness cases, newest first: who was limited, on what, and how");
  cases_command->add_flag(
      "--open", [&](int64_t) { cases_request.set_open_only(true); }, "Only open cases");
  cases_command->add_option("--host", *cases_request.mutable_host_id(), "Only this host");
  cases_command->add_option("--tenant", *cases_request.mutable_tenant_id(), "Only this tenant id");
  uint32_t cases_limit = 0;
  cases_command->add_option("--limit", cases_limit, "Cases to show (default 50, at most 1000)")
      ->check(CLI::Range(1, 1000));
  cases_command->footer("Example: fairwatch --insecure-plaintext cases --open --host hv-12");

  uint64_t case_id = 0;
  CLI::App* case_command = app.add_subcommand(
      "case", "One case in full: the evidence, every action, the agent's answers");
  case_command->add_option("id", case_id, "Case number (from fairwatch cases)")
      ->required()
      ->check(CLI::PositiveNumber);
  case_command->footer("Example: fairwatch --insecure-plaintext case 12");

  app.add_option("--operator", options.operator_name,
                 "Your name in the audit log for throttle, release, exempt, policy "
                 "(default: $SUDO_USER or $USER)")
      ->envname("FAIRWATCH_OPERATOR");

  // Operator actions: every one needs --reason and is audited.
  std::string reason;
  auto add_reason = [&](CLI::App* command) {
    command->add_option("--reason", reason, "Why: goes on the case and in the audit log")
        ->required();
  };
  auto resource_list = [&](const std::vector<std::string>& names) {
    std::vector<v1::Resource> out;
    for (const std::string& name : names) {
      v1::Resource r = v1::RESOURCE_UNSPECIFIED;
      ParseResourceName(name, &r);  // checked by the parser
      out.push_back(r);
    }
    return out;
  };

  v1::ThrottleRequest throttle_request;
  struct LimitFlag {
    const char* flag;
    v1::Resource resource;
    const char* help;
    double value = 0;
  };
  std::vector<LimitFlag> limit_flags = {
      {"--cpu", v1::RESOURCE_CPU, "CPU limit in cores (0.5: half a core)"},
      {"--disk-bps", v1::RESOURCE_DISK_BANDWIDTH, "Disk limit in bytes/s, reads and writes"},
      {"--disk-iops", v1::RESOURCE_DISK_IOPS, "Disk limit in operations/s"},
      {"--net-rx-bps", v1::RESOURCE_NET_RX, "Network receive limit in bytes/s"},
      {"--net-tx-bps", v1::RESOURCE_NET_TX, "Network transmit limit in bytes/s"},
  };
  CLI::App* throttle = app.add_subcommand(
      "throttle", "Limit a tenant by hand until released (the policy renews, never lifts it)");
  throttle->add_option("tenant", *throttle_request.mutable_tenant(), "Tenant id or name")
      ->required();
  throttle->add_option("--host", *throttle_request.mutable_host_id(),
                       "Host of the tenant (needed when the name is not unique)");
  for (LimitFlag& f : limit_flags) {
    throttle->add_option(f.flag, f.value, f.help)->check(CLI::PositiveNumber);
  }
  add_reason(throttle);
  throttle->footer(
      "Example: fairwatch throttle vm-a --host hv-12 --cpu 0.5 --reason \"ticket 4411: "
      "crypto mining\"");

  v1::ReleaseRequest release_request;
  std::vector<std::string> release_resources;
  CLI::App* release = app.add_subcommand(
      "release", "Lift a tenant's limits, by hand or by policy, and close their cases");
  release->add_option("tenant", *release_request.mutable_tenant(), "Tenant id or name")->required();
  release->add_option("--host", *release_request.mutable_host_id(), "Host of the tenant");
  release->add_option("--resource", release_resources, "Only these resources (default: all)")
      ->check(CLI::IsMember(ResourceNames()));
  add_reason(release);
  release->footer("Example: fairwatch release vm-a --reason \"customer fixed the runaway job\"");

  v1::ExemptRequest exempt_request;
  std::string exempt_tenant;
  std::string exempt_account;
  CLI::App* exempt = app.add_subcommand(
      "exempt", "Never limit a tenant or an account by policy (releases its policy limits)");
  CLI::Option* exempt_tenant_option =
      exempt->add_option("tenant", exempt_tenant, "Tenant id or name");
  CLI::Option* exempt_account_option =
      exempt->add_option("--account", exempt_account, "Every tenant of this account");
  exempt_tenant_option->excludes(exempt_account_option);
  exempt->add_option("--host", *exempt_request.mutable_host_id(), "Host of the tenant");
  add_reason(exempt);
  exempt->footer("Example: fairwatch exempt --account backup-svc --reason \"nightly backups\"");

  v1::UnexemptRequest unexempt_request;
  std::string unexempt_tenant;
  std::string unexempt_account;
  uint64_t unexempt_id = 0;
  CLI::App* unexempt = app.add_subcommand("unexempt", "End an exemption");
  CLI::Option* unexempt_tenant_option =
      unexempt->add_option("tenant", unexempt_tenant, "Tenant id or name");
  CLI::Option* unexempt_account_option =
      unexempt->add_option("--account", unexempt_account, "The account's exemption");
  CLI::Option* unexempt_id_option =
      unexempt->add_option("--id", unexempt_id, "Exemption number (from fairwatch exemptions)")
          ->check(CLI::PositiveNumber);
  unexempt_tenant_option->excludes(unexempt_account_option)->excludes(unexempt_id_option);
  unexempt_account_option->excludes(unexempt_id_option);
  unexempt->add_option("--host", *unexempt_request.mutable_host_id(), "Host of the tenant");
  add_reason(unexempt);
  unexempt->footer("Example: fairwatch unexempt --id 3 --reason \"backups moved\"");

  v1::ListExemptionsRequest exemptions_request;
  CLI::App* exemptions = app.add_subcommand("exemptions", "List exemptions in force");
  exemptions->add_flag(
      "--all", [&](int64_t) { exemptions_request.set_include_removed(true); },
      "Include removed ones");

  CLI::App* policy = app.add_subcommand("policy", "The fairness policy in force");
  policy->require_subcommand(1);
  CLI::App* policy_show = policy->add_subcommand("show", "Print the policy, dry run, exemptions");
  v1::SetDryRunRequest dry_run_request;
  std::string dry_run_state;
  std::vector<std::string> dry_run_resources;
  CLI::App* policy_dry_run = policy->add_subcommand(
      "dry-run", "Turn dry run on (record cases, send no limit) or off; kept across restarts");
  policy_dry_run->add_option("state", dry_run_state, "on or off")
      ->required()
      ->check(CLI::IsMember(std::vector<std::string>{"on", "off"}));
  policy_dry_run
      ->add_option("--resource", dry_run_resources, "With on: only these resources (default: all)")
      ->check(CLI::IsMember(ResourceNames()));
  add_reason(policy_dry_run);
  policy_dry_run->footer(
      "Example: fairwatch policy dry-run on --resource disk --reason \"new SAN, watching first\"");

  v1::ListAuditRequest audit_request;
  CLI::App* audit = app.add_subcommand("audit", "The operator audit log, newest first");
  uint32_t audit_limit = 0;
  audit->add_option("--limit", audit_limit, "Entries (default 50, at most 1000)")
      ->check(CLI::Range(1, 1000));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success))
      return app.exit(e, out, err);
    err << "fairwatch: " << OneLine(e.what()) << " (see fairwatch --help)\n";
    return kExitUsage;
  }

  ControllerSession session(options, err);
  if (absl::Status status = session.Connect(); !status.ok()) {
    err << "fairwatch: " << OneLine(status.message()) << "\n";
    return kExitUsage;
  }
  if (hosts->parsed()) return RunHosts(options, session, out, err);
  if (tenants->parsed()) return RunTenants(options, tenants_host_id, session, out, err);
  if (tenant_command->parsed()) {
    tenant_request.set_window_intervals(tenant_window);
    return RunTenant(options, tenant_request, session, out, err);
  }
  if (cases_command->parsed()) {
    cases_request.set_limit(cases_limit);
    return RunCases(options, cases_request, session, out, err);
  }
  if (case_command->parsed()) return RunCase(options, case_id, session, out, err);

  v1::OperatorReason why;
  why.set_operator_name(options.operator_name.empty() ? DefaultOperator() : options.operator_name);
  why.set_reason(reason);
  using Stub = v1::Operator::Stub;
  if (throttle->parsed()) {
    for (const LimitFlag& f : limit_flags) {
      if (f.value <= 0) continue;
      v1::Limit* limit = throttle_request.add_limits();
      limit->set_resource(f.resource);
      limit->set_value(f.value);
    }
    if (throttle_request.limits().empty()) {
      err << "fairwatch: throttle: give at least one limit (--cpu, --disk-bps, --disk-iops, "
             "--net-rx-bps, --net-tx-bps)\n";
      return kExitUsage;
    }
    *throttle_request.mutable_why() = why;
    return RunAction<v1::ThrottleRequest, v1::OperatorActionResponse>(
        "throttle", options, session, &Stub::Throttle, throttle_request,
        [](const v1::OperatorActionResponse& r) { return ActionResult("limited", r); }, out, err);
  }
  if (release->parsed()) {
    for (v1::Resource r : resource_list(release_resources)) release_request.add_resources(r);
    *release_request.mutable_why() = why;
    return RunAction<v1::ReleaseRequest, v1::OperatorActionResponse>(
        "release", options, session, &Stub::Release, release_request,
        [](const v1::OperatorActionResponse& r) { return ActionResult("released", r); }, out, err);
  }
  auto exemption_line = [](absl::string_view verb) {
    return [verb](const v1::Exemption& e) {
      v1::ListExemptionsResponse one;
      *one.add_exemptions() = e;
      return absl::StrCat(verb, "\n", ExemptionsTable(one));
    };
  };
  if (exempt->parsed()) {
    if (exempt_tenant.empty() == exempt_account.empty()) {
      err << "fairwatch: exempt: name a tenant or --account\n";
      return kExitUsage;
    }
    if (!exempt_account.empty()) exempt_request.set_account(exempt_account);
    if (!exempt_tenant.empty()) exempt_request.set_tenant(exempt_tenant);
    *exempt_request.mutable_why() = why;
    return RunAction<v1::ExemptRequest, v1::Exemption>("exempt", options, session, &Stub::Exempt,
                                                       exempt_request, exemption_line("exempt:"),
                                                       out, err);
  }
  if (unexempt->parsed()) {
    if (unexempt_tenant.empty() && unexempt_account.empty() && unexempt_id == 0) {
      err << "fairwatch: unexempt: name a tenant, --account or --id\n";
      return kExitUsage;
    }
    unexempt_request.set_exemption_id(unexempt_id);
    if (!unexempt_account.empty()) unexempt_request.set_account(unexempt_account);
    if (!unexempt_tenant.empty()) unexempt_request.set_tenant(unexempt_tenant);
    *unexempt_request.mutable_why() = why;
    return RunAction<v1::UnexemptRequest, v1::Exemption>(
        "unexempt", options, session, &Stub::Unexempt, unexempt_request,
        exemption_line("exemption ended:"), out, err);
  }
  if (exemptions->parsed()) {
    return RunAction<v1::ListExemptionsRequest, v1::ListExemptionsResponse>(
        "exemptions", options, session, &Stub::ListExemptions, exemptions_request,
        [](const v1::ListExemptionsResponse& r) { return ExemptionsTable(r); }, out, err);
  }
  if (policy_show->parsed()) {
    return RunAction<v1::GetPolicyRequest, v1::PolicyView>(
        "policy show", options, session, &Stub::GetPolicy, v1::GetPolicyRequest(),
        [](const v1::PolicyView& p) { return PolicyReport(p); }, out, err);
  }
  if (policy_dry_run->parsed()) {
    dry_run_request.set_enabled(dry_run_state == "on");
    for (v1::Resource r : resource_list(dry_run_resources)) dry_run_request.add_resources(r);
    *dry_run_request.mutable_why() = why;
    return RunAction<v1::SetDryRunRequest, v1::PolicyView>(
        "policy dry-run", options, session, &Stub::SetDryRun, dry_run_request,
        [](const v1::PolicyView& p) { return PolicyReport(p); }, out, err);
  }
  if (audit->parsed()) {
    audit_request.set_limit(audit_limit);
    return RunAction<v1::ListAuditRequest, v1::ListAuditResponse>(
        "audit", options, session, &Stub::ListAudit, audit_request,
        [](const v1::ListAuditResponse& r) { return AuditTable(r); }, out, err);
  }
  return RunTop(options, top, session, out, err, out_is_terminal);
}

}  // namespace fairwatch::cli
