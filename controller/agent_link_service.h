// fairwatch.v1.AgentLink: one bidirectional stream per agent, served with the
// gRPC callback API (one reactor per stream, no thread per stream).
//
// The method is registered raw (ByteBuffer in and out) and this code parses
// AgentMessage itself: the typed reactor reports a message that fails to
// parse exactly like a clean half-close (OnReadDone(false)), so an agent
// sending garbage would get status OK. Raw, it gets INVALID_ARGUMENT.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "controller/fleet_state.h"
#include "controller/store.h"
#include "fairwatch/v1/agent.grpc.pb.h"

namespace fairwatch::controller {

struct AgentLinkOptions {
  // Messages queued towards one agent before its stream is ended as stuck.
  size_t max_queued_messages = 4096;
  std::string controller_version = FAIRWATCH_VERSION;
  // Called (on a gRPC thread) with each LimitAck an agent sends.
  std::function<void(const std::string& host_id, const v1::LimitAck& ack)> on_limit_ack;
  // Called (on a gRPC thread) after each report new to the fleet is ingested.
  std::function<void(const std::string& host_id)> on_report;
};

// Counters since the service was made (for /metrics and benchmarks).
struct AgentLinkStats {
  uint64_t streams_opened = 0;
  uint64_t messages_received = 0;
  uint64_t bytes_received = 0;    // serialized AgentMessages
  uint64_t reports_ingested = 0;  // new to the fleet; resends are not counted
  // Ingest lag of those reports: the time they were ingested minus their
  // timestamp_unix_ns. Log2 buckets of ns as in Log2Histogram; a lag <= 0
  // (agent clock ahead) counts in bucket 0 and in ingest_lag_negative.
  std::vector<uint64_t> ingest_lag_hist;
  uint64_t ingest_lag_sum_ns = 0;
  uint64_t ingest_lag_negative = 0;
  int64_t last_ingest_lag_ns = 0;
};

class AgentLinkService final
    : public v1::AgentLink::WithRawCallbackMethod_Connect<v1::AgentLink::Service> {
 public:
  // `fleet` and `store` must outlive the service; `store` may be null.
  AgentLinkService(FleetState* fleet, Store* store, AgentLinkOptions options = {});
  ~AgentLinkService() override;

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Connect(
      grpc::CallbackServerContext* context) override;

  // Queues `message` on the host's live stream. NotFound when the host has no
  // live stream, Unavailable when its stream is ending.
  absl::Status SendToHost(absl::string_view host_id, const v1::ControllerMessage& message);

  // Ends every stream with `status`, e.g. UNAVAILABLE before shutdown so
  // agents reconnect elsewhere instead of waiting for the deadline.
  void FinishAll(const grpc::Status& status);

  size_t live_stream_count() const;
  // Lock-free; each field is exact, the set is not one atomic snapshot.
  AgentLinkStats stats() const;
  // Streams whose reactor still exists (for tests and orderly shutdown).
  int64_t active_reactor_count() const { return active_reactors_.load(); }

 private:
  class AgentStream;

  // Makes `stream` the host's live stream; returns the one it replaces, with
  // a reference taken, or null.
  AgentStream* Register(const std::string& host_id, AgentStream* stream);
  void Unregister(const std::string& host_id, AgentStream* stream);
  void RecordIngestLag(int64_t lag_ns);

  FleetState* const fleet_;
  Store* const store_;
  const AgentLinkOptions options_;
  std::atomic<uint64_t> next_connection_id_{1};
  std::atomic<int64_t> active_reactors_{0};

  static constexpr size_t kLagBuckets = 64;
  std::atomic<uint64_t> streams_opened_{0};
  std::atomic<uint64_t> messages_received_{0};
  std::atomic<uint64_t> bytes_received_{0};
  std::atomic<uint64_t> reports_ingested_{0};
  std::atomic<uint64_t> lag_sum_ns_{0};
  std::atomic<uint64_t> lag_negative_{0};
  std::atomic<int64_t> last_lag_ns_{0};
  std::array<std::atomic<uint64_t>, kLagBuckets> lag_hist_{};

  mutable absl::Mutex registry_mu_;
  absl::flat_hash_map<std::string, AgentStream*> live_ ABSL_GUARDED_BY(registry_mu_);
};

}  // namespace fairwatch::controller
