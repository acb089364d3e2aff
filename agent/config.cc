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
  if (config->probes().cpu_time().empty()) config->mutable_probes()->set_cpu_time("auto");
  if (config->probes().runq_tracing().empty()) {
    config->mutable_probes()->set_runq_tracing("adaptive");
  }
  if (config->max_tenants() == 0) config->set_max_tenants(kDefaultMaxTenants);
  if (config->report_buffer() == 0) config->set_report_buffer(kDefaultReportBuffer);
  if (config->metrics_address().empty()) config->set_metrics_address(kDefaultMetricsAddress);
  if (config->state_dir().empty()) config->set_state_dir(kDefaultStateDir);
  if (config->has_libvirt()) {
    v1::LibvirtSource* libvirt = config->mutable_libvirt();
    if (libvirt->uri().empty()) libvirt->set_uri(kDefaultLibvirtUri);
    if (libvirt->qemu_run_dir().empty()) libvirt->set_qemu_run_dir(kDefaultQemuRunDir);
    if (libvirt->resync_interval_ms() == 0)
      libvirt->set_resync_interval_ms(kDefaultLibvirtResyncMs);
  }
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
  if (config.probes().cpu_time() != "auto" && config.probes().cpu_time() != "bpf") {
    return absl::InvalidArgumentError(absl::StrCat("probes.cpu_time must be auto or bpf; got '",
                                                   config.probes().cpu_time(), "'"));
  }
  if (config.probes().runq_tracing() != "adaptive" && config.probes().runq_tracing() != "always") {
    return absl::InvalidArgumentError(
        absl::StrCat("probes.runq_tracing must be adaptive or always; got '",
                     config.probes().runq_tracing(), "'"));
  }
  if (config.max_tenants() > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tenants must be at most 65536; got ", config.max_tenants()));
  }
  if (config.cgroup_parents().empty() && !config.has_libvirt()) {
    return absl::InvalidArgumentError(
        "no tenant source configured: add libvirt {} or at least one cgroup_parents { path: "
        "\"...\" } (flags: --libvirt, --cgroup-parent)");
  }
  if (config.has_libvirt()) {
    const v1::LibvirtSource& libvirt = config.libvirt();
    if (libvirt.weight() < 0) {
      return absl::InvalidArgumentError("libvirt: weight must not be negative");
    }
    if (libvirt.resync_interval_ms() != 0 &&
        (libvirt.resync_interval_ms() < 1000 || libvirt.resync_interval_ms() > 3600000)) {
      return absl::InvalidArgumentError(
          absl::StrCat("libvirt: resync_interval_ms must be within 1000..3600000; got ",
                       libvirt.resync_interval_ms()));
    }
    for (const auto& d : libvirt.domains()) {
      if (d.domain().empty()) {
        return absl::InvalidArgumentError(
            "libvirt.domains: each override needs a domain (UUID or name)");
      }
      if (d.weight() < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("libvirt.domains '", d.domain(), "': weight must not be negative"));
      }
    }
  }
  for (const auto& parent : config.cgroup_parents()) {
    absl::StatusOr<std::string> path = NormalizeRelativeCgroupPath(parent.path());
    if (!path.ok()) return Annotate(path.status(), "cgroup_parents");
    if (parent.weight() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup_parents '", parent.path(), "': weight must not be negative"));
    }
  }
  for (const std::string& path : config.protected_cgroups()) {
    absl::StatusOr<std::string> normalized = NormalizeRelativeCgroupPath(path);
    if (!normalized.ok()) return Annotate(normalized.status(), "protected_cgroups");
  }
  if (!config.state_dir().empty() && config.state_dir().front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("state_dir '", config.state_dir(), "' must be an absolute path"));
  }
  if (config.insecure_plaintext() &&
      (!config.tls().cert_file().empty() || !config.tls().ca_file().empty())) {
    return absl::InvalidArgumentError("insecure_plaintext and tls settings are exclusive");
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
