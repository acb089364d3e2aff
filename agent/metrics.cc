#include "agent/metrics.h"

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

std::string DeviceLabel(const v1::DeviceId& d) { return absl::StrCat(d.major(), ":", d.minor()); }

}  // namespace

std::string RenderAgentMetrics(const v1::Hello& hello, const v1::UsageReport& report,
                               const v1::TenantInventory& inventory, const ReporterStats& stats) {
  PrometheusWriter w;
  const v1::AgentSelfCounters& self = report.agent();
  w.Family("fairwatch_agent_info", "gauge", "Agent build and host identity.");
  w.Sample("fairwatch_agent_info",
           {{"version", hello.agent_version()},
            {"host_id", hello.host_id()},
            {"cpu_hierarchy", hello.cpu_hierarchy()}},
           1);
  w.Family("fairwatch_agent_cpu_seconds_total", "counter", "CPU time used by the agent process.");
  w.Sample("fairwatch_agent_cpu_seconds_total", {}, static_cast<double>(self.cpu_ns()) / 1e9);
  w.Family("fairwatch_agent_resident_memory_bytes", "gauge", "Resident set size of the agent.");
  w.Sample("fairwatch_agent_resident_memory_bytes", {}, static_cast<double>(self.rss_bytes()));
  w.Family("fairwatch_agent_bpf_run_seconds_total", "counter",
           "Time spent in each BPF program (needs kernel.bpf_stats_enabled=1).");
  for (const auto& p : self.programs()) {
    w.Sample("fairwatch_agent_bpf_run_seconds_total", {{"program", p.name()}},
             static_cast<double>(p.run_time_ns()) / 1e9);
  }
  w.Family("fairwatch_agent_bpf_runs_total", "counter",
           "Runs of each BPF program (needs kernel.bpf_stats_enabled=1).");
  for (const auto& p : self.programs()) {
    w.Sample("fairwatch_agent_bpf_runs_total", {{"program", p.name()}},
             static_cast<double>(p.run_count()));
  }
  w.Family("fairwatch_agent_bpf_lost_events_total", "counter",
           "Events probes could not record (full maps, failed updates).");
  w.Sample("fairwatch_agent_bpf_lost_events_total", {}, static_cast<double>(self.lost_events()));
  w.Family("fairwatch_agent_runq_tracing", "gauge",
           "1 while the run-queue programs (sched_wakeup, sched_switch) are attached: while the "
           "host is contended, for new tenants, under a CPU limit, one interval in ten else.");
  w.Sample("fairwatch_agent_runq_tracing", {}, self.runq_tracing() ? 1 : 0);
  w.Family("fairwatch_agent_runq_traced_seconds_total", "counter",
           "Time the run-queue programs have been attached.");
  w.Sample("fairwatch_agent_runq_traced_seconds_total", {},
           static_cast<double>(self.runq_traced_ns()) / 1e9);
  w.Family("fairwatch_agent_runq_attaches_total", "counter",
           "Times the run-queue programs were attached.");
  w.Sample("fairwatch_agent_runq_attaches_total", {}, static_cast<double>(self.runq_attaches()));
  w.Family("fairwatch_agent_bpf_map_entries", "gauge", "Entries in each BPF map.");
  for (const auto& m : self.maps()) {
    w.Sample("fairwatch_agent_bpf_map_entries", {{"map", m.name()}},
             static_cast<double>(m.entries()));
  }
  w.Family("fairwatch_agent_bpf_map_max_entries", "gauge", "Capacity of each BPF map.");
  for (const auto& m : self.maps()) {
    w.Sample("fairwatch_agent_bpf_map_max_entries", {{"map", m.name()}},
             static_cast<double>(m.max_entries()));
  }
  w.Family("fairwatch_agent_tenant_slots", "gauge", "Tenant counter slots in use.");
  w.Sample("fairwatch_agent_tenant_slots", {}, self.tenant_slots_used());
  w.Family("fairwatch_agent_tenant_slots_max", "gauge", "Tenant counter slots available.");
  w.Sample("fairwatch_agent_tenant_slots_max", {}, self.tenant_slots_max());
  w.Family("fairwatch_agent_tenants_unmeasured", "gauge",
           "Tenants discovered but not measured: every slot was taken (raise max_tenants).");
  w.Sample("fairwatch_agent_tenants_unmeasured", {}, self.tenants_unmeasured());
  const v1::EnforcementCounters& limits = self.enforcement();
  w.Family("fairwatch_agent_limits_in_force", "gauge",
           "Limits the agent holds applied now (one per cgroup knob, device or interface).");
  w.Sample("fairwatch_agent_limits_in_force", {}, limits.in_force());
  w.Family("fairwatch_agent_limit_commands_total", "counter",
           "Limit commands and lease ends by outcome: applied (renewals too), cleared, expired, "
           "refused (nothing written), failed (while writing), reapplied (after a restart).");
  for (const auto& [outcome, n] : {std::pair<const char*, uint64_t>{"applied", limits.applied()},
                                   {"cleared", limits.cleared()},
                                   {"expired", limits.expired()},
                                   {"refused", limits.refused()},
                                   {"failed", limits.failed()},
                                   {"reapplied", limits.reapplied()}}) {
    w.Sample("fairwatch_agent_limit_commands_total", {{"outcome", outcome}},
             static_cast<double>(n));
  }
  if (self.has_libvirt()) {
    const v1::LibvirtSourceCounters& lv = self.libvirt();
    w.Family("fairwatch_agent_libvirt_connected", "gauge", "1 while connected to libvirt.");
    w.Sample("fairwatch_agent_libvirt_connected", {}, lv.connected() ? 1 : 0);
    w.Family("fairwatch_agent_libvirt_connection_lost_total", "counter",
             "Times the libvirt connection was lost (libvirtd restart or crash).");
    w.Sample("fairwatch_agent_libvirt_connection_lost_total", {},
             static_cast<double>(lv.connection_lost()));
    w.Family("fairwatch_agent_libvirt_events_total", "counter",
             "Domain lifecycle and device events received.");
    w.Sample("fairwatch_agent_libvirt_events_total", {}, static_cast<double>(lv.events()));
    w.Family("fairwatch_agent_libvirt_unresolved_domains", "gauge",
             "Running domains not yet mapped to a cgroup (not measured).");
    w.Sample("fairwatch_agent_libvirt_unresolved_domains", {}, lv.unresolved_domains());
  }
  w.Family("fairwatch_agent_report_seq", "gauge", "Sequence number of the latest report.");
  w.Sample("fairwatch_agent_report_seq", {}, static_cast<double>(report.seq()));
  w.Family("fairwatch_agent_controller_connected", "gauge",
           "1 while the stream to the controller is up.");
  w.Sample("fairwatch_agent_controller_connected", {}, stats.connected ? 1 : 0);
  w.Family("fairwatch_agent_controller_connects_total", "counter",
           "Streams opened to the controller.");
  w.Sample("fairwatch_agent_controller_connects_total", {}, static_cast<double>(stats.connects));
  w.Family("fairwatch_agent_reports_buffered", "gauge",
           "Reports kept until the controller acknowledges them.");
  w.Sample("fairwatch_agent_reports_buffered", {}, static_cast<double>(stats.buffered));
  w.Family("fairwatch_agent_reports_dropped_total", "counter",
           "Reports dropped from a full buffer while disconnected (counters stay cumulative).");
  w.Sample("fairwatch_agent_reports_dropped_total", {}, static_cast<double>(stats.reports_dropped));

  std::map<std::string, const v1::Tenant*> tenants;
  for (const auto& t : inventory.upserted()) tenants[t.id()] = &t;
  auto labels = [&](const v1::TenantCounters& c) {
    auto it = tenants.find(c.tenant_id());
    return std::map<std::string, std::string>{
        {"tenant", c.tenant_id()},
        {"name", it == tenants.end() ? "" : it->second->name()},
        {"account", it == tenants.end() ? "" : it->second->account()}};
  };
  struct Counter {
    const char* name;
    const char* help;
    double (*get)(const v1::TenantCounters&);
  };
  static const Counter kTenantCounters[] = {
      {"fairwatch_tenant_cpu_seconds_total", "CPU time of the tenant's threads.",
       [](const v1::TenantCounters& c) { return static_cast<double>(c.cpu().usage_ns()) / 1e9; }},
      {"fairwatch_tenant_runq_wait_seconds_total", "Time its threads waited to run.",
       [](const v1::TenantCounters& c) {
         return static_cast<double>(c.cpu().runq_wait_ns()) / 1e9;
       }},
      {"fairwatch_tenant_runq_waits_total", "Waits to run.",
       [](const v1::TenantCounters& c) { return static_cast<double>(c.cpu().runq_waits()); }},
      {"fairwatch_tenant_cpu_throttled_seconds_total", "Time throttled by its own CPU quota.",
       [](const v1::TenantCounters& c) {
         return static_cast<double>(c.cpu().throttled_ns()) / 1e9;
       }},
      {"fairwatch_tenant_cpu_pressure_some_seconds_total",
       "PSI: time some of its tasks stalled on CPU.",
       [](const v1::TenantCounters& c) {
         return static_cast<double>(c.cpu_pressure().some_total_us()) / 1e6;
       }},
      {"fairwatch_tenant_io_pressure_some_seconds_total",
       "PSI: time some of its tasks stalled on I/O.",
       [](const v1::TenantCounters& c) {
         return static_cast<double>(c.io_pressure().some_total_us()) / 1e6;
       }},
  };
  for (const Counter& counter : kTenantCounters) {
    w.Family(counter.name, "counter", counter.help);
    for (const auto& c : report.tenants()) w.Sample(counter.name, labels(c), counter.get(c));
  }
  struct DiskCounter {
    const char* name;
    const char* help;
    uint64_t (*get)(const v1::DiskCounters&);
  };
  static const DiskCounter kDiskCounters[] = {
      {"fairwatch_tenant_disk_read_bytes_total", "Bytes read, counted at completion.",
       [](const v1::DiskCounters& d) { return d.read_bytes(); }},
      {"fairwatch_tenant_disk_written_bytes_total", "Bytes written, counted at completion.",
       [](const v1::DiskCounters& d) { return d.write_bytes(); }},
      {"fairwatch_tenant_disk_reads_total", "Read requests completed.",
       [](const v1::DiskCounters& d) { return d.read_ops(); }},
      {"fairwatch_tenant_disk_writes_total", "Write requests completed.",
       [](const v1::DiskCounters& d) { return d.write_ops(); }},
  };
  for (const DiskCounter& counter : kDiskCounters) {
    w.Family(counter.name, "counter", counter.help);
    for (const auto& c : report.tenants()) {
      for (const auto& d : c.disks()) {
        auto l = labels(c);
        l["device"] = DeviceLabel(d.device());
        w.Sample(counter.name, l, static_cast<double>(counter.get(d)));
      }
    }
  }
  struct NetCounter {
    const char* name;
    const char* help;
    uint64_t (*get)(const v1::NetCounters&);
  };
  static const NetCounter kNetCounters[] = {
      {"fairwatch_tenant_network_receive_bytes_total", "Bytes received by the tenant.",
       [](const v1::NetCounters& n) { return n.rx_bytes(); }},
      {"fairwatch_tenant_network_transmit_bytes_total", "Bytes sent by the tenant.",
       [](const v1::NetCounters& n) { return n.tx_bytes(); }},
      {"fairwatch_tenant_network_receive_packets_total", "Packets received by the tenant.",
       [](const v1::NetCounters& n) { return n.rx_packets(); }},
      {"fairwatch_tenant_network_transmit_packets_total", "Packets sent by the tenant.",
       [](const v1::NetCounters& n) { return n.tx_packets(); }},
      {"fairwatch_tenant_network_drops_total", "Packets dropped on its interfaces.",
       [](const v1::NetCounters& n) { return n.rx_drops() + n.tx_drops(); }},
  };
  for (const NetCounter& counter : kNetCounters) {
    w.Family(counter.name, "counter", counter.help);
    for (const auto& c : report.tenants()) {
      for (const auto& n : c.net()) {
        auto l = labels(c);
        l["interface"] = n.interface().empty() ? "cgroup" : n.interface();
        w.Sample(counter.name, l, static_cast<double>(counter.get(n)));
      }
    }
  }
  return w.Take();
}

}  // namespace fairwatch::agent
