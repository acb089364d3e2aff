#include "agent/tenant_registry.h"

#include <gtest/gtest.h>

#include <set>

#include "absl/strings/str_cat.h"

namespace fairwatch::agent {
namespace {

DiscoveredTenant T(const std::string& id, uint64_t cgroup_id) {
  DiscoveredTenant t;
  t.tenant.set_id(id);
  t.tenant.set_name(id);
  t.cpu_cgroup_id = cgroup_id;
  return t;
}

TEST(TenantRegistry, NewTenantsAreUpsertedWithDistinctSlots) {
  TenantRegistry registry(8);
  InventoryDelta delta = registry.Apply({T("b", 2), T("a", 1)});
  ASSERT_EQ(delta.upserted.size(), 2u);
  EXPECT_TRUE(delta.removed_ids.empty());
  ASSERT_EQ(registry.tenants().size(), 2u);
  EXPECT_EQ(registry.tenants()[0].tenant.id(), "a") << "sorted by id";
  EXPECT_NE(registry.tenants()[0].slot, registry.tenants()[1].slot);
}

TEST(TenantRegistry, UnchangedSetYieldsEmptyDelta) {
  TenantRegistry registry(8);
  registry.Apply({T("a", 1)});
  EXPECT_TRUE(registry.Apply({T("a", 1)}).empty());
}

TEST(TenantRegistry, TenantKeepsItsSlotWhenItsCgroupIsRecreated) {
  TenantRegistry registry(8);
  registry.Apply({T("a", 1)});
  uint32_t slot = registry.tenants()[0].slot;
  DiscoveredTenant recreated = T("a", 99);
  recreated.tenant.add_cgroups()->set_id(99);
  InventoryDelta delta = registry.Apply({recreated});
  EXPECT_EQ(delta.upserted.size(), 1u) << "its cgroup changed";
  EXPECT_EQ(registry.tenants()[0].slot, slot);
  EXPECT_EQ(registry.tenants()[0].cpu_cgroup_id, 99u);
}

TEST(TenantRegistry, FreedSlotIsQuarantinedForOneRound) {
  TenantRegistry registry(2);
  registry.Apply({T("a", 1), T("b", 2)});
  uint32_t slot_a = registry.tenants()[0].slot;
  InventoryDelta delta = registry.Apply({T("b", 2), T("c", 3)});
  ASSERT_EQ(delta.removed_ids, std::vector<std::string>{"a"});
  EXPECT_EQ(registry.tenants().size(), 1u) << "c waits: a's slot is still quarantined";
  EXPECT_EQ(registry.rejected(), 1u);
  EXPECT_EQ(registry.unmeasured(), 1u);
  registry.Apply({T("b", 2), T("c", 3)});
  ASSERT_EQ(registry.tenants().size(), 2u);
  EXPECT_EQ(registry.unmeasured(), 0u) << "a gauge of the last round";
  EXPECT_EQ(registry.tenants()[1].slot, slot_a);
}

TEST(TenantRegistry, FullInventoryListsEveryTenant) {
  TenantRegistry registry(8);
  registry.Apply({T("a", 1), T("b", 2)});
  v1::TenantInventory full = registry.FullInventory();
  EXPECT_TRUE(full.full());
  EXPECT_EQ(full.upserted_size(), 2);
}

TEST(TenantRegistry, ManyTenantsGetUniqueSlotsWithinCapacity) {
  TenantRegistry registry(500);
  std::vector<DiscoveredTenant> all;
  for (int i = 0; i < 500; ++i) all.push_back(T(absl::StrCat("t", i), i + 1));
  registry.Apply(all);
  std::set<uint32_t> slots;
  for (const auto& e : registry.tenants()) {
    EXPECT_LT(e.slot, 500u);
    slots.insert(e.slot);
  }
  EXPECT_EQ(slots.size(), 500u);
}

}  // namespace
}  // namespace fairwatch::agent

namespace fairwatch::agent {
namespace {

TEST(TenantRegistry, InterfacesSurviveRediscoveryAndChangesAreReported) {
  TenantRegistry registry(8);
  registry.Apply({T("a", 1)});
  const v1::Tenant* updated = registry.SetInterfaces("a", {"veth1"});
  ASSERT_NE(updated, nullptr);
  EXPECT_EQ(updated->interfaces_size(), 1);
  EXPECT_EQ(registry.SetInterfaces("a", {"veth1"}), nullptr) << "no change, no upsert";
  EXPECT_EQ(registry.SetInterfaces("nobody", {"x"}), nullptr);
  // Discovery knows nothing of interfaces: they must not flap away.
  EXPECT_TRUE(registry.Apply({T("a", 1)}).empty());
  EXPECT_EQ(registry.tenants()[0].tenant.interfaces(0), "veth1");
  EXPECT_NE(registry.SetInterfaces("a", {}), nullptr);
}

}  // namespace
}  // namespace fairwatch::agent
