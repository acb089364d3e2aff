#include "cli/app.h"

#include <algorithm>
#include <atomic>
#include <chrono>
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
};

struct TopOptions {
  std::string host_id;
  std::string resource = "cpu";
  uint32_t limit = 0;
  uint32_t window_intervals = 0;
  bool once = false;
  double interval_s = 1;
};

const std::map<std::string, v1::Resource>& ResourcesByName() {
  static const auto* resources = new std::map<std::string, v1::Resource>{
      {"cpu", v1::RESOURCE_CPU},
      {"disk", v1::RESOURCE_DISK_BANDWIDTH},
      {"disk-iops", v1::RESOURCE_DISK_IOPS},
      {"net", v1::RESOURCE_NET_TX},
      {"net-rx", v1::RESOURCE_NET_RX},
      {"net-tx", v1::RESOURCE_NET_TX},
  };
  return *resources;
}

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
  request.set_resource(ResourcesByName().at(top.resource));
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
  std::vector<std::string> resource_names;
  for (const auto& [name, resource] : ResourcesByName()) resource_names.push_back(name);
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
  return RunTop(options, top, session, out, err, out_is_terminal);
}

}  // namespace fairwatch::cli
