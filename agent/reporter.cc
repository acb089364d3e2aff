#include "agent/reporter.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status.h"

namespace fairwatch::agent {

Reporter::Reporter(ReporterOptions options, v1::Hello hello, LimitHandler limit_handler)
    : options_(std::move(options)),
      hello_(std::move(hello)),
      limit_handler_(std::move(limit_handler)) {
  grpc::ChannelArguments args;
  // Notice a dead controller or path without waiting for TCP to give up.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(options_.initial_backoff_ms));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options_.max_backoff_ms));
  // The channel's own floor (20 s by default) would otherwise override ours.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(options_.initial_backoff_ms));
  channel_ = grpc::CreateCustomChannel(options_.address, options_.credentials, args);
  stub_ = v1::AgentLink::NewStub(channel_);
}

Reporter::~Reporter() { Stop(); }

void Reporter::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Reporter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    if (live_context_) live_context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void Reporter::UpdateInventory(v1::TenantInventory full, v1::TenantInventory delta) {
  absl::MutexLock lock(&mu_);
  full_inventory_ = std::move(full);
  if (stats_.connected) {
    v1::AgentMessage msg;
    *msg.mutable_inventory() = std::move(delta);
    pending_.push_back(std::move(msg));
  }
}

void Reporter::PublishReport(v1::UsageReport report) {
  absl::MutexLock lock(&mu_);
  if (stats_.connected) {
    v1::AgentMessage msg;
    *msg.mutable_report() = report;
    pending_.push_back(std::move(msg));
  }
  unacked_.push_back(std::move(report));
  while (unacked_.size() > options_.buffer_reports) {
    unacked_.pop_front();
    ++stats_.reports_dropped;
  }
  stats_.buffered = unacked_.size();
}

ReporterStats Reporter::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Reporter::Run() {
  std::mt19937 rng(std::random_device{}());
  uint32_t backoff_ms = options_.initial_backoff_ms;
  uint64_t failures = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    bool welcomed = false;
    grpc::Status status = RunStream(&welcomed);
    {
      absl::MutexLock lock(&mu_);
      stats_.connected = false;
      pending_.clear();
      if (stopping_) return;
    }
    if (welcomed) backoff_ms = options_.initial_backoff_ms;
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    uint32_t wait_ms = static_cast<uint32_t>(backoff_ms * jitter(rng));
    ++failures;
    if (welcomed) failures = 1;
    // Every failure of a live stream is worth a warning; retries of a dead one
    // only on powers of two, so a controller outage does not flood the log.
    const bool loud = (failures & (failures - 1)) == 0;
    Log(loud ? LogLevel::kWarning : LogLevel::kDebug, "controller ", options_.address,
        welcomed ? ": stream ended (" : ": cannot connect (",
        absl::StatusCodeToString(FromGrpcStatus(status).code()), ": ", status.error_message(),
        "); retry ", failures, " in ", wait_ms, " ms");
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Milliseconds(wait_ms));
      if (stopping_) return;
    }
    backoff_ms = std::min(backoff_ms * 8 / 5, options_.max_backoff_ms);
  }
}

grpc::Status Reporter::RunStream(bool* welcomed) {
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return grpc::Status::CANCELLED;
    live_context_ = &context;
    stream_broken_ = false;
  }
  auto clear_context = [this] {
    absl::MutexLock lock(&mu_);
    live_context_ = nullptr;
  };
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>> stream =
      stub_->Connect(&context);

  v1::AgentMessage hello;
  *hello.mutable_hello() = hello_;
  v1::ControllerMessage welcome;
  if (!stream->Write(hello) || !stream->Read(&welcome) || !welcome.has_welcome()) {
    grpc::Status status = stream->Finish();
    clear_context();
    if (status.ok()) {
      return grpc::Status(grpc::StatusCode::UNKNOWN, "controller closed the stream before Welcome");
    }
    return status;
  }
  *welcomed = true;
  const uint64_t controller_seq = welcome.welcome().last_report_seq();
  size_t resent = 0;
  {
    absl::MutexLock lock(&mu_);
    pending_.clear();
    v1::AgentMessage inventory;
    *inventory.mutable_inventory() = full_inventory_;
    pending_.push_back(std::move(inventory));
    while (!unacked_.empty() && unacked_.front().seq() <= controller_seq) unacked_.pop_front();
    for (const auto& report : unacked_) {
      v1::AgentMessage msg;
      *msg.mutable_report() = report;
      pending_.push_back(std::move(msg));
      ++resent;
    }
    stats_.buffered = unacked_.size();
    stats_.connected = true;
    ++stats_.connects;
  }
  FW_LOG(Info, "connected to controller ", options_.address, " (it holds reports up to seq ",
         controller_seq, "; resending ", resent, ")");

  std::thread reader([this, s = stream.get()] { ReadLoop(s); });
  bool write_failed = false;
  while (true) {
    v1::AgentMessage next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || stream_broken_ || !pending_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_ || stream_broken_) break;
      next = std::move(pending_.front());
      pending_.pop_front();
    }
    if (!stream->Write(next)) {
      write_failed = true;
      break;
    }
  }
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
  }
  if (stopping) {
    // Let the controller see a clean end, but do not wait on it for long.
    stream->WritesDone();
    absl::MutexLock lock(&mu_);
    auto closed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stream_broken_; };
    mu_.AwaitWithTimeout(absl::Condition(&closed), absl::Seconds(1));
  }
  context.TryCancel();
  reader.join();
  grpc::Status status = stream->Finish();
  clear_context();
  if (status.ok() && write_failed) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "write to controller failed");
  }
  return status;
}

void Reporter::ReadLoop(grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>* stream) {
  v1::ControllerMessage msg;
  while (stream->Read(&msg)) {
    if (msg.has_report_ack()) {
      absl::MutexLock lock(&mu_);
      const uint64_t acked = msg.report_ack().seq();
      while (!unacked_.empty() && unacked_.front().seq() <= acked) {
        unacked_.pop_front();
        ++stats_.reports_acked;
      }
      stats_.buffered = unacked_.size();
    } else if (msg.has_limit()) {
      v1::AgentMessage reply;
      *reply.mutable_limit_ack() = limit_handler_(msg.limit());
      absl::MutexLock lock(&mu_);
      pending_.push_back(std::move(reply));
    } else if (msg.has_welcome()) {
      FW_LOG(Warning, "controller sent a second Welcome; ignored");
    }
  }
  absl::MutexLock lock(&mu_);
  stream_broken_ = true;
}

}  // namespace fairwatch::agent
