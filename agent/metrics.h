// The agent's Prometheus /metrics: its own cost and every tenant's cumulative
// counters, rendered from the latest report. Served by cpp-httplib.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/reporter.h"
#include "fairwatch/v1/agent.pb.h"

namespace httplib {
class Server;
}

namespace fairwatch::agent {

// Text exposition format 0.0.4 for one report (pure; tested on its own).
std::string RenderAgentMetrics(const v1::Hello& hello, const v1::UsageReport& report,
                               const v1::TenantInventory& inventory, const ReporterStats& stats);

// "a\"b" -> a\"b escaped for a label value.
std::string EscapeLabelValue(absl::string_view value);

class MetricsServer {
 public:
  MetricsServer();
  ~MetricsServer();

  // Binds host:port ("127.0.0.1:9477", "[::1]:9477", ":9477" for all).
  absl::Status Start(const std::string& address);
  void Stop();
  int port() const { return port_; }

  // Replaces what /metrics shows.
  void Update(std::string text);

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fairwatch::agent
