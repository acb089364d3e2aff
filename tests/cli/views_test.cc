#include "cli/views.h"

#include "absl/time/time.h"
#include "gmock/gmock.h"
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

TEST(HostsTable, ListsEachDisksCapacityAndWhereItComesFrom) {
  v1::ListHostsResponse response;
  v1::HostInfo* host = response.add_hosts();
  host->set_host_id("hv-1");
  host->set_layout(v1::CGROUP_LAYOUT_V2);
  auto disk = [&](const char* name, uint32_t minor, double bw, double ops, double busy,
                  v1::CapacitySource source) {
    v1::DiskCapacity* d = host->mutable_capacity()->add_disks();
    d->set_name(name);
    d->mutable_device()->set_major(259);
    d->mutable_device()->set_minor(minor);
    d->set_bandwidth_bytes_per_s(bw);
    d->set_ops_per_s(ops);
    d->set_busy_fraction(busy);
    d->set_source(source);
  };
  disk("nvme0n1", 0, 2.5e9, 0, 0.02, v1::CAPACITY_CONFIGURED);
  disk("nvme1n1", 1, 180e6, 45000, 0.97, v1::CAPACITY_LEARNED);
  disk("nvme2n1", 2, 0, 0, 0, v1::CAPACITY_SOURCE_UNSPECIFIED);
  const std::string text = HostsTable(response, kNow);
  EXPECT_THAT(text,
              ::testing::EndsWith(
                  "\n"
                  "HOST  DISK             BANDWIDTH    OPS   BUSY  CAPACITY FROM\n"
                  "hv-1  nvme0n1 (259:0)   2.5 GB/s      -   2.0%  configured\n"
                  "hv-1  nvme1n1 (259:1)   180 MB/s  45k/s  97.0%  learned\n"
                  "hv-1  nvme2n1 (259:2)          -      -   0.0%  unknown (not busy yet)\n"));
}

TEST(HostsTable, ListsEachUplinksCapacityAndWhereItComesFrom) {
  v1::ListHostsResponse response;
  v1::HostInfo* host = response.add_hosts();
  host->set_host_id("hv-1");
  auto uplink = [&](const char* name, double rx, double tx, bool saturated,
                    v1::CapacitySource source) {
    v1::InterfaceCapacity* i = host->mutable_capacity()->add_interfaces();
    i->set_name(name);
    i->set_rx_bytes_per_s(rx);
    i->set_tx_bytes_per_s(tx);
    i->set_saturated(saturated);
    i->set_source(source);
  };
  uplink("bond0", 2.5e9, 2.5e9, false, v1::CAPACITY_CONFIGURED);
  uplink("eno1", 1.25e9, 1.25e9, false, v1::CAPACITY_LINK_SPEED);
  uplink("ens3", 12.5e6, 12.5e6, true, v1::CAPACITY_LEARNED);
  uplink("ens4", 0, 0, false, v1::CAPACITY_SOURCE_UNSPECIFIED);
  EXPECT_THAT(HostsTable(response, kNow),
              ::testing::EndsWith("\n"
                                  "HOST  UPLINK         RX         TX  SATURATED  CAPACITY FROM\n"
                                  "hv-1  bond0    2.5 GB/s   2.5 GB/s  -          configured\n"
                                  "hv-1  eno1    1.25 GB/s  1.25 GB/s  -          link speed\n"
                                  "hv-1  ens3    12.5 MB/s  12.5 MB/s  yes        learned\n"
                                  "hv-1  ens4            -          -  no         unknown (not "
                                  "saturated yet)\n"));
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
            "HOST  TENANT          CPU  % HOST                WINDOW  ID\n"
            "hv-1  vm-a           3.46   50.0%  [#####     ]      5s  6f1c\n"
            "hv-1  machine/batch  0.25    6.0%  [#         ]      5s  machine/batch\n");
}

TEST(TopTable, DiskColumnsShowRatesAndUnknownShareAsDash) {
  v1::TopResponse response;
  response.set_resource(v1::RESOURCE_DISK_BANDWIDTH);
  v1::TopRow* row = response.add_rows();
  row->set_host_id("hv-1");
  row->set_tenant_name("db");
  row->set_disk_read_bytes_per_s(1.5e6);
  row->set_disk_write_bytes_per_s(42e6);
  row->set_value(43.5e6);
  row->set_window_s(5);
  const std::string table = TopTable(response);
  EXPECT_NE(table.find("READ"), std::string::npos) << table;
  EXPECT_NE(table.find("1.5 MB/s"), std::string::npos) << table;
  EXPECT_NE(table.find("42 MB/s"), std::string::npos) << table;
  EXPECT_NE(table.find("  -  "), std::string::npos) << "capacity unknown: " << table;
  EXPECT_EQ(table.find("CPU"), std::string::npos) << table;
}

TEST(TenantReport, ShowsUsageHarmAndDevices) {
  v1::TenantDetail detail;
  detail.mutable_info()->set_host_id("hv-1");
  detail.mutable_info()->mutable_tenant()->set_id("machine/vm-a");
  detail.mutable_info()->mutable_tenant()->set_name("vm-a");
  detail.mutable_usage()->set_cpu_cores(0.5);
  detail.mutable_usage()->set_window_s(5);
  detail.set_window_s(5);
  detail.mutable_harm()->set_runq_wait_p99_ns(1.5e6);
  detail.mutable_harm()->set_cpu_psi_present(true);
  detail.mutable_harm()->set_cpu_psi_some_fraction(0.25);
  auto* disk = detail.add_disks();
  disk->mutable_device()->set_major(254);
  disk->set_write_bytes_per_s(2e6);
  const std::string text = TenantReport(detail);
  EXPECT_NE(text.find("machine/vm-a (vm-a)"), std::string::npos) << text;
  EXPECT_NE(text.find("p99 1.5ms"), std::string::npos) << text;
  EXPECT_NE(text.find("some 25.0%"), std::string::npos) << text;
  EXPECT_THAT(text, ::testing::ContainsRegex("io pressure +n/a"));
  // A tenant in the host's network namespace has no TCP counters of its own.
  EXPECT_THAT(text, ::testing::ContainsRegex("tcp retransmits +n/a"));
  detail.mutable_harm()->set_tcp_present(true);
  detail.mutable_harm()->set_tcp_retransmits_per_s(12);
  EXPECT_THAT(TenantReport(detail), ::testing::ContainsRegex("tcp retransmits +12(.0)?/s"));
  EXPECT_NE(text.find("254:0"), std::string::npos) << text;
}

TEST(TenantReport, SaysWhenThereAreNoRatesYet) {
  v1::TenantDetail detail;
  detail.mutable_info()->mutable_tenant()->set_id("t");
  EXPECT_NE(TenantReport(detail).find("no rates yet"), std::string::npos);
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

v1::Case SampleCase() {
  v1::Case c;
  c.set_case_id(12);
  c.set_host_id("hv-1");
  c.set_tenant_id("0b5c1d52-6a4f-4e57-9b1e-2f0b8c3c9d11");
  c.set_tenant_name("web-1");
  c.set_resource(v1::RESOURCE_CPU);
  c.set_state(v1::CASE_STATE_CLOSED);
  c.set_opened_unix_ns(absl::ToUnixNanos(absl::FromUnixSeconds(1'800'000'000)));
  c.set_closed_unix_ns(absl::ToUnixNanos(absl::FromUnixSeconds(1'800'000'075)));
  c.set_opened_by("policy");
  c.set_close_reason("no neighbour harmed for 20s");
  v1::CaseEvidence* e = c.mutable_opening();
  e->set_usage(1.6);
  e->set_fair_share(1.0);
  e->set_entitled_share(1.0);
  e->set_capacity(2);
  e->set_host_usage(2);
  e->set_contended(true);
  e->set_flagged_intervals(3);
  e->set_blame(1);
  v1::HarmedTenant* h = e->add_harmed();
  h->set_tenant_id("db-2");
  h->add_evidence("run-queue wait p99 16.7 ms (baseline 0.5 ms)");
  v1::CaseAction* a = c.add_actions();
  a->set_kind(v1::ACTION_KIND_LIMIT);
  a->set_limit(1.1);
  a->set_at_unix_ns(c.opened_unix_ns());
  a->set_lease_expires_unix_ns(c.opened_unix_ns() + 30'000'000'000);
  a->set_decided_by("policy");
  a->set_ack(v1::ACK_STATE_FAILED);
  a->set_ack_message("refused: cgroup 'x' is protected");
  a->set_reason("using 1.60 cores of 2.00 cores");
  v1::CaseAction* r = c.add_actions();
  r->set_kind(v1::ACTION_KIND_RELEASE);
  r->set_at_unix_ns(c.closed_unix_ns());
  r->set_decided_by("policy");
  r->set_ack(v1::ACK_STATE_APPLIED);
  r->set_in_effect(0);
  return c;
}

TEST(CasesTable, OneRowPerCaseWithItsLastAction) {
  v1::ListCasesResponse response;
  *response.add_cases() = SampleCase();
  const std::string table =
      CasesTable(response, absl::FromUnixSeconds(1'800'000'000) + absl::Minutes(5));
  EXPECT_NE(table.find("CASE  STATE"), std::string::npos) << table;
  EXPECT_NE(table.find("12  closed  hv-1  web-1   cpu"), std::string::npos) << table;
  EXPECT_NE(table.find("5m ago"), std::string::npos) << table;
  EXPECT_NE(table.find("release (applied)"), std::string::npos) << table;
}

TEST(CaseReport, TellsWhyWhoWasHarmedEveryActionAndTheEnd) {
  const std::string text = CaseReport(SampleCase());
  for (const char* part :
       {"case     12 (closed)", "web-1 (0b5c1d52-6a4f-4e57-9b1e-2f0b8c3c9d11)", "on host hv-1",
        "it used 1.60 cores of the host's 2.00 cores", "contended", "fair share was 1.00 cores",
        "neighbour db-2 was harmed: run-queue wait p99 16.7 ms",
        "failed: refused: cgroup 'x' is protected", "release", "applied, in effect no limit",
        "closed   2027-01-15T08:01:15Z: no neighbour harmed for 20s"}) {
    EXPECT_NE(text.find(part), std::string::npos) << "missing '" << part << "' in\n" << text;
  }
}

}  // namespace
}  // namespace fairwatch::cli
