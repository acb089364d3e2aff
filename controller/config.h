// The controller's configuration: a fairwatch.v1.ControllerConfig text-proto
// file, overridden by command-line flags, with defaults filled in and checked.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "fairwatch/v1/config.pb.h"

namespace fairwatch::controller {

inline constexpr char kDefaultListenAddress[] = "127.0.0.1:7400";
inline constexpr char kDefaultDatabasePath[] = "/var/lib/fairwatch/controller.db";
inline constexpr uint32_t kDefaultWindowIntervals = 5;
inline constexpr uint32_t kDefaultHistoryReports = 120;
inline constexpr uint32_t kDefaultMaxMessageBytes = 4u << 20;
inline constexpr uint32_t kDefaultHostStaleMs = 600'000;
inline constexpr char kDefaultMetricsAddress[] = "127.0.0.1:9478";
inline constexpr int32_t kDefaultMetricsTenantSeries = 20'000;

// Bounds that keep memory and gRPC limits sane; see Validate.
inline constexpr uint32_t kMaxHistoryReports = 86'400;
inline constexpr uint32_t kMinMaxMessageBytes = 4096;
inline constexpr uint32_t kMaxMaxMessageBytes = 1u << 30;

// Command-line values; unset ones leave the file's value alone.
struct ConfigOverrides {
  std::optional<std::string> listen_address;
  std::optional<std::string> database_path;
  std::optional<std::string> metrics_address;
  bool insecure_plaintext = false;
};

// Fills every zero field with its documented default.
void ApplyControllerDefaults(v1::ControllerConfig* config);

// Checks a config that already has its defaults applied.
absl::Status ValidateControllerConfig(const v1::ControllerConfig& config);

// Reads `path` (no file when empty: all defaults), applies `overrides`, then
// defaults, then validates.
absl::StatusOr<v1::ControllerConfig> LoadControllerConfig(const std::string& path,
                                                          const ConfigOverrides& overrides);

// One line for logs and --check-config.
std::string SummarizeControllerConfig(const v1::ControllerConfig& config);

}  // namespace fairwatch::controller
