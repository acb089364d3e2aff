// libvirt domains as tenants.
//
// One worker thread owns the connection: it connects (and reconnects with
// backoff when libvirtd goes away), lists the running domains, maps each to
// its cgroups, interfaces and disks, and publishes the result as a snapshot.
// Lifecycle events (start, stop, crash, define, undefine, device hot-plug)
// trigger an immediate re-list; a periodic re-list covers anything missed.
// While disconnected the last snapshot stays, minus VMs whose cgroup is gone,
// so a libvirtd restart neither drops nor duplicates a tenant.
//
// The sampling loop never calls libvirt: it reads Tenants(), so a slow or hung
// libvirtd cannot stall measurement.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/cgroup_discovery.h"
#include "agent/cgroup_layout.h"
#include "agent/libvirt_domain.h"
#include "fairwatch/v1/config.pb.h"

typedef struct _virConnect* virConnectPtr;  // NOLINT(modernize-use-using): libvirt's own spelling
typedef struct _virDomain* virDomainPtr;    // NOLINT(modernize-use-using)

namespace fairwatch::agent {

struct LibvirtSourceOptions {
  v1::LibvirtSource config;  // after ApplyDefaults
  std::string cpu_hierarchy;
  CgroupMounts mounts;
  // Maps a running domain to its cgroups (CPU hierarchy first). Default: the
  // cgroups of its QEMU process (pid file in config.qemu_run_dir).
  std::function<absl::StatusOr<std::vector<v1::CgroupRef>>(const DomainInfo&)> resolve_cgroups;
  // Whether a tenant from an earlier listing still exists, asked while
  // libvirtd is unreachable. Default: its CPU cgroup directory exists.
  std::function<bool(const DiscoveredTenant&)> still_present;
  // Called (from the worker thread) after the snapshot changed.
  std::function<void()> on_change;
  absl::Duration min_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  // After a running domain could not be mapped (its pid file or cgroup not
  // there yet), the next try comes this soon.
  absl::Duration retry_unresolved = absl::Milliseconds(200);
};

struct LibvirtSourceStats {
  bool connected = false;
  uint64_t connects = 0;  // successful connections, the first included
  uint64_t connection_lost = 0;
  uint64_t connect_failures = 0;
  uint64_t events = 0;      // lifecycle and device events received
  uint64_t listings = 0;    // successful full listings
  uint64_t unresolved = 0;  // running domains not mapped to a cgroup (last listing)
};

class LibvirtSource {
 public:
  explicit LibvirtSource(LibvirtSourceOptions options);
  ~LibvirtSource();
  LibvirtSource(const LibvirtSource&) = delete;
  LibvirtSource& operator=(const LibvirtSource&) = delete;

  // Starts the event loop and the worker. An unreachable libvirtd is not an
  // error (it is retried and logged); a libvirt that cannot start its event
  // loop is.
  absl::Status Start();
  void Stop();

  // The running domains as of the last listing, sorted by UUID.
  std::vector<DiscoveredTenant> Tenants() const;
  LibvirtSourceStats stats() const;

  // Blocks until a listing or a failed connection attempt has completed since
  // the call; false at the deadline.
  bool WaitForAttempt(absl::Duration timeout);
  // Drops the connection as if libvirtd had closed it (tests of reconnection).
  void DropConnectionForTesting();

 private:
  class EventLoop;

  void Worker();
  absl::Status Connect();
  void Disconnect();
  absl::StatusOr<std::vector<DiscoveredTenant>> ListDomains(bool* unresolved_left);
  absl::StatusOr<DiscoveredTenant> DescribeDomain(virDomainPtr domain);
  void Publish(std::vector<DiscoveredTenant> tenants);
  void PruneVanished();
  void MarkDirty(bool connection_lost);

  static int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void* opaque);
  static void OnDevice(virConnectPtr conn, virDomainPtr dom, const char* alias, void* opaque);
  static void OnClose(virConnectPtr conn, int reason, void* opaque);

  LibvirtSourceOptions options_;
  std::thread worker_;
  bool event_loop_held_ = false;

  // Worker-thread state.
  virConnectPtr conn_ = nullptr;
  std::vector<int> callback_ids_;
  bool close_callback_registered_ = false;
  bool outage_logged_ = false;

  mutable absl::Mutex mu_;
  std::vector<DiscoveredTenant> tenants_ ABSL_GUARDED_BY(mu_);
  LibvirtSourceStats stats_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool lost_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fairwatch::agent
