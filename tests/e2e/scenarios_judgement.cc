// Judgement outside the textbook case (docs/scenarios.md, "Judgement"):
// waiting a tenant does to itself, several offenders at once, tenants that
// come and go around a hog, a hog next to a single modest neighbour. Each
// scenario plays several variants of its class, not one tuned set-up.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/format.h"
#include "tests/e2e/scenario_kit.h"

namespace fairwatch::testing::e2e {
namespace {

// `n` busy workers.
std::vector<std::string> Busy(int n) { return {"stress-ng", "--cpu", absl::StrCat(n), "--quiet"}; }

// Checks that nobody but `offenders` (names) has a case, records how many
// innocent tenants were touched, and says who was blamed for what.
void CheckBlame(World& w, Outcome& out, const std::vector<std::string>& offenders,
                absl::string_view label) {
  std::vector<v1::Case> cases = CasesForCheck(*w.stack, out);
  std::vector<std::string> innocent;
  for (const v1::Case& c : cases) {
    const bool expected = std::any_of(offenders.begin(), offenders.end(), [&](const auto& o) {
      return c.tenant_id() == w.tenants.Id(o);
    });
    if (!expected) {
      innocent.push_back(absl::StrCat(c.tenant_name(), " (case ", c.case_id(), ")"));
      continue;
    }
    std::vector<std::string> caused;
    for (const v1::HarmedTenant& h : c.opening().harmed()) {
      caused.push_back(absl::StrCat(cli::FormatPercent(h.caused_share()), " of ", h.tenant_id(),
                                    h.measured() ? "'s run-queue wait" : "'s resource use"));
    }
    w.say.Say(absl::StrCat(label, ": ", c.tenant_name(), " blamed for ",
                           cli::FormatPercent(c.opening().blame()), " of the harm caused (",
                           absl::StrJoin(caused, "; "), ")"));
  }
  out.Figure(absl::StrCat(label, "_innocent_touched"), static_cast<double>(innocent.size()), "");
  out.Check(innocent.empty(),
            absl::StrCat(label, ": innocent tenants touched: ", absl::StrJoin(innocent, ", ")));
}

// --- Waiting a tenant does to itself -------------------------------------

struct SelfVariant {
  const char* name;
  const char* story;
  std::vector<std::string> idle;  // extra tenants that do nothing
  bool own_quota = false;         // `many` held to one core by a quota of its own
};

// A tenant whose threads outnumber the CPUs waits behind itself: a huge
// run-queue p99 and CPU pressure, none of it a neighbour's doing. Next to
// it, a single-threaded tenant near its share must not be blamed, and nobody
// is a victim, so there is no case at all.
void SelfQueuedScenario(ScenarioContext& ctx, Outcome& out) {
  const SelfVariant variants[] = {
      {"alone", "many (8 threads) next to single (1 thread)", {}, false},
      {"crowd",
       "many and single next to two idle tenants (the blast-radius cap counts four)",
       {"idle-a", "idle-b"},
       false},
      {"own-quota", "many held to one core by a quota of its own, next to single", {}, true},
  };
  for (const SelfVariant& v : variants) {
    std::vector<std::string> names = {"many", "single"};
    names.insert(names.end(), v.idle.begin(), v.idle.end());
    ScenarioContext vctx = Variant(ctx, v.name);
    World w(vctx, names, {});
    SCENARIO_REQUIRE_OK(out, w.Start(names.size()));
    if (v.own_quota) {
      const bool v1 = ctx.mounts.cpu_hierarchy == "cpu";
      SCENARIO_REQUIRE_OK(out, w.tenants.tree().WriteFile(ctx.mounts.cpu, "many",
                                                          v1 ? "cpu.cfs_quota_us" : "cpu.max",
                                                          v1 ? "100000" : "100000 100000"));
    }
    w.say.Say(absl::StrCat("variant ", v.name, ": ", v.story));
    SCENARIO_REQUIRE_OK(out, w.tenants.Run("many", Busy(8)));
    SCENARIO_REQUIRE_OK(out, w.tenants.Run("single", Busy(1)));
    Pause(absl::Seconds(4));
    std::map<std::string, double> rates =
        w.Rates({"many", "single"}, absl::Seconds(10), "both busy");
    w.watcher->Poll();
    v1::TenantDetail many;
    std::string error;
    if (w.stack->CliJson({"tenant", w.tenants.Id("many"), "--host", w.stack->host_id()}, &many,
                         &error)) {
      const v1::HarmSignals& h = many.harm();
      const double total = h.runq_wait_ns_per_s();
      w.say.Say(absl::StrFormat(
          "many: run-queue p99 %.1f ms, CPU pressure %.0f %%, %.0f %% of its waiting behind "
          "itself",
          h.runq_wait_p99_ns() / 1e6, 100 * h.cpu_psi_some_fraction(),
          total > 0 ? 100 * h.runq_self_wait_ns_per_s() / total : 0.0));
    }
    const std::vector<v1::Case> cases = CasesForCheck(*w.stack, out);
    out.Figure(absl::StrCat(v.name, "_cases"), static_cast<double>(cases.size()), "");
    out.Check(cases.empty(), absl::StrCat(v.name, ": ", cases.size(), " case(s): ",
                                          absl::StrJoin(OthersCases(cases, ""), ", ")));
    out.Figure(absl::StrCat(v.name, "_single_cores"), rates["single"], "cores");
    if (cases.empty()) w.say.Say("no case: many's waiting is its own, single is innocent");
  }
}

// --- Several offenders at once -------------------------------------------

struct CoVariant {
  const char* name;
  std::vector<std::string> hogs;                        // each with 2 busy workers
  std::vector<std::pair<std::string, int>> neighbours;  // name, steady percent
};

// Several tenants each taking more than their share next to modest ones: all
// are acted on (the cap on capped tenants once left the second free while the
// first paid for both), blamed by what each caused, the neighbours served.
void CoOffendersScenario(ScenarioContext& ctx, Outcome& out) {
  const CoVariant variants[] = {
      {"two", {"hog-a", "hog-b"}, {{"web", 20}, {"db", 20}}},
      {"three", {"hog-a", "hog-b", "hog-c"}, {{"web", 10}}},
  };
  for (const CoVariant& v : variants) {
    std::vector<std::string> names = v.hogs;
    for (const auto& [n, p] : v.neighbours) names.push_back(n);
    ScenarioContext vctx = Variant(ctx, v.name);
    World w(vctx, names, {});
    SCENARIO_REQUIRE_OK(out, w.Start(names.size()));
    std::vector<std::string> neighbour_names;
    for (const auto& [n, p] : v.neighbours) {
      SCENARIO_REQUIRE_OK(out, w.tenants.Run(n, Steady(p)));
      neighbour_names.push_back(n);
    }
    w.say.Say(absl::StrCat("variant ", v.name, ": ", absl::StrJoin(v.hogs, ", "),
                           " with 2 busy workers each next to ",
                           absl::StrJoin(neighbour_names, ", ")));
    Pause(absl::Seconds(5));
    std::map<std::string, double> quiet = w.Rates(neighbour_names, absl::Seconds(3), "quiet");
    const absl::Time t0 = absl::Now();
    for (const std::string& hog : v.hogs) SCENARIO_REQUIRE_OK(out, w.tenants.Run(hog, Busy(2)));
    for (const std::string& hog : v.hogs) {
      std::optional<Detection> d = WaitForLimit(w, hog, t0, absl::Seconds(15));
      SCENARIO_REQUIRE(out, d.has_value(),
                       absl::StrCat(v.name, ": ", hog, " not acted on within 15 s"));
      out.Figure(absl::StrCat(v.name, "_detect_", hog), d->applied_s, "s");
      CheckEvidence(w, out, d->record, hog, neighbour_names);
      out.Check(!w.tenants.CpuHeldBack(hog).empty(),
                absl::StrCat(v.name, ": ", hog, " not held back in the kernel"));
    }
    Pause(absl::Seconds(6));
    std::map<std::string, double> under =
        w.Rates(names, absl::Seconds(6), "with every hog held back");
    for (const std::string& n : neighbour_names) {
      const double share = under[n] / quiet[n];
      out.Figure(absl::StrCat(v.name, "_", n, "_of_quiet"), share, "");
      out.Check(share >= 0.9,
                absl::StrCat(v.name, ": ", n, " got ", Fmt(share), " of its quiet rate"));
    }
    CheckBlame(w, out, v.hogs, v.name);
  }
}

// --- Tenants that come and go --------------------------------------------

// Short-lived tenants under the scenario's prefix, in a process of its own:
// a new one every `every`, each made in every hierarchy, running `argv`, and
// killed and removed `life` after it started (so life / every of them live
// at once). Whatever is left is removed when this goes.
class Churner {
 public:
  Churner(const Tenants& tenants, std::vector<std::string> argv, absl::Duration every,
          absl::Duration life)
      : dirs_(tenants.mounts().all()), prefix_(tenants.prefix()) {
    pid_ = fork();
    if (pid_ != 0) return;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct Live {
      std::string name;
      pid_t pid;
      absl::Time end;
    };
    std::deque<Live> live;
    for (int i = 0;; ++i) {
      const absl::Time now = absl::Now();
      while (!live.empty() && live.front().end <= now) {
        if (live.front().pid > 0) {
          kill(live.front().pid, SIGKILL);
          waitpid(live.front().pid, nullptr, 0);
        }
        for (const std::string& m : dirs_) rmdir(Path(m, live.front().name).c_str());
        live.pop_front();
      }
      const std::string name = absl::StrCat("churn-", i);
      for (const std::string& m : dirs_) mkdir(Path(m, name).c_str(), 0755);
      const pid_t child = fork();
      if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (const std::string& m : dirs_) {
          std::ofstream(Path(m, name) + "/cgroup.procs") << getpid();
        }
        std::vector<char*> args;
        for (std::string& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        execvp(args[0], args.data());
        _exit(127);
      }
      live.push_back({name, child, now + life});
      usleep(static_cast<useconds_t>(absl::ToInt64Microseconds(every)));
    }
  }
  ~Churner() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    // The last one's workload and directories.
    for (const std::string& m : dirs_) {
      const std::string base = absl::StrCat(m, "/", prefix_);
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(base, ec)) {
        if (entry.path().filename().string().rfind("churn-", 0) != 0) continue;
        std::ifstream procs(entry.path() / "cgroup.procs");
        for (pid_t p; procs >> p;) kill(p, SIGKILL);
      }
    }
    usleep(200'000);
    for (const std::string& m : dirs_) {
      const std::string base = absl::StrCat(m, "/", prefix_);
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(base, ec)) {
        if (entry.path().filename().string().rfind("churn-", 0) == 0) {
          rmdir(entry.path().c_str());
        }
      }
    }
  }
  Churner(const Churner&) = delete;
  Churner& operator=(const Churner&) = delete;
  bool running() const { return pid_ > 0 && kill(pid_, 0) == 0; }

 private:
  std::string Path(const std::string& mount, const std::string& name) const {
    return absl::StrCat(mount, "/", prefix_, "/", name);
  }
  std::vector<std::string> dirs_;
  std::string prefix_;
  pid_t pid_ = -1;
};

struct ChurnVariant {
  const char* name;
  const char* story;
  std::vector<std::string> argv;
  absl::Duration every, life;
};

// A clear CPU hog next to a steady neighbour while short-lived tenants
// appear and vanish every fraction of a second: caught as fast as on a
// quiet host; none of the passers-by, nor the neighbour, is touched.
void ChurnScenario(ScenarioContext& ctx, Outcome& out) {
  const ChurnVariant variants[] = {
      {"starting",
       "a new tenant every 0.5 s, each busy 0.1 s as it starts (a container's init), then idle, "
       "living 3 s",
       {"sh", "-c", "timeout 0.1 sh -c 'while :; do :; done'; exec sleep 10"},
       absl::Milliseconds(500),
       absl::Seconds(3)},
      {"light", "a new tenant every 0.3 s, each at a steady 5 % of a core, living 2 s", Steady(5),
       absl::Milliseconds(300), absl::Seconds(2)},
      {"idle",
       "a new tenant every 0.2 s, each asleep, living 1 s",
       {"sleep", "10"},
       absl::Milliseconds(200),
       absl::Seconds(1)},
  };
  for (const ChurnVariant& v : variants) {
    ScenarioContext vctx = Variant(ctx, v.name);
    World w(vctx, {"web", "hog"}, {});
    SCENARIO_REQUIRE_OK(out, w.Start(2));
    SCENARIO_REQUIRE_OK(out, w.tenants.Run("web", Steady(40)));
    w.say.Say(absl::StrCat("variant ", v.name, ": web steady at 40 %; ", v.story));
    Churner churn(w.tenants, v.argv, v.every, v.life);
    Pause(absl::Seconds(6));
    SCENARIO_REQUIRE(out, churn.running(), "the churner died");
    const absl::Time t0 = absl::Now();
    SCENARIO_REQUIRE_OK(out, w.tenants.Run("hog", Hog()));
    w.say.Say("hog starts, wanting every core, in the middle of the churn");
    std::optional<Detection> d = WaitForLimit(w, "hog", t0, absl::Seconds(15));
    SCENARIO_REQUIRE(out, d.has_value(), absl::StrCat(v.name, ": hog not acted on within 15 s"));
    out.Figure(absl::StrCat(v.name, "_detect"), d->applied_s, "s");
    out.Check(d->applied_s <= 5,
              absl::StrCat(v.name, ": acted on ", Seconds(d->applied_s), " after the start"));
    Pause(absl::Seconds(3));
    CheckBlame(w, out, {"hog"}, v.name);
  }
}

// --- One victim ----------------------------------------------------------

struct OneVictimVariant {
  const char* name;
  const char* story;
  std::vector<std::string> hog;
  int neighbour_percent;
  // The light neighbour's harm shows in fewer intervals: much of its little
  // waiting is behind the host's own tasks (the daemons, this harness), and
  // an interval counts only when the hog caused most of it (seen: 1.8-5.9 s
  // over 8 runs, docs/performance.md).
  double bound_s = 5;
};

// A hog that leaves a lone modest neighbour its CPU share but makes it wait:
// within its max-min fair share, yet the cause of the neighbour's harm. Acted
// on (the lightest lever) as fast as next to two neighbours.
void OneVictimScenario(ScenarioContext& ctx, Outcome& out) {
  const OneVictimVariant variants[] = {
      {"steady", "a hog next to one neighbour at a steady 40 % of a core", Hog(), 40},
      {"light", "a hog next to one neighbour at 5 %: little CPU, wakes every 10 ms", Hog(), 5, 8},
      {"threads", "a hog with 8 threads (more than the CPUs) next to one neighbour at 40 %",
       Busy(8), 40},
  };
  for (const OneVictimVariant& v : variants) {
    ScenarioContext vctx = Variant(ctx, v.name);
    World w(vctx, {"web", "hog"}, {});
    SCENARIO_REQUIRE_OK(out, w.Start(2));
    SCENARIO_REQUIRE_OK(out, w.tenants.Run("web", Steady(v.neighbour_percent)));
    w.say.Say(absl::StrCat("variant ", v.name, ": ", v.story));
    Pause(absl::Seconds(5));
    std::map<std::string, double> quiet = w.Rates({"web"}, absl::Seconds(3), "quiet");
    const absl::Time t0 = absl::Now();
    SCENARIO_REQUIRE_OK(out, w.tenants.Run("hog", v.hog));
    std::optional<Detection> d = WaitForLimit(w, "hog", t0, absl::Seconds(15));
    SCENARIO_REQUIRE(out, d.has_value(), absl::StrCat(v.name, ": hog not acted on within 15 s"));
    out.Figure(absl::StrCat(v.name, "_detect"), d->applied_s, "s");
    out.Check(d->applied_s <= v.bound_s,
              absl::StrCat(v.name, ": acted on ", Seconds(d->applied_s), " after the start"));
    CheckEvidence(w, out, d->record, "hog", {"web"});
    Pause(absl::Seconds(4));
    std::map<std::string, double> under = w.Rates({"web", "hog"}, absl::Seconds(5), "held back");
    out.Figure(absl::StrCat(v.name, "_web_of_quiet"), under["web"] / quiet["web"], "");
    out.Figure(absl::StrCat(v.name, "_hog_cores"), under["hog"], "cores");
    CheckBlame(w, out, {"hog"}, v.name);
  }
}

}  // namespace

std::vector<Scenario> JudgementScenarios() {
  return {
      {"self-queued",
       "a tenant whose threads outnumber the CPUs waits behind itself, next to a single-threaded "
       "one (3 variants): no victim, nobody blamed",
       {"stress-ng"},
       SelfQueuedScenario},
      {"co-offenders",
       "two or three hogs next to modest neighbours (2 variants): every one acted on, blame by "
       "what "
       "each caused, the neighbours served",
       {"stress-ng"},
       CoOffendersScenario},
      {"churn",
       "a hog next to a steady neighbour while tenants come and go every fraction of a second "
       "(2 variants): caught as on a quiet host, nobody else touched",
       {"stress-ng"},
       ChurnScenario},
      {"one-victim",
       "a hog next to a single modest neighbour (3 variants): the interference alone is enough "
       "for the lightest lever",
       {"stress-ng"},
       OneVictimScenario},
  };
}

}  // namespace fairwatch::testing::e2e
