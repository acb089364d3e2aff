// The controller's Prometheus /metrics: the fleet (hosts, their connection and
// last report, tenants, each tenant's share of its host per resource), the
// judge (open cases and since when, actions by kind and result, agents'
// answers), ingest and the store's write latency.
#pragma once

#include <string>
#include <vector>

#include "controller/agent_link_service.h"
#include "controller/judge.h"
#include "controller/store.h"

namespace fairwatch::controller {

class ControllerServer;

// One tenant's share of its host's capacity for one resource, last interval.
struct UsageShare {
  std::string host_id;
  std::string tenant_id;
  std::string tenant_name;
  v1::Resource resource = v1::RESOURCE_UNSPECIFIED;
  double share = 0;  // usage / capacity
};

// Everything a scrape shows, gathered first so rendering is pure.
struct ControllerMetrics {
  size_t hosts_connected = 0;
  size_t hosts_disconnected = 0;
  size_t tenants = 0;
  std::vector<HostStatus> hosts;   // by id
  std::vector<UsageShare> shares;  // largest first, at most the series limit
  size_t shares_dropped = 0;       // beyond the series limit
  bool judging = false;            // a judge runs (there is a store)
  JudgeStats judge;
  std::vector<OpenCaseInfo> open_cases;  // oldest first
  DryRunState dry_run;
  size_t exemptions = 0;
  StoreStats store;
  FleetIngestStats ingest;
  AgentLinkStats link;
};

// Gathers from a running server; `tenant_series` < 0: no per-tenant series.
ControllerMetrics CollectControllerMetrics(ControllerServer& server, const Store* store,
                                           int tenant_series);

std::string RenderControllerMetrics(const ControllerMetrics& metrics);

}  // namespace fairwatch::controller
