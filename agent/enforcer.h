// Applies the limits the controller sends, to tenants this agent discovered,
// and takes them back (docs/enforcement.md).
//
// Every limit has a lease: unrenewed, it ends and the value that was there
// before fairwatch's first change comes back; a CLEAR does the same at once.
// Before any change the limit is written to a journal (state_dir), so an
// agent that restarts, even after SIGKILL, reapplies what is still leased and
// reverts what expired. The agent never sets a limit the controller did not
// ask for, and never loosens a stricter limit that was there before it.
//
// Thread-safe: the reporter's thread calls Handle, the agent's loop the rest.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/cgroup_layout.h"
#include "agent/net_shaper.h"
#include "agent/tenant_registry.h"
#include "agent/vm_tuning.h"
#include "fairwatch/v1/agent.pb.h"
#include "fairwatch/v1/journal.pb.h"

namespace fairwatch::agent {

struct EnforcerOptions {
  CgroupMounts mounts;
  std::string cpu_hierarchy;   // "cpu" (v1) or "unified"
  std::string disk_hierarchy;  // "blkio" (v1) or "unified"
  // Whole disks of the host: where a cgroup tenant's disk limit goes when the
  // command names no device and the tenant declares none.
  std::vector<v1::DeviceId> host_disks;
  std::string sys_dev_block = "/sys/dev/block";  // device numbers -> /dev names (libvirt)
  std::string state_dir;                         // the journal lives here
  // Relative cgroup paths never limited, nor anything below (beside the
  // built-in ones: see ProtectionReason).
  std::vector<std::string> protected_cgroups;
  // The agent's own cgroup per hierarchy ("unified", "cpu", ...); empty: read
  // from /proc/self/cgroup.
  std::map<std::string, std::string> own_cgroups;
  VmTuning* vm = nullptr;       // libvirt VM tenants; null: they are refused
  NetShaper* shaper = nullptr;  // network limits; null: they are refused
  std::function<absl::Time()> now = [] { return absl::Now(); };
  absl::Duration max_lease = absl::Hours(24);
};

struct EnforcerStats {
  uint64_t applied = 0;    // APPLY commands that took effect (incl. renewals)
  uint64_t cleared = 0;    // limits taken back by CLEAR
  uint64_t expired = 0;    // limits taken back at lease end
  uint64_t refused = 0;    // commands refused before anything was written
  uint64_t failed = 0;     // commands or reverts that failed while writing
  uint64_t reapplied = 0;  // limits put back after a restart
  size_t in_force = 0;
  size_t cpu_in_force = 0;  // of them on CPU (a cap or a weight)
};

// Why `path` (relative to its hierarchy, no leading '/') must never be
// limited, or empty when it may be: the root, system.slice, user.slice,
// init.scope and anything below them, `extra` and below, and the agent's own
// cgroup and its ancestors (`own`).
std::string ProtectionReason(const std::string& path, const std::vector<std::string>& extra,
                             const std::string& own);

// Reads /proc/self/cgroup: hierarchy name ("unified", "cpu", "blkio", ...) ->
// path relative to that hierarchy's root.
std::map<std::string, std::string> ParseProcCgroup(const std::string& text);

class Enforcer {
 public:
  // Loads the journal left by an earlier run (a missing one is empty; an
  // unreadable one is an error, never silently dropped).
  static absl::StatusOr<std::unique_ptr<Enforcer>> Create(EnforcerOptions options);

  // The tenants discovered now. Limits the journal holds for a tenant that is
  // present and still leased are reapplied if they are not in effect (after a
  // restart, or a VM restarted by its owner).
  void SetTenants(const std::vector<TenantEntry>& tenants);
  // Applies or clears one limit; the ack carries what is in effect, read
  // back, or why nothing was done.
  v1::LimitAck Handle(const v1::LimitCommand& command);
  // Reverts every limit whose lease has ended.
  void ExpireLeases();
  // Removes IFB devices of ours (and the redirects to them) that no journal
  // entry owns: left by an agent that died between the two writes, or by a
  // journal moved away. Once, at start.
  void RemoveOrphanIfbs();

  std::vector<v1::AppliedLimit> InForce() const;
  EnforcerStats stats() const;
  const std::string& journal_path() const { return journal_path_; }

 private:
  explicit Enforcer(EnforcerOptions options);
  absl::Status LoadJournal();
  absl::Status SaveJournal() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<v1::Limit> Apply(const v1::LimitCommand& command)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Limit> Clear(const v1::LimitCommand& command)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Where a limit on `limit.resource()` of `tenant` goes: one knob for CPU,
  // one per device for disk. Refuses protected or unsupported targets before
  // anything is read or written.
  absl::StatusOr<std::vector<v1::AppliedLimit>> Targets(const v1::Tenant& tenant,
                                                        const v1::Limit& limit) const;
  // The tenant's cgroup in `hierarchy`, checked against the protected ones.
  absl::StatusOr<v1::CgroupRef> CgroupOf(const v1::Tenant& tenant,
                                         const std::string& hierarchy) const;
  // What is in effect over `records` (disk: the loosest device; 0 if any is
  // unlimited).
  double InEffect(const std::vector<v1::AppliedLimit>& records) const;
  // The knob's raw value now ("max 100000", "-1").
  absl::StatusOr<std::string> ReadRaw(const v1::AppliedLimit& target) const;
  // Writes `value` (resource units), never above what `original` allowed.
  absl::Status WriteValue(const v1::AppliedLimit& record) const;
  absl::Status WriteRaw(const v1::AppliedLimit& record, const std::string& raw) const;
  // What the knob enforces now, in resource units (0: unlimited).
  absl::StatusOr<double> ReadValue(const v1::AppliedLimit& target) const;
  // Puts the original value back. NOT_FOUND: the tenant is gone.
  absl::Status Restore(const v1::AppliedLimit& record) const;

  static std::string Key(const v1::AppliedLimit& l);
  static std::string Prefix(const std::string& tenant_id, v1::Resource resource);

  const EnforcerOptions options_;
  const std::string journal_path_;
  mutable absl::Mutex mu_;
  std::map<std::string, v1::Tenant> tenants_ ABSL_GUARDED_BY(mu_);       // by id
  std::map<std::string, v1::AppliedLimit> limits_ ABSL_GUARDED_BY(mu_);  // by Key
  // Journal entries not yet checked against the tenant they belong to.
  std::map<std::string, bool> unchecked_ ABSL_GUARDED_BY(mu_);
  EnforcerStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fairwatch::agent
