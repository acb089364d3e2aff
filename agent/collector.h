// A collector measures one family of resources for every tenant. The agent
// holds a table of them; adding a resource is adding a row.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/tenant_registry.h"
#include "fairwatch/v1/agent.pb.h"

namespace fairwatch::agent {

enum class CollectorState { kNew, kRunning, kStopped, kFailed };

class Collector {
 public:
  virtual ~Collector() = default;
  virtual absl::string_view name() const = 0;

  // Loads and attaches whatever the collector needs.
  virtual absl::Status Init() = 0;
  // Called after every change of the tenant set, before Collect.
  virtual absl::Status SyncTenants(absl::Span<const TenantEntry> tenants) = 0;
  // Fills counters for tenants[i] into report->tenants(i).
  virtual absl::Status Collect(absl::Span<const TenantEntry> tenants, v1::UsageReport* report) = 0;
  // Adds the collector's own cost (BPF programs, map fill).
  virtual void AddSelfCounters(v1::AgentSelfCounters* self) const {}
  // A collector that watches something between samples asks to be called
  // every tick_period (zero: never) with the time.
  virtual absl::Duration tick_period() const { return absl::ZeroDuration(); }
  virtual void Tick(absl::Time now) {}
  virtual absl::Status Stop() = 0;

  CollectorState state() const { return state_; }

 protected:
  CollectorState state_ = CollectorState::kNew;
};

}  // namespace fairwatch::agent
