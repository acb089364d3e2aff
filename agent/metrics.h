// The agent's Prometheus /metrics: its own cost and every tenant's cumulative
// counters, rendered from the latest report. Served by common/prometheus.h.
#pragma once

#include <string>

#include "agent/reporter.h"
#include "common/prometheus.h"
#include "fairwatch/v1/agent.pb.h"

namespace fairwatch::agent {

// Text exposition format 0.0.4 for one report (pure; tested on its own).
std::string RenderAgentMetrics(const v1::Hello& hello, const v1::UsageReport& report,
                               const v1::TenantInventory& inventory, const ReporterStats& stats);

using ::fairwatch::EscapeLabelValue;
using ::fairwatch::MetricsServer;

}  // namespace fairwatch::agent
