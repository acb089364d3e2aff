// The agent: discover -> measure -> report, once per interval.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "agent/cgroup_discovery.h"
#include "agent/collector.h"
#include "agent/metrics.h"
#include "agent/reporter.h"
#include "agent/tenant_registry.h"
#include "fairwatch/v1/agent.pb.h"
#include "fairwatch/v1/config.pb.h"

namespace fairwatch::agent {

class Agent {
 public:
  // `config` must have had ApplyDefaults and Validate.
  explicit Agent(v1::AgentConfig config);
  ~Agent();

  // Detects cgroups, loads BPF, connects the reporter.
  absl::Status Init();
  // Samples every interval until Shutdown().
  void Run();
  void Shutdown();

  // One interval's work; Run calls it. Returns the report it published.
  absl::StatusOr<v1::UsageReport> SampleOnce();

  // The /metrics port actually bound (0 when metrics are off).
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }

 private:
  v1::AgentConfig config_;
  v1::Hello hello_;
  std::unique_ptr<CgroupParentDiscovery> discovery_;
  std::unique_ptr<TenantRegistry> registry_;
  std::vector<std::unique_ptr<Collector>> collectors_;
  std::unique_ptr<Reporter> reporter_;
  std::unique_ptr<MetricsServer> metrics_;
  // Owned by collectors_; tells which interfaces carry each tenant.
  class NetCollector* net_collector_ = nullptr;
  uint64_t interfaces_generation_seen_ = 0;
  absl::Notification shutdown_;
  uint64_t seq_ = 0;
};

}  // namespace fairwatch::agent
