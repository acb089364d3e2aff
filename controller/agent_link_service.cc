#include "controller/agent_link_service.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
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
    grpc::Status parsed =
        grpc::SerializationTraits<v1::AgentMessage>::Deserialize(&read_buffer_, &incoming_);
    ++messages_received_;
    if (!parsed.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("message #", messages_received_, " (", size_bytes,
                                       " bytes) is not a valid fairwatch.v1.AgentMessage"));
    }
    const v1::AgentMessage::MsgCase kind = incoming_.msg_case();
    if (!registered_) {
      if (kind != v1::AgentMessage::kHello || incoming_.hello().host_id().empty()) {
        return grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("first message must be Hello with host_id (got ",
                         kind == v1::AgentMessage::kHello ? "a Hello with an empty host_id"
                                                          : MessageKind(kind),
                         ")"));
      }
      return HandleHello(incoming_.hello());
    }
    switch (kind) {
      case v1::AgentMessage::kHello:
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            absl::StrCat("second Hello on the stream of host ", host_id_,
                                         " (now claiming host_id \"", incoming_.hello().host_id(),
                                         "\"); Hello is sent once per stream"));
      case v1::AgentMessage::kInventory:
        return HandleInventory(incoming_.inventory());
      case v1::AgentMessage::kReport:
        // Moved out: the fleet keeps recent reports whole, without a copy.
        return HandleReport(
            std::make_shared<const v1::UsageReport>(std::move(*incoming_.mutable_report())));
      case v1::AgentMessage::kLimitAck: {
        const v1::LimitAck& ack = incoming_.limit_ack();
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

  grpc::Status HandleReport(const std::shared_ptr<const v1::UsageReport>& shared_report) {
    const v1::UsageReport& report = *shared_report;
    absl::StatusOr<ReportOutcome> outcome = service_->fleet_->IngestReport(host_id_, shared_report);
    if (!outcome.ok()) return ToGrpcStatus(outcome.status());
    if (*outcome == ReportOutcome::kDuplicate) {
      FW_LOG(Debug, "host ", host_id_, " resent report seq ", report.seq(), "; already held");
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
  v1::AgentMessage incoming_;  // reused so parsing reuses its allocations
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
  return new AgentStream(this, context, next_connection_id_.fetch_add(1));
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
