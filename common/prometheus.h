// Prometheus text exposition (format 0.0.4) and the small HTTP server that
// serves it, shared by the agent and the controller.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace httplib {
class Server;
}

namespace fairwatch {

// Builds an exposition: declare each family once, then its samples.
class PrometheusWriter {
 public:
  // HELP and TYPE lines.
  void Family(absl::string_view name, absl::string_view type, absl::string_view help);
  void Sample(absl::string_view name, const std::map<std::string, std::string>& labels,
              double value);
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// "a\"b" -> a\"b escaped for a label value.
std::string EscapeLabelValue(absl::string_view value);

class MetricsServer {
 public:
  // `program` names the daemon on the index page.
  explicit MetricsServer(std::string program = "fairwatch");
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds host:port ("127.0.0.1:9477", "[::1]:9477", ":9477" for all).
  absl::Status Start(const std::string& address);
  void Stop();
  int port() const { return port_; }

  // What /metrics shows: the latest text given, or what `render` returns at
  // each scrape once set (called on the server's thread).
  void Update(std::string text);
  void SetRenderer(std::function<std::string()> render);

 private:
  const std::string program_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
  std::function<std::string()> render_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fairwatch
