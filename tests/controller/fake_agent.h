// An agent's stream to a real controller, driven synchronously from a test.
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fairwatch/v1/agent.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"

namespace fairwatch::controller::testing {

inline constexpr absl::Duration kRpcDeadline = absl::Seconds(10);

inline std::chrono::system_clock::time_point Deadline() {
  return absl::ToChronoTime(absl::Now() + kRpcDeadline);
}

// One agent stream driven synchronously; every read is bounded by the
// context deadline, so a missing reply fails the test instead of hanging it.
class FakeAgent {
 public:
  // The whole stream must be over within `lifetime`.
  explicit FakeAgent(const std::shared_ptr<grpc::Channel>& channel,
                     absl::Duration lifetime = kRpcDeadline)
      : stub_(v1::AgentLink::NewStub(channel)) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + lifetime));
    stream_ = stub_->Connect(&context_);
  }

  bool Send(const v1::AgentMessage& message) { return stream_->Write(message); }

  std::optional<v1::ControllerMessage> Read() {
    v1::ControllerMessage message;
    if (!stream_->Read(&message)) return std::nullopt;
    return message;
  }

  // Sends Hello and returns the Welcome.
  std::optional<v1::Welcome> Hello(const v1::Hello& hello) {
    v1::AgentMessage message;
    *message.mutable_hello() = hello;
    if (!Send(message)) return std::nullopt;
    std::optional<v1::ControllerMessage> reply = Read();
    if (!reply.has_value() || !reply->has_welcome()) return std::nullopt;
    return reply->welcome();
  }

  bool Inventory(const v1::TenantInventory& inventory) {
    v1::AgentMessage message;
    *message.mutable_inventory() = inventory;
    return Send(message);
  }

  // Sends a report and returns the acked seq.
  std::optional<uint64_t> Report(const v1::UsageReport& report) {
    v1::AgentMessage message;
    *message.mutable_report() = report;
    if (!Send(message)) return std::nullopt;
    std::optional<v1::ControllerMessage> reply = Read();
    if (!reply.has_value() || !reply->has_report_ack()) return std::nullopt;
    return reply->report_ack().seq();
  }

  // Reads past report acks to the next limit command.
  std::optional<v1::LimitCommand> NextLimit() {
    while (std::optional<v1::ControllerMessage> message = Read()) {
      if (message->has_limit()) return message->limit();
    }
    return std::nullopt;
  }

  bool Ack(const v1::LimitAck& ack) {
    v1::AgentMessage message;
    *message.mutable_limit_ack() = ack;
    return Send(message);
  }

  // Reads until the server ends the stream, returning its status.
  grpc::Status AwaitEnd() {
    v1::ControllerMessage ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }

  grpc::Status Close() {
    stream_->WritesDone();
    return AwaitEnd();
  }

 private:
  std::unique_ptr<v1::AgentLink::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>> stream_;
};

}  // namespace fairwatch::controller::testing
