// The agent's set of tenants and the BPF counter slot each one owns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/cgroup_discovery.h"
#include "fairwatch/v1/agent.pb.h"

namespace fairwatch::agent {

struct TenantEntry {
  v1::Tenant tenant;
  uint32_t slot = 0;
  uint64_t cpu_cgroup_id = 0;
  std::vector<std::string> declared_interfaces;  // DiscoveredTenant's
};

struct InventoryDelta {
  std::vector<v1::Tenant> upserted;
  std::vector<std::string> removed_ids;
  bool empty() const { return upserted.empty() && removed_ids.empty(); }
};

class TenantRegistry {
 public:
  explicit TenantRegistry(uint32_t max_slots);

  // Makes `discovered` the tenant set and returns what changed. Tenants beyond
  // max_slots are left out (and counted in rejected()).
  InventoryDelta Apply(std::vector<DiscoveredTenant> discovered);

  // Sets the host-side interfaces found for a tenant (by the network
  // collector); returns the updated tenant when they changed, else nullptr.
  const v1::Tenant* SetInterfaces(const std::string& id, const std::vector<std::string>& names);

  // Sorted by tenant id.
  const std::vector<TenantEntry>& tenants() const { return tenants_; }
  v1::TenantInventory FullInventory() const;
  uint32_t max_slots() const { return max_slots_; }
  uint64_t rejected() const { return rejected_; }
  // Tenants the last Apply could not give a slot to.
  uint32_t unmeasured() const { return unmeasured_; }

 private:
  uint32_t max_slots_;
  std::vector<TenantEntry> tenants_;
  std::vector<uint32_t> free_slots_;
  // Freed by the last Apply; reusable from the next one, so a BPF event in
  // flight for the old tenant cannot land in a new tenant's counters.
  std::vector<uint32_t> quarantined_slots_;
  uint64_t rejected_ = 0;
  uint32_t unmeasured_ = 0;
};

}  // namespace fairwatch::agent
