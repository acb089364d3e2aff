// Root + BPF: network counters of the tc and cgroup_skb programs against the
// kernel's own figures, reconcile after a crash, interfaces that come and go.
// Traffic stays on loopback or inside namespaces the tests create.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/cgroup_discovery.h"
#include "agent/cgroup_layout.h"
#include "agent/net_collector.h"
#include "agent/net_interfaces.h"
#include "agent/tenant_registry.h"
#include "bpf/fw_net.h"
#include "tests/support/test_cgroups.h"

namespace fairwatch::agent {
namespace {

using fairwatch::testing::TestCgroupTree;
using std::chrono::milliseconds;

int Sh(const std::string& cmd) {
  int rc = system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string ShOut(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// A network namespace "fwt<pid>n<k>" and, on demand, a veth pair
// fwt<pid>h<k> (host) <-> fwt<pid>p<k> (inside) on a link-local /30.
class TestNetns {
 public:
  explicit TestNetns(int k)
      : ns_(absl::StrCat("fwt", getpid(), "n", k)),
        host_(absl::StrCat("fwt", getpid(), "h", k)),
        peer_(absl::StrCat("fwt", getpid(), "p", k)) {
    const int a = 16 + getpid() % 200;
    host_ip_ = absl::StrCat("169.254.", a, ".", 4 * k + 1);
    peer_ip_ = absl::StrCat("169.254.", a, ".", 4 * k + 2);
  }
  ~TestNetns() {
    Sh("ip netns del " + ns_);
    Sh("ip link del " + host_);
  }
  bool Create() {
    return Sh("ip netns add " + ns_) == 0 && Sh("ip -n " + ns_ + " link set lo up") == 0 &&
           Sh("ip netns exec " + ns_ + " sysctl -w net.ipv6.conf.all.disable_ipv6=1") == 0 &&
           Sh("ip netns exec " + ns_ + " sysctl -w net.ipv6.conf.default.disable_ipv6=1") == 0;
  }
  // IPv6 off on both ends: no router solicitations or MLD reports in the window.
  bool AddVeth() {
    return Sh(absl::StrCat("ip link add ", host_, " type veth peer name ", peer_, " netns ",
                           ns_)) == 0 &&
           Sh("sysctl -w net.ipv6.conf." + host_ + ".disable_ipv6=1") == 0 &&
           Sh(absl::StrCat("ip addr add ", host_ip_, "/30 dev ", host_)) == 0 &&
           Sh("ip link set " + host_ + " up") == 0 &&
           Sh(absl::StrCat("ip -n ", ns_, " addr add ", peer_ip_, "/30 dev ", peer_)) == 0 &&
           Sh("ip -n " + ns_ + " link set " + peer_ + " up") == 0;
  }
  bool Delete() { return Sh("ip netns del " + ns_) == 0; }
  const std::string& ns() const { return ns_; }
  const std::string& host() const { return host_; }
  const std::string& peer_ip() const { return peer_ip_; }

 private:
  std::string ns_, host_, peer_, host_ip_, peer_ip_;
};

// Processes the test started; SIGKILLed and reaped at the end.
class Processes {
 public:
  ~Processes() {
    for (pid_t p : pids_) Kill(p);
  }
  // Forks; the child joins cgroup_procs_file (if given), sends stdout to
  // out_file (if given, else /dev/null) and execs argv.
  pid_t Spawn(const std::string& cgroup_procs_file, std::vector<std::string> argv,
              const std::string& out_file = "") {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      if (!cgroup_procs_file.empty()) {
        int fd = open(cgroup_procs_file.c_str(), O_WRONLY);
        if (fd < 0 || write(fd, "0", 1) != 1) _exit(126);
        close(fd);
      }
      int out = open(out_file.empty() ? "/dev/null" : out_file.c_str(),
                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int null = open("/dev/null", O_WRONLY);
      dup2(out, 1);
      dup2(null, 2);
      execvp(args[0], args.data());
      _exit(127);
    }
    if (pid > 0) pids_.push_back(pid);
    return pid;
  }
  // Waits for pid to exit; its exit code, or -1.
  int Wait(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  void Kill(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
  }

 private:
  std::vector<pid_t> pids_;
};

// kernel.bpf_stats_enabled=1 for the test's lifetime, then the old value back.
class BpfStats {
 public:
  BpfStats() {
    std::ifstream("/proc/sys/kernel/bpf_stats_enabled") >> old_;
    std::ofstream("/proc/sys/kernel/bpf_stats_enabled") << "1";
  }
  ~BpfStats() { std::ofstream("/proc/sys/kernel/bpf_stats_enabled") << old_; }

 private:
  std::string old_ = "0";
};

bool WaitFor(const std::function<bool()>& cond, milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return cond();
}

bool InOtherNetns(pid_t pid) {
  auto own = NetnsOf("/proc/self/ns/net");
  auto theirs = NetnsOf(absl::StrCat("/proc/", pid, "/ns/net"));
  return own.ok() && theirs.ok() && !(*own == *theirs);
}

// Program id of the tc filter at our handle/priority, 0 if none.
uint32_t OurFilter(const std::string& ifname, bpf_tc_attach_point point) {
  // "No such filter" is an answer here, not a warning worth printing.
  libbpf_print_fn_t previous = libbpf_set_print(nullptr);
  struct Restore {
    libbpf_print_fn_t fn;
    ~Restore() { libbpf_set_print(fn); }
  } restore{previous};
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(if_nametoindex(ifname.c_str())),
              .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = FW_NET_TC_HANDLE, .priority = FW_NET_TC_PRIORITY);
  if (hook.ifindex == 0 || bpf_tc_query(&hook, &opts) != 0) return 0;
  return opts.prog_id;
}

const v1::NetCounters* Entry(const v1::UsageReport& report, size_t tenant,
                             const std::string& ifname) {
  for (const auto& n : report.tenants(static_cast<int>(tenant)).net()) {
    if (n.interface() == ifname) return &n;
  }
  return nullptr;
}

v1::UsageReport CollectOnce(NetCollector& collector, const std::vector<TenantEntry>& tenants,
                            absl::Status* status = nullptr) {
  v1::UsageReport report;
  for (const auto& t : tenants) report.add_tenants()->set_tenant_id(t.tenant.id());
  absl::Status s = collector.Collect(tenants, &report);
  if (status) *status = s;
  EXPECT_TRUE(s.ok()) << s;
  return report;
}

bool SendUdp(const std::string& ip, int count) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_in to {};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  inet_pton(AF_INET, ip.c_str(), &to.sin_addr);
  bool ok = true;
  for (int i = 0; i < count && ok; ++i) {
    ok = sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 1;
    // Spaced out: ICMP errors are rate limited (1 per second burst 6 by default).
    std::this_thread::sleep_for(milliseconds(50));
  }
  close(fd);
  return ok;
}

// The first number after "key" following section in iperf3's JSON.
uint64_t JsonNumber(const std::string& json, const std::string& section, const std::string& key) {
  size_t at = json.find("\"" + section + "\"");
  if (at == std::string::npos) return 0;
  const std::string quoted = "\"" + key + "\":";
  at = json.find(quoted, at);
  if (at == std::string::npos) return 0;
  at += quoted.size();
  while (at < json.size() && (json[at] == ' ' || json[at] == '\t')) ++at;
  size_t end = json.find_first_not_of("0123456789", at);
  uint64_t v = 0;
  return absl::SimpleAtoi(json.substr(at, end - at), &v) ? v : 0;
}

void PrintProgramCost(const NetCollector& collector, const v1::AgentSelfCounters& before,
                      const std::string& prefix) {
  v1::AgentSelfCounters after;
  collector.AddSelfCounters(&after);
  for (const auto& p : after.programs()) {
    if (p.name().rfind(prefix, 0) != 0) continue;
    uint64_t t0 = 0, c0 = 0;
    for (const auto& q : before.programs()) {
      if (q.name() == p.name()) t0 = q.run_time_ns(), c0 = q.run_count();
    }
    const uint64_t runs = p.run_count() - c0;
    std::cout << "program " << p.name() << ": " << runs << " runs";
    if (runs > 0) std::cout << ", " << (p.run_time_ns() - t0) / runs << " ns/packet";
    std::cout << "\n";
  }
}

class NetRootBpf : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fairwatch::testing::IsRoot()) GTEST_SKIP() << "needs root: loads BPF, makes netns";
    if (Sh("command -v iperf3") != 0) GTEST_SKIP() << "needs iperf3 (apt-get install iperf3)";
    auto mounts = ReadCgroupMounts();
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    mounts_ = *mounts;
    if (mounts_.unified.empty()) GTEST_SKIP() << "no cgroup2 mount";
    tree_ = std::make_unique<TestCgroupTree>(std::vector<std::string>{mounts_.unified},
                                             fairwatch::testing::UniqueCgroupPrefix());
  }

  // Tenants = children of the test tree in the unified hierarchy.
  std::vector<TenantEntry> Discover(TenantRegistry& registry) {
    v1::CgroupParentSource parent;
    parent.set_path(tree_->prefix());
    CgroupParentDiscovery discovery(mounts_, "unified", {parent});
    EXPECT_TRUE(discovery.Init().ok());
    auto found = discovery.Scan();
    EXPECT_TRUE(found.ok()) << found.status();
    registry.Apply(std::move(*found));
    return registry.tenants();
  }

  NetCollectorOptions Options() {
    NetCollectorOptions o;
    o.max_tenants = 16;
    o.max_interfaces = 16;
    o.cgroup_mounts = mounts_;
    return o;
  }

  std::string Procs(const std::string& child) {
    return tree_->PathIn(mounts_.unified, child) + "/cgroup.procs";
  }

  CgroupMounts mounts_;
  std::unique_ptr<TestCgroupTree> tree_;
  Processes procs_;
};

TEST_F(NetRootBpf, VethTenantFoundByNetnsMatchesHostInterfaceStatsExactly) {
  BpfStats stats_on;
  TestNetns net(0);
  ASSERT_TRUE(net.Create());
  ASSERT_TRUE(net.AddVeth());
  ASSERT_TRUE(tree_->Create({"veth"}).ok());
  // The tenant: an iperf3 server in the tenant's cgroup and network namespace.
  pid_t server = procs_.Spawn(Procs("veth"), {"ip", "netns", "exec", net.ns(), "iperf3", "-s"});
  ASSERT_GT(server, 0);
  ASSERT_TRUE(WaitFor([&] { return InOtherNetns(server); }, milliseconds(3000)));

  TenantRegistry registry(16);
  auto tenants = Discover(registry);
  ASSERT_EQ(tenants.size(), 1u);
  NetCollectorOptions options = Options();  // no tenant_interfaces: found by discovery
  NetCollector collector(options);
  ASSERT_TRUE(collector.Init().ok());
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  ASSERT_EQ(collector.InterfacesOf(tenants[0].tenant.id()), std::vector<std::string>{net.host()});
  EXPECT_FALSE(collector.CountedByCgroup(tenants[0].tenant.id()))
      << "a tenant in its own netns is not counted by cgroup_skb";
  EXPECT_NE(OurFilter(net.host(), BPF_TC_INGRESS), 0u);
  EXPECT_NE(OurFilter(net.host(), BPF_TC_EGRESS), 0u);
  v1::AgentSelfCounters cost_before;
  collector.AddSelfCounters(&cost_before);

  // Both readings with the link idle; retried if a stray packet lands between them.
  auto snapshot = [&](v1::NetCounters* bpf, InterfaceStats* host) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      auto a = ReadInterfaceStats(net.host());
      v1::UsageReport r = CollectOnce(collector, tenants);
      auto b = ReadInterfaceStats(net.host());
      ASSERT_TRUE(a.ok() && b.ok());
      const v1::NetCounters* e = Entry(r, 0, net.host());
      ASSERT_NE(e, nullptr);
      if (a->rx_packets == b->rx_packets && a->tx_packets == b->tx_packets) {
        *bpf = *e;
        *host = *a;
        return;
      }
    }
    FAIL() << "the link never went idle";
  };
  v1::NetCounters bpf0, bpf1;
  InterfaceStats host0, host1;
  snapshot(&bpf0, &host0);

  // Host -> tenant (tenant rx), then tenant -> host (tenant tx).
  for (const char* reverse : {"", "-R"}) {
    bool ran = false;
    for (int attempt = 0; attempt < 20 && !ran; ++attempt) {
      std::vector<std::string> argv{"iperf3", "-c", net.peer_ip(), "-t", "2"};
      if (*reverse) argv.push_back(reverse);
      ran = procs_.Wait(procs_.Spawn("", argv)) == 0;
      if (!ran) std::this_thread::sleep_for(milliseconds(100));
    }
    ASSERT_TRUE(ran) << "iperf3 client " << reverse;
  }
  std::this_thread::sleep_for(milliseconds(200));
  snapshot(&bpf1, &host1);

  const uint64_t rx = bpf1.rx_bytes() - bpf0.rx_bytes();
  const uint64_t tx = bpf1.tx_bytes() - bpf0.tx_bytes();
  const uint64_t host_tx = host1.tx_bytes - host0.tx_bytes;  // to the tenant
  const uint64_t host_rx = host1.rx_bytes - host0.rx_bytes;  // from the tenant
  std::cout << "tenant rx " << rx << " B / " << bpf1.rx_packets() - bpf0.rx_packets()
            << " pkts vs host-side tx " << host_tx << " B / " << host1.tx_packets - host0.tx_packets
            << " pkts; tenant tx " << tx << " B / " << bpf1.tx_packets() - bpf0.tx_packets()
            << " pkts vs host-side rx " << host_rx << " B / " << host1.rx_packets - host0.rx_packets
            << " pkts\n";
  EXPECT_GT(rx, 10'000'000u) << "iperf3 moved data to the tenant";
  EXPECT_GT(tx, 10'000'000u) << "iperf3 moved data from the tenant";
  EXPECT_EQ(rx, host_tx);
  EXPECT_EQ(tx, host_rx);
  EXPECT_EQ(bpf1.rx_packets() - bpf0.rx_packets(), host1.tx_packets - host0.tx_packets);
  EXPECT_EQ(bpf1.tx_packets() - bpf0.tx_packets(), host1.rx_packets - host0.rx_packets);
  EXPECT_EQ(bpf1.rx_drops() - bpf0.rx_drops(), host1.tx_dropped - host0.tx_dropped);
  EXPECT_EQ(bpf1.tx_drops() - bpf0.tx_drops(), host1.rx_dropped - host0.rx_dropped);
  PrintProgramCost(collector, cost_before, "fw_net_tc_");

  ASSERT_TRUE(collector.Stop().ok());
  EXPECT_EQ(OurFilter(net.host(), BPF_TC_INGRESS), 0u) << "Stop detaches";
  EXPECT_EQ(OurFilter(net.host(), BPF_TC_EGRESS), 0u) << "Stop detaches";
}

TEST_F(NetRootBpf, HostNetnsCgroupTenantOnLoopbackWithin1PercentOfIperfBytes) {
  BpfStats stats_on;
  ASSERT_TRUE(tree_->Create({"lo"}).ok());
  TenantRegistry registry(16);
  auto tenants = Discover(registry);
  ASSERT_EQ(tenants.size(), 1u);
  NetCollector collector(Options());
  ASSERT_TRUE(collector.Init().ok());
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  ASSERT_TRUE(collector.CountedByCgroup(tenants[0].tenant.id()));
  EXPECT_TRUE(collector.InterfacesOf(tenants[0].tenant.id()).empty());
  v1::AgentSelfCounters cost_before;
  collector.AddSelfCounters(&cost_before);

  const std::string port = absl::StrCat(20000 + getpid() % 20000);
  // The server runs in the test's own cgroup: only the client's socket is the tenant's.
  pid_t server = procs_.Spawn("", {"iperf3", "-s", "-p", port, "-B", "127.0.0.1"});
  ASSERT_GT(server, 0);
  ASSERT_TRUE(
      WaitFor([&] { return ShOut("ss -Hltn sport = :" + port).find(port) != std::string::npos; },
              milliseconds(3000)));

  struct Run {
    std::string json;
    v1::NetCounters delta;
  };
  auto run = [&](bool reverse) {
    Run out;
    v1::UsageReport r0 = CollectOnce(collector, tenants);
    const std::string json_file = absl::StrCat("/tmp/fwt", getpid(), "_iperf.json");
    std::vector<std::string> argv{"iperf3", "-c", "127.0.0.1", "-p", port, "-t", "2", "-J"};
    if (reverse) argv.push_back("-R");
    EXPECT_EQ(procs_.Wait(procs_.Spawn(Procs("lo"), argv, json_file)), 0);
    std::this_thread::sleep_for(milliseconds(200));
    v1::UsageReport r1 = CollectOnce(collector, tenants);
    std::ifstream in(json_file);
    std::stringstream ss;
    ss << in.rdbuf();
    out.json = ss.str();
    unlink(json_file.c_str());
    const v1::NetCounters* a = Entry(r0, 0, "");
    const v1::NetCounters* b = Entry(r1, 0, "");
    EXPECT_TRUE(a && b) << "one entry with an empty interface for cgroup_skb";
    if (!a || !b) return out;
    out.delta.set_rx_bytes(b->rx_bytes() - a->rx_bytes());
    out.delta.set_tx_bytes(b->tx_bytes() - a->tx_bytes());
    out.delta.set_rx_packets(b->rx_packets() - a->rx_packets());
    out.delta.set_tx_packets(b->tx_packets() - a->tx_packets());
    EXPECT_EQ(b->rx_drops(), 0u);
    EXPECT_EQ(b->tx_drops(), 0u);
    return out;
  };

  // IPv4 20 + TCP 20 + timestamp option 12: headers on every skb cgroup_skb sees.
  // The reference: what crossed the hook lies between what the receiving end
  // read and what the sending end wrote (iperf3 closes its data sockets with
  // bytes still queued), plus IPv4 20 + TCP 20 + timestamps 12 bytes of headers
  // on every skb, plus retransmitted payload (loopback drops at the backlog
  // under load; at most one loopback MSS each), plus the control connection.
  constexpr double kHeaderBytes = 52;
  constexpr double kLoopbackMss = 65483;
  constexpr double kControlSlack = 64 * 1024;
  auto check = [&](const char* what, uint64_t bpf, uint64_t skbs, const std::string& json) {
    const double read = JsonNumber(json, "sum_received", "bytes");
    const double written = JsonNumber(json, "sum_sent", "bytes");
    const double retrans = JsonNumber(json, "sum_sent", "retransmits");
    EXPECT_GT(read, 1e7) << json.substr(0, 400);
    const double lo = read + kHeaderBytes * skbs;
    const double hi = written + kHeaderBytes * skbs + retrans * kLoopbackMss + kControlSlack;
    const double b = static_cast<double>(bpf);
    const double outside = b < lo ? lo - b : (b > hi ? b - hi : 0);
    const double err = read > 0 ? outside / read : 1;
    std::cout << "tenant " << what << " " << bpf << " B in " << skbs << " skbs; iperf3 read "
              << read << " B, wrote " << written << " B, " << retrans << " retransmits; reference ["
              << lo << ", " << hi << "] (width " << 100 * (hi - lo) / read << " %); outside by "
              << 100 * err << " %; vs payload read alone " << 100 * (b - read) / read << " %\n";
    EXPECT_LE(err, 0.01) << what;
  };
  Run up = run(false);
  check("tx", up.delta.tx_bytes(), up.delta.tx_packets(), up.json);
  Run down = run(true);
  check("rx", down.delta.rx_bytes(), down.delta.rx_packets(), down.json);
  PrintProgramCost(collector, cost_before, "fw_net_cg_");

  // Removing the tenant detaches its cgroup programs.
  registry.Apply({});
  ASSERT_TRUE(collector.SyncTenants(registry.tenants()).ok());
  EXPECT_FALSE(collector.CountedByCgroup(tenants[0].tenant.id()));
  v1::AgentSelfCounters self;
  collector.AddSelfCounters(&self);
  std::cout << "lost events: " << self.lost_events() << "\n";
}

// Runs prog_fd `repeat` times on a 64-byte Ethernet frame (ctx ifindex as
// given); returns the kernel's average ns per run, or -1.
double TestRun(int prog_fd, uint32_t ifindex, int repeat, uint32_t* retval) {
  unsigned char frame[64] = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00};
  struct __sk_buff ctx {};
  ctx.ifindex = ifindex;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame,
              .data_size_in = static_cast<__u32>(sizeof(frame)), .ctx_in = ifindex ? &ctx : nullptr,
              .ctx_size_in = ifindex ? static_cast<__u32>(sizeof(ctx)) : 0u, .repeat = repeat);
  if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) return -1;
  *retval = opts.retval;
  return opts.duration;
}

TEST_F(NetRootBpf, ProgramsChargeEveryTestRunPacketExactlyAndPassIt) {
  constexpr int kRepeat = 100000;
  TestNetns net(4);
  ASSERT_TRUE(net.Create() && net.AddVeth());
  ASSERT_TRUE(tree_->Create({"cg"}).ok());
  TenantRegistry registry(16);
  std::vector<TenantEntry> tenants = Discover(registry);
  ASSERT_EQ(tenants.size(), 1u);
  TenantEntry by_iface;
  by_iface.tenant.set_id("fwt-iface");
  by_iface.slot = tenants[0].slot + 1;
  tenants.push_back(by_iface);
  NetCollectorOptions options = Options();
  v1::TenantInterfaces ti;
  ti.set_tenant_id("fwt-iface");
  ti.add_interfaces(net.host());
  options.tenant_interfaces = {ti};
  NetCollector collector(options);
  ASSERT_TRUE(collector.Init().ok());
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  ASSERT_TRUE(collector.CountedByCgroup(tenants[0].tenant.id()));
  ASSERT_EQ(collector.InterfacesOf("fwt-iface"), std::vector<std::string>{net.host()});
  EXPECT_FALSE(collector.CountedByCgroup("fwt-iface")) << "interfaces win over cgroup_skb";

  v1::UsageReport r0 = CollectOnce(collector, tenants);
  auto host0 = ReadInterfaceStats(net.host());
  ASSERT_TRUE(host0.ok());
  const uint32_t ifindex = if_nametoindex(net.host().c_str());
  for (auto point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
    int fd = bpf_prog_get_fd_by_id(OurFilter(net.host(), point));
    ASSERT_GE(fd, 0);
    uint32_t retval = 99;
    double ns = TestRun(fd, ifindex, kRepeat, &retval);
    close(fd);
    ASSERT_GE(ns, 0) << strerror(errno);
    // TC_ACT_UNSPEC: counted, and on to the next filter (the agent's shaping redirect).
    EXPECT_EQ(static_cast<int32_t>(retval), -1) << "TC_ACT_UNSPEC";
    std::cout << "tc " << (point == BPF_TC_INGRESS ? "ingress" : "egress") << " test_run: " << ns
              << " ns/packet\n";
  }

  // cgroup_skb: the test_run socket belongs to the running task's cgroup, so
  // run it from a child that joined the tenant's cgroup.
  const std::string dir = tree_->PathIn(mounts_.unified, "cg");
  int cg = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(cg, 0);
  for (auto type : {BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS}) {
    __u32 ids[8];
    __u32 count = 8;
    ASSERT_EQ(bpf_prog_query(cg, type, 0, nullptr, ids, &count), 0);
    ASSERT_EQ(count, 1u);
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t child = fork();
    if (child == 0) {
      double out[2] = {-1, -1};
      int procs = open((dir + "/cgroup.procs").c_str(), O_WRONLY);
      int fd = bpf_prog_get_fd_by_id(ids[0]);
      if (procs >= 0 && write(procs, "0", 1) == 1 && fd >= 0) {
        uint32_t retval = 99;
        out[0] = TestRun(fd, 0, kRepeat, &retval);
        out[1] = retval;
      }
      if (write(pipefd[1], out, sizeof(out)) != sizeof(out)) _exit(1);
      _exit(0);
    }
    close(pipefd[1]);
    double out[2] = {-1, -1};
    ASSERT_EQ(read(pipefd[0], out, sizeof(out)), static_cast<ssize_t>(sizeof(out)));
    close(pipefd[0]);
    waitpid(child, nullptr, 0);
    ASSERT_GE(out[0], 0);
    EXPECT_EQ(out[1], 1) << "cgroup_skb passes the packet";
    std::cout << "cgroup_skb " << (type == BPF_CGROUP_INET_EGRESS ? "egress" : "ingress")
              << " test_run: " << out[0] << " ns/packet\n";
  }
  close(cg);

  v1::UsageReport r1 = CollectOnce(collector, tenants);
  auto host1 = ReadInterfaceStats(net.host());
  ASSERT_TRUE(host1.ok());
  const v1::NetCounters* i0 = Entry(r0, 1, net.host());
  const v1::NetCounters* i1 = Entry(r1, 1, net.host());
  ASSERT_TRUE(i0 && i1);
  // Real packets on the idle link, if any, are in both figures.
  const uint64_t real_rx = host1->tx_bytes - host0->tx_bytes;
  const uint64_t real_tx = host1->rx_bytes - host0->rx_bytes;
  EXPECT_EQ(i1->tx_bytes() - i0->tx_bytes(), 64u * kRepeat + real_tx) << "ingress = tenant tx";
  EXPECT_EQ(i1->rx_bytes() - i0->rx_bytes(), 64u * kRepeat + real_rx) << "egress = tenant rx";
  const v1::NetCounters* c0 = Entry(r0, 0, "");
  const v1::NetCounters* c1 = Entry(r1, 0, "");
  ASSERT_TRUE(c0 && c1);
  // cgroup_skb sees the packet from the network header: 64 - 14 bytes.
  EXPECT_EQ(c1->tx_packets() - c0->tx_packets(), static_cast<uint64_t>(kRepeat));
  EXPECT_EQ(c1->tx_bytes() - c0->tx_bytes(), 50u * kRepeat);
  EXPECT_EQ(c1->rx_packets() - c0->rx_packets(), static_cast<uint64_t>(kRepeat));
  EXPECT_EQ(c1->rx_bytes() - c0->rx_bytes(), 50u * kRepeat);
}

// A program not ours, loaded to sit at our handle/priority.
int LoadForeignTcProgram() {
  struct bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},  // r0 = TC_ACT_OK
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  return bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "foreign_tc", "GPL", insns, 2, nullptr);
}

TEST_F(NetRootBpf, ReconcileRemovesFiltersOfAKilledAgentAndLeavesOthers) {
  TestNetns net(1);
  TestNetns other(2);
  ASSERT_TRUE(net.Create() && net.AddVeth());
  ASSERT_TRUE(other.Create() && other.AddVeth());
  // Someone else's filters: u32 at another priority on our interface, and a BPF
  // program at exactly our handle/priority on another interface.
  ASSERT_EQ(Sh("tc qdisc add dev " + net.host() + " clsact"), 0);
  for (const char* dir : {"ingress", "egress"}) {
    ASSERT_EQ(Sh(absl::StrCat("tc filter add dev ", net.host(), " ", dir,
                              " prio 100 protocol all u32 match u32 0 0 classid 1:1")),
              0);
  }
  int foreign = LoadForeignTcProgram();
  ASSERT_GE(foreign, 0) << strerror(errno);
  {
    LIBBPF_OPTS(bpf_tc_hook, hook,
                .ifindex = static_cast<int>(if_nametoindex(other.host().c_str())),
                .attach_point = BPF_TC_EGRESS);
    ASSERT_EQ(bpf_tc_hook_create(&hook), 0);
    LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = foreign, .flags = 0, .handle = FW_NET_TC_HANDLE,
                .priority = FW_NET_TC_PRIORITY);
    ASSERT_EQ(bpf_tc_attach(&hook, &opts), 0);
  }
  close(foreign);
  const uint32_t foreign_id = OurFilter(other.host(), BPF_TC_EGRESS);
  ASSERT_NE(foreign_id, 0u);

  // An "agent" in a child process attaches to net.host() and is killed with -9.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t agent = fork();
  if (agent == 0) {
    close(ready[0]);
    NetCollectorOptions o = Options();
    v1::TenantInterfaces ti;
    ti.set_tenant_id("fwt-reconcile");
    ti.add_interfaces(net.host());
    ti.add_interfaces(other.host());  // its slot is taken by the foreign program
    o.tenant_interfaces = {ti};
    o.netns_discovery = false;
    auto* collector = new NetCollector(o);  // never destroyed: the process dies
    TenantEntry t;
    t.tenant.set_id("fwt-reconcile");
    char ok = collector->Init().ok() ? 1 : 0;
    (void)collector->SyncTenants({t});  // the foreign-held interface fails; the other attaches
    ok = ok && collector->InterfacesOf("fwt-reconcile") == std::vector<std::string>{net.host()};
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  ASSERT_GT(agent, 0);
  close(ready[1]);
  char ok = 0;
  ASSERT_EQ(read(ready[0], &ok, 1), 1);
  close(ready[0]);
  ASSERT_EQ(ok, 1) << "child collector attached to exactly our interface";
  kill(agent, SIGKILL);
  waitpid(agent, nullptr, 0);
  EXPECT_NE(OurFilter(net.host(), BPF_TC_INGRESS), 0u) << "tc filters outlive their loader";
  EXPECT_NE(OurFilter(net.host(), BPF_TC_EGRESS), 0u);

  NetCollector fresh(Options());
  ASSERT_TRUE(fresh.Init().ok());
  EXPECT_EQ(OurFilter(net.host(), BPF_TC_INGRESS), 0u) << "stale filter removed at Init";
  EXPECT_EQ(OurFilter(net.host(), BPF_TC_EGRESS), 0u);
  EXPECT_EQ(OurFilter(other.host(), BPF_TC_EGRESS), foreign_id)
      << "a foreign program at our handle/priority stays";
  for (const char* dir : {"ingress", "egress"}) {
    EXPECT_NE(ShOut(absl::StrCat("tc filter show dev ", net.host(), " ", dir)).find("u32"),
              std::string::npos)
        << "foreign u32 filter on " << dir << " stays";
  }
  EXPECT_NE(ShOut("tc qdisc show dev " + net.host()).find("clsact"), std::string::npos)
      << "the clsact qdisc stays";
}

TEST_F(NetRootBpf, InterfacesAppearingLaterAreAttachedAndVanishedOnesDetached) {
  TestNetns net(3);
  ASSERT_TRUE(net.Create());
  ASSERT_TRUE(tree_->Create({"late"}).ok());
  pid_t sleeper = procs_.Spawn(Procs("late"), {"ip", "netns", "exec", net.ns(), "sleep", "60"});
  ASSERT_GT(sleeper, 0);
  ASSERT_TRUE(WaitFor([&] { return InOtherNetns(sleeper); }, milliseconds(3000)));

  TenantRegistry registry(16);
  auto tenants = Discover(registry);
  ASSERT_EQ(tenants.size(), 1u);
  const std::string id = tenants[0].tenant.id();
  NetCollectorOptions options = Options();
  options.rescan_interval = absl::Milliseconds(100);
  NetCollector collector(options);
  ASSERT_TRUE(collector.Init().ok());
  ASSERT_TRUE(collector.SyncTenants(tenants).ok());
  EXPECT_TRUE(collector.InterfacesOf(id).empty()) << "its namespace has no veth yet";
  EXPECT_FALSE(collector.CountedByCgroup(id));
  const uint64_t gen0 = collector.interfaces_generation();

  ASSERT_TRUE(net.AddVeth());
  std::this_thread::sleep_for(milliseconds(150));
  CollectOnce(collector, tenants);  // re-resolves: the rescan interval has passed
  ASSERT_EQ(collector.InterfacesOf(id), std::vector<std::string>{net.host()});
  EXPECT_GT(collector.interfaces_generation(), gen0);
  // Three UDP datagrams to a closed port: the tenant answers each with ICMP port unreachable.
  ASSERT_TRUE(SendUdp(net.peer_ip(), 3));
  std::this_thread::sleep_for(milliseconds(100));
  v1::UsageReport before = CollectOnce(collector, tenants);
  const v1::NetCounters* e = Entry(before, 0, net.host());
  ASSERT_NE(e, nullptr);
  EXPECT_GE(e->rx_packets(), 3u) << "echo requests reach the tenant";
  EXPECT_GE(e->tx_packets(), 3u) << "echo replies come from the tenant";
  const v1::NetCounters seen = *e;

  // The namespace goes away (its last process first): the veth pair with it.
  procs_.Kill(sleeper);
  ASSERT_TRUE(net.Delete());
  ASSERT_TRUE(WaitFor([&] { return if_nametoindex(net.host().c_str()) == 0; }, milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(150));
  absl::Status status;
  v1::UsageReport after = CollectOnce(collector, tenants, &status);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(collector.InterfacesOf(id).empty());
  EXPECT_FALSE(collector.CountedByCgroup(id))
      << "a tenant seen in its own netns stays off cgroup_skb";
  const v1::NetCounters* kept = Entry(after, 0, net.host());
  ASSERT_NE(kept, nullptr) << "counters stay cumulative after the interface is gone";
  EXPECT_GE(kept->rx_bytes(), seen.rx_bytes());
  EXPECT_GE(kept->tx_packets(), seen.tx_packets());
  v1::AgentSelfCounters self;
  collector.AddSelfCounters(&self);
  for (const auto& m : self.maps()) {
    if (m.name() == "net/iface_slots") {
      EXPECT_EQ(m.entries(), 0u);
    }
  }
  EXPECT_TRUE(collector.Stop().ok());
}

}  // namespace
}  // namespace fairwatch::agent
