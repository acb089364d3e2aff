#include "controller/agent_link_service.h"

#include <algorithm>
#include <bit>
#include <deque>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "google/protobuf/arena.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"

namespace fairwatch::controller {
namespace {

const char* MessageKind(v1::AgentMessage::MsgCase kind) {
  switch (kind) {
    case v1::AgentMessage::kHello:
      return "Hello";
    case v1::AgentMessage::kInventory:
      return "TenantInventory";
    case v1::AgentMessage::kReport:
      return "UsageReport";
    case v1::AgentMessage::kLimitAck:
      return "LimitAck";
    case v1::AgentMessage::MSG_NOT_SET:
      break;
  }
  return "an empty AgentMessage";
}

// An arena for one agent message, reset when it is handled: a report is
// thousands of small objects and nothing keeps them, so this spares a malloc
// and a free for each. Each thread has one that keeps its first block; a
// message parsed while another is being handled on the same thread gets its
// own.
class MessageArena {
 public:
  MessageArena() {
    ThreadArena& mine = ThreadArena::Get();
    if (mine.busy) {
      arena_ = &own_.emplace();
    } else {
      mine.busy = true;
      thread_ = &mine;
      arena_ = &mine.arena;
    }
  }
  ~MessageArena() {
    if (thread_ == nullptr) return;
    thread_->arena.Reset();
    thread_->busy = false;
  }
  MessageArena(const MessageArena&) = delete;
  MessageArena& operator=(const MessageArena&) = delete;

  google::protobuf::Arena* get() const { return arena_; }

 private:
  struct ThreadArena {
    static constexpr size_t kBlockBytes = 1 << 20;
    static ThreadArena& Get() {
      thread_local ThreadArena mine;
      return mine;
    }
    static google::protobuf::ArenaOptions Options(char* block) {
      google::protobuf::ArenaOptions options;
      options.initial_block = block;
      options.initial_block_size = kBlockBytes;
      options.max_block_size = kBlockBytes;
      return options;
    }
    ThreadArena() : block(new char[kBlockBytes]), arena(Options(block.get())) {}
    std::unique_ptr<char[]> block;
    google::protobuf::Arena arena;
    bool busy = false;
  };

  ThreadArena* thread_ = nullptr;
  std::optional<google::protobuf::Arena> own_;
  google::protobuf::Arena* arena_ = nullptr;
};

// The bytes of a ByteBuffer, in one string.
bool Flatten(const grpc::ByteBuffer& buffer, std::string* out) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  out->reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    out->append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return true;
}

// Turns the wire form of AgentMessage{report} into the report's own, when
// the message is exactly that field (it always is from our agent).
bool StripToReport(std::string* wire) {
  constexpr char kReportTag = 3 << 3 | 2;  // field 3, length-delimited
  if (wire->empty() || (*wire)[0] != kReportTag) return false;
  uint64_t length = 0;
  size_t i = 1;
  for (int shift = 0; i < wire->size() && shift < 64; shift += 7) {
    const auto byte = static_cast<uint8_t>((*wire)[i++]);
    length |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      if (length != wire->size() - i) return false;
      wire->erase(0, i);
      return true;
    }
  }
  return false;
}

}  // namespace

// Lifetime: gRPC holds one reference until OnDone; SendToHost and stream
// replacement take short-lived ones. Calls into gRPC (StartWrite, Finish) are
// made without holding mu_, because gRPC may run reactions inline and they
// take mu_ too.
class AgentLinkService::AgentStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  AgentStream(AgentLinkService* service, grpc::CallbackServerContext* context,
              uint64_t connection_id)
      : service_(service), connection_id_(connection_id), peer_(context->peer()) {
    service_->active_reactors_.fetch_add(1);
    FW_LOG(Debug, "agent stream ", connection_id_, " opened from ", peer_);
    StartRead(&read_buffer_);
  }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Any thread.
  absl::Status Enqueue(const v1::ControllerMessage& message) {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) {
        return absl::UnavailableError(absl::StrCat("the stream of host ", host_id_, " is ending"));
      }
      if (message.has_report_ack() && !queue_.empty() && queue_.back().has_report_ack()) {
        // Acks are cumulative, so one queued ack can stand for several.
        auto* ack = queue_.back().mutable_report_ack();
        ack->set_seq(std::max(ack->seq(), message.report_ack().seq()));
      } else if (queue_.size() >= service_->options_.max_queued_messages) {
        status = absl::ResourceExhaustedError(absl::StrCat(
            "agent of host ", host_id_, " is not reading: ", queue_.size(), " messages queued"));
        RequestFinishLocked(ToGrpcStatus(status));
      } else {
        queue_.push_back(message);
      }
    }
    Pump();
    return status;
  }

  // Any thread. The first request wins; later ones are ignored.
  void RequestFinish(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      RequestFinishLocked(status);
    }
    Pump();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // Half-close, cancellation or a broken transport (gRPC has already sent
      // RESOURCE_EXHAUSTED for an oversized message): nothing left to read.
      RequestFinish(grpc::Status::OK);
      return;
    }
    grpc::Status status = HandleMessage();
    if (!status.ok()) {
      FW_LOG(Warning, "ending agent stream from ", peer_,
             host_id_.empty() ? "" : absl::StrCat(" (host ", host_id_, ")"), ": ",
             status.error_message());
      RequestFinish(status);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) return;
    }
    StartRead(&read_buffer_);
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) {
        queue_.clear();
        RequestFinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write to agent failed"));
      }
    }
    Pump();
  }

  void OnDone() override {
    if (registered_) {
      service_->Unregister(host_id_, this);
      if (service_->fleet_->OnDisconnect(host_id_, connection_id_, absl::Now())) {
        FW_LOG(Info, "agent ", host_id_, " disconnected (", peer_, ", ", messages_received_,
               " messages)");
      }
    }
    Unref();
  }

 private:
  ~AgentStream() override { service_->active_reactors_.fetch_sub(1); }

  void RequestFinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) return;
    finish_requested_ = true;
    finish_status_ = status;
    // On error nothing queued is worth delaying the end for; on a clean end
    // the queue (acks, commands) is flushed first.
    if (!status.ok()) queue_.clear();
  }

  // Starts the next write, or Finish once writes are drained.
  void Pump() {
    enum class Action { kNone, kWrite, kFinish } action = Action::kNone;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (write_in_flight_ || finished_) return;
      if (!queue_.empty()) {
        bool own_buffer = false;
        // gRPC's serializer wants an empty buffer (it asserts so for messages
        // past the inline slice size); the last write's bytes are still here.
        write_buffer_.Clear();
        grpc::Status serialized = grpc::SerializationTraits<v1::ControllerMessage>::Serialize(
            queue_.front(), &write_buffer_, &own_buffer);
        queue_.pop_front();
        if (serialized.ok()) {
          write_in_flight_ = true;
          action = Action::kWrite;
        } else {
          RequestFinishLocked(grpc::Status(
              grpc::StatusCode::INTERNAL,
              absl::StrCat("serializing a message for the agent: ", serialized.error_message())));
        }
      }
      if (action == Action::kNone && finish_requested_) {
        finished_ = true;
        status = finish_status_;
        action = Action::kFinish;
      }
    }
    if (action == Action::kWrite) StartWrite(&write_buffer_);
    if (action == Action::kFinish) Finish(status);
  }

  grpc::Status HandleMessage() {
    const size_t size_bytes = read_buffer_.Length();
    std::string wire;
    const bool flat = Flatten(read_buffer_, &wire);
    read_buffer_.Clear();
    const MessageArena arena;
    v1::AgentMessage& incoming =
        *google::protobuf::Arena::CreateMessage<v1::AgentMessage>(arena.get());
    ++messages_received_;
    service_->messages_received_.fetch_add(1, std::memory_order_relaxed);
    service_->bytes_received_.fetch_add(size_bytes, std::memory_order_relaxed);
    if (!flat || !incoming.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("message #", messages_received_, " (", size_bytes,
                                       " bytes) is not a valid fairwatch.v1.AgentMessage"));
    }
    const v1::AgentMessage::MsgCase kind = incoming.msg_case();
    if (!registered_) {
      if (kind != v1::AgentMessage::kHello || incoming.hello().host_id().empty()) {
        return grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("first message must be Hello with host_id (got ",
                         kind == v1::AgentMessage::kHello ? "a Hello with an empty host_id"
                                                          : MessageKind(kind),
                         ")"));
      }
      return HandleHello(incoming.hello());
    }
    switch (kind) {
      case v1::AgentMessage::kHello:
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            absl::StrCat("second Hello on the stream of host ", host_id_,
                                         " (now claiming host_id \"", incoming.hello().host_id(),
                                         "\"); Hello is sent once per stream"));
      case v1::AgentMessage::kInventory:
        return HandleInventory(incoming.inventory());
      case v1::AgentMessage::kReport:
        // The fleet keeps the report's wire form: reuse the bytes read.
        if (!StripToReport(&wire)) wire = incoming.report().SerializeAsString();
        return HandleReport(incoming.report(), std::move(wire));
      case v1::AgentMessage::kLimitAck: {
        const v1::LimitAck& ack = incoming.limit_ack();
        FW_LOG(Info, "host ", host_id_, " acked limit command ", ack.command_id(), ": code ",
               ack.status_code(), ack.status_message().empty() ? "" : " ", ack.status_message(),
               " (in effect: ", ack.in_effect().ShortDebugString(), ")");
        if (service_->options_.on_limit_ack) service_->options_.on_limit_ack(host_id_, ack);
        return grpc::Status::OK;
      }
      case v1::AgentMessage::MSG_NOT_SET:
        break;
    }
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("message #", messages_received_, " from host ", host_id_,
                                     " is an empty AgentMessage (no field of msg is set)"));
  }

  grpc::Status HandleHello(const v1::Hello& hello) {
    const absl::Time now = absl::Now();
    absl::StatusOr<HelloResult> result = service_->fleet_->OnHello(hello, connection_id_, now);
    if (!result.ok()) return ToGrpcStatus(result.status());
    host_id_ = hello.host_id();
    registered_ = true;
    if (service_->store_ != nullptr) {
      // Monitoring does not depend on the store; losing this row is logged
      // and repaired by the next Hello.
      absl::Status stored = service_->store_->RecordHello(hello, now);
      if (!stored.ok()) FW_LOG(Error, stored.message());
    }
    v1::ControllerMessage welcome;
    welcome.mutable_welcome()->set_last_report_seq(result->last_report_seq);
    welcome.mutable_welcome()->set_controller_version(service_->options_.controller_version);
    // Queued before Register so nothing SendToHost pushes can precede it.
    absl::Status queued = Enqueue(welcome);
    if (!queued.ok()) return ToGrpcStatus(queued);
    if (AgentStream* replaced = service_->Register(host_id_, this)) {
      FW_LOG(Warning, "host ", host_id_, ": new stream from ", peer_, " replaces the one from ",
             replaced->peer_);
      replaced->RequestFinish(
          grpc::Status(grpc::StatusCode::ABORTED,
                       absl::StrCat("replaced by a newer stream of host ", host_id_)));
      replaced->Unref();
    }
    FW_LOG(Info, "agent ", host_id_, " (", hello.hostname(), ", agent ", hello.agent_version(),
           ", ", hello.capacity().cpus(), " CPUs) connected from ", peer_, "; epoch ",
           hello.epoch_unix_ns(), result->epoch_changed ? " (new)" : "", ", resumes after seq ",
           result->last_report_seq);
    return grpc::Status::OK;
  }

  grpc::Status HandleInventory(const v1::TenantInventory& inventory) {
    const absl::Time now = absl::Now();
    absl::Status applied = service_->fleet_->ApplyInventory(host_id_, inventory, now);
    if (!applied.ok()) return ToGrpcStatus(applied);
    FW_LOG(Debug, "host ", host_id_, " inventory: ", inventory.full() ? "full, " : "delta, ",
           inventory.upserted_size(), " upserted, ", inventory.removed_ids_size(), " removed");
    if (service_->store_ != nullptr) {
      absl::Status stored = service_->store_->RecordInventory(host_id_, inventory, now);
      if (!stored.ok()) FW_LOG(Error, stored.message());
    }
    return grpc::Status::OK;
  }

  grpc::Status HandleReport(const v1::UsageReport& report, std::string serialized) {
    absl::StatusOr<ReportOutcome> outcome =
        service_->fleet_->IngestReport(host_id_, report, std::move(serialized));
    if (!outcome.ok()) return ToGrpcStatus(outcome.status());
    if (*outcome == ReportOutcome::kDuplicate) {
      FW_LOG(Debug, "host ", host_id_, " resent report seq ", report.seq(), "; already held");
    } else {
      const int64_t lag_ns = absl::GetCurrentTimeNanos() - report.timestamp_unix_ns();
      FW_LOG(Debug, "host ", host_id_, " report seq ", report.seq(), ", ", report.tenants_size(),
             " tenants, taken ", lag_ns / 1000000, " ms ago");
      service_->RecordIngestLag(lag_ns);
      if (service_->options_.on_report) service_->options_.on_report(host_id_);
    }
    v1::ControllerMessage ack;
    ack.mutable_report_ack()->set_seq(report.seq());
    return ToGrpcStatus(Enqueue(ack));
  }

  AgentLinkService* const service_;
  const uint64_t connection_id_;
  const std::string peer_;
  std::atomic<int> refs_{1};

  // Touched only by read reactions, which gRPC runs one at a time, and by
  // OnDone, which runs after all of them.
  grpc::ByteBuffer read_buffer_;
  uint64_t messages_received_ = 0;
  bool registered_ = false;
  std::string host_id_;

  absl::Mutex mu_;
  std::deque<v1::ControllerMessage> queue_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer write_buffer_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

AgentLinkService::AgentLinkService(FleetState* fleet, Store* store, AgentLinkOptions options)
    : fleet_(fleet), store_(store), options_(std::move(options)) {}

AgentLinkService::~AgentLinkService() = default;

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* AgentLinkService::Connect(
    grpc::CallbackServerContext* context) {
  streams_opened_.fetch_add(1, std::memory_order_relaxed);
  return new AgentStream(this, context, next_connection_id_.fetch_add(1));
}

void AgentLinkService::RecordIngestLag(int64_t lag_ns) {
  reports_ingested_.fetch_add(1, std::memory_order_relaxed);
  last_lag_ns_.store(lag_ns, std::memory_order_relaxed);
  size_t bucket = 0;
  if (lag_ns <= 0) {
    lag_negative_.fetch_add(1, std::memory_order_relaxed);
  } else {
    lag_sum_ns_.fetch_add(static_cast<uint64_t>(lag_ns), std::memory_order_relaxed);
    bucket = std::bit_width(static_cast<uint64_t>(lag_ns)) - 1;
  }
  lag_hist_[std::min(bucket, kLagBuckets - 1)].fetch_add(1, std::memory_order_relaxed);
}

AgentLinkStats AgentLinkService::stats() const {
  AgentLinkStats stats;
  stats.streams_opened = streams_opened_.load(std::memory_order_relaxed);
  stats.messages_received = messages_received_.load(std::memory_order_relaxed);
  stats.bytes_received = bytes_received_.load(std::memory_order_relaxed);
  stats.reports_ingested = reports_ingested_.load(std::memory_order_relaxed);
  stats.ingest_lag_hist.reserve(kLagBuckets);
  for (const auto& bucket : lag_hist_) {
    stats.ingest_lag_hist.push_back(bucket.load(std::memory_order_relaxed));
  }
  stats.ingest_lag_sum_ns = lag_sum_ns_.load(std::memory_order_relaxed);
  stats.ingest_lag_negative = lag_negative_.load(std::memory_order_relaxed);
  stats.last_ingest_lag_ns = last_lag_ns_.load(std::memory_order_relaxed);
  return stats;
}

AgentLinkService::AgentStream* AgentLinkService::Register(const std::string& host_id,
                                                          AgentStream* stream) {
  absl::MutexLock lock(&registry_mu_);
  AgentStream*& slot = live_[host_id];
  AgentStream* replaced = slot;
  slot = stream;
  if (replaced == stream) return nullptr;
  if (replaced != nullptr) replaced->Ref();
  return replaced;
}

void AgentLinkService::Unregister(const std::string& host_id, AgentStream* stream) {
  absl::MutexLock lock(&registry_mu_);
  auto it = live_.find(host_id);
  if (it != live_.end() && it->second == stream) live_.erase(it);
}

absl::Status AgentLinkService::SendToHost(absl::string_view host_id,
                                          const v1::ControllerMessage& message) {
  AgentStream* stream;
  {
    absl::ReaderMutexLock lock(&registry_mu_);
    auto it = live_.find(host_id);
    if (it == live_.end()) {
      return absl::NotFoundError(absl::StrCat("host ", host_id, " has no live agent stream"));
    }
    stream = it->second;
    stream->Ref();
  }
  absl::Status status = stream->Enqueue(message);
  stream->Unref();
  return status;
}

void AgentLinkService::FinishAll(const grpc::Status& status) {
  std::vector<AgentStream*> streams;
  {
    absl::ReaderMutexLock lock(&registry_mu_);
    streams.reserve(live_.size());
    for (const auto& [host_id, stream] : live_) {
      stream->Ref();
      streams.push_back(stream);
    }
  }
  for (AgentStream* stream : streams) {
    stream->RequestFinish(status);
    stream->Unref();
  }
}

size_t AgentLinkService::live_stream_count() const {
  absl::ReaderMutexLock lock(&registry_mu_);
  return live_.size();
}

}  // namespace fairwatch::controller
