// LibvirtSource against libvirt's test driver (no daemon): inventory, events,
// weights and overrides, reconnection. The test driver has no cgroups, so a
// fake resolver gives each domain one; real VMs are in libvirt_vm_root_test.
#include "agent/libvirt_source.h"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace fairwatch::agent {
namespace {

// Every test names its domains with this prefix: test:///default is one state
// shared by every connection of the process.
std::string Prefix() { return absl::StrCat("fwtest-", getpid(), "-"); }

std::string DomainXml(const std::string& name, const std::string& uuid, const std::string& tap,
                      int shares = 0) {
  return absl::StrCat(
      "<domain type='test'><name>", name, "</name><uuid>", uuid,
      "</uuid><memory>1024</memory><vcpu>1</vcpu><os><type>hvm</type></os>",
      shares > 0 ? absl::StrCat("<cputune><shares>", shares, "</shares></cputune>") : "",
      "<devices><interface type='ethernet'><target dev='", tap,
      "'/></interface></devices></domain>");
}

// Fake cgroups: the domain's UUID decides its cgroup id.
absl::StatusOr<std::vector<v1::CgroupRef>> FakeCgroups(const DomainInfo& info) {
  v1::CgroupRef ref;
  ref.set_hierarchy("cpu");
  ref.set_path("machine/" + info.name);
  ref.set_id(std::hash<std::string>()(info.uuid) | 1);
  return std::vector<v1::CgroupRef>{ref};
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

const DiscoveredTenant* Find(const std::vector<DiscoveredTenant>& tenants,
                             const std::string& uuid) {
  for (const auto& t : tenants) {
    if (t.tenant.id() == uuid) return &t;
  }
  return nullptr;
}

class LibvirtSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    control_ = virConnectOpen("test:///default");
    ASSERT_NE(control_, nullptr) << "cannot open libvirt's test driver";
  }
  void TearDown() override {
    if (source_) source_->Stop();
    // Remove whatever this test started, even after a failure.
    virDomainPtr* domains = nullptr;
    int n = virConnectListAllDomains(control_, &domains, 0);
    for (int i = 0; i < n; ++i) {
      const char* name = virDomainGetName(domains[i]);
      if (name != nullptr && std::string(name).rfind(Prefix(), 0) == 0) {
        if (virDomainIsActive(domains[i]) == 1) virDomainDestroy(domains[i]);
        if (virDomainIsPersistent(domains[i]) == 1) virDomainUndefine(domains[i]);
      }
      virDomainFree(domains[i]);
    }
    free(domains);  // NOLINT(cppcoreguidelines-no-malloc)
    virConnectClose(control_);
  }

  void StartSource(const std::string& uri, v1::LibvirtSource config = {}) {
    config.set_uri(uri);
    config.set_resync_interval_ms(3600000);  // events only: a missed one fails the test
    LibvirtSourceOptions options;
    options.config = config;
    options.cpu_hierarchy = "cpu";
    options.resolve_cgroups = FakeCgroups;
    options.still_present = [this](const DiscoveredTenant& t) {
      absl::MutexLock lock(&mu_);
      return !vanished_.contains(t.tenant.id());
    };
    options.on_change = [this] { ++changes_; };
    options.min_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(100);
    source_ = std::make_unique<LibvirtSource>(std::move(options));
    ASSERT_TRUE(source_->Start().ok());
  }

  virDomainPtr Create(const std::string& name, const std::string& uuid, const std::string& tap,
                      int shares = 0) {
    return virDomainCreateXML(control_, DomainXml(name, uuid, tap, shares).c_str(), 0);
  }

  virConnectPtr control_ = nullptr;
  std::unique_ptr<LibvirtSource> source_;
  std::atomic<int> changes_{0};
  absl::Mutex mu_;
  std::set<std::string> vanished_;
};

TEST_F(LibvirtSourceTest, ListsRunningDomainsWithTheirInterfaces) {
  virDomainPtr a = Create(Prefix() + "a", "11111111-1111-4111-8111-000000000001", "fwtap-a");
  ASSERT_NE(a, nullptr);
  StartSource("test:///default");
  ASSERT_TRUE(WaitFor(
      [&] { return Find(source_->Tenants(), "11111111-1111-4111-8111-000000000001") != nullptr; }));
  std::vector<DiscoveredTenant> tenants = source_->Tenants();
  const DiscoveredTenant* t = Find(tenants, "11111111-1111-4111-8111-000000000001");
  EXPECT_EQ(t->tenant.name(), Prefix() + "a");
  EXPECT_EQ(t->tenant.source(), v1::TENANT_SOURCE_LIBVIRT);
  EXPECT_DOUBLE_EQ(t->tenant.weight(), 1.0);
  ASSERT_EQ(t->tenant.cgroups_size(), 1);
  EXPECT_EQ(t->cpu_cgroup_id, t->tenant.cgroups(0).id());
  EXPECT_EQ(t->declared_interfaces, (std::vector<std::string>{"fwtap-a"}));
  // The test driver's own running domain is listed too, once.
  std::set<std::string> ids;
  for (const auto& x : tenants) EXPECT_TRUE(ids.insert(x.tenant.id()).second) << x.tenant.id();
  EXPECT_TRUE(source_->stats().connected);
  virDomainFree(a);
}

TEST_F(LibvirtSourceTest, FollowsStartStopAndRestartThroughEvents) {
  StartSource("test:///default");
  ASSERT_TRUE(WaitFor([&] { return source_->stats().listings > 0; }));
  const std::string uuid = "22222222-2222-4222-8222-000000000002";
  const uint64_t events_before = source_->stats().events;

  // Persistent domain: define (not a tenant: not running), start, destroy.
  virDomainPtr d = virDomainDefineXML(control_, DomainXml(Prefix() + "b", uuid, "fwtap-b").c_str());
  ASSERT_NE(d, nullptr);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(Find(source_->Tenants(), uuid), nullptr) << "a defined, stopped domain is no tenant";

  const absl::Time started = absl::Now();
  ASSERT_EQ(virDomainCreate(d), 0);
  ASSERT_TRUE(WaitFor([&] { return Find(source_->Tenants(), uuid) != nullptr; }));
  const absl::Duration seen_after = absl::Now() - started;
  EXPECT_LT(seen_after, absl::Seconds(1)) << "events must bring a start within a second";
  EXPECT_GT(source_->stats().events, events_before);

  ASSERT_EQ(virDomainDestroy(d), 0);
  ASSERT_TRUE(WaitFor([&] { return Find(source_->Tenants(), uuid) == nullptr; }));

  // Started again: the same tenant (same UUID) is back.
  ASSERT_EQ(virDomainCreate(d), 0);
  ASSERT_TRUE(WaitFor([&] { return Find(source_->Tenants(), uuid) != nullptr; }));
  ASSERT_EQ(virDomainDestroy(d), 0);
  ASSERT_EQ(virDomainUndefine(d), 0);
  virDomainFree(d);
  ASSERT_TRUE(WaitFor([&] { return Find(source_->Tenants(), uuid) == nullptr; }));
}

TEST_F(LibvirtSourceTest, WeightFromSharesAndOverridesByNameOrUuid) {
  v1::LibvirtSource config;
  config.set_account("acme");
  v1::LibvirtDomainOverride* by_name = config.add_domains();
  by_name->set_domain(Prefix() + "heavy");
  by_name->set_weight(4);
  v1::LibvirtDomainOverride* by_uuid = config.add_domains();
  by_uuid->set_domain("33333333-3333-4333-8333-000000000003");
  by_uuid->set_account("globex");
  virDomainPtr shares = Create(Prefix() + "shares", "33333333-3333-4333-8333-000000000001",
                               "fwtap-s", /*shares=*/512);
  virDomainPtr heavy =
      Create(Prefix() + "heavy", "33333333-3333-4333-8333-000000000002", "fwtap-h", /*shares=*/512);
  virDomainPtr other =
      Create(Prefix() + "other", "33333333-3333-4333-8333-000000000003", "fwtap-o");
  ASSERT_TRUE(shares && heavy && other);
  StartSource("test:///default", config);
  ASSERT_TRUE(WaitFor(
      [&] { return Find(source_->Tenants(), "33333333-3333-4333-8333-000000000003") != nullptr; }));
  std::vector<DiscoveredTenant> tenants = source_->Tenants();
  const DiscoveredTenant* s = Find(tenants, "33333333-3333-4333-8333-000000000001");
  const DiscoveredTenant* h = Find(tenants, "33333333-3333-4333-8333-000000000002");
  const DiscoveredTenant* o = Find(tenants, "33333333-3333-4333-8333-000000000003");
  ASSERT_TRUE(s && h && o);
  EXPECT_DOUBLE_EQ(s->tenant.weight(), 0.5);  // 512 of the v1 default 1024
  EXPECT_EQ(s->tenant.account(), "acme");
  EXPECT_DOUBLE_EQ(h->tenant.weight(), 4.0);  // config wins over shares
  EXPECT_EQ(o->tenant.account(), "globex");
  EXPECT_DOUBLE_EQ(o->tenant.weight(), 1.0);
  for (virDomainPtr d : {shares, heavy, other}) virDomainFree(d);
}

TEST_F(LibvirtSourceTest, ConnectsWhenLibvirtComesUpAndKeepsVmsThroughAnOutage) {
  char tmpl[] = "/tmp/fw-libvirt-src-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string node = dir + "/node.xml";
  StartSource("test://" + node);  // the file does not exist yet: connecting fails
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(source_->stats().connected);
  EXPECT_TRUE(source_->Tenants().empty());

  // "libvirtd comes up": the node file with two running domains appears.
  std::ofstream(node) << "<node>"
                      << DomainXml("vm-a", "44444444-4444-4444-8444-000000000001", "fwtap-1")
                      << DomainXml("vm-b", "44444444-4444-4444-8444-000000000002", "fwtap-2")
                      << "</node>";
  ASSERT_TRUE(WaitFor([&] { return source_->Tenants().size() == 2; }))
      << "connected=" << source_->stats().connected;
  EXPECT_EQ(source_->stats().connects, 1u);
  const int changes_before = changes_.load();
  const uint64_t listings_before = source_->stats().listings;

  // The connection drops and comes back: the same two tenants, no change seen.
  source_->DropConnectionForTesting();
  ASSERT_TRUE(WaitFor([&] {
    LibvirtSourceStats stats = source_->stats();
    return stats.connects == 2 && stats.listings > listings_before;
  }));
  EXPECT_EQ(source_->Tenants().size(), 2u);
  EXPECT_EQ(source_->stats().connection_lost, 1u);
  EXPECT_EQ(changes_.load(), changes_before) << "a reconnection must not look like a change";

  // Down for longer (reconnecting fails): VMs stay listed unless their cgroup goes.
  std::filesystem::remove(node);
  source_->DropConnectionForTesting();
  ASSERT_TRUE(WaitFor([&] { return !source_->stats().connected; }));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(source_->Tenants().size(), 2u);
  {
    absl::MutexLock lock(&mu_);
    vanished_.insert("44444444-4444-4444-8444-000000000001");
  }
  ASSERT_TRUE(WaitFor([&] { return source_->Tenants().size() == 1; }));
  EXPECT_EQ(source_->Tenants()[0].tenant.id(), "44444444-4444-4444-8444-000000000002");
  source_->Stop();
  std::filesystem::remove_all(dir);
}

TEST_F(LibvirtSourceTest, StopsPromptlyWhileLibvirtIsUnreachable) {
  StartSource("test:///nonexistent/dir/node.xml");
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time t0 = absl::Now();
  source_->Stop();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
}

}  // namespace
}  // namespace fairwatch::agent
