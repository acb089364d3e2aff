// Root: network limits on a veth pair of the test's own, the tenant's end in
// a network namespace the test made. iperf3 runs both ways; the kernel's
// interface counters must show each direction within 10 % of its limit, and
// a clear or the tenant's going must leave no qdisc, filter or IFB behind.
#include <gtest/gtest.h>
#include <net/if.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "agent/enforcer.h"
#include "agent/net_shaper.h"

namespace fairwatch::agent {
namespace {

bool Have(const char* program) {
  return system(absl::StrCat("command -v ", program, " >/dev/null 2>&1").c_str()) == 0;
}

int Sh(const std::string& command) { return system(command.c_str()); }

double Counter(const std::string& interface, const char* name) {
  std::ifstream in(absl::StrCat("/sys/class/net/", interface, "/statistics/", name));
  double v = 0;
  in >> v;
  return v;
}

class EnforceNetRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace and a veth pair";
    if (!Have("iperf3") || !Have("tc") || !Have("ip")) GTEST_SKIP() << "needs iperf3, tc and ip";
    const std::string id = absl::StrCat(getpid() % 100000);
    ns_ = "fwtest-ns-" + id;
    host_ = "fwth" + id;
    peer_ = "fwtp" + id;
    ASSERT_EQ(Sh("ip netns add " + ns_), 0);
    made_ns_ = true;
    ASSERT_EQ(Sh(absl::StrCat("ip link add ", host_, " type veth peer name ", peer_)), 0);
    made_link_ = true;
    ASSERT_EQ(
        Sh(absl::StrCat("ip link set ", peer_, " netns ", ns_, " && ip addr add 10.231.7.1/30 dev ",
                        host_, " && ip link set ", host_, " up && ip -n ", ns_,
                        " addr add 10.231.7.2/30 dev ", peer_, " && ip -n ", ns_, " link set ",
                        peer_, " up && ip -n ", ns_, " link set lo up")),
        0);
    state_dir_ = absl::StrCat(::testing::TempDir(), "/enforce-net-", id);
    std::filesystem::remove_all(state_dir_);
    EnforcerOptions o;
    o.state_dir = state_dir_;
    o.own_cgroups = {{"cpu", ""}};
    o.shaper = &shaper_;
    auto e = Enforcer::Create(std::move(o));
    ASSERT_TRUE(e.ok()) << e.status();
    enforcer_ = std::move(*e);
    tenant_.tenant.set_id("netns-tenant-" + id);
    tenant_.tenant.set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
    tenant_.tenant.add_interfaces(host_);
    enforcer_->SetTenants({tenant_});
  }
  void TearDown() override {
    (void)Sh(absl::StrCat("ip netns pids ", ns_, " 2>/dev/null | xargs -r kill -9"));
    if (made_link_ && if_nametoindex(host_.c_str()) != 0) (void)Sh("ip link del " + host_);
    if (!ifb_.empty() && if_nametoindex(ifb_.c_str()) != 0) (void)Sh("ip link del " + ifb_);
    if (made_ns_) (void)Sh("ip netns del " + ns_);
    std::filesystem::remove_all(state_dir_);
  }

  v1::LimitAck Command(v1::LimitCommand::Kind kind, v1::Resource resource, double bytes_per_s) {
    v1::LimitCommand c;
    c.set_command_id("net");
    c.set_kind(kind);
    c.mutable_limit()->set_tenant_id(tenant_.tenant.id());
    c.mutable_limit()->set_resource(resource);
    c.mutable_limit()->set_value(bytes_per_s);
    c.set_lease_ms(60'000);
    return enforcer_->Handle(c);
  }

  // iperf3 between the host and the namespace for 6 s; the rate the host-side
  // interface's counters show over the 4 s after the first 1.5 s. `to_tenant`:
  // the host sends (the tenant's rx), else the tenant sends (-R).
  double Rate(bool to_tenant) {
    EXPECT_EQ(Sh(absl::StrCat("ip netns exec ", ns_, " iperf3 -s -D -1 -B 10.231.7.2")), 0);
    absl::SleepFor(absl::Milliseconds(400));
    const std::string client =
        absl::StrCat("iperf3 -c 10.231.7.2 -t 6", to_tenant ? "" : " -R", " >/dev/null 2>&1 &");
    EXPECT_EQ(Sh(client), 0);
    absl::SleepFor(absl::Milliseconds(1500));
    const char* counter = to_tenant ? "tx_bytes" : "rx_bytes";
    const double a = Counter(host_, counter);
    const absl::Time t0 = absl::Now();
    absl::SleepFor(absl::Seconds(4));
    const double b = Counter(host_, counter);
    const double rate = (b - a) / absl::ToDoubleSeconds(absl::Now() - t0);
    absl::SleepFor(absl::Seconds(1));  // iperf3 ends
    return rate;
  }

  std::string Tc(const std::string& args) {
    std::string text;
    FILE* p = popen(("tc " + args + " 2>&1").c_str(), "r");
    char buffer[512];
    while (p != nullptr && fgets(buffer, sizeof(buffer), p) != nullptr) text += buffer;
    if (p != nullptr) pclose(p);
    return text;
  }

  std::string ns_, host_, peer_, state_dir_, ifb_;
  bool made_ns_ = false, made_link_ = false;
  NetShaper shaper_;
  TenantEntry tenant_;
  std::unique_ptr<Enforcer> enforcer_;
};

TEST_F(EnforceNetRoot, BothDirectionsHoldIperf3WithinTenPercentAndClearLeavesNothing) {
  ifb_ = absl::StrCat(kIfbPrefix, if_nametoindex(host_.c_str()));
  const std::string qdiscs_before = Tc("qdisc show dev " + host_);
  constexpr double kToTenant = 5e6;      // 40 Mbit/s
  constexpr double kFromTenant = 2.5e6;  // 20 Mbit/s
  v1::LimitAck rx = Command(v1::LimitCommand::KIND_APPLY, v1::RESOURCE_NET_RX, kToTenant);
  ASSERT_EQ(rx.status_code(), 0) << rx.status_message();
  EXPECT_NEAR(rx.in_effect().value(), kToTenant, 1) << "read back from tc";
  v1::LimitAck tx = Command(v1::LimitCommand::KIND_APPLY, v1::RESOURCE_NET_TX, kFromTenant);
  ASSERT_EQ(tx.status_code(), 0) << tx.status_message();
  EXPECT_NEAR(tx.in_effect().value(), kFromTenant, 1);
  EXPECT_NE(if_nametoindex(ifb_.c_str()), 0u) << "the IFB for the tenant's sends";

  const double to_tenant = Rate(true);
  const double from_tenant = Rate(false);
  std::cout << "to the tenant under " << kToTenant / 1e6 << " MB/s: " << to_tenant / 1e6
            << " MB/s (" << 100 * (to_tenant / kToTenant - 1) << " %); from the tenant under "
            << kFromTenant / 1e6 << " MB/s: " << from_tenant / 1e6 << " MB/s ("
            << 100 * (from_tenant / kFromTenant - 1) << " %)\n";
  EXPECT_NEAR(to_tenant, kToTenant, 0.10 * kToTenant);
  EXPECT_NEAR(from_tenant, kFromTenant, 0.10 * kFromTenant);

  ASSERT_EQ(Command(v1::LimitCommand::KIND_CLEAR, v1::RESOURCE_NET_RX, 0).status_code(), 0);
  ASSERT_EQ(Command(v1::LimitCommand::KIND_CLEAR, v1::RESOURCE_NET_TX, 0).status_code(), 0);
  EXPECT_EQ(if_nametoindex(ifb_.c_str()), 0u) << "IFB removed";
  EXPECT_EQ(Tc("qdisc show dev " + host_), qdiscs_before) << "the qdiscs as they were";
  EXPECT_EQ(Tc("filter show dev " + host_ + " ingress"), "");
  EXPECT_TRUE(enforcer_->InForce().empty());
  const double free_rate = Rate(true);
  std::cout << "to the tenant after the clear: " << free_rate / 1e6 << " MB/s\n";
  EXPECT_GT(free_rate, 3 * kToTenant);
}

TEST_F(EnforceNetRoot, ATenantThatGoesTakesItsShapingWithIt) {
  ifb_ = absl::StrCat(kIfbPrefix, if_nametoindex(host_.c_str()));
  ASSERT_EQ(Command(v1::LimitCommand::KIND_APPLY, v1::RESOURCE_NET_TX, 1e6).status_code(), 0);
  ASSERT_NE(if_nametoindex(ifb_.c_str()), 0u);
  // The container is torn down: its veth goes, then discovery drops it.
  ASSERT_EQ(Sh("ip link del " + host_), 0);
  enforcer_->SetTenants({});
  EXPECT_EQ(if_nametoindex(ifb_.c_str()), 0u) << "no IFB outlives its interface";
  EXPECT_TRUE(enforcer_->InForce().empty());
}

TEST_F(EnforceNetRoot, AForeignQdiscIsLeftAloneAndAnOrphanIfbIsRemovedAtStart) {
  ASSERT_EQ(Sh(absl::StrCat("tc qdisc add dev ", host_, " root handle 1: htb")), 0);
  v1::LimitAck ack = Command(v1::LimitCommand::KIND_APPLY, v1::RESOURCE_NET_RX, 1e6);
  EXPECT_EQ(ack.status_code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(absl::StrContains(ack.status_message(), "did not create")) << ack.status_message();
  EXPECT_TRUE(absl::StrContains(Tc("qdisc show dev " + host_), "htb 1:")) << "untouched";

  // An IFB of ours that no journal entry owns (an agent died mid-way).
  ifb_ = absl::StrCat(kIfbPrefix, if_nametoindex(host_.c_str()));
  ASSERT_EQ(Sh("ip link add " + ifb_ + " type ifb"), 0);
  enforcer_->RemoveOrphanIfbs();
  EXPECT_EQ(if_nametoindex(ifb_.c_str()), 0u);
}

}  // namespace
}  // namespace fairwatch::agent
