#include "agent/agent.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/block_devices.h"
#include "agent/cgroup_layout.h"
#include "agent/cgroup_stats_collector.h"
#include "agent/cpu_collector.h"
#include "agent/disk_collector.h"
#include "agent/net_collector.h"
#include "agent/net_interfaces.h"
#include "agent/proc_stats.h"
#include "agent/runq_collector.h"
#include "agent/uplinks.h"
#include "common/log.h"
#include "common/status.h"
#include "common/tls.h"

namespace fairwatch::agent {

Agent::Agent(v1::AgentConfig config) : config_(std::move(config)) {}

Agent::~Agent() {
  if (libvirt_) libvirt_->Stop();
  if (metrics_) metrics_->Stop();
  if (reporter_) reporter_->Stop();
  for (auto& c : collectors_) (void)c->Stop();
}

absl::Status Agent::Init() {
  ASSIGN_OR_RETURN(CgroupMounts mounts, ReadCgroupMounts());
  ASSIGN_OR_RETURN(std::string cpu_hierarchy, ChooseCpuHierarchy(mounts, config_.cpu_hierarchy()));
  ASSIGN_OR_RETURN(std::string cpu_mount, mounts.MountOf(cpu_hierarchy));
  FW_LOG(Info, "cgroups: layout ", v1::CgroupLayout_Name(mounts.layout), ", CPU attributed in '",
         cpu_hierarchy, "' at ", cpu_mount);

  std::vector<v1::CgroupParentSource> parents(config_.cgroup_parents().begin(),
                                              config_.cgroup_parents().end());
  discovery_ = std::make_unique<CgroupParentDiscovery>(mounts, cpu_hierarchy, std::move(parents));
  RETURN_IF_ERROR(discovery_->Init());
  registry_ = std::make_unique<TenantRegistry>(config_.max_tenants());
  if (config_.has_libvirt()) {
    LibvirtSourceOptions libvirt_options;
    libvirt_options.config = config_.libvirt();
    libvirt_options.cpu_hierarchy = cpu_hierarchy;
    libvirt_options.mounts = mounts;
    libvirt_options.on_change = [this] { RequestRefresh(); };
    libvirt_ = std::make_unique<LibvirtSource>(std::move(libvirt_options));
  }

  CpuCollectorOptions cpu_options;
  cpu_options.use_v1_cpu = cpu_hierarchy == "cpu";
  cpu_options.max_tenants = config_.max_tenants();
  const bool cpu_time_from_cgroups = config_.probes().cpu_time() != "bpf";
  cpu_options.fallback_only = cpu_time_from_cgroups;
  cpu_options.mounts = mounts;
  cpu_options.cpu_hierarchy = cpu_hierarchy;
  collectors_.push_back(std::make_unique<CpuCollector>(cpu_options));
  if (!config_.probes().disable_runq()) {
    RunqCollectorOptions runq_options;
    runq_options.use_v1_cpu = cpu_hierarchy == "cpu";
    runq_options.max_tenants = config_.max_tenants();
    runq_options.adaptive = config_.probes().runq_tracing() == "adaptive";
    auto runq = std::make_unique<RunqCollector>(runq_options);
    runq_collector_ = runq.get();
    collectors_.push_back(std::move(runq));
  }
  CgroupStatsOptions stats_options{mounts, cpu_hierarchy};
  stats_options.read_cpu_time = cpu_time_from_cgroups;
  collectors_.push_back(std::make_unique<CgroupStatsCollector>(std::move(stats_options)));
  if (!config_.probes().disable_disk()) {
    ASSIGN_OR_RETURN(std::string disk_hierarchy, ChooseDiskHierarchy(mounts));
    DiskCollectorOptions disk_options;
    disk_options.hierarchy = disk_hierarchy;
    disk_options.max_tenants = config_.max_tenants();
    collectors_.push_back(std::make_unique<DiskCollector>(disk_options));
  }
  if (!config_.probes().disable_net()) {
    NetCollectorOptions net_options;
    net_options.max_tenants = config_.max_tenants();
    net_options.tenant_interfaces.assign(config_.tenant_interfaces().begin(),
                                         config_.tenant_interfaces().end());
    net_options.netns_discovery = !config_.probes().disable_netns_interface_discovery();
    net_options.cgroup_mounts = mounts;
    auto net = std::make_unique<NetCollector>(net_options);
    net_collector_ = net.get();
    collectors_.push_back(std::move(net));
  }
  for (auto& c : collectors_) {
    absl::Status status = c->Init();
    if (!status.ok())
      return Annotate(status, absl::StrCat("starting the ", c->name(), " collector"));
  }

  hello_.set_host_id(config_.host_id());
  hello_.set_hostname(Hostname());
  hello_.set_agent_version(FAIRWATCH_VERSION);
  hello_.set_epoch_unix_ns(UnixNs());
  hello_.set_layout(mounts.layout);
  hello_.set_cpu_hierarchy(cpu_hierarchy);
  hello_.mutable_capacity()->set_cpus(OnlineCpuCount());
  ASSIGN_OR_RETURN(std::vector<BlockDevice> devices, ListBlockDevices());
  ASSIGN_OR_RETURN(std::vector<v1::DiskCapacity> disks,
                   BuildDiskCapacities(devices, config_.disk_capacity()));
  block_devices_ = devices;
  for (auto& d : disks) *hello_.mutable_capacity()->add_disks() = std::move(d);
  std::vector<v1::InterfaceCapacityOverride> interface_overrides(
      config_.interface_capacity().begin(), config_.interface_capacity().end());
  ASSIGN_OR_RETURN(std::vector<v1::InterfaceCapacity> interfaces,
                   ReadInterfaceCapacities(interface_overrides));
  for (auto& i : interfaces) {
    // Unknown in a direction: the controller learns it from what it sends.
    if (i.rx_bytes_per_s() <= 0 || i.tx_bytes_per_s() <= 0) uplinks_.push_back(i.name());
    *hello_.mutable_capacity()->add_interfaces() = std::move(i);
  }
  hello_.set_interval_ms(config_.interval_ms());

  if (config_.metrics_address() != "off") {
    metrics_ = std::make_unique<MetricsServer>("fairwatch-agent");
    RETURN_IF_ERROR(metrics_->Start(config_.metrics_address()));
    FW_LOG(Info, "metrics: http://", config_.metrics_address(), "/metrics (port ", metrics_->port(),
           ")");
  }

  ASSIGN_OR_RETURN(auto credentials,
                   MakeChannelCredentials(config_.tls(), config_.insecure_plaintext()));
  ReporterOptions reporter_options;
  reporter_options.address = config_.controller_address();
  reporter_options.credentials = std::move(credentials);
  reporter_options.buffer_reports = config_.report_buffer();
  reporter_options.max_backoff_ms = config_.reconnect_max_backoff_ms();
  EnforcerOptions enforcer_options;
  enforcer_options.mounts = mounts;
  enforcer_options.cpu_hierarchy = cpu_hierarchy;
  ASSIGN_OR_RETURN(enforcer_options.disk_hierarchy, ChooseDiskHierarchy(mounts));
  for (const v1::DiskCapacity& d : hello_.capacity().disks()) {
    enforcer_options.host_disks.push_back(d.device());
  }
  enforcer_options.state_dir = config_.state_dir();
  enforcer_options.protected_cgroups.assign(config_.protected_cgroups().begin(),
                                            config_.protected_cgroups().end());
  if (config_.has_libvirt()) {
    vm_tuning_ = MakeLibvirtTuning(config_.libvirt().uri());
    enforcer_options.vm = vm_tuning_.get();
  }
  shaper_ = std::make_unique<NetShaper>();
  enforcer_options.shaper = shaper_.get();
  ASSIGN_OR_RETURN(enforcer_, Enforcer::Create(std::move(enforcer_options)));
  enforcer_->RemoveOrphanIfbs();
  reporter_ = std::make_unique<Reporter>(
      std::move(reporter_options), hello_,
      [this](const v1::LimitCommand& command) { return enforcer_->Handle(command); });
  if (libvirt_) {
    RETURN_IF_ERROR(libvirt_->Start());
    // The first listing (or a failed connection attempt) before the first
    // report, so running VMs are in it; an absent libvirtd only delays them.
    if (!libvirt_->WaitForAttempt(absl::Seconds(5)) || libvirt_->stats().listings == 0) {
      FW_LOG(Warning, "libvirt ", config_.libvirt().uri(),
             ": no domain listing yet; VMs are added when it answers");
    }
  }
  return absl::OkStatus();
}

void Agent::RefreshInventory() {
  absl::StatusOr<std::vector<DiscoveredTenant>> discovered = discovery_->Scan();
  if (!discovered.ok()) {
    // Keep measuring the tenants already known rather than dropping them all.
    FW_LOG(Warning, "tenant discovery failed: ", discovered.status().message());
    return;
  }
  std::vector<std::vector<DiscoveredTenant>> sources;
  // Logged once per cgroup while it lasts (the set holds the current ones only).
  std::set<std::string> dropped_now;
  auto note_dropped = [&](const std::string& id, absl::string_view why) {
    if (!merge_dropped_logged_.contains(id)) FW_LOG(Info, "cgroup ", id, why);
    dropped_now.insert(id);
  };
  if (libvirt_) {
    // A VM's cgroup can show up under a cgroup parent before libvirt's event
    // has been handled: libvirt's own directories are never cgroup tenants
    // while libvirt is a source, so a VM is not briefly counted twice.
    std::erase_if(*discovered, [&](const DiscoveredTenant& t) {
      if (!IsLibvirtMachineCgroup(t.tenant.name())) return false;
      note_dropped(t.tenant.id(), " is libvirt's: its VM is a libvirt tenant");
      return true;
    });
    sources.push_back(libvirt_->Tenants());
  }
  sources.push_back(std::move(*discovered));
  std::vector<std::string> dropped;
  std::vector<DiscoveredTenant> merged = MergeTenantSources(std::move(sources), &dropped);
  for (const auto& id : dropped)
    note_dropped(id, " is a libvirt VM's cgroup: counted once, as the VM");
  merge_dropped_logged_ = std::move(dropped_now);
  InventoryDelta delta = registry_->Apply(std::move(merged));
  v1::TenantInventory change;
  if (!delta.empty() || !enforcer_told_) {
    // Limits only ever go to tenants discovered here.
    enforcer_->SetTenants(registry_->tenants());
    enforcer_told_ = true;
  }
  if (!delta.empty()) {
    for (auto& c : collectors_) {
      absl::Status status = c->SyncTenants(registry_->tenants());
      if (!status.ok()) FW_LOG(Error, c->name(), ": ", status.message());
    }
    for (const auto& t : delta.upserted) {
      FW_LOG(Info, "tenant ", t.id(), t.name() != t.id() ? absl::StrCat(" (", t.name(), ")") : "",
             " discovered");
    }
    for (const auto& id : delta.removed_ids) FW_LOG(Info, "tenant ", id, " gone");
    for (auto& t : delta.upserted) *change.add_upserted() = std::move(t);
    for (auto& id : delta.removed_ids) change.add_removed_ids(std::move(id));
  }
  // A new tenant goes out with the interfaces just attached for it.
  UpdateInterfaces(&change);
  if (change.upserted_size() > 0 || change.removed_ids_size() > 0) {
    reporter_->UpdateInventory(registry_->FullInventory(), std::move(change));
  }
}

bool Agent::UpdateInterfaces(v1::TenantInventory* change) {
  if (net_collector_ == nullptr ||
      net_collector_->interfaces_generation() == interfaces_generation_seen_) {
    return false;
  }
  bool changed = false;
  interfaces_generation_seen_ = net_collector_->interfaces_generation();
  for (const auto& t : registry_->tenants()) {
    const std::string id = t.tenant.id();
    const v1::Tenant* updated = registry_->SetInterfaces(id, net_collector_->InterfacesOf(id));
    if (updated == nullptr) continue;
    changed = true;
    auto same = std::find_if(change->mutable_upserted()->begin(), change->mutable_upserted()->end(),
                             [&](const v1::Tenant& u) { return u.id() == id; });
    if (same != change->mutable_upserted()->end()) {
      *same = *updated;
    } else {
      *change->add_upserted() = *updated;
    }
  }
  // The enforcer learns them too: a network limit goes to the tenant's
  // interfaces, which netns discovery may find seconds after the tenant.
  if (changed) enforcer_->SetTenants(registry_->tenants());
  return changed;
}

absl::StatusOr<v1::UsageReport> Agent::SampleOnce() {
  RefreshInventory();
  enforcer_->ExpireLeases();

  v1::UsageReport report;
  report.set_seq(++seq_);
  report.set_timestamp_unix_ns(UnixNs());
  report.set_monotonic_ns(MonotonicNs());
  const auto& tenants = registry_->tenants();
  for (const auto& t : tenants) report.add_tenants()->set_tenant_id(t.tenant.id());
  // The controller judges a CPU limit's effect by the run-queue signals.
  if (runq_collector_) runq_collector_->SetCpuLimitInForce(enforcer_->stats().cpu_in_force > 0);
  for (auto& c : collectors_) {
    absl::Status status = c->Collect(tenants, &report);
    if (!status.ok()) FW_LOG(Error, c->name(), ": collect failed: ", status.message());
    c->AddSelfCounters(report.mutable_agent());
  }
  // Interfaces may have come or gone in Collect's periodic re-resolve.
  v1::TenantInventory change;
  UpdateInterfaces(&change);
  if (change.upserted_size() > 0) {
    reporter_->UpdateInventory(registry_->FullInventory(), std::move(change));
  }
  absl::StatusOr<HostCpuTimes> host = ReadHostCpuTimes();
  if (host.ok()) {
    report.mutable_host()->set_cpu_busy_ns(host->busy_ns);
    report.mutable_host()->set_cpu_total_ns(host->total_ns);
  }
  // The devices' own counters: what the controller learns their capacity from.
  absl::StatusOr<std::vector<v1::DiskCounters>> diskstats = ReadDiskstats(block_devices_);
  if (diskstats.ok()) {
    for (auto& d : *diskstats) *report.mutable_host()->add_disks() = std::move(d);
  } else {
    FW_LOG(Error, "host disks: ", diskstats.status().message());
  }
  // The uplinks' own counters and queue drops: what the controller learns an
  // unknown link speed from.
  // Without the queues nothing is reported: drops read as 0 once would make
  // the next sample's look like a burst of them.
  if (!uplinks_.empty()) {
    absl::StatusOr<std::vector<RootQdisc>> qdiscs = DumpRootQdiscs();
    if (qdiscs.ok()) {
      for (auto& c : UplinkCounters(uplinks_, *qdiscs))
        *report.mutable_host()->add_net() = std::move(c);
    } else {
      FW_LOG(Error, "uplink queues: ", qdiscs.status().message());
    }
  }
  report.mutable_agent()->set_tenants_unmeasured(registry_->unmeasured());
  report.mutable_agent()->set_tenant_slots_used(static_cast<uint32_t>(tenants.size()));
  report.mutable_agent()->set_tenant_slots_max(config_.max_tenants());
  const EnforcerStats enforced = enforcer_->stats();
  v1::EnforcementCounters* limits = report.mutable_agent()->mutable_enforcement();
  limits->set_in_force(static_cast<uint32_t>(enforced.in_force));
  limits->set_applied(enforced.applied);
  limits->set_cleared(enforced.cleared);
  limits->set_expired(enforced.expired);
  limits->set_refused(enforced.refused);
  limits->set_failed(enforced.failed);
  limits->set_reapplied(enforced.reapplied);
  if (libvirt_) {
    const LibvirtSourceStats lv = libvirt_->stats();
    v1::LibvirtSourceCounters* out = report.mutable_agent()->mutable_libvirt();
    out->set_connected(lv.connected);
    out->set_connects(lv.connects);
    out->set_connection_lost(lv.connection_lost);
    out->set_events(lv.events);
    out->set_listings(lv.listings);
    out->set_unresolved_domains(static_cast<uint32_t>(lv.unresolved));
  }
  absl::StatusOr<SelfUsage> self = ReadSelfUsage();
  if (self.ok()) {
    report.mutable_agent()->set_cpu_ns(self->cpu_ns);
    report.mutable_agent()->set_rss_bytes(self->rss_bytes);
  }
  reporter_->PublishReport(report);
  if (metrics_) {
    metrics_->Update(
        RenderAgentMetrics(hello_, report, registry_->FullInventory(), reporter_->stats()));
  }
  return report;
}

void Agent::Run() {
  reporter_->Start();
  const absl::Duration interval = absl::Milliseconds(config_.interval_ms());
  // Collectors that watch something between samples (the run-queue gate).
  absl::Duration tick = absl::InfiniteDuration();
  for (const auto& c : collectors_) {
    if (c->tick_period() > absl::ZeroDuration()) tick = std::min(tick, c->tick_period());
  }
  absl::Time next = absl::Now();
  absl::Time next_tick = next + tick;
  while (true) {
    absl::Time now = absl::Now();
    if (now >= next) {
      absl::StatusOr<v1::UsageReport> report = SampleOnce();
      if (!report.ok()) FW_LOG(Error, "sampling failed: ", report.status().message());
      next += interval;
      now = absl::Now();
      // After a stall (suspend, debugger) skip the missed ticks instead of bursting.
      if (next < now) next = now + interval;
    }
    if (now >= next_tick) {
      for (const auto& c : collectors_) {
        if (c->tick_period() > absl::ZeroDuration()) c->Tick(now);
      }
      next_tick += tick;
      if (next_tick < now) next_tick = now + tick;
    }
    bool refresh = false;
    {
      absl::MutexLock lock(&wake_mu_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) {
        return stopping_ || refresh_requested_;
      };
      wake_mu_.AwaitWithDeadline(absl::Condition(&woken), std::min(next, next_tick));
      if (stopping_) break;
      std::swap(refresh, refresh_requested_);
    }
    // A tenant that appeared is announced now; its counters follow at the tick.
    if (refresh) RefreshInventory();
  }
  reporter_->Stop();
}

void Agent::RequestRefresh() {
  absl::MutexLock lock(&wake_mu_);
  refresh_requested_ = true;
}

void Agent::Shutdown() {
  absl::MutexLock lock(&wake_mu_);
  stopping_ = true;
}

}  // namespace fairwatch::agent
