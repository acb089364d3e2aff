#include "agent/config.h"

#include "absl/strings/str_cat.h"
#include "agent/cgroup_discovery.h"
#include "agent/proc_stats.h"
#include "common/status.h"

namespace fairwatch::agent {

void ApplyDefaults(v1::AgentConfig* config) {
  if (config->controller_address().empty())
    config->set_controller_address(kDefaultControllerAddress);
  if (config->host_id().empty()) config->set_host_id(Hostname());
  if (config->interval_ms() == 0) config->set_interval_ms(kDefaultIntervalMs);
  if (config->cgroup_root().empty()) config->set_cgroup_root(kDefaultCgroupRoot);
  if (config->cpu_hierarchy().empty()) config->set_cpu_hierarchy("auto");
  if (config->max_tenants() == 0) config->set_max_tenants(kDefaultMaxTenants);
  if (config->report_buffer() == 0) config->set_report_buffer(kDefaultReportBuffer);
  if (config->metrics_address().empty()) config->set_metrics_address(kDefaultMetricsAddress);
  if (config->reconnect_max_backoff_ms() == 0) {
    config->set_reconnect_max_backoff_ms(kDefaultMaxBackoffMs);
  }
}

absl::Status Validate(const v1::AgentConfig& config) {
  if (config.interval_ms() < 100 || config.interval_ms() > 60000) {
    return absl::InvalidArgumentError(
        absl::StrCat("interval_ms must be within 100..60000; got ", config.interval_ms()));
  }
  const std::string& h = config.cpu_hierarchy();
  if (h != "auto" && h != "unified" && h != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu_hierarchy must be auto, unified or cpu; got '", h, "'"));
  }
  if (config.max_tenants() > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tenants must be at most 65536; got ", config.max_tenants()));
  }
  if (config.cgroup_parents().empty()) {
    return absl::InvalidArgumentError(
        "no tenant source configured: add at least one cgroup_parents { path: \"...\" }");
  }
  for (const auto& parent : config.cgroup_parents()) {
    absl::StatusOr<std::string> path = NormalizeRelativeCgroupPath(parent.path());
    if (!path.ok()) return Annotate(path.status(), "cgroup_parents");
    if (parent.weight() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup_parents '", parent.path(), "': weight must not be negative"));
    }
  }
  if (config.insecure_plaintext() &&
      (!config.tls().cert_file().empty() || !config.tls().ca_file().empty())) {
    return absl::InvalidArgumentError("insecure_plaintext and tls settings are exclusive");
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
