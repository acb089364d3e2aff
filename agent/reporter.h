// Streams the agent's inventory and reports to the controller over one
// bidirectional gRPC stream, on a thread of its own. Reports stay buffered
// until the controller acknowledges them, so a reconnect resends what the
// controller has not stored; counters are cumulative, so even a report
// dropped from a full buffer loses resolution, not counts.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "fairwatch/v1/agent.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace fairwatch::agent {

struct ReporterOptions {
  std::string address;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  size_t buffer_reports = 600;
  uint32_t initial_backoff_ms = 200;
  uint32_t max_backoff_ms = 5000;
};

struct ReporterStats {
  bool connected = false;
  uint64_t connects = 0;
  uint64_t reports_acked = 0;
  uint64_t reports_dropped = 0;  // fell out of a full buffer while disconnected
  uint64_t buffered = 0;
};

// Answers a LimitCommand; runs on the reporter's reader thread.
using LimitHandler = std::function<v1::LimitAck(const v1::LimitCommand&)>;

class Reporter {
 public:
  Reporter(ReporterOptions options, v1::Hello hello, LimitHandler limit_handler);
  ~Reporter();

  void Start();
  void Stop();

  // Replaces the full inventory sent on (re)connect and queues `delta` for
  // the live stream. Call before publishing a report that names new tenants.
  void UpdateInventory(v1::TenantInventory full, v1::TenantInventory delta);
  void PublishReport(v1::UsageReport report);

  ReporterStats stats() const;

 private:
  void Run();
  // One connection's life; returns how it ended.
  grpc::Status RunStream(bool* welcomed);
  void ReadLoop(grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>* stream);

  ReporterOptions options_;
  const v1::Hello hello_;
  LimitHandler limit_handler_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentLink::Stub> stub_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_broken_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* live_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  v1::TenantInventory full_inventory_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::UsageReport> unacked_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::AgentMessage> pending_ ABSL_GUARDED_BY(mu_);  // for the live stream
  ReporterStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fairwatch::agent
