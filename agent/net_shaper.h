// Network limits on a tenant's host-side interface (docs/enforcement.md,
// "Network"), built from what this kernel has: TBF (no fq, no act_police).
//
// - Traffic *to* the tenant leaves the host through the interface's egress:
//   a TBF root qdisc (handle fa11:) shapes it.
// - Traffic *from* the tenant enters through the interface's ingress, where
//   nothing can queue: a u32 filter on the clsact ingress hook (after the
//   agent's counting program) redirects it to an IFB device of ours
//   ("fwi<ifindex>"), whose TBF root shapes it.
//
// Driven through iproute2's `tc` and `ip`, run without a shell, as libvirt
// does for its own bandwidth settings. Only what carries fairwatch's handle,
// priority or name prefix is ever changed or removed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fairwatch::agent {

inline constexpr char kShaperQdiscHandle[] = "fa11:";
inline constexpr uint32_t kShaperFilterPriority = 0xfa18;  // after the counter (0xfa17)
inline constexpr char kIfbPrefix[] = "fwi";

struct ShaperTools {
  std::string tc = "tc";
  std::string ip = "ip";
};

// Runs argv (no shell); returns stdout, or the command's stderr as the error.
absl::StatusOr<std::string> RunTool(const std::vector<std::string>& argv);

class NetShaper {
 public:
  explicit NetShaper(ShaperTools tools = {}) : tools_(std::move(tools)) {}

  // Whether the egress root of `interface` is free for us: the kernel's
  // default (handle 0:) or already ours. Another qdisc is refused.
  absl::Status CheckEgressFree(const std::string& interface) const;
  // Shapes what leaves `interface` to `bytes_per_s`.
  absl::Status SetEgress(const std::string& interface, double bytes_per_s) const;
  // Removes our root qdisc (the kernel's default comes back); nothing if none.
  absl::Status ClearEgress(const std::string& interface) const;
  // Rate of our TBF on the interface's root, bytes/s; 0 when none is ours.
  absl::StatusOr<double> EgressRate(const std::string& interface) const;

  // Shapes what enters `interface` to `bytes_per_s` through an IFB of ours.
  // `created_clsact` tells whether the clsact qdisc had to be added.
  absl::Status SetIngress(const std::string& interface, double bytes_per_s,
                          bool* created_clsact) const;
  // Removes the redirect and the IFB; the clsact too when `remove_clsact` and
  // no other filter is left on it.
  absl::Status ClearIngress(const std::string& interface, bool remove_clsact) const;
  absl::StatusOr<double> IngressRate(const std::string& interface) const;
  // Whether the interface has a clsact qdisc now.
  absl::StatusOr<bool> HasClsact(const std::string& interface) const;

  // The IFB of ours for an interface: "fwi<ifindex>".
  absl::StatusOr<std::string> IfbName(const std::string& interface) const;
  // Our IFB devices that exist now (to remove the ones no journal entry owns).
  absl::StatusOr<std::vector<std::string>> ListIfbs() const;
  absl::Status DeleteLink(const std::string& name) const;
  // Deletes our redirect filter from the interface's ingress, if there.
  void RemoveRedirect(const std::string& interface) const;

 private:
  absl::StatusOr<double> RootTbfRate(const std::string& device) const;
  absl::Status SetRootTbf(const std::string& device, double bytes_per_s) const;
  ShaperTools tools_;
};

// Checks an interface name as the kernel would take it (1..15 chars, no '/',
// whitespace or ':').
absl::Status ValidInterfaceName(const std::string& name);

}  // namespace fairwatch::agent
