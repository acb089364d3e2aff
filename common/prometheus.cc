#include "common/prometheus.h"

#include <httplib.h>

#include <charconv>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fairwatch {

void PrometheusWriter::Family(absl::string_view name, absl::string_view type,
                              absl::string_view help) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void PrometheusWriter::Sample(absl::string_view name,
                              const std::map<std::string, std::string>& labels, double value) {
  absl::StrAppend(&out_, name);
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      absl::StrAppend(&out_, first ? "" : ",", k, "=\"", EscapeLabelValue(v), "\"");
      first = false;
    }
    out_ += '}';
  }
  // Shortest text that reads back as the same double: byte counters keep
  // every digit (absl::StrCat would round to 6).
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  absl::StrAppend(&out_, " ", absl::string_view(buf, ec == std::errc() ? end - buf : 0), "\n");
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

MetricsServer::MetricsServer(std::string program)
    : program_(std::move(program)), server_(std::make_unique<httplib::Server>()) {}

MetricsServer::~MetricsServer() { Stop(); }

absl::Status MetricsServer::Start(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_address '", address, "' is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    std::string text;
    {
      absl::MutexLock lock(&mu_);
      text = render_ ? render_() : text_;
    }
    response.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
  });
  server_->Get("/", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(absl::StrCat(program_, ": see /metrics\n"), "text/plain");
  });
  port_ =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for /metrics on ", address,
                                               " (in use? set metrics_address, or \"off\")"));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return absl::OkStatus();
}

void MetricsServer::Stop() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

void MetricsServer::Update(std::string text) {
  absl::MutexLock lock(&mu_);
  text_ = std::move(text);
}

void MetricsServer::SetRenderer(std::function<std::string()> render) {
  absl::MutexLock lock(&mu_);
  render_ = std::move(render);
}

}  // namespace fairwatch
