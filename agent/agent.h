// The agent: discover -> measure -> report, once per interval.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/block_devices.h"
#include "agent/cgroup_discovery.h"
#include "agent/collector.h"
#include "agent/enforcer.h"
#include "agent/libvirt_source.h"
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

  // Asks Run to re-read the tenant sources now rather than at the next
  // interval (a libvirt lifecycle event). Any thread.
  void RequestRefresh();

  // The /metrics port actually bound (0 when metrics are off).
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }

 private:
  v1::AgentConfig config_;
  v1::Hello hello_;
  std::vector<BlockDevice> block_devices_;  // the Hello's disks, for /proc/diskstats
  std::vector<std::string> uplinks_;        // the Hello's interfaces of unknown capacity, to learn
  // Discovery, registry update, collector sync and inventory to the reporter.
  void RefreshInventory();
  // Copies the network collector's interfaces into the registry when they
  // changed; adds (or updates) the changed tenants in `change` and tells the
  // enforcer. True when a tenant's set changed.
  bool UpdateInterfaces(v1::TenantInventory* change);

  std::unique_ptr<CgroupParentDiscovery> discovery_;
  std::unique_ptr<LibvirtSource> libvirt_;
  std::unique_ptr<TenantRegistry> registry_;
  std::vector<std::unique_ptr<Collector>> collectors_;
  std::unique_ptr<Reporter> reporter_;
  std::unique_ptr<VmTuning> vm_tuning_;
  std::unique_ptr<NetShaper> shaper_;
  std::unique_ptr<Enforcer> enforcer_;
  std::unique_ptr<MetricsServer> metrics_;
  // Owned by collectors_; tells which interfaces carry each tenant.
  class NetCollector* net_collector_ = nullptr;
  class RunqCollector* runq_collector_ = nullptr;
  uint64_t interfaces_generation_seen_ = 0;
  absl::Mutex wake_mu_;
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool refresh_requested_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::set<std::string> merge_dropped_logged_;
  uint64_t seq_ = 0;
  bool enforcer_told_ = false;  // the enforcer has had a tenant list
};

}  // namespace fairwatch::agent
