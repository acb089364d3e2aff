#include "agent/rtnetlink.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace fairwatch::agent::rtnl {

Fd::~Fd() {
  if (fd >= 0) close(fd);
}

absl::StatusOr<std::unique_ptr<Fd>> Open() {
  auto sock = std::make_unique<Fd>(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (sock->fd < 0) return ErrnoStatus(errno, "opening an rtnetlink socket");
  struct sockaddr_nl local {};
  local.nl_family = AF_NETLINK;
  if (bind(sock->fd, reinterpret_cast<struct sockaddr*>(&local), sizeof(local)) != 0) {
    return ErrnoStatus(errno, "binding an rtnetlink socket");
  }
  // A reply that never comes must not stall the sampling loop.
  struct timeval timeout {};
  timeout.tv_sec = 2;
  if (setsockopt(sock->fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0) {
    return ErrnoStatus(errno, "setting an rtnetlink socket's receive timeout");
  }
  return sock;
}

absl::Status Send(int fd, const void* msg, size_t len, absl::string_view what) {
  struct sockaddr_nl kernel {};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, msg, len, 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    return ErrnoStatus(errno, absl::StrCat("sending ", what));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReceiveOnce(int fd, absl::string_view what) {
  std::string buf(64 * 1024, '\0');
  while (true) {
    ssize_t n = recv(fd, buf.data(), buf.size(), MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::DeadlineExceededError(absl::StrCat("no reply to ", what, " within 2 s"));
    }
    if (n < 0) return ErrnoStatus(errno, absl::StrCat("receiving ", what));
    if (static_cast<size_t>(n) > buf.size()) {
      // Peeking would be cleaner; a bigger buffer and a retry is not possible
      // after MSG_TRUNC consumed it, so ask for the whole dump again.
      return absl::ResourceExhaustedError(absl::StrCat(what, ": reply larger than 64 KiB"));
    }
    buf.resize(static_cast<size_t>(n));
    return buf;
  }
}

absl::Status ErrorOf(absl::string_view payload, absl::string_view what) {
  struct nlmsgerr err;
  if (payload.size() < sizeof(err.error)) {
    return absl::InternalError(absl::StrCat(what, ": short error"));
  }
  memcpy(&err.error, payload.data(), sizeof(err.error));
  if (err.error == 0) return absl::OkStatus();
  return ErrnoStatus(-err.error, what);
}

absl::Status Dump(const void* req, size_t len, absl::string_view what,
                  const std::function<void(absl::string_view)>& on_datagram) {
  ASSIGN_OR_RETURN(std::unique_ptr<Fd> sock, Open());
  RETURN_IF_ERROR(Send(sock->fd, req, len, absl::StrCat("a request for ", what)));
  bool done = false;
  while (!done) {
    ASSIGN_OR_RETURN(std::string buf, ReceiveOnce(sock->fd, what));
    if (buf.empty()) break;
    absl::Status error = absl::OkStatus();
    ForEachMessage(buf, [&](const struct nlmsghdr& hdr, absl::string_view payload) {
      if (hdr.nlmsg_type == NLMSG_DONE) {
        done = true;
        return false;
      }
      if (hdr.nlmsg_type == NLMSG_ERROR) {
        error = ErrorOf(payload, what);
        done = true;
        return false;
      }
      return true;
    });
    RETURN_IF_ERROR(error);
    on_datagram(buf);
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent::rtnl
