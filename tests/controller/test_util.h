// Helpers shared by the controller tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <utility>

#include "fairwatch/v1/agent.pb.h"

namespace fairwatch::controller::testing {

// A fresh directory removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern =
        (std::filesystem::path(base != nullptr ? base : "/tmp") / "fwctl-test-XXXXXX").string();
    char* made = mkdtemp(pattern.data());
    path_ = made != nullptr ? made : "";
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return (std::filesystem::path(path_) / name); }

 private:
  std::string path_;
};

inline v1::Hello MakeHello(const std::string& host_id, int64_t epoch_unix_ns, uint32_t cpus = 4) {
  v1::Hello hello;
  hello.set_host_id(host_id);
  hello.set_hostname(host_id + ".example");
  hello.set_agent_version("test-agent");
  hello.set_epoch_unix_ns(epoch_unix_ns);
  hello.set_layout(v1::CGROUP_LAYOUT_V2);
  hello.set_cpu_hierarchy("unified");
  hello.mutable_capacity()->set_cpus(cpus);
  hello.set_interval_ms(1000);
  return hello;
}

inline v1::UsageReport MakeReport(
    uint64_t seq, uint64_t monotonic_ns,
    std::initializer_list<std::pair<const char*, uint64_t>> cpu_usage_ns) {
  v1::UsageReport report;
  report.set_seq(seq);
  report.set_monotonic_ns(monotonic_ns);
  report.set_timestamp_unix_ns(1'700'000'000'000'000'000 + static_cast<int64_t>(monotonic_ns));
  for (const auto& [tenant_id, usage_ns] : cpu_usage_ns) {
    v1::TenantCounters* counters = report.add_tenants();
    counters->set_tenant_id(tenant_id);
    counters->mutable_cpu()->set_usage_ns(usage_ns);
  }
  return report;
}

inline v1::Tenant MakeTenant(const std::string& id, const std::string& name,
                             const std::string& account = "acct") {
  v1::Tenant tenant;
  tenant.set_id(id);
  tenant.set_name(name);
  tenant.set_account(account);
  tenant.set_source(v1::TENANT_SOURCE_CGROUP_PARENT);
  return tenant;
}

inline v1::TenantInventory MakeInventory(bool full, std::initializer_list<v1::Tenant> upserted,
                                         std::initializer_list<const char*> removed = {}) {
  v1::TenantInventory inventory;
  inventory.set_full(full);
  for (const v1::Tenant& tenant : upserted) *inventory.add_upserted() = tenant;
  for (const char* id : removed) inventory.add_removed_ids(id);
  return inventory;
}

}  // namespace fairwatch::controller::testing
