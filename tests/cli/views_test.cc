#include "cli/views.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace fairwatch::cli {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

TEST(HostsTable, ShowsStateLayoutAndUse) {
  v1::ListHostsResponse response;
  v1::HostInfo* host = response.add_hosts();
  host->set_host_id("hv-1");
  host->set_hostname("hv-1.example");
  host->set_connected(true);
  host->set_last_report_unix_ns(absl::ToUnixNanos(kNow - absl::Seconds(1)));
  host->set_layout(v1::CGROUP_LAYOUT_HYBRID);
  host->mutable_capacity()->set_cpus(64);
  host->set_tenant_count(12);
  host->set_cpu_used_cores(10.5);
  host->set_agent_version("0.1.0");
  v1::HostInfo* down = response.add_hosts();
  down->set_host_id("hv-22");
  down->set_last_report_unix_ns(absl::ToUnixNanos(kNow - absl::Minutes(5)));
  down->set_layout(v1::CGROUP_LAYOUT_V2);

  EXPECT_EQ(HostsTable(response, kNow),
            "HOST   HOSTNAME      STATE      LAYOUT  CPUS  TENANTS  CPU USED  AGENT\n"
            "hv-1   hv-1.example  up 1s ago  hybrid    64       12     10.50  0.1.0\n"
            "hv-22                down 5m    v2         0        0      0.00\n");
}

TEST(TenantsTable, ShowsDefaultWeightAndCgroups) {
  v1::ListTenantsResponse response;
  v1::TenantInfo* info = response.add_tenants();
  info->set_host_id("hv-1");
  v1::Tenant* tenant = info->mutable_tenant();
  tenant->set_id("6f1c");
  tenant->set_name("vm-a");
  tenant->set_account("acme");
  tenant->set_source(v1::TENANT_SOURCE_LIBVIRT);
  v1::CgroupRef* ref = tenant->add_cgroups();
  ref->set_hierarchy("cpu");
  ref->set_path("machine/vm-a");

  EXPECT_EQ(TenantsTable(response),
            "HOST  TENANT  NAME  SOURCE   ACCOUNT  WEIGHT  CGROUPS\n"
            "hv-1  6f1c    vm-a  libvirt  acme          1  cpu:machine/vm-a\n");
}

TEST(TopTable, FallsBackToTenantIdWithoutName) {
  v1::TopResponse response;
  v1::TopRow* named = response.add_rows();
  named->set_host_id("hv-1");
  named->set_tenant_id("6f1c");
  named->set_tenant_name("vm-a");
  named->set_cpu_cores(3.456);
  named->set_cpu_host_fraction(0.5);
  named->set_window_s(5);
  v1::TopRow* unnamed = response.add_rows();
  unnamed->set_host_id("hv-1");
  unnamed->set_tenant_id("machine/batch");
  unnamed->set_cpu_cores(0.25);
  unnamed->set_cpu_host_fraction(0.06);
  unnamed->set_window_s(4.98);

  EXPECT_EQ(TopTable(response),
            "HOST  TENANT          CPU  % HOST                WINDOW\n"
            "hv-1  vm-a           3.46   50.0%  [#####     ]      5s\n"
            "hv-1  machine/batch  0.25    6.0%  [#         ]      5s\n");
}

TEST(ToJson, PrintsZeroFieldsWithProtoNames) {
  v1::TopResponse response;
  response.set_resource(v1::RESOURCE_CPU);
  response.add_rows()->set_tenant_id("t1");
  const absl::StatusOr<std::string> json = ToJson(response);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_NE(json->find("\"resource\":\"RESOURCE_CPU\""), std::string::npos) << *json;
  EXPECT_NE(json->find("\"tenant_id\":\"t1\""), std::string::npos) << *json;
  EXPECT_NE(json->find("\"cpu_cores\":0"), std::string::npos) << *json;
  EXPECT_NE(json->find("\"computed_unix_ns\":\"0\""), std::string::npos) << *json;
  EXPECT_EQ(json->find('\n'), std::string::npos);
}

}  // namespace
}  // namespace fairwatch::cli
