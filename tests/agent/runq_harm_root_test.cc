// Root + BPF: run-queue wait of a victim tenant rises while a hog tenant
// shares its CPU and falls back when the hog is gone; waits of threads in
// nested child cgroups count for the tenant and match the kernel's own
// per-task run_delay (/proc/<pid>/schedstat).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "agent/cgroup_discovery.h"
#include "agent/cgroup_layout.h"
#include "agent/runq_collector.h"
#include "agent/tenant_registry.h"
#include "bpf/fw_runq.h"
#include "common/histogram.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::agent {
namespace {

using fairwatch::testing::TestCgroupTree;

enum class Behaviour { kSleeper, kHog };

// A forked process we own: killed and reaped when this goes out of scope.
class OwnedProcess {
 public:
  OwnedProcess() = default;
  explicit OwnedProcess(pid_t pid) : pid_(pid) {}
  OwnedProcess(OwnedProcess&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  ~OwnedProcess() { Kill(); }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Forks a process that joins `procs_file` (when not empty), pins itself to `cpu` and then
// sleeps 1 ms in a loop (kSleeper) or spins (kHog).
OwnedProcess Spawn(const std::string& procs_file, int cpu, Behaviour behaviour) {
  int ready[2];
  if (pipe(ready) != 0) return OwnedProcess();
  pid_t pid = fork();
  if (pid < 0) return OwnedProcess();
  if (pid == 0) {
    close(ready[0]);
    char ok = 1;
    if (!procs_file.empty()) {
      int fd = open(procs_file.c_str(), O_WRONLY);
      if (fd < 0 || write(fd, "0", 1) != 1) ok = 0;
      if (fd >= 0) close(fd);
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) ok = 0;
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    close(ready[1]);
    volatile uint64_t sink = 0;
    struct timespec one_ms {
      0, 1'000'000
    };
    while (true) {
      if (behaviour == Behaviour::kSleeper) {
        nanosleep(&one_ms, nullptr);
      } else {
        sink = sink + 1;
      }
    }
  }
  close(ready[1]);
  char ok = 0;
  ssize_t n = read(ready[0], &ok, 1);
  close(ready[0]);
  OwnedProcess owned(pid);
  if (n != 1 || !ok) owned.Kill();
  return owned;
}

// Kernel's cumulative run-queue wait of one task (schedstat field 2, ns).
uint64_t RunDelayNs(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/schedstat"));
  uint64_t run_ns = 0, delay_ns = 0;
  in >> run_ns >> delay_ns;
  return delay_ns;
}

// Kernel's cumulative time on a CPU of one task (schedstat field 1, ns).
uint64_t RunNs(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/schedstat"));
  uint64_t run_ns = 0;
  in >> run_ns;
  return run_ns;
}

// Two processes outside every tenant, pinned to `cpu`, passing a byte back
// and forth through two pipes: thousands of switches a second.
std::vector<OwnedProcess> SpawnPingPong(int cpu) {
  int ab[2], ba[2];
  if (pipe(ab) != 0) return {};
  if (pipe(ba) != 0) {
    close(ab[0]);
    close(ab[1]);
    return {};
  }
  std::vector<OwnedProcess> pair;
  for (int side = 0; side < 2; ++side) {
    const pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (sched_setaffinity(0, sizeof(set), &set) != 0) _exit(1);
      const int in = side == 0 ? ba[0] : ab[0], out = side == 0 ? ab[1] : ba[1];
      char byte = 0;
      if (side == 0 && write(out, &byte, 1) != 1) _exit(1);
      while (read(in, &byte, 1) == 1 && write(out, &byte, 1) == 1) {
      }
      _exit(0);
    }
    pair.emplace_back(pid);
  }
  for (int fd : {ab[0], ab[1], ba[0], ba[1]}) close(fd);
  return pair;
}

class RunqHarmRootBpf : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fairwatch::testing::IsRoot()) GTEST_SKIP() << "needs root: loads BPF and creates cgroups";
    auto mounts = ReadCgroupMounts();
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    mounts_ = *mounts;
    auto hierarchy = ChooseCpuHierarchy(mounts_, "auto");
    ASSERT_TRUE(hierarchy.ok()) << hierarchy.status();
    hierarchy_ = *hierarchy;
    mount_ = *mounts_.MountOf(hierarchy_);
    tree_ = std::make_unique<TestCgroupTree>(std::vector<std::string>{mount_},
                                             fairwatch::testing::UniqueCgroupPrefix());
  }

  // Discovers the tree's children as tenants and starts a collector on them.
  void StartCollector(const std::string& attach_mode = "auto",
                      std::optional<RunqGateParams> gate = std::nullopt) {
    v1::CgroupParentSource parent;
    parent.set_path(tree_->prefix());
    CgroupParentDiscovery discovery(mounts_, hierarchy_, {parent});
    ASSERT_TRUE(discovery.Init().ok());
    auto found = discovery.Scan();
    ASSERT_TRUE(found.ok()) << found.status();
    registry_ = std::make_unique<TenantRegistry>(16);
    registry_->Apply(std::move(*found));
    RunqCollectorOptions options;
    options.use_v1_cpu = hierarchy_ == "cpu";
    options.max_tenants = 16;
    options.attach_mode = attach_mode;
    if (gate) {
      options.adaptive = true;
      options.gate = *gate;
    }
    collector_ = std::make_unique<RunqCollector>(options);
    ASSERT_TRUE(collector_->Init().ok());
    ASSERT_TRUE(collector_->SyncTenants(registry_->tenants()).ok());
  }

  uint32_t SlotOf(const std::string& name) {
    for (const auto& t : registry_->tenants()) {
      if (t.tenant.name() == name) return t.slot;
    }
    ADD_FAILURE() << "no tenant " << name;
    return 0;
  }

  RunqSlotCounters Read(const std::string& name) {
    auto c = collector_->ReadSlot(SlotOf(name));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : RunqSlotCounters{};
  }

  struct Window {
    double p99_ns = 0;
    uint64_t waits = 0;
    double mean_ns = 0;
  };
  // Run-queue wait of tenant `name` over the next `duration`.
  Window Measure(const std::string& name, std::chrono::milliseconds duration) {
    RunqSlotCounters before = Read(name);
    std::this_thread::sleep_for(duration);
    RunqSlotCounters after = Read(name);
    Window w;
    w.p99_ns = Log2Quantile(Log2Delta(after.hist, before.hist), 0.99);
    w.waits = after.waits - before.waits;
    w.mean_ns = w.waits ? static_cast<double>(after.wait_ns - before.wait_ns) / w.waits : 0;
    return w;
  }

  std::string Procs(const std::string& rel) { return tree_->PathIn(mount_, rel) + "/cgroup.procs"; }

  // Gives tenant `name` `factor` times the default CPU weight. Under EEVDF
  // (6.6+) a sleeper that wakes next to an equal-weight spinner preempts it
  // at once and waits some microseconds; next to a heavier one it waits
  // whole slices, as a small VM does next to a big one.
  void Weigh(const std::string& name, int factor) {
    if (hierarchy_ == "cpu") {
      ASSERT_TRUE(tree_->WriteFile(mount_, name, "cpu.shares", absl::StrCat(1024 * factor)).ok());
    } else {
      (void)tree_->WriteFile(mount_, name, "cpu.weight", absl::StrCat(100 * factor));
    }
  }

  CgroupMounts mounts_;
  std::string hierarchy_;
  std::string mount_;
  std::unique_ptr<TestCgroupTree> tree_;
  std::unique_ptr<TenantRegistry> registry_;
  std::unique_ptr<RunqCollector> collector_;
};

// Asserted: p99 with the hog >= 3x the p99 before it and >= 2 ms (a hog on the
// same CPU holds it for whole slices), the mean >= 5x, and after the hog is
// killed p99 drops to <= 1/2 of the hog window's. On a quiet machine the p99
// factor is 10-25x; on this shared 2-core machine under builds (load ~10) the
// quiet p99 is itself a background task's slice (~3 ms), hence 3x.
TEST_F(RunqHarmRootBpf, VictimP99RisesThreefoldWithHogOnItsCpuAndFallsBackWithoutIt) {
  ASSERT_TRUE(tree_->Create({"victim", "hog"}).ok());
  // The victim weighs 10x a plain task, so the host's other load (builds on a
  // shared 2-core machine) moves its figures less; the hog, a heavy VM, 100x.
  for (auto [t, shares, weight] :
       {std::tuple{"victim", "10240", "1000"}, std::tuple{"hog", "102400", "10000"}}) {
    if (hierarchy_ == "cpu") {
      ASSERT_TRUE(tree_->WriteFile(mount_, t, "cpu.shares", shares).ok());
    } else {
      (void)tree_->WriteFile(mount_, t, "cpu.weight", weight);  // needs the cpu controller
    }
  }
  OwnedProcess victim = Spawn(Procs("victim"), 0, Behaviour::kSleeper);
  ASSERT_GT(victim.pid(), 0);
  StartCollector();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  const Window quiet = Measure("victim", std::chrono::seconds(2));
  Window hogged;
  {
    OwnedProcess hog = Spawn(Procs("hog"), 0, Behaviour::kHog);
    ASSERT_GT(hog.pid(), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    hogged = Measure("victim", std::chrono::seconds(2));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const Window after = Measure("victim", std::chrono::seconds(2));

  std::cout << "victim run-queue wait via " << collector_->attach_kind() << ":\n"
            << "  before hog: p99 " << quiet.p99_ns / 1e3 << " us, mean " << quiet.mean_ns / 1e3
            << " us, " << quiet.waits << " waits\n"
            << "  with hog:   p99 " << hogged.p99_ns / 1e3 << " us, mean " << hogged.mean_ns / 1e3
            << " us, " << hogged.waits << " waits\n"
            << "  after hog:  p99 " << after.p99_ns / 1e3 << " us, mean " << after.mean_ns / 1e3
            << " us, " << after.waits << " waits\n"
            << "  lost events: " << collector_->lost_events() << "\n";
  // A 1 ms sleeper wakes ~900 times a second when nothing holds it back
  // (in at least one of the two windows without the hog).
  EXPECT_GT(std::max(quiet.waits, after.waits), 500u);
  EXPECT_GT(hogged.waits, 100u);
  EXPECT_GE(hogged.p99_ns, 2e6);
  // Against the quieter of the two windows without the hog: on this shared VM
  // one of them now and then catches a burst of steal or a stall of the
  // machine (a CI run saw a quiet mean of 137 us with its p99 at 41 us, then
  // 12 us after the hog; a run beside the package test's debootstrap, an
  // after-window p99 of 1.4 s over 65 waits, then a quiet p99 of 1.7 ms).
  const double calm_p99 = std::min(quiet.p99_ns, after.p99_ns);
  EXPECT_GE(hogged.p99_ns, 3 * calm_p99);
  EXPECT_GE(hogged.mean_ns, 5 * std::min(quiet.mean_ns, after.mean_ns));
  EXPECT_LE(calm_p99, hogged.p99_ns / 2);
  EXPECT_EQ(Read("hog").waits > 0, true) << "the hog is a tenant too and was preempted";
}

// Threads two levels down (like libvirt's vcpu0) count for the tenant, and the
// sum equals what the kernel says those tasks waited (schedstat run_delay).
TEST_F(RunqHarmRootBpf, NestedChildCgroupWaitsCountForTenantAndMatchSchedstat) {
  ASSERT_TRUE(tree_->Create({"vm", "noise"}).ok());
  // Waits of whole slices: a fixed offset between the two clocks at each
  // wait would weigh too much in waits of microseconds.
  Weigh("noise", 10);
  ASSERT_TRUE(tree_->SpawnWorkload("vm", 0.0, "machine/vcpu0").ok());  // creates the nested dirs
  StartCollector();
  OwnedProcess a = Spawn(Procs("vm/machine/vcpu0"), 0, Behaviour::kSleeper);
  OwnedProcess b = Spawn(Procs("vm/machine"), 0, Behaviour::kSleeper);
  OwnedProcess hog = Spawn(Procs("noise"), 0, Behaviour::kHog);
  ASSERT_GT(a.pid(), 0);
  ASSERT_GT(b.pid(), 0);
  ASSERT_GT(hog.pid(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  // Freeze the sleepers (SIGSTOP) so no wait is in flight at either reading.
  auto freeze = [&](int sig) {
    kill(a.pid(), sig);
    kill(b.pid(), sig);
  };
  freeze(SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const RunqSlotCounters start = Read("vm");
  const uint64_t kernel_start = RunDelayNs(a.pid()) + RunDelayNs(b.pid());
  freeze(SIGCONT);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  freeze(SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const RunqSlotCounters end = Read("vm");
  const uint64_t kernel_end = RunDelayNs(a.pid()) + RunDelayNs(b.pid());
  freeze(SIGCONT);

  const double bpf_ns = static_cast<double>(end.wait_ns - start.wait_ns);
  const double kernel_ns = static_cast<double>(kernel_end - kernel_start);
  std::cout << "nested tenant: bpf " << bpf_ns / 1e6 << " ms over " << end.waits - start.waits
            << " waits, schedstat run_delay " << kernel_ns / 1e6 << " ms, error "
            << (kernel_ns > 0 ? 100.0 * (bpf_ns - kernel_ns) / kernel_ns : 0.0) << " %\n";
  EXPECT_GT(end.waits - start.waits, 500u) << "two 1 ms sleepers for 2 s";
  ASSERT_GT(kernel_ns, 10e6) << "a hog shares their CPU: they must have waited";
  // The kernel stamps with the run-queue clock, we with ktime at the
  // tracepoints: a few microseconds apart at each wait (2.6-3.5 us here).
  const double waits = static_cast<double>(end.waits - start.waits);
  EXPECT_LE(std::abs(bpf_ns - kernel_ns), std::max(0.10 * kernel_ns, 5e3 * waits));
  EXPECT_EQ(Log2Count(end.hist) - Log2Count(start.hist), end.waits - start.waits)
      << "every wait lands in exactly one bucket";
}

TEST_F(RunqHarmRootBpf, RawTracepointFallbackCountsWaits) {
  ASSERT_TRUE(tree_->Create({"victim", "hog"}).ok());
  Weigh("hog", 10);
  OwnedProcess victim = Spawn(Procs("victim"), 0, Behaviour::kSleeper);
  OwnedProcess hog = Spawn(Procs("hog"), 0, Behaviour::kHog);
  ASSERT_GT(victim.pid(), 0);
  ASSERT_GT(hog.pid(), 0);
  StartCollector("raw_tp");
  EXPECT_EQ(collector_->attach_kind(), "raw_tp");
  const Window w = Measure("victim", std::chrono::seconds(1));
  std::cout << "raw_tp victim: p99 " << w.p99_ns / 1e3 << " us over " << w.waits << " waits\n";
  EXPECT_GT(w.waits, 100u);
  EXPECT_GT(w.p99_ns, 100e3) << "the hog shares the victim's CPU";
  EXPECT_EQ(collector_->lost_events(), 0u);
}

// Who held the CPU while a tenant waited: a sleeper next to another tenant's
// hog on CPU 0 waits behind the hog; three spinners of one tenant alone on
// CPU 1 wait behind each other. Every nanosecond of wait is given a holder.
TEST_F(RunqHarmRootBpf, WaitIsAttributedToTheTenantThatHeldTheCpu) {
  ASSERT_TRUE(tree_->Create({"victim", "hog", "many"}).ok());
  // The hog weighs 10x the victim (a big VM next to a small one), so the
  // sleeper waits whole slices behind it, and the host's own tasks on CPU 0
  // are a small part of its waiting.
  Weigh("hog", 10);
  OwnedProcess victim = Spawn(Procs("victim"), 0, Behaviour::kSleeper);
  OwnedProcess hog = Spawn(Procs("hog"), 0, Behaviour::kHog);
  std::vector<OwnedProcess> many;
  for (int i = 0; i < 3; ++i) many.push_back(Spawn(Procs("many"), 1, Behaviour::kHog));
  ASSERT_GT(victim.pid(), 0);
  ASSERT_GT(hog.pid(), 0);
  for (const auto& m : many) ASSERT_GT(m.pid(), 0);
  for (const char* mode : {"tp_btf", "raw_tp"}) {
    collector_.reset();
    StartCollector(mode);
    // Both maps read while every workload is stopped: no wait is charged
    // between the two readings.
    auto freeze = [&](int sig) {
      for (pid_t pid : {victim.pid(), hog.pid()}) kill(pid, sig);
      for (const auto& m : many) kill(m.pid(), sig);
      if (sig == SIGSTOP) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    };
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    freeze(SIGSTOP);
    auto causes0 = collector_->ReadCauses();
    ASSERT_TRUE(causes0.ok()) << causes0.status();
    const RunqSlotCounters v0 = Read("victim"), m0 = Read("many");
    freeze(SIGCONT);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    freeze(SIGSTOP);
    auto causes1 = collector_->ReadCauses();
    ASSERT_TRUE(causes1.ok()) << causes1.status();
    const RunqSlotCounters v1 = Read("victim"), m1 = Read("many");
    freeze(SIGCONT);
    // Per holder: the wait in the window, as a share of the tenant's.
    auto shares = [&](const std::string& name, uint64_t total) {
      std::map<std::string, double> out;
      const uint32_t slot = SlotOf(name);
      auto holder_name = [&](uint32_t h) -> std::string {
        if (h == slot) return "self";
        if (h == FW_HOLDER_HOST) return "host";
        if (h == FW_HOLDER_IDLE) return "idle";
        for (const auto& e : registry_->tenants()) {
          if (e.slot == h) return e.tenant.name();
        }
        return absl::StrCat("slot ", h);
      };
      uint64_t sum = 0;
      for (const RunqCause& c : (*causes1)[slot]) {
        uint64_t before = 0;
        for (const RunqCause& b : (*causes0)[slot]) {
          if (b.holder == c.holder) before = b.wait_ns;
        }
        out[holder_name(c.holder)] += static_cast<double>(c.wait_ns - before) / total;
        sum += c.wait_ns - before;
      }
      EXPECT_EQ(sum, total) << name << ": every ns of wait has a holder";
      return out;
    };
    auto victim_by = shares("victim", v1.wait_ns - v0.wait_ns);
    auto many_by = shares("many", m1.wait_ns - m0.wait_ns);
    std::cout << mode << ": victim waited " << (v1.wait_ns - v0.wait_ns) / 1e6 << " ms: hog "
              << victim_by["hog"] << ", self " << victim_by["self"] << ", host "
              << victim_by["host"] << ", idle " << victim_by["idle"] << "; many waited "
              << (m1.wait_ns - m0.wait_ns) / 1e6 << " ms: self " << many_by["self"] << ", host "
              << many_by["host"] << ", victim+hog " << many_by["victim"] + many_by["hog"] << "\n";
    EXPECT_GE(victim_by["hog"], 0.8) << mode << ": the sleeper waits behind the other tenant's hog";
    EXPECT_LE(victim_by["self"], 0.01) << mode << ": a single thread never waits behind itself";
    EXPECT_GE(many_by["self"], 0.8) << mode << ": three spinners on one CPU wait for each other";
    EXPECT_EQ(collector_->lost_events(), 0u);
  }
}

// Three spinners of one tenant share a CPU with a host task pair that
// switches thousands of times a second. A spinner's wait spans more changes
// of holder than the program keeps; the part before the oldest it knows is
// split like the part it covers, so each holder is charged about the time it
// held the CPU while the spinners waited (with one spinner running, two
// wait; with the host running, three), within 0.3: the split is an estimate
// from the last segments, and it leans towards the spinners (seen: host 0.50
// where its time says 0.63; 0.53 for 0.73 in the sanitizer build). Charged
// to the oldest segment, the host pair (nearly always the oldest) took all
// of it (1.00, and the CI failure of 2026-12-07).
TEST_F(RunqHarmRootBpf, AHostTaskThatSwitchesOftenIsChargedItsTimeNotTheLongTurns) {
  ASSERT_TRUE(tree_->Create({"many"}).ok());
  std::vector<OwnedProcess> many;
  for (int i = 0; i < 3; ++i) many.push_back(Spawn(Procs("many"), 1, Behaviour::kHog));
  std::vector<OwnedProcess> host = SpawnPingPong(1);
  ASSERT_EQ(host.size(), 2u);
  for (const auto& m : many) ASSERT_GT(m.pid(), 0);
  StartCollector();
  const uint32_t slot = SlotOf("many");
  auto run_of = [](const std::vector<OwnedProcess>& procs) {
    uint64_t ns = 0;
    for (const auto& p : procs) ns += RunNs(p.pid());
    return ns;
  };
  auto caused = [&](const absl::flat_hash_map<uint32_t, std::vector<RunqCause>>& causes) {
    std::map<uint32_t, uint64_t> out;
    auto it = causes.find(slot);
    if (it != causes.end()) {
      for (const RunqCause& c : it->second) out[c.holder] = c.wait_ns;
    }
    return out;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto causes0 = collector_->ReadCauses();
  ASSERT_TRUE(causes0.ok()) << causes0.status();
  const uint64_t host0 = run_of(host), many0 = run_of(many);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto causes1 = collector_->ReadCauses();
  ASSERT_TRUE(causes1.ok()) << causes1.status();
  const uint64_t host1 = run_of(host), many1 = run_of(many);
  std::map<uint32_t, uint64_t> before = caused(*causes0), after = caused(*causes1);
  double total = 0, by_host = 0, by_self = 0;
  for (const auto& [holder, ns] : after) {
    const double d = static_cast<double>(ns - before[holder]);
    total += d;
    if (holder == FW_HOLDER_HOST) by_host += d;
    if (holder == slot) by_self += d;
  }
  ASSERT_GT(total, 0);
  const double h = static_cast<double>(host1 - host0), m = static_cast<double>(many1 - many0);
  ASSERT_GT(h + m, 0);
  const double expected_host = 3 * h / (3 * h + 2 * m);
  std::cout << "host held CPU 1 for " << h / 1e6 << " ms, the spinners " << m / 1e6
            << " ms; their waiting: host " << by_host / total << " (expected " << expected_host
            << "), self " << by_self / total << "\n";
  EXPECT_NEAR(by_host / total, expected_host, 0.3);
  EXPECT_NEAR(by_self / total, 1 - expected_host, 0.3);
}

// Adaptive tracing (agent/runq_gate.h): nothing is counted while detached,
// and a task queued when the programs attach again is not charged from its
// stamp of the earlier attachment (a wait as long as the detached time). The
// "victim" spins at a tenth of the hog's weight on the hog's CPU, so it is
// queued at almost any moment. Attached and detached here through the "CPU
// limit in force" hold, the host never counting as contended.
TEST_F(RunqHarmRootBpf, AdaptiveTracingCountsOnlyWhileAttachedAndNoStaleStamps) {
  ASSERT_TRUE(tree_->Create({"victim", "hog"}).ok());
  Weigh("hog", 10);
  OwnedProcess hog = Spawn(Procs("hog"), 0, Behaviour::kHog);
  OwnedProcess victim = Spawn(Procs("victim"), 0, Behaviour::kHog);
  ASSERT_GT(hog.pid(), 0);
  ASSERT_GT(victim.pid(), 0);
  RunqGateParams gate;
  gate.contended_busy = 2;  // never
  gate.new_tenant = absl::ZeroDuration();
  gate.sample_every = 0;
  StartCollector("auto", gate);
  collector_->Tick(absl::Now());
  ASSERT_FALSE(collector_->attached()) << "quiet, no new tenant, no limit, no sample";
  const uint64_t traced_before = collector_->traced_ns();

  RunqSlotCounters start = Read("victim");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(Read("victim").waits, start.waits) << "detached: nothing counted";
  EXPECT_EQ(collector_->traced_ns(), traced_before);

  // Eight rounds of 400 ms detached, 200 ms attached.
  uint64_t attached_waits = 0;
  for (int round = 0; round < 8; ++round) {
    collector_->SetCpuLimitInForce(true);
    collector_->Tick(absl::Now());
    ASSERT_TRUE(collector_->attached());
    RunqSlotCounters on = Read("victim");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    RunqSlotCounters off = Read("victim");
    collector_->SetCpuLimitInForce(false);
    collector_->Tick(absl::Now());
    ASSERT_FALSE(collector_->attached());
    attached_waits += off.waits - on.waits;
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  RunqSlotCounters end = Read("victim");
  EXPECT_GT(attached_waits, 8u) << "preempted by the hog at every tick it gets";
  const std::vector<uint64_t> delta = Log2Delta(end.hist, start.hist);
  uint64_t stale = 0;
  // From 2^28 ns = 268 ms: far beyond the hog's turns, short of a detached 400 ms.
  for (size_t b = 28; b < delta.size(); ++b) stale += delta[b];
  EXPECT_EQ(stale, 0u) << "a stamp from before a detachment was charged";
  const double traced_s = static_cast<double>(collector_->traced_ns() - traced_before) / 1e9;
  EXPECT_GT(traced_s, 1.5);
  EXPECT_LT(traced_s, 2.5) << "only the attached rounds count as traced";
}

// The gate on the real host: a busy loop per CPU makes it contended within a
// few ticks (the CPUs' idle time from /proc/uptime), and it lets go once the
// loops stop and the linger has passed.
TEST_F(RunqHarmRootBpf, AdaptiveTracingAttachesWhileTheCpusAreBusy) {
  ASSERT_TRUE(tree_->Create({"busy"}).ok());
  RunqGateParams gate;
  gate.new_tenant = absl::ZeroDuration();
  gate.sample_every = 0;
  gate.linger = absl::Milliseconds(500);
  StartCollector("auto", gate);
  auto tick_for = [&](std::chrono::milliseconds duration) {
    const auto end = std::chrono::steady_clock::now() + duration;
    while (std::chrono::steady_clock::now() < end) {
      collector_->Tick(absl::Now());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  };
  tick_for(std::chrono::milliseconds(600));
  if (collector_->attached()) GTEST_SKIP() << "the host is busy already: nothing to show";
  std::vector<OwnedProcess> loops;
  const int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  for (int cpu = 0; cpu < cpus; ++cpu) {
    loops.push_back(Spawn(Procs("busy"), cpu, Behaviour::kHog));
    ASSERT_GT(loops.back().pid(), 0);
  }
  tick_for(std::chrono::milliseconds(600));
  EXPECT_TRUE(collector_->attached()) << "every CPU busy for 600 ms";
  loops.clear();  // killed
  tick_for(std::chrono::milliseconds(1500));
  EXPECT_FALSE(collector_->attached()) << "quiet again for longer than the linger";
}

TEST_F(RunqHarmRootBpf, TasksOutsideTenantsAreNotCharged) {
  ASSERT_TRUE(tree_->Create({"quiet"}).ok());
  ASSERT_TRUE(tree_->SpawnWorkload("quiet", 0.0).ok());  // a tenant task that never wakes
  StartCollector();
  // Outside every tenant: a sleeper and a hog fighting over CPU 0.
  OwnedProcess sleeper = Spawn("", 0, Behaviour::kSleeper);
  OwnedProcess hog = Spawn("", 0, Behaviour::kHog);
  ASSERT_GT(sleeper.pid(), 0);
  ASSERT_GT(hog.pid(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(Read("quiet").waits, 0u);
  EXPECT_EQ(Read("quiet").wait_ns, 0u);
}

}  // namespace
}  // namespace fairwatch::agent
