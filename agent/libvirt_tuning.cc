#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cstdlib>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "agent/libvirt_domain.h"
#include "agent/vm_tuning.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

std::string LastError() {
  const virError* e = virGetLastError();
  return e != nullptr && e->message != nullptr ? e->message : "unknown libvirt error";
}

class LibvirtTuning final : public VmTuning {
 public:
  explicit LibvirtTuning(std::string uri) : uri_(std::move(uri)) {}
  ~LibvirtTuning() override {
    absl::MutexLock lock(&mu_);
    if (conn_ != nullptr) virConnectClose(conn_);
  }

  absl::StatusOr<VmCpuQuota> GetCpuQuota(const std::string& uuid) override {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::vector<virTypedParameter> params, SchedulerParameters(uuid));
    VmCpuQuota quota;
    bool have_period = false, have_quota = false;
    for (const virTypedParameter& p : params) {
      if (std::string(p.field) == VIR_DOMAIN_SCHEDULER_GLOBAL_PERIOD) {
        quota.period_us = p.value.ul;
        have_period = true;
      } else if (std::string(p.field) == VIR_DOMAIN_SCHEDULER_GLOBAL_QUOTA) {
        quota.quota_us = p.value.l;
        have_quota = true;
      }
    }
    if (!have_period || !have_quota || quota.period_us == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("libvirt does not offer global_period/global_quota for domain ", uuid,
                       " (the cpu cgroup controller is not available to it)"));
    }
    // libvirt reports an unlimited quota as a huge value on some versions.
    if (quota.quota_us >= 17592186044415LL) quota.quota_us = -1;
    return quota;
  }

  absl::StatusOr<uint64_t> GetCpuShares(const std::string& uuid) override {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::vector<virTypedParameter> params, SchedulerParameters(uuid));
    for (const virTypedParameter& p : params) {
      if (std::string(p.field) == VIR_DOMAIN_SCHEDULER_CPU_SHARES &&
          p.type == VIR_TYPED_PARAM_ULLONG) {
        return p.value.ul;
      }
    }
    return absl::FailedPreconditionError(
        absl::StrCat("libvirt does not offer cpu_shares for domain ", uuid,
                     " (the cpu cgroup controller is not available to it)"));
  }

  absl::Status SetCpuShares(const std::string& uuid, uint64_t shares) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    virTypedParameter param{};
    snprintf(param.field, sizeof(param.field), "%s", VIR_DOMAIN_SCHEDULER_CPU_SHARES);
    param.type = VIR_TYPED_PARAM_ULLONG;
    param.value.ul = shares;
    const int rc = virDomainSetSchedulerParametersFlags(*dom, &param, 1, VIR_DOMAIN_AFFECT_LIVE);
    absl::Status status = rc < 0 ? Failed("setting cpu_shares of", uuid) : absl::OkStatus();
    virDomainFree(*dom);
    return status;
  }

  absl::Status SetCpuQuota(const std::string& uuid, int64_t quota_us) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    virTypedParameter param{};
    snprintf(param.field, sizeof(param.field), "%s", VIR_DOMAIN_SCHEDULER_GLOBAL_QUOTA);
    param.type = VIR_TYPED_PARAM_LLONG;
    param.value.l = quota_us < 0 ? -1 : quota_us;
    const int rc = virDomainSetSchedulerParametersFlags(*dom, &param, 1, VIR_DOMAIN_AFFECT_LIVE);
    absl::Status status = rc < 0 ? Failed("setting global_quota of", uuid) : absl::OkStatus();
    virDomainFree(*dom);
    return status;
  }

  absl::StatusOr<std::vector<std::string>> GuestDisksOn(const std::string& uuid,
                                                        const v1::DeviceId& device) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    char* xml = virDomainGetXMLDesc(*dom, 0);
    if (xml == nullptr) {
      absl::Status status = Failed("reading the XML of", uuid);
      virDomainFree(*dom);
      return status;
    }
    virDomainFree(*dom);
    absl::StatusOr<DomainInfo> info = ParseDomainXml(xml);
    free(xml);  // NOLINT(cppcoreguidelines-no-malloc): libvirt allocates with malloc
    if (!info.ok()) return info.status();
    return ::fairwatch::agent::GuestDisksOn(*info, device);
  }

  absl::StatusOr<VmDiskThrottle> GetDiskThrottle(const std::string& uuid, const std::string& target,
                                                 VmDiskUnit unit) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    int n = 0;
    if (virDomainGetBlockIoTune(*dom, target.c_str(), nullptr, &n, VIR_DOMAIN_AFFECT_LIVE) < 0 ||
        n <= 0) {
      absl::Status status =
          Failed(absl::StrCat("reading the I/O tuning of disk ", target, " of"), uuid);
      virDomainFree(*dom);
      return status;
    }
    std::vector<virTypedParameter> params(static_cast<size_t>(n));
    if (virDomainGetBlockIoTune(*dom, target.c_str(), params.data(), &n, VIR_DOMAIN_AFFECT_LIVE) <
        0) {
      absl::Status status =
          Failed(absl::StrCat("reading the I/O tuning of disk ", target, " of"), uuid);
      virDomainFree(*dom);
      return status;
    }
    virDomainFree(*dom);
    const Fields f = FieldsOf(unit);
    VmDiskThrottle out;
    int found = 0;
    for (int i = 0; i < n; ++i) {
      const virTypedParameter& p = params[static_cast<size_t>(i)];
      if (p.type != VIR_TYPED_PARAM_ULLONG) continue;
      const std::string field = p.field;
      uint64_t* slot = field == f.total   ? &out.total
                       : field == f.read  ? &out.read
                       : field == f.write ? &out.write
                                          : nullptr;
      if (slot == nullptr) continue;
      *slot = p.value.ul;
      ++found;
    }
    virTypedParamsClear(params.data(), n);
    if (found != 3) {
      return absl::UnimplementedError(
          absl::StrCat("libvirt offers no ", f.total, " for disk ", target, " of domain ", uuid));
    }
    return out;
  }

  absl::Status SetDiskThrottle(const std::string& uuid, const std::string& target, VmDiskUnit unit,
                               const VmDiskThrottle& throttle) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    const Fields f = FieldsOf(unit);
    // All three of the unit at once: libvirt zeroes those of the triple not given.
    virTypedParameter params[3] = {};
    const std::pair<const char*, uint64_t> values[3] = {
        {f.total, throttle.total}, {f.read, throttle.read}, {f.write, throttle.write}};
    for (size_t i = 0; i < 3; ++i) {
      snprintf(params[i].field, sizeof(params[i].field), "%s", values[i].first);
      params[i].type = VIR_TYPED_PARAM_ULLONG;
      params[i].value.ul = values[i].second;
    }
    const int rc = virDomainSetBlockIoTune(*dom, target.c_str(), params, 3, VIR_DOMAIN_AFFECT_LIVE);
    absl::Status status =
        rc < 0 ? Failed(absl::StrCat("setting the I/O tuning of disk ", target, " of"), uuid)
               : absl::OkStatus();
    virDomainFree(*dom);
    return status;
  }

  absl::StatusOr<uint64_t> GetBlkioThrottle(const std::string& uuid, const std::string& field,
                                            const std::string& device) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    int n = 0;
    if (virDomainGetBlkioParameters(*dom, nullptr, &n, VIR_DOMAIN_AFFECT_LIVE) < 0 || n <= 0) {
      absl::Status status = Failed("reading the blkio parameters of", uuid);
      virDomainFree(*dom);
      return status;
    }
    std::vector<virTypedParameter> params(static_cast<size_t>(n));
    if (virDomainGetBlkioParameters(*dom, params.data(), &n, VIR_DOMAIN_AFFECT_LIVE) < 0) {
      absl::Status status = Failed("reading the blkio parameters of", uuid);
      virDomainFree(*dom);
      return status;
    }
    virDomainFree(*dom);
    uint64_t value = 0;
    bool offered = false;
    for (int i = 0; i < n; ++i) {
      virTypedParameter& p = params[static_cast<size_t>(i)];
      if (field == p.field && p.type == VIR_TYPED_PARAM_STRING) {
        offered = true;
        // "/dev/sda,1048576,/dev/sdb,0"
        std::vector<std::string> parts =
            absl::StrSplit(p.value.s == nullptr ? "" : p.value.s, ',', absl::SkipEmpty());
        for (size_t k = 0; k + 1 < parts.size(); k += 2) {
          if (parts[k] == device) (void)absl::SimpleAtoi(parts[k + 1], &value);
        }
      }
    }
    virTypedParamsClear(params.data(), n);
    if (!offered) {
      return absl::FailedPreconditionError(absl::StrCat(
          "libvirt does not offer ", field, " for domain ", uuid, " (no blkio cgroup controller)"));
    }
    return value;
  }

  absl::Status SetBlkioThrottle(const std::string& uuid, const std::string& field,
                                const std::string& device, uint64_t value) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    // libvirt merges per-device entries: this device changes, the others stay.
    std::string text = absl::StrCat(device, ",", value);
    virTypedParameter param{};
    snprintf(param.field, sizeof(param.field), "%s", field.c_str());
    param.type = VIR_TYPED_PARAM_STRING;
    param.value.s = text.data();
    const int rc = virDomainSetBlkioParameters(*dom, &param, 1, VIR_DOMAIN_AFFECT_LIVE);
    absl::Status status =
        rc < 0 ? Failed(absl::StrCat("setting ", field, " of"), uuid) : absl::OkStatus();
    virDomainFree(*dom);
    return status;
  }

 private:
  struct Fields {
    const char* total;
    const char* read;
    const char* write;
  };
  static Fields FieldsOf(VmDiskUnit unit) {
    if (unit == VmDiskUnit::kIops) {
      return {VIR_DOMAIN_BLOCK_IOTUNE_TOTAL_IOPS_SEC, VIR_DOMAIN_BLOCK_IOTUNE_READ_IOPS_SEC,
              VIR_DOMAIN_BLOCK_IOTUNE_WRITE_IOPS_SEC};
    }
    return {VIR_DOMAIN_BLOCK_IOTUNE_TOTAL_BYTES_SEC, VIR_DOMAIN_BLOCK_IOTUNE_READ_BYTES_SEC,
            VIR_DOMAIN_BLOCK_IOTUNE_WRITE_BYTES_SEC};
  }

  absl::Status Failed(absl::string_view what, const std::string& uuid)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const virError* e = virGetLastError();
    const std::string message =
        absl::StrCat("libvirt: ", what, " domain ", uuid, ": ", LastError());
    // The driver has no such API (not QEMU): a caller may take another way.
    if (e != nullptr &&
        (e->code == VIR_ERR_NO_SUPPORT || e->code == VIR_ERR_OPERATION_UNSUPPORTED)) {
      return absl::UnimplementedError(message);
    }
    // A dead connection is reopened on the next call.
    if (conn_ != nullptr && virConnectIsAlive(conn_) != 1) {
      virConnectClose(conn_);
      conn_ = nullptr;
    }
    return absl::UnavailableError(message);
  }

  // The live scheduler parameters of a running domain (global_quota,
  // cpu_shares, ...); only plain values, so nothing needs freeing.
  absl::StatusOr<std::vector<virTypedParameter>> SchedulerParameters(const std::string& uuid)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<virDomainPtr> dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    int n = 0;
    char* type = virDomainGetSchedulerType(*dom, &n);
    if (type == nullptr) {
      absl::Status status = Failed("reading the scheduler type of", uuid);
      virDomainFree(*dom);
      return status;
    }
    free(type);  // NOLINT(cppcoreguidelines-no-malloc): libvirt allocates with malloc
    std::vector<virTypedParameter> params(static_cast<size_t>(n));
    if (virDomainGetSchedulerParametersFlags(*dom, params.data(), &n, VIR_DOMAIN_AFFECT_LIVE) < 0) {
      absl::Status status = Failed("reading the scheduler parameters of", uuid);
      virDomainFree(*dom);
      return status;
    }
    virDomainFree(*dom);
    params.resize(static_cast<size_t>(n));
    return params;
  }

  absl::StatusOr<virDomainPtr> Lookup(const std::string& uuid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (conn_ == nullptr) {
      conn_ = virConnectOpen(uri_.c_str());
      if (conn_ == nullptr) {
        return absl::UnavailableError(
            absl::StrCat("libvirt: cannot connect to ", uri_, ": ", LastError()));
      }
    }
    virDomainPtr dom = virDomainLookupByUUIDString(conn_, uuid.c_str());
    if (dom == nullptr) {
      if (virConnectIsAlive(conn_) != 1) {
        virConnectClose(conn_);
        conn_ = nullptr;
        return absl::UnavailableError(absl::StrCat("libvirt: connection to ", uri_, " lost"));
      }
      return absl::NotFoundError(absl::StrCat("libvirt has no domain ", uuid));
    }
    if (virDomainIsActive(dom) != 1) {
      virDomainFree(dom);
      return absl::NotFoundError(absl::StrCat("domain ", uuid, " is not running"));
    }
    return dom;
  }

  const std::string uri_;
  absl::Mutex mu_;
  virConnectPtr conn_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace

std::unique_ptr<VmTuning> MakeLibvirtTuning(std::string uri) {
  return std::make_unique<LibvirtTuning>(std::move(uri));
}

}  // namespace fairwatch::agent
