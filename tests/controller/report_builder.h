// Builds agent reports second by second for controller tests: each tenant's
// CPU use, run-queue wait (sum and log2 histogram) and own-quota throttling
// accumulate into cumulative counters, as an agent reports them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "controller/fleet_state.h"
#include "gtest/gtest.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller::testing {

inline constexpr uint64_t kSecond = 1'000'000'000;
inline const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// What a tenant does in one second.
struct Second {
  double cores = 0;
  double runq_wait_cores = 0;  // summed wait of its threads, s per s
  int wait_bucket = 0;         // log2 bucket of its waits (18: 0.26-0.52 ms, 23: 8.4-17 ms)
  double throttled_fraction = 0;
  // Who held the CPU while it waited, as shares of runq_wait_cores: another
  // tenant's id, "self" or "host". Empty: not attributed (an older agent).
  std::map<std::string, double> wait_by = {};
};

// Accumulates cumulative counters per tenant and turns them into reports.
class Host {
 public:
  Host(FleetState* fleet, std::string id, uint32_t cpus) : fleet_(fleet), id_(std::move(id)) {
    EXPECT_TRUE(fleet_->OnHello(MakeHello(id_, 1, cpus), 1, kT0).ok());
  }
  void Inventory(std::initializer_list<v1::Tenant> tenants) {
    EXPECT_TRUE(fleet_->ApplyInventory(id_, MakeInventory(true, tenants), kT0).ok());
  }
  uint64_t seq() const { return seq_; }
  void Tick(const std::map<std::string, Second>& seconds) {
    ++seq_;
    v1::UsageReport report;
    report.set_seq(seq_);
    report.set_monotonic_ns(seq_ * kSecond);
    for (const auto& [id, s] : seconds) {
      Totals& t = totals_[id];
      t.cpu_ns += static_cast<uint64_t>(s.cores * 1e9);
      t.wait_ns += static_cast<uint64_t>(s.runq_wait_cores * 1e9);
      t.throttled_ns += static_cast<uint64_t>(s.throttled_fraction * 1e9);
      if (t.hist.size() < 40) t.hist.resize(40);
      t.hist[s.wait_bucket] += 1000;  // 1000 waits a second
      v1::TenantCounters* c = report.add_tenants();
      c->set_tenant_id(id);
      c->mutable_cpu()->set_usage_ns(t.cpu_ns);
      c->mutable_cpu()->set_runq_wait_ns(t.wait_ns);
      c->mutable_cpu()->set_runq_waits(seq_ * 1000);
      c->mutable_cpu()->set_throttled_ns(t.throttled_ns);
      for (uint64_t b : t.hist) c->mutable_cpu()->mutable_runq_wait_hist()->add_buckets(b);
      for (const auto& [holder, share] : s.wait_by) {
        t.wait_by[holder] += static_cast<uint64_t>(share * s.runq_wait_cores * 1e9);
      }
      c->mutable_cpu()->set_runq_wait_attributed(!t.wait_by.empty());
      for (const auto& [holder, ns] : t.wait_by) {
        v1::RunqWaitCause* cause = c->mutable_cpu()->add_runq_wait_by();
        cause->set_wait_ns(ns);
        if (holder == "self") {
          cause->set_holder(v1::RunqWaitCause::HOLDER_SELF);
        } else if (holder == "host") {
          cause->set_holder(v1::RunqWaitCause::HOLDER_HOST);
        } else {
          cause->set_holder(v1::RunqWaitCause::HOLDER_TENANT);
          cause->set_tenant_id(holder);
        }
      }
    }
    absl::StatusOr<ReportOutcome> outcome = fleet_->IngestReport(id_, report);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
  }

 private:
  struct Totals {
    uint64_t cpu_ns = 0, wait_ns = 0, throttled_ns = 0;
    std::vector<uint64_t> hist;
    std::map<std::string, uint64_t> wait_by;
  };
  FleetState* fleet_;
  std::string id_;
  uint64_t seq_ = 0;
  std::map<std::string, Totals> totals_;
};

}  // namespace fairwatch::controller::testing
