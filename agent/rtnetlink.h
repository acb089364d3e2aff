// The little of rtnetlink the agent speaks (NETLINK_ROUTE): one socket per
// request, requests sent whole, dumps read until NLMSG_DONE, messages and
// attributes walked with bounds checks. Used for links and namespace ids
// (net_interfaces) and for the uplinks' queues (uplinks).
#pragma once

#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fairwatch::agent::rtnl {

inline size_t Align4(size_t n) { return (n + 3) & ~size_t{3}; }

// Owns a socket fd.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd();
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

absl::StatusOr<std::unique_ptr<Fd>> Open();
absl::Status Send(int fd, const void* msg, size_t len, absl::string_view what);
// Receives one datagram of netlink messages (at most 64 KiB); DeadlineExceeded
// when none came within 2 s (every socket from Open has that timeout).
absl::StatusOr<std::string> ReceiveOnce(int fd, absl::string_view what);
// The status an NLMSG_ERROR payload carries (OK for an acknowledgement).
absl::Status ErrorOf(absl::string_view payload, absl::string_view what);

// Sends the dump request `req` (NLM_F_DUMP set by the caller) on a socket of
// its own and hands each datagram of the reply to `on_datagram`, until
// NLMSG_DONE; an NLMSG_ERROR in the reply is the result.
absl::Status Dump(const void* req, size_t len, absl::string_view what,
                  const std::function<void(absl::string_view)>& on_datagram);

// Dumps every object of message type `type` (RTM_GETLINK, RTM_GETQDISC) in
// the agent's namespace: the request is a netlink header and the type's
// family header `Family` (ifinfomsg, tcmsg) left zero, which asks for
// AF_UNSPEC and no filter.
template <typename Family>
absl::Status DumpAll(uint16_t type, absl::string_view what,
                     const std::function<void(absl::string_view)>& on_datagram) {
  struct {
    struct nlmsghdr hdr;
    Family family;
  } req{};
  req.hdr.nlmsg_len = sizeof(req);
  req.hdr.nlmsg_type = type;
  req.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.hdr.nlmsg_seq = 1;
  return Dump(&req, sizeof(req), what, on_datagram);
}

// Walks the netlink messages in buffer; fn(header, payload) returns false to stop.
template <typename Fn>
void ForEachMessage(absl::string_view buffer, Fn fn) {
  size_t off = 0;
  while (buffer.size() - off >= sizeof(struct nlmsghdr)) {
    struct nlmsghdr hdr;
    memcpy(&hdr, buffer.data() + off, sizeof(hdr));
    if (hdr.nlmsg_len < sizeof(hdr) || hdr.nlmsg_len > buffer.size() - off) return;
    if (!fn(hdr, buffer.substr(off + sizeof(hdr), hdr.nlmsg_len - sizeof(hdr)))) return;
    off += Align4(hdr.nlmsg_len);
    if (off > buffer.size()) return;
  }
}

// Walks rtattrs in payload; fn(type, value).
template <typename Fn>
void ForEachAttr(absl::string_view payload, Fn fn) {
  size_t off = 0;
  while (payload.size() - off >= sizeof(struct rtattr)) {
    struct rtattr attr;
    memcpy(&attr, payload.data() + off, sizeof(attr));
    if (attr.rta_len < sizeof(attr) || attr.rta_len > payload.size() - off) return;
    fn(attr.rta_type & NLA_TYPE_MASK,
       payload.substr(off + sizeof(attr), attr.rta_len - sizeof(attr)));
    off += Align4(attr.rta_len);
    if (off > payload.size()) return;
  }
}

// Copies a fixed-size value out of an attribute; false when it is too short.
template <typename T>
bool AttrValue(absl::string_view value, T* out) {
  if (value.size() < sizeof(T)) return false;
  memcpy(out, value.data(), sizeof(T));
  return true;
}

}  // namespace fairwatch::agent::rtnl
