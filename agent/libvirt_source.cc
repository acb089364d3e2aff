#include "agent/libvirt_source.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "google/protobuf/util/message_differencer.h"

namespace fairwatch::agent {
namespace {

std::string LastLibvirtError(absl::string_view what) {
  const char* message = virGetLastErrorMessage();
  return absl::StrCat(what, ": ", message != nullptr ? message : "unknown libvirt error");
}

// libvirt prints every error to stderr unless told otherwise; the agent
// reports them through its own log with context instead.
void IgnoreLibvirtError(void* /*opaque*/, virErrorPtr /*error*/) {}

bool SameTenant(const DiscoveredTenant& a, const DiscoveredTenant& b) {
  return a.cpu_cgroup_id == b.cpu_cgroup_id && a.declared_interfaces == b.declared_interfaces &&
         google::protobuf::util::MessageDifferencer::Equals(a.tenant, b.tenant);
}

}  // namespace

// libvirt's default event loop is process-wide: one thread runs it while any
// source needs it.
class LibvirtSource::EventLoop {
 public:
  static absl::Status Acquire() {
    static std::once_flag registered;
    static int register_result = 0;
    std::call_once(registered, [] {
      virSetErrorFunc(nullptr, IgnoreLibvirtError);
      register_result = virEventRegisterDefaultImpl();
    });
    if (register_result < 0) {
      return absl::InternalError(LastLibvirtError("starting the libvirt event loop"));
    }
    absl::MutexLock lock(&mu_);
    if (users_ > 0) {
      ++users_;
      return absl::OkStatus();
    }
    quit_ = false;
    // A disabled timer: armed only to wake the loop up when it must quit.
    wake_timer_ = virEventAddTimeout(
        -1, [](int timer, void* /*opaque*/) { virEventUpdateTimeout(timer, -1); }, nullptr,
        nullptr);
    if (wake_timer_ < 0) {
      return absl::InternalError(LastLibvirtError("adding the libvirt event loop's wake timer"));
    }
    users_ = 1;
    thread_ = std::thread([] {
      while (!quit_.load()) {
        if (virEventRunDefaultImpl() < 0) {
          FW_LOG(Error, LastLibvirtError("libvirt event loop"));
          absl::SleepFor(absl::Milliseconds(100));
        }
      }
    });
    return absl::OkStatus();
  }

  static void Release() {
    absl::MutexLock lock(&mu_);
    if (--users_ > 0) return;
    quit_ = true;
    if (wake_timer_ >= 0) virEventUpdateTimeout(wake_timer_, 0);
    thread_.join();
    if (wake_timer_ >= 0) virEventRemoveTimeout(wake_timer_);
    wake_timer_ = -1;
  }

 private:
  static inline absl::Mutex mu_;
  static inline int users_ = 0;
  static inline std::atomic<bool> quit_{false};
  static inline int wake_timer_ = -1;
  static inline std::thread thread_;
};

LibvirtSource::LibvirtSource(LibvirtSourceOptions options) : options_(std::move(options)) {
  if (!options_.resolve_cgroups) {
    options_.resolve_cgroups =
        [mounts = options_.mounts, hierarchy = options_.cpu_hierarchy,
         run_dir = options_.config.qemu_run_dir()](
            const DomainInfo& info) -> absl::StatusOr<std::vector<v1::CgroupRef>> {
      ASSIGN_OR_RETURN(int pid, ReadQemuPid(run_dir, info.name));
      return VmCgroupRefs(mounts, hierarchy, pid, info.partition);
    };
  }
  if (!options_.still_present) {
    options_.still_present = [mounts = options_.mounts](const DiscoveredTenant& t) {
      if (t.tenant.cgroups().empty()) return false;
      const v1::CgroupRef& ref = t.tenant.cgroups(0);
      absl::StatusOr<std::string> mount = mounts.MountOf(ref.hierarchy());
      if (!mount.ok()) return false;
      struct stat st {};
      const std::string dir = absl::StrCat(*mount, "/", ref.path());
      // Same directory, not a new one of the same name.
      return stat(dir.c_str(), &st) == 0 && st.st_ino == ref.id();
    };
  }
}

LibvirtSource::~LibvirtSource() { Stop(); }

absl::Status LibvirtSource::Start() {
  RETURN_IF_ERROR(EventLoop::Acquire());
  event_loop_held_ = true;
  worker_ = std::thread([this] { Worker(); });
  return absl::OkStatus();
}

void LibvirtSource::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
  if (event_loop_held_) {
    EventLoop::Release();
    event_loop_held_ = false;
  }
}

std::vector<DiscoveredTenant> LibvirtSource::Tenants() const {
  absl::MutexLock lock(&mu_);
  return tenants_;
}

LibvirtSourceStats LibvirtSource::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool LibvirtSource::WaitForAttempt(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t listings = stats_.listings;
  const uint64_t failures = stats_.connect_failures;
  auto attempted = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stats_.listings > listings || stats_.connect_failures > failures;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&attempted), timeout);
}

void LibvirtSource::DropConnectionForTesting() { MarkDirty(/*connection_lost=*/true); }

void LibvirtSource::MarkDirty(bool connection_lost) {
  absl::MutexLock lock(&mu_);
  dirty_ = true;
  if (connection_lost) lost_ = true;
}

int LibvirtSource::OnLifecycle(virConnectPtr /*conn*/, virDomainPtr /*dom*/, int /*event*/,
                               int /*detail*/, void* opaque) {
  auto* self = static_cast<LibvirtSource*>(opaque);
  {
    absl::MutexLock lock(&self->mu_);
    ++self->stats_.events;
  }
  self->MarkDirty(false);
  return 0;
}

void LibvirtSource::OnDevice(virConnectPtr conn, virDomainPtr dom, const char* /*alias*/,
                             void* opaque) {
  OnLifecycle(conn, dom, 0, 0, opaque);
}

void LibvirtSource::OnClose(virConnectPtr /*conn*/, int /*reason*/, void* opaque) {
  static_cast<LibvirtSource*>(opaque)->MarkDirty(/*connection_lost=*/true);
}

absl::Status LibvirtSource::Connect() {
  const std::string& uri = options_.config.uri();
  conn_ = virConnectOpen(uri.c_str());
  if (conn_ == nullptr) return absl::UnavailableError(LastLibvirtError("connecting"));
  if (virConnectRegisterCloseCallback(conn_, OnClose, this, nullptr) == 0) {
    close_callback_registered_ = true;
  }
  // Notices a hung or vanished libvirtd within ~15 s even with no call in flight.
  // Local drivers (test:///) have no keepalive; that is fine.
  (void)virConnectSetKeepAlive(conn_, 5, 3);
  const struct {
    int id;
    virConnectDomainEventGenericCallback callback;
  } events[] = {
      {VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle)},
      {VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, VIR_DOMAIN_EVENT_CALLBACK(OnDevice)},
      {VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, VIR_DOMAIN_EVENT_CALLBACK(OnDevice)},
  };
  for (const auto& e : events) {
    int id = virConnectDomainEventRegisterAny(conn_, nullptr, e.id, e.callback, this, nullptr);
    if (id < 0) {
      // Without lifecycle events changes would wait for the periodic listing.
      if (e.id == VIR_DOMAIN_EVENT_ID_LIFECYCLE) {
        absl::Status status =
            absl::UnavailableError(LastLibvirtError("registering for domain lifecycle events"));
        Disconnect();
        return status;
      }
      FW_LOG(Debug, LastLibvirtError("libvirt: device events unavailable"));
      continue;
    }
    callback_ids_.push_back(id);
  }
  absl::MutexLock lock(&mu_);
  ++stats_.connects;
  stats_.connected = true;
  return absl::OkStatus();
}

void LibvirtSource::Disconnect() {
  if (conn_ == nullptr) return;
  for (int id : callback_ids_) (void)virConnectDomainEventDeregisterAny(conn_, id);
  callback_ids_.clear();
  if (close_callback_registered_) (void)virConnectUnregisterCloseCallback(conn_, OnClose);
  close_callback_registered_ = false;
  (void)virConnectClose(conn_);
  conn_ = nullptr;
  absl::MutexLock lock(&mu_);
  stats_.connected = false;
}

absl::StatusOr<DiscoveredTenant> LibvirtSource::DescribeDomain(virDomainPtr domain) {
  char* xml = virDomainGetXMLDesc(domain, 0);
  if (xml == nullptr) return absl::UnavailableError(LastLibvirtError("reading the domain XML"));
  absl::StatusOr<DomainInfo> info = ParseDomainXml(xml);
  free(xml);  // NOLINT(cppcoreguidelines-no-malloc): libvirt allocates it with malloc
  if (!info.ok()) return info.status();
  ASSIGN_OR_RETURN(std::vector<v1::CgroupRef> cgroups, options_.resolve_cgroups(*info));
  if (cgroups.empty()) return absl::NotFoundError("no cgroup");

  const v1::LibvirtSource& config = options_.config;
  DiscoveredTenant t;
  t.tenant.set_id(info->uuid);
  t.tenant.set_name(info->name);
  t.tenant.set_source(v1::TENANT_SOURCE_LIBVIRT);
  t.tenant.set_account(config.account());
  double weight = 1.0;
  if (config.weight() > 0) {
    weight = config.weight();
  } else if (info->cpu_shares) {
    weight = WeightFromCpuShares(*info->cpu_shares, options_.cpu_hierarchy);
  }
  for (const auto& o : config.domains()) {
    if (o.domain() != info->uuid && o.domain() != info->name) continue;
    if (o.weight() > 0) weight = o.weight();
    if (!o.account().empty()) t.tenant.set_account(o.account());
  }
  t.tenant.set_weight(weight);
  t.cpu_cgroup_id = cgroups.front().id();
  for (auto& ref : cgroups) *t.tenant.add_cgroups() = std::move(ref);
  for (auto& disk : DomainHostDisks(*info)) *t.tenant.add_disks() = std::move(disk);
  t.declared_interfaces = info->interfaces;
  return t;
}

absl::StatusOr<std::vector<DiscoveredTenant>> LibvirtSource::ListDomains(bool* unresolved_left) {
  virDomainPtr* domains = nullptr;
  const int n = virConnectListAllDomains(conn_, &domains, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  if (n < 0) return absl::UnavailableError(LastLibvirtError("listing domains"));
  std::vector<DiscoveredTenant> previous = Tenants();
  std::vector<DiscoveredTenant> found;
  uint32_t unresolved = 0;
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<DiscoveredTenant> t = DescribeDomain(domains[i]);
    if (t.ok()) {
      found.push_back(std::move(*t));
    } else if (virDomainIsActive(domains[i]) == 1) {
      // Running but not mappable yet (just starting) or a transient error:
      // keep what the last listing knew of it and look again soon.
      ++unresolved;
      char uuid[VIR_UUID_STRING_BUFLEN] = {};
      if (virDomainGetUUIDString(domains[i], uuid) == 0) {
        FW_LOG(Debug, "libvirt: domain ", uuid, ": ", t.status().message());
        auto it = std::find_if(previous.begin(), previous.end(),
                               [&](const DiscoveredTenant& p) { return p.tenant.id() == uuid; });
        if (it != previous.end()) found.push_back(*it);
      }
    }
    virDomainFree(domains[i]);
  }
  free(domains);  // NOLINT(cppcoreguidelines-no-malloc): allocated by libvirt
  std::sort(found.begin(), found.end(), [](const DiscoveredTenant& a, const DiscoveredTenant& b) {
    return a.tenant.id() < b.tenant.id();
  });
  *unresolved_left = unresolved > 0;
  absl::MutexLock lock(&mu_);
  stats_.unresolved = unresolved;
  return found;
}

void LibvirtSource::Publish(std::vector<DiscoveredTenant> tenants) {
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    changed =
        !std::equal(tenants.begin(), tenants.end(), tenants_.begin(), tenants_.end(), SameTenant);
    tenants_ = std::move(tenants);
    ++stats_.listings;
  }
  if (changed && options_.on_change) options_.on_change();
}

void LibvirtSource::PruneVanished() {
  std::vector<DiscoveredTenant> kept;
  size_t before = 0;
  {
    absl::MutexLock lock(&mu_);
    before = tenants_.size();
    for (const auto& t : tenants_) {
      if (options_.still_present(t)) kept.push_back(t);
    }
    if (kept.size() == before) return;
    tenants_ = kept;
  }
  FW_LOG(Info, "libvirt: ", before - kept.size(),
         " VM(s) gone while libvirtd is unreachable (cgroup removed)");
  if (options_.on_change) options_.on_change();
}

void LibvirtSource::Worker() {
  const std::string& uri = options_.config.uri();
  const absl::Duration resync = absl::Milliseconds(
      options_.config.resync_interval_ms() > 0 ? options_.config.resync_interval_ms() : 30000);
  absl::Duration backoff = options_.min_backoff;
  absl::Time next_listing = absl::InfinitePast();
  while (true) {
    bool dirty = false;
    bool lost = false;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      std::swap(dirty, dirty_);
      std::swap(lost, lost_);
    }
    if (lost && conn_ != nullptr) {
      FW_LOG(Warning, "libvirt ", uri, ": connection lost; reconnecting (VMs stay listed)");
      Disconnect();
      absl::MutexLock lock(&mu_);
      ++stats_.connection_lost;
    }
    absl::Time wake = next_listing;
    if (conn_ == nullptr) {
      absl::Status status = Connect();
      if (!status.ok()) {
        {
          absl::MutexLock lock(&mu_);
          ++stats_.connect_failures;
        }
        if (!outage_logged_) {
          FW_LOG(Warning, "libvirt ", uri, ": ", status.message(), "; retrying every ",
                 absl::FormatDuration(options_.max_backoff), " at most");
          outage_logged_ = true;
        }
        PruneVanished();
        wake = absl::Now() + backoff;
        backoff = std::min(backoff * 2, options_.max_backoff);
      } else {
        FW_LOG(Info, "libvirt ", uri, ": connected");
        outage_logged_ = false;
        backoff = options_.min_backoff;
        dirty = true;
      }
    }
    if (conn_ != nullptr && (dirty || absl::Now() >= next_listing)) {
      bool unresolved = false;
      absl::StatusOr<std::vector<DiscoveredTenant>> listed = ListDomains(&unresolved);
      if (!listed.ok()) {
        FW_LOG(Warning, "libvirt ", uri, ": ", listed.status().message());
        if (virConnectIsAlive(conn_) != 1) {
          MarkDirty(/*connection_lost=*/true);
          continue;
        }
        next_listing = absl::Now() + options_.max_backoff;
      } else {
        Publish(std::move(*listed));
        next_listing = absl::Now() + (unresolved ? options_.retry_unresolved : resync);
      }
      wake = next_listing;
    }
    absl::MutexLock lock(&mu_);
    auto woken = [this]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || dirty_ || lost_; };
    mu_.AwaitWithDeadline(absl::Condition(&woken), wake);
  }
  Disconnect();
}

}  // namespace fairwatch::agent
