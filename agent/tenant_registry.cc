#include "agent/tenant_registry.h"

#include <algorithm>

#include "common/log.h"
#include "google/protobuf/util/message_differencer.h"

namespace fairwatch::agent {

TenantRegistry::TenantRegistry(uint32_t max_slots) : max_slots_(max_slots) {
  free_slots_.reserve(max_slots);
  // Handed out from the back: slot 0 first.
  for (uint32_t s = max_slots; s > 0; --s) free_slots_.push_back(s - 1);
}

InventoryDelta TenantRegistry::Apply(std::vector<DiscoveredTenant> discovered) {
  free_slots_.insert(free_slots_.end(), quarantined_slots_.begin(), quarantined_slots_.end());
  quarantined_slots_.clear();

  std::sort(discovered.begin(), discovered.end(),
            [](const auto& a, const auto& b) { return a.tenant.id() < b.tenant.id(); });
  absl::flat_hash_map<std::string, const TenantEntry*> old_by_id;
  for (const auto& e : tenants_) old_by_id[e.tenant.id()] = &e;

  InventoryDelta delta;
  const uint32_t unmeasured_before = unmeasured_;
  unmeasured_ = 0;
  std::vector<TenantEntry> next;
  next.reserve(discovered.size());
  absl::flat_hash_map<std::string, bool> kept;
  for (auto& d : discovered) {
    auto it = old_by_id.find(d.tenant.id());
    TenantEntry entry;
    if (it != old_by_id.end()) {
      entry.slot = it->second->slot;
      // Interfaces come from the network collector, not from discovery.
      *d.tenant.mutable_interfaces() = it->second->tenant.interfaces();
      if (!google::protobuf::util::MessageDifferencer::Equals(it->second->tenant, d.tenant)) {
        delta.upserted.push_back(d.tenant);
      }
      kept[d.tenant.id()] = true;
    } else {
      if (free_slots_.empty()) {
        ++rejected_;
        ++unmeasured_;
        continue;
      }
      entry.slot = free_slots_.back();
      free_slots_.pop_back();
      delta.upserted.push_back(d.tenant);
    }
    entry.cpu_cgroup_id = d.cpu_cgroup_id;
    entry.declared_interfaces = std::move(d.declared_interfaces);
    entry.tenant = std::move(d.tenant);
    next.push_back(std::move(entry));
  }
  for (const auto& e : tenants_) {
    if (!kept.contains(e.tenant.id())) {
      delta.removed_ids.push_back(e.tenant.id());
      quarantined_slots_.push_back(e.slot);
    }
  }
  tenants_ = std::move(next);
  // Once per change, not every interval: the gauge in /metrics tells the rest.
  if (unmeasured_ != unmeasured_before && unmeasured_ > 0) {
    FW_LOG(Warning, unmeasured_, " tenant(s) not measured: all ", max_slots_,
           " tenant slots are in use (raise max_tenants)");
  }
  return delta;
}

const v1::Tenant* TenantRegistry::SetInterfaces(const std::string& id,
                                                const std::vector<std::string>& names) {
  auto it = std::lower_bound(
      tenants_.begin(), tenants_.end(), id,
      [](const TenantEntry& e, const std::string& key) { return e.tenant.id() < key; });
  if (it == tenants_.end() || it->tenant.id() != id) return nullptr;
  const auto& current = it->tenant.interfaces();
  if (std::equal(current.begin(), current.end(), names.begin(), names.end())) return nullptr;
  it->tenant.clear_interfaces();
  for (const auto& name : names) it->tenant.add_interfaces(name);
  return &it->tenant;
}

v1::TenantInventory TenantRegistry::FullInventory() const {
  v1::TenantInventory inventory;
  inventory.set_full(true);
  for (const auto& e : tenants_) *inventory.add_upserted() = e.tenant;
  return inventory;
}

}  // namespace fairwatch::agent
