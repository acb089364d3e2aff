#include "controller/config.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/config_file.h"
#include "common/status.h"
#include "controller/policy.h"

namespace fairwatch::controller {
namespace {

// Accepts "host:port", "[v6]:port" and "unix:/path"; gRPC accepts more, but
// these are the forms operators write and a typo should fail here, not at bind.
absl::Status ValidateListenAddress(const std::string& address) {
  if (address.empty()) {
    return absl::InvalidArgumentError("listen_address is empty; expected host:port or unix:/path");
  }
  absl::string_view view(address);
  if (absl::ConsumePrefix(&view, "unix:")) {
    if (view.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen_address \"", address, "\" names no socket path after unix:"));
    }
    return absl::OkStatus();
  }
  size_t colon = view.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen_address \"", address, "\" is not host:port (e.g. 127.0.0.1:7400) or unix:/path"));
  }
  uint32_t port = 0;
  if (!absl::SimpleAtoi(view.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen_address \"", address, "\" has no valid port (0-65535) after ':'"));
  }
  return absl::OkStatus();
}

}  // namespace

void ApplyControllerDefaults(v1::ControllerConfig* config) {
  if (config->listen_address().empty()) config->set_listen_address(kDefaultListenAddress);
  if (config->database_path().empty()) config->set_database_path(kDefaultDatabasePath);
  if (config->window_intervals() == 0) config->set_window_intervals(kDefaultWindowIntervals);
  if (config->history_reports() == 0) config->set_history_reports(kDefaultHistoryReports);
  if (config->max_message_bytes() == 0) config->set_max_message_bytes(kDefaultMaxMessageBytes);
  if (config->host_stale_ms() == 0) config->set_host_stale_ms(kDefaultHostStaleMs);
  if (config->metrics_address().empty()) config->set_metrics_address(kDefaultMetricsAddress);
  if (config->metrics_tenant_series() == 0) {
    config->set_metrics_tenant_series(kDefaultMetricsTenantSeries);
  }
  ApplyPolicyDefaults(config->mutable_fairness());
}

absl::Status ValidateControllerConfig(const v1::ControllerConfig& config) {
  RETURN_IF_ERROR(ValidateListenAddress(config.listen_address()));
  RETURN_IF_ERROR(ValidatePolicy(config.fairness()));
  if (config.database_path().empty()) {
    return absl::InvalidArgumentError("database_path is empty");
  }
  if (config.history_reports() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("history_reports is ", config.history_reports(),
                                                   "; rates need at least 2 reports"));
  }
  if (config.history_reports() > kMaxHistoryReports) {
    return absl::InvalidArgumentError(absl::StrCat("history_reports is ", config.history_reports(),
                                                   "; at most ", kMaxHistoryReports,
                                                   " are kept in memory per host"));
  }
  if (config.window_intervals() >= config.history_reports()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "window_intervals (", config.window_intervals(), ") must be less than history_reports (",
        config.history_reports(), "): a window of N intervals needs N+1 reports in memory"));
  }
  if (config.max_message_bytes() < kMinMaxMessageBytes ||
      config.max_message_bytes() > kMaxMaxMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes is ", config.max_message_bytes(), "; must be within [",
                     kMinMaxMessageBytes, ", ", kMaxMaxMessageBytes, "]"));
  }
  if (config.metrics_address() != "off") {
    const size_t colon = config.metrics_address().rfind(':');
    uint32_t port = 0;
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(config.metrics_address()).substr(colon + 1), &port) ||
        port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("metrics_address \"", config.metrics_address(),
                                                     "\" is not host:port (or \"off\")"));
    }
  }
  if (config.metrics_tenant_series() < -1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_tenant_series is ",
                                                   config.metrics_tenant_series(),
                                                   "; a number of series, or -1 for none"));
  }
  const bool has_tls = !config.tls().cert_file().empty() || !config.tls().key_file().empty();
  if (config.insecure_plaintext() && has_tls) {
    return absl::InvalidArgumentError(
        "insecure_plaintext is set but tls.cert_file/tls.key_file are configured too; choose one");
  }
  if (!config.insecure_plaintext()) {
    if (config.tls().cert_file().empty() || config.tls().key_file().empty()) {
      return absl::InvalidArgumentError(
          "TLS needs both tls.cert_file and tls.key_file; to serve without TLS set "
          "insecure_plaintext: true (or pass --insecure-plaintext)");
    }
  }
  if (config.tls().require_client_cert() && config.tls().ca_file().empty()) {
    return absl::InvalidArgumentError("tls.require_client_cert needs tls.ca_file to verify agents");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ControllerConfig> LoadControllerConfig(const std::string& path,
                                                          const ConfigOverrides& overrides) {
  v1::ControllerConfig config;
  if (!path.empty()) RETURN_IF_ERROR(LoadTextConfig(path, &config));
  const std::string source = path.empty() ? std::string("(defaults and flags)") : path;
  if (overrides.listen_address.has_value()) {
    if (overrides.listen_address->empty()) {
      return absl::InvalidArgumentError("--listen was given an empty address");
    }
    config.set_listen_address(*overrides.listen_address);
  }
  if (overrides.database_path.has_value()) {
    if (overrides.database_path->empty()) {
      return absl::InvalidArgumentError("--db was given an empty path");
    }
    config.set_database_path(*overrides.database_path);
  }
  if (overrides.metrics_address.has_value()) {
    if (overrides.metrics_address->empty()) {
      return absl::InvalidArgumentError("--metrics-address was given an empty address");
    }
    config.set_metrics_address(*overrides.metrics_address);
  }
  if (overrides.insecure_plaintext) config.set_insecure_plaintext(true);
  ApplyControllerDefaults(&config);
  RETURN_IF_ERROR(Annotate(ValidateControllerConfig(config), absl::StrCat("config ", source)));
  return config;
}

std::string SummarizeControllerConfig(const v1::ControllerConfig& config) {
  return absl::StrCat("listen ", config.listen_address(), ", ",
                      config.insecure_plaintext()          ? "plaintext (no TLS)"
                      : config.tls().require_client_cert() ? "TLS with client certificates"
                                                           : "TLS",
                      ", database ", config.database_path(), ", metrics ", config.metrics_address(),
                      ", window ", config.window_intervals(), " intervals, history ",
                      config.history_reports(), " reports, max message ",
                      config.max_message_bytes(), " bytes, hosts dropped ", config.host_stale_ms(),
                      " ms after disconnect");
}

}  // namespace fairwatch::controller
