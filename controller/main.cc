// fairwatch-controller: receives usage reports from fairwatch agents, keeps
// per-host windows, and serves the operator API.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/prometheus.h"
#include "common/tls.h"
#include "controller/config.h"
#include "controller/metrics.h"
#include "controller/server.h"
#include "controller/store.h"

namespace {

constexpr int kExitRuntimeError = 1;
constexpr int kExitUsage = 2;
constexpr absl::Duration kShutdownGrace = absl::Seconds(5);

int Fail(int code, absl::string_view message) {
  std::fprintf(stderr, "fairwatch-controller: %.*s\n", static_cast<int>(message.size()),
               message.data());
  return code;
}

}  // namespace

int RunController(int argc, char** argv) {
  using namespace fairwatch;  // NOLINT(build/namespaces): main only

  CLI::App app{
      "fairwatch-controller: receives tenant usage from fairwatch agents over gRPC, keeps "
      "per-host rate windows and serves the operator API (ListHosts, ListTenants, Top).\n"
      "Settings come from a fairwatch.v1.ControllerConfig text-proto file; flags override it."};
  app.footer(
      "Example:\n"
      "  fairwatch-controller --config /etc/fairwatch/controller.conf\n"
      "  fairwatch-controller --listen 127.0.0.1:7400 --db /tmp/fw.db --insecure-plaintext\n"
      "\n"
      "controller.conf example:\n"
      "  listen_address: \"0.0.0.0:7400\"\n"
      "  database_path: \"/var/lib/fairwatch/controller.db\"\n"
      "  tls { cert_file: \"/etc/fairwatch/controller.crt\" key_file: "
      "\"/etc/fairwatch/controller.key\" }\n"
      "  window_intervals: 5\n"
      "\n"
      "Exit status: 0 ok, 1 runtime failure (port in use, database error), 2 bad flags or "
      "config.");
  std::string config_path;
  bool check_config = false;
  std::string listen_address;
  std::string database_path;
  std::string metrics_address;
  bool insecure_plaintext = false;
  std::string log_level = "info";
  app.add_option("--config", config_path,
                 "Config file (protobuf text format, schema fairwatch.v1.ControllerConfig). "
                 "Without it every setting has its default.")
      ->option_text("FILE");
  app.add_flag("--check-config", check_config,
               "Load and validate the config (and TLS files), print \"config OK: <summary>\" "
               "and exit 0, or print the error and exit 2.");
  auto* listen_option = app.add_option("--listen", listen_address,
                                       "Address for agents and operators, host:port or "
                                       "unix:/path (default 127.0.0.1:7400). Overrides "
                                       "listen_address.")
                            ->option_text("ADDR");
  auto* db_option = app.add_option("--db", database_path,
                                   "SQLite database file, created with its directory if "
                                   "missing (default /var/lib/fairwatch/controller.db). "
                                   "Overrides database_path.")
                        ->option_text("PATH");
  auto* metrics_option =
      app.add_option("--metrics-address", metrics_address,
                     "Prometheus /metrics address, host:port, or \"off\" (default "
                     "127.0.0.1:9478). Overrides metrics_address.")
          ->option_text("ADDR");
  app.add_flag("--insecure-plaintext", insecure_plaintext,
               "Serve without TLS. Without this (or insecure_plaintext: true in the config), "
               "tls.cert_file and tls.key_file are required.");
  app.add_option("--log-level", log_level, "Log verbosity: debug, info, warning or error.")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}))
      ->option_text("LEVEL");
  app.set_version_flag("--version", std::string("fairwatch-controller ") + FAIRWATCH_VERSION,
                       "Print the version and exit.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : kExitUsage;
  }

  // Debian's Abseil checks lock order on every Mutex by default, through a
  // global lock: measurable at fleet scale (docs/performance.md), and the
  // tests run with it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  LogLevel level = LogLevel::kInfo;
  ParseLogLevel(log_level, &level);
  SetLogLevel(level);

  controller::ConfigOverrides overrides;
  if (listen_option->count() > 0) overrides.listen_address = listen_address;
  if (db_option->count() > 0) overrides.database_path = database_path;
  if (metrics_option->count() > 0) overrides.metrics_address = metrics_address;
  overrides.insecure_plaintext = insecure_plaintext;
  absl::StatusOr<v1::ControllerConfig> config =
      controller::LoadControllerConfig(config_path, overrides);
  if (!config.ok()) return Fail(kExitUsage, config.status().ToString());
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(config->tls(), config->insecure_plaintext());
  if (!credentials.ok()) return Fail(kExitUsage, credentials.status().ToString());
  if (check_config) {
    std::cout << "config OK: " << controller::SummarizeControllerConfig(*config) << std::endl;
    return 0;
  }

  // Blocked before gRPC starts its threads, so they inherit the mask and the
  // signals are only ever taken by sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<std::unique_ptr<controller::SqliteStore>> store =
      controller::SqliteStore::Open(config->database_path());
  if (!store.ok()) return Fail(kExitRuntimeError, store.status().ToString());
  absl::StatusOr<std::unique_ptr<controller::ControllerServer>> server =
      controller::ControllerServer::Start(*config, *credentials, store->get());
  if (!server.ok()) return Fail(kExitRuntimeError, server.status().ToString());

  MetricsServer metrics("fairwatch-controller");
  if (config->metrics_address() != "off") {
    controller::ControllerServer* running = server->get();
    controller::Store* running_store = store->get();
    const int series = config->metrics_tenant_series();
    metrics.SetRenderer([running, running_store, series] {
      return controller::RenderControllerMetrics(
          controller::CollectControllerMetrics(*running, running_store, series));
    });
    if (absl::Status started = metrics.Start(config->metrics_address()); !started.ok()) {
      (*server)->Shutdown(kShutdownGrace);
      return Fail(kExitRuntimeError, started.ToString());
    }
    FW_LOG(Info, "metrics on http://", config->metrics_address(), "/metrics (port ", metrics.port(),
           ")");
  }

  FW_LOG(Info, "fairwatch-controller ", FAIRWATCH_VERSION, " listening on ",
         config->listen_address(), " (port ", (*server)->port(), "), ",
         config->insecure_plaintext()          ? "plaintext (no TLS)"
         : config->tls().require_client_cert() ? "TLS with client certificates"
                                               : "TLS",
         ", database ", config->database_path());

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  FW_LOG(Info, "received ", signal_number == SIGINT ? "SIGINT" : "SIGTERM", "; shutting down");
  metrics.Stop();
  (*server)->Shutdown(kShutdownGrace);
  server->reset();
  store->reset();
  FW_LOG(Info, "stopped");
  return 0;
}

int main(int argc, char** argv) {
  try {
    return RunController(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "fairwatch-controller: fatal: " << e.what() << "\n";
    return 1;
  }
}
