// fairwatch-scenarios: runs the end-to-end scenarios (tests/e2e/scenarios.cc)
// on this host, as root, one after the other, each with its own controller,
// agent and tenants. One line per run with its timings; with --narrate the
// story as it happens (the demo); with --repeat the median and worst of each
// figure (docs/performance.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/e2e/scenarios.h"

namespace fe = fairwatch::testing::e2e;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitSkipped = 77;  // ctest's SKIP_RETURN_CODE

std::string TailOf(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> kept;
  for (std::string line; std::getline(in, line);) {
    kept.push_back(line + "\n");
    if (kept.size() > lines) kept.erase(kept.begin());
  }
  return absl::StrJoin(kept, "");
}

std::string FigureText(const fe::Outcome::Value& f) {
  return absl::StrFormat("%s %.2f%s%s", f.name, f.value, f.unit.empty() ? "" : " ", f.unit);
}

// A steady tenant's work: `fraction` of a core's CPU time every 10 ms, done
// as soon as it can be, like a service with a steady request rate. Unlike a
// wall-clock duty cycle (stress-ng --cpu-load) it gets its work done when it
// waits to run, as long as there is CPU for it; work owed for more than
// 100 ms is dropped (requests time out). Runs until killed.
[[noreturn]] void SteadyWork(double fraction) {
  auto cpu_ns = [] {
    struct timespec ts {};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  };
  auto mono_ns = [] {
    struct timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  };
  constexpr int64_t kPeriodNs = 10'000'000;
  const auto budget = static_cast<int64_t>(fraction * kPeriodNs);
  int64_t target = cpu_ns();
  int64_t next = mono_ns();
  volatile uint64_t sink = 0;
  while (true) {
    target += budget;
    while (cpu_ns() < target) {
      for (int i = 0; i < 1000; ++i) sink = sink + static_cast<uint64_t>(i);
    }
    next += kPeriodNs;
    const int64_t now = mono_ns();
    if (now - next > 10 * kPeriodNs) {
      next = now;  // too far behind: drop the backlog
      target = cpu_ns();
    } else if (next > now) {
      struct timespec ts {
        next / 1'000'000'000, next % 1'000'000'000
      };
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
    }
  }
}

int64_t MonoNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A steady network tenant: `bytes_per_s` over one TCP connection to
// `address` (IPv4:port), in 10 ms steps, sent as soon as the connection takes
// it. Bytes owed for more than 100 ms are dropped, so a squeezed sender asks
// for the same rate and does not burst to catch up afterwards. Runs until
// killed (or the connection fails: exit 1).
[[noreturn]] void SteadySend(const std::string& address, double bytes_per_s) {
  const std::vector<std::string> parts = absl::StrSplit(address, ':');
  struct sockaddr_in to {};
  to.sin_family = AF_INET;
  int port = 0;
  if (parts.size() != 2 || inet_pton(AF_INET, parts[0].c_str(), &to.sin_addr) != 1 ||
      !absl::SimpleAtoi(parts[1], &port) || port <= 0 || port > 65535) {
    std::fprintf(stderr, "--steady-send: want IPv4:port, got %s\n", address.c_str());
    std::exit(kExitUsage);
  }
  to.sin_port = htons(static_cast<uint16_t>(port));
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  // The server may come up a moment after the sender.
  for (int tries = 0; connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0; ++tries) {
    if (tries == 50) {
      std::perror("--steady-send: connect");
      std::exit(kExitFailed);
    }
    usleep(100'000);
  }
  constexpr int64_t kStepNs = 10'000'000;
  const double per_step = bytes_per_s * 1e-2;
  static char chunk[64 * 1024];
  double owed = 0;
  int64_t next = MonoNs();
  while (true) {
    owed = std::min(owed + per_step, 10 * per_step);
    while (owed >= 1) {
      const size_t n = std::min(sizeof(chunk), static_cast<size_t>(owed));
      const ssize_t sent = send(fd, chunk, n, MSG_NOSIGNAL);
      if (sent <= 0) {
        std::perror("--steady-send: send");
        std::exit(kExitFailed);
      }
      owed -= static_cast<double>(sent);
      if (MonoNs() > next + kStepNs) break;  // squeezed: on to the next step
    }
    next += kStepNs;
    const int64_t now = MonoNs();
    if (now - next > 10 * kStepNs) {
      next = now;
    } else if (next > now) {
      struct timespec ts {
        next / 1'000'000'000, next % 1'000'000'000
      };
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
    }
  }
}

// Accepts TCP connections on `port` (any address) and reads what they send,
// until killed: the far end of --steady-send.
[[noreturn]] void Sink(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in at {};
  at.sin_family = AF_INET;
  at.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof(at)) != 0 || listen(fd, 16) != 0) {
    std::perror("--sink: bind/listen");
    std::exit(kExitFailed);
  }
  while (true) {
    const int conn = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    std::thread([conn] {
      static thread_local char buffer[256 * 1024];
      while (read(conn, buffer, sizeof(buffer)) > 0) {
      }
      close(conn);
    }).detach();
  }
}

}  // namespace

int Run(int argc, char** argv) {
  CLI::App app{
      "Runs fairwatch's end-to-end scenarios on this host: a real controller and agent, real "
      "tenant cgroups and workloads, judged through the operator CLI and the kernel. Needs "
      "root. Everything a scenario creates is removed when it ends, also on failure or Ctrl-C.",
      "fairwatch-scenarios"};
  std::vector<std::string> names;
  bool list = false;
  bool narrate = false;
  bool keep = false;
  int repeat = 1;
  std::string bin_dir = FW_BIN_DIR;
  app.add_option("scenario", names, "Scenarios to run, in order (default: all)");
  app.add_flag("--list", list, "List the scenarios and exit");
  app.add_flag("--narrate", narrate, "Tell what happens as it happens (the demo)");
  app.add_flag("--keep", keep,
               "Keep each run's directory (controller database, daemons' logs) and say where");
  app.add_option("--repeat", repeat, "Run each scenario this many times; prints median and worst")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  double steady = 0;
  app.add_option("--steady-work", steady,
                 "Internal: be a steady tenant's workload, this share of a core, until killed")
      ->check(CLI::Range(0.01, 1.0))
      ->group("");
  std::string send_to;
  double send_rate = 0;
  int sink_port = 0;
  app.add_option("--steady-send", send_to,
                 "Internal: be a steady network tenant, sending to this IPv4:port, until killed")
      ->group("");
  app.add_option("--send-rate", send_rate, "Internal: bytes per second for --steady-send")
      ->group("");
  app.add_option("--sink", sink_port, "Internal: read whatever TCP connections on this port send")
      ->check(CLI::Range(1, 65535))
      ->group("");
  std::string fairness;
  app.add_option("--fairness", fairness,
                 "Policy fields for every scenario's controller, as in its config's "
                 "fairness { } block (textproto), e.g. 'required_intervals: 2'");
  app.add_option("--bin-dir", bin_dir, "Where fairwatch-agent, -controller and fairwatch are")
      ->capture_default_str();
  std::string vm_script = FW_TEST_VMS_SCRIPT;
  app.add_option("--vm-script", vm_script,
                 "tests/vm/fw-test-vms.sh of the source tree, for the scenarios with libvirt "
                 "guests")
      ->capture_default_str();
  std::string agent_wrapper;
  app.add_option("--agent-wrapper", agent_wrapper,
                 "Run the agent under this command (words split at spaces, the first a full "
                 "path), e.g. \"/usr/bin/setpriv --bounding-set=-all,+bpf ... --\"");
  CLI11_PARSE(app, argc, argv);
  fe::SetAgentWrapper(absl::StrSplit(agent_wrapper, ' ', absl::SkipEmpty()));
  if (steady > 0) SteadyWork(steady);
  if (!send_to.empty()) SteadySend(send_to, send_rate);
  if (sink_port > 0) Sink(sink_port);

  const std::vector<fe::Scenario>& all = fe::AllScenarios();
  if (list) {
    for (const fe::Scenario& s : all) std::printf("%-20s %s\n", s.name.c_str(), s.summary.c_str());
    return 0;
  }
  std::vector<const fe::Scenario*> chosen;
  for (const std::string& n : names) {
    auto it =
        std::find_if(all.begin(), all.end(), [&](const fe::Scenario& s) { return s.name == n; });
    if (it == all.end()) {
      std::vector<std::string> known;
      for (const fe::Scenario& s : all) known.push_back(s.name);
      std::fprintf(stderr, "fairwatch-scenarios: no scenario '%s'; known: %s\n", n.c_str(),
                   absl::StrJoin(known, ", ").c_str());
      return kExitUsage;
    }
    chosen.push_back(&*it);
  }
  if (chosen.empty()) {
    for (const fe::Scenario& s : all) chosen.push_back(&s);
  }
  if (geteuid() != 0) {
    std::fprintf(stderr,
                 "fairwatch-scenarios: skipped: needs root (the agent loads eBPF programs; "
                 "scenarios create cgroups)\n");
    return kExitSkipped;
  }
  fe::Binaries binaries{bin_dir + "/fairwatch-agent", bin_dir + "/fairwatch-controller",
                        bin_dir + "/fairwatch"};
  for (const std::string* b : {&binaries.agent, &binaries.controller, &binaries.cli}) {
    if (access(b->c_str(), X_OK) != 0) {
      std::fprintf(stderr, "fairwatch-scenarios: %s is missing; build first or give --bin-dir\n",
                   b->c_str());
      return kExitUsage;
    }
  }
  absl::StatusOr<fe::TenantMounts> mounts = fe::FindCgroupMounts();
  if (!mounts.ok()) {
    std::fprintf(stderr, "fairwatch-scenarios: %s\n", mounts.status().ToString().c_str());
    return kExitFailed;
  }
  fe::InstallInterruptHandlers();

  int failed = 0;
  int skipped = 0;
  int interrupted = 0;
  for (const fe::Scenario* s : chosen) {
    std::vector<std::string> missing;
    for (const std::string& tool : s->needs) {
      if (fe::Which(tool).empty()) missing.push_back(tool);
    }
    if (!missing.empty()) {
      std::printf("SKIP %s: needs %s\n", s->name.c_str(), absl::StrJoin(missing, ", ").c_str());
      ++skipped;
      continue;
    }
    std::map<std::string, std::vector<double>> figures;
    std::map<std::string, std::string> units;
    for (int run = 0; run < repeat && interrupted == 0; ++run) {
      fe::Narrator narrator(narrate);
      if (narrate) std::printf("\n=== %s: %s\n", s->name.c_str(), s->summary.c_str());
      char tmpl[] = "/tmp/fairwatch-scenario-XXXXXX";
      if (mkdtemp(tmpl) == nullptr) {
        std::perror("mkdtemp");
        return kExitFailed;
      }
      fe::ScenarioContext ctx{binaries, &narrator, tmpl, *mounts, fairness, vm_script};
      fe::Outcome outcome;
      std::string logs;
      const absl::Time start = absl::Now();
      try {
        s->run(ctx, outcome);
      } catch (const fe::Interrupted&) {
        interrupted = 1;
      }
      const double took = absl::ToDoubleSeconds(absl::Now() - start);
      std::vector<std::string> parts;
      for (const fe::Outcome::Value& f : outcome.figures()) {
        parts.push_back(FigureText(f));
        figures[f.name].push_back(f.value);
        units[f.name] = f.unit;
      }
      const char* verdict = interrupted != 0 ? "STOP" : outcome.passed() ? "PASS" : "FAIL";
      std::printf("%s %s (%.0f s)%s%s\n", verdict, s->name.c_str(), took, parts.empty() ? "" : ": ",
                  absl::StrJoin(parts, ", ").c_str());
      for (const std::string& f : outcome.failures()) std::printf("  failed: %s\n", f.c_str());
      if (!outcome.passed() && interrupted == 0) {
        ++failed;
        for (const char* log : {"controller.log", "agent.log"}) {
          std::printf("  --- last lines of the %s ---\n%s", log,
                      TailOf(absl::StrCat(tmpl, "/", log), 30).c_str());
        }
      }
      if (keep) {
        std::printf("  kept %s (controller.db, controller.log, agent.log)\n", tmpl);
      } else {
        std::filesystem::remove_all(tmpl);
      }
      std::fflush(stdout);
    }
    if (repeat > 1 && interrupted == 0) {
      for (auto& [name, values] : figures) {
        std::sort(values.begin(), values.end());
        const double median = values.size() % 2 == 1
                                  ? values[values.size() / 2]
                                  : (values[values.size() / 2 - 1] + values[values.size() / 2]) / 2;
        std::printf("  %s %s over %zu runs: median %.2f, min %.2f, max %.2f %s\n", s->name.c_str(),
                    name.c_str(), values.size(), median, values.front(), values.back(),
                    units[name].c_str());
      }
    }
    if (interrupted != 0) break;
  }
  if (interrupted != 0) {
    std::printf("interrupted: everything the scenario created has been removed\n");
    return 130;
  }
  if (failed > 0) return kExitFailed;
  if (skipped == static_cast<int>(chosen.size())) return kExitSkipped;
  return 0;
}

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fairwatch-scenarios: %s\n", e.what());
    return kExitFailed;
  }
}
