// fairwatch-agent: measures every tenant on this host and streams it to the controller.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <thread>

#include "agent/agent.h"
#include "agent/config.h"
#include "common/config_file.h"
#include "common/log.h"

namespace {

constexpr char kDescription[] =
    "fairwatch-agent: discovers the tenants on this host (libvirt domains, cgroup parents),\n"
    "measures their CPU, run-queue wait, disk and network with eBPF plus PSI and CPU\n"
    "throttling from cgroup files,\n"
    "streams cumulative counters to fairwatch-controller and serves Prometheus /metrics.\n\n"
    "Examples:\n"
    "  fairwatch-agent --config /etc/fairwatch/agent.textproto\n"
    "  fairwatch-agent --controller 127.0.0.1:7400 --insecure-plaintext --cgroup-parent "
    "machine.slice\n"
    "  fairwatch-agent --controller 127.0.0.1:7400 --insecure-plaintext --libvirt\n"
    "  fairwatch-agent --config agent.textproto --check-config\n";

}  // namespace

int RunAgent(int argc, char** argv) {
  CLI::App app{kDescription, "fairwatch-agent"};
  std::string config_path;
  bool check_config = false;
  std::string controller;
  bool insecure = false;
  std::vector<std::string> cgroup_parents;
  bool libvirt = false;
  std::string libvirt_uri;
  std::string host_id;
  uint32_t interval_ms = 0;
  std::string cpu_hierarchy;
  std::string log_level = "info";
  std::string metrics_address;
  app.add_option("-c,--config", config_path,
                 "Config file (protobuf text format, fairwatch.v1.AgentConfig)");
  app.add_flag("--check-config", check_config,
               "Load and validate the config, print a summary, exit");
  app.add_option("--controller", controller,
                 "Controller address host:port (default 127.0.0.1:7400)");
  app.add_flag("--insecure-plaintext", insecure,
               "Talk to the controller without TLS (explicit opt-in)");
  app.add_option(
      "--cgroup-parent", cgroup_parents,
      "Cgroup directory (relative to the hierarchy root) whose children are tenants; repeatable");
  app.add_flag("--libvirt", libvirt,
               "Every running libvirt domain is a tenant, keyed by UUID (URI qemu:///system)");
  app.add_option(
      "--libvirt-uri", libvirt_uri,
      "Like --libvirt, with another connection URI (e.g. qemu+ssh://..., test:///default)");
  app.add_option("--host-id", host_id, "Host identity sent to the controller (default: hostname)");
  app.add_option("--interval-ms", interval_ms, "Sampling interval (default 1000)")
      ->check(CLI::Range(100, 60000));
  app.add_option("--cpu-hierarchy", cpu_hierarchy, "Attribute CPU in: auto, unified or cpu (v1)")
      ->check(CLI::IsMember({"auto", "unified", "cpu"}));
  app.add_option("--metrics-address", metrics_address,
                 "Prometheus /metrics listen address host:port, or off (default 127.0.0.1:9477)");
  std::string state_dir;
  app.add_option("--state-dir", state_dir,
                 "Directory of the journal of applied limits (default /run/fairwatch-agent)");
  app.add_option("--log-level", log_level, "debug, info, warning or error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  app.set_version_flag("--version", std::string("fairwatch-agent ") + FAIRWATCH_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // --help and --version exit 0; every usage error exits 2.
    return app.exit(error) == 0 ? 0 : 2;
  }

  fairwatch::LogLevel level;
  fairwatch::ParseLogLevel(log_level, &level);
  fairwatch::SetLogLevel(level);

  fairwatch::v1::AgentConfig config;
  if (!config_path.empty()) {
    absl::Status status = fairwatch::LoadTextConfig(config_path, &config);
    if (!status.ok()) {
      std::cerr << "fairwatch-agent: " << status.message() << "\n";
      return 2;
    }
  }
  if (!controller.empty()) config.set_controller_address(controller);
  if (insecure) config.set_insecure_plaintext(true);
  for (const auto& p : cgroup_parents) config.add_cgroup_parents()->set_path(p);
  if (libvirt || !libvirt_uri.empty()) {
    fairwatch::v1::LibvirtSource* source = config.mutable_libvirt();
    if (!libvirt_uri.empty()) source->set_uri(libvirt_uri);
  }
  if (!host_id.empty()) config.set_host_id(host_id);
  if (interval_ms) config.set_interval_ms(interval_ms);
  if (!cpu_hierarchy.empty()) config.set_cpu_hierarchy(cpu_hierarchy);
  if (!metrics_address.empty()) config.set_metrics_address(metrics_address);
  if (!state_dir.empty()) config.set_state_dir(state_dir);
  fairwatch::agent::ApplyDefaults(&config);
  if (absl::Status status = fairwatch::agent::Validate(config); !status.ok()) {
    std::cerr << "fairwatch-agent: invalid config: " << status.message() << "\n";
    return 2;
  }
  if (check_config) {
    std::cout << "config OK: controller " << config.controller_address()
              << (config.insecure_plaintext() ? " (plaintext)" : " (TLS)") << ", host "
              << config.host_id() << ", interval " << config.interval_ms() << " ms, "
              << config.cgroup_parents_size() << " cgroup parent(s), libvirt "
              << (config.has_libvirt() ? config.libvirt().uri() : std::string("off"))
              << ", cpu hierarchy " << config.cpu_hierarchy() << ", state in " << config.state_dir()
              << ", " << config.protected_cgroups_size()
              << " protected cgroup(s) beside the built-in ones\n";
    return 0;
  }
  if (geteuid() != 0) {
    std::cerr << "fairwatch-agent: must run as root: it loads eBPF programs and reads every "
                 "tenant's cgroups (try: sudo fairwatch-agent ...)\n";
    return 1;
  }

  // Blocked before any thread starts, so only the sigwait below takes them and
  // shutdown runs outside a signal handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  fairwatch::agent::Agent agent(config);
  if (absl::Status status = agent.Init(); !status.ok()) {
    std::cerr << "fairwatch-agent: " << status.message() << "\n";
    return 1;
  }
  FW_LOG(Info, "fairwatch-agent ", FAIRWATCH_VERSION, " host ", config.host_id(), " -> ",
         config.controller_address(), config.insecure_plaintext() ? " (plaintext)" : " (TLS)",
         ", interval ", config.interval_ms(), " ms");
  std::thread sampler([&agent] { agent.Run(); });
  int sig = 0;
  sigwait(&signals, &sig);
  FW_LOG(Info, sig == SIGINT ? "SIGINT" : "SIGTERM", ": shutting down");
  agent.Shutdown();
  sampler.join();
  return 0;
}

int main(int argc, char** argv) {
  try {
    return RunAgent(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "fairwatch-agent: fatal: " << e.what() << "\n";
    return 1;
  }
}
