#include "agent/net_interfaces.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/net_namespace.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/rtnetlink.h"
#include "common/status.h"

namespace fairwatch::agent {
namespace {

constexpr int kArphrdLoopback = 772;

bool ReadSmallFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return false;
  *out = ss.str();
  return true;
}

template <typename T>
bool ReadNumber(const std::string& path, T* value) {
  std::string text;
  if (!ReadSmallFile(path, &text)) return false;
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(text), value);
}

using rtnl::Align4;
using rtnl::AttrValue;
using rtnl::Fd;
using rtnl::ForEachAttr;
using rtnl::ForEachMessage;

}  // namespace

absl::StatusOr<std::vector<SysfsInterface>> ReadSysfsInterfaces(const std::string& sys_class_net) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir(sys_class_net.c_str()), closedir);
  if (!dir) return ErrnoStatus(errno, absl::StrCat("listing ", sys_class_net));
  std::vector<SysfsInterface> out;
  while (struct dirent* entry = readdir(dir.get())) {
    std::string name = entry->d_name;
    if (name == "." || name == ".." || name == "bonding_masters") continue;
    const std::string base = absl::StrCat(sys_class_net, "/", name, "/");
    SysfsInterface iface;
    iface.name = name;
    // The interface may vanish between readdir and read: then it is skipped.
    if (!ReadNumber(base + "ifindex", &iface.ifindex)) continue;
    if (!ReadNumber(base + "iflink", &iface.iflink)) iface.iflink = iface.ifindex;
    int type = 0;
    iface.loopback = ReadNumber(base + "type", &type) && type == kArphrdLoopback;
    iface.physical = access((base + "device").c_str(), F_OK) == 0;
    std::error_code ec;
    const std::filesystem::path master = std::filesystem::read_symlink(base + "master", ec);
    if (!ec) iface.master = master.filename().string();
    int64_t speed = -1;
    // Reading speed fails with EINVAL on a down or speed-less device; -1 also means unknown.
    if (ReadNumber(base + "speed", &speed) && speed > 0) iface.speed_mbps = speed;
    out.push_back(std::move(iface));
  }
  std::sort(out.begin(), out.end(),
            [](const SysfsInterface& a, const SysfsInterface& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<InterfaceStats> ReadInterfaceStats(const std::string& name,
                                                  const std::string& sys_class_net) {
  const std::string base = absl::StrCat(sys_class_net, "/", name, "/statistics/");
  InterfaceStats s;
  struct Field {
    const char* file;
    uint64_t* value;
  };
  for (const Field& f : {Field{"rx_bytes", &s.rx_bytes}, Field{"tx_bytes", &s.tx_bytes},
                         Field{"rx_packets", &s.rx_packets}, Field{"tx_packets", &s.tx_packets},
                         Field{"rx_dropped", &s.rx_dropped}, Field{"tx_dropped", &s.tx_dropped}}) {
    if (!ReadNumber(base + f.file, f.value)) {
      return absl::NotFoundError(absl::StrCat("reading ", base, f.file));
    }
  }
  return s;
}

std::vector<v1::InterfaceCapacity> InterfaceCapacities(
    const std::vector<SysfsInterface>& interfaces,
    const std::vector<v1::InterfaceCapacityOverride>& overrides) {
  auto override_of = [&](const std::string& name) -> const v1::InterfaceCapacityOverride* {
    for (const auto& o : overrides) {
      if (o.name() == name) return &o;
    }
    return nullptr;
  };
  std::map<std::string, v1::InterfaceCapacity> by_name;
  for (const auto& iface : interfaces) {
    const v1::InterfaceCapacityOverride* o = override_of(iface.name);
    if (iface.loopback || (o != nullptr && o->exclude())) continue;
    if (o == nullptr) {
      // Physical, and not a port of an uplink an operator named (counted there).
      const v1::InterfaceCapacityOverride* master = override_of(iface.master);
      if (!iface.physical || (master != nullptr && !master->exclude())) continue;
    }
    v1::InterfaceCapacity& cap = by_name[iface.name];
    cap.set_name(iface.name);
    // Mb/s (10^6 bits) to bytes/s; a virtual interface's own speed means nothing.
    const double bytes_per_s =
        iface.physical && iface.speed_mbps > 0 ? iface.speed_mbps * 1e6 / 8 : 0.0;
    const bool rx_set = o != nullptr && o->rx_bytes_per_s() > 0;
    const bool tx_set = o != nullptr && o->tx_bytes_per_s() > 0;
    cap.set_rx_bytes_per_s(rx_set ? o->rx_bytes_per_s() : bytes_per_s);
    cap.set_tx_bytes_per_s(tx_set ? o->tx_bytes_per_s() : bytes_per_s);
    // Unknown in a direction, it is left for the controller to learn.
    if (rx_set || tx_set) {
      cap.set_source(v1::CAPACITY_CONFIGURED);
    } else if (bytes_per_s > 0) {
      cap.set_source(v1::CAPACITY_LINK_SPEED);
    }
  }
  std::vector<v1::InterfaceCapacity> out;
  out.reserve(by_name.size());
  for (auto& [name, cap] : by_name) out.push_back(std::move(cap));
  return out;
}

absl::StatusOr<std::vector<v1::InterfaceCapacity>> ReadInterfaceCapacities(
    const std::vector<v1::InterfaceCapacityOverride>& overrides, const std::string& sys_class_net) {
  ASSIGN_OR_RETURN(std::vector<SysfsInterface> interfaces, ReadSysfsInterfaces(sys_class_net));
  return InterfaceCapacities(interfaces, overrides);
}

std::vector<LinkInfo> ParseLinkMessages(absl::string_view buffer) {
  std::vector<LinkInfo> out;
  ForEachMessage(buffer, [&](const struct nlmsghdr& hdr, absl::string_view payload) {
    if (hdr.nlmsg_type == NLMSG_DONE || hdr.nlmsg_type == NLMSG_ERROR) return false;
    if (hdr.nlmsg_type != RTM_NEWLINK) return true;
    struct ifinfomsg ifi;
    if (payload.size() < sizeof(ifi)) return true;
    memcpy(&ifi, payload.data(), sizeof(ifi));
    LinkInfo link;
    link.ifindex = static_cast<uint32_t>(ifi.ifi_index);
    ForEachAttr(payload.substr(Align4(sizeof(ifi))), [&](uint16_t type, absl::string_view value) {
      switch (type) {
        case IFLA_IFNAME:
          link.name = std::string(value.substr(0, value.find('\0')));
          break;
        case IFLA_LINK:
          AttrValue(value, &link.link_ifindex);
          break;
        case IFLA_LINK_NETNSID:
          AttrValue(value, &link.link_netnsid);
          break;
        default:
          break;
      }
    });
    out.push_back(std::move(link));
    return true;
  });
  return out;
}

absl::StatusOr<std::vector<LinkInfo>> DumpLinks() {
  std::vector<LinkInfo> links;
  RETURN_IF_ERROR(rtnl::DumpAll<struct ifinfomsg>(RTM_GETLINK, "the RTM_GETLINK dump",
                                                  [&](absl::string_view buf) {
                                                    for (auto& link : ParseLinkMessages(buf))
                                                      links.push_back(std::move(link));
                                                  }));
  return links;
}

absl::StatusOr<int32_t> NetnsIdOf(int netns_fd) {
  ASSIGN_OR_RETURN(std::unique_ptr<Fd> sock, rtnl::Open());
  struct {
    struct nlmsghdr hdr;
    struct rtgenmsg gen;
    char pad[3];
    struct rtattr attr;
    uint32_t fd;
  } req{};
  static_assert(offsetof(decltype(req), attr) == NLMSG_HDRLEN + 4, "rtgenmsg is padded to 4");
  req.hdr.nlmsg_len = sizeof(req);
  req.hdr.nlmsg_type = RTM_GETNSID;
  req.hdr.nlmsg_flags = NLM_F_REQUEST;
  req.hdr.nlmsg_seq = 1;
  req.gen.rtgen_family = AF_UNSPEC;
  req.attr.rta_type = NETNSA_FD;
  req.attr.rta_len = sizeof(req.attr) + sizeof(req.fd);
  req.fd = static_cast<uint32_t>(netns_fd);
  RETURN_IF_ERROR(rtnl::Send(sock->fd, &req, sizeof(req), "an RTM_GETNSID request"));
  ASSIGN_OR_RETURN(std::string buf, rtnl::ReceiveOnce(sock->fd, "the RTM_GETNSID reply"));
  int32_t nsid = -1;
  absl::Status error = absl::OkStatus();
  bool found = false;
  ForEachMessage(buf, [&](const struct nlmsghdr& hdr, absl::string_view payload) {
    if (hdr.nlmsg_type == NLMSG_ERROR) {
      error = rtnl::ErrorOf(payload, "asking for a namespace id (RTM_GETNSID)");
      return false;
    }
    if (hdr.nlmsg_type != RTM_NEWNSID || payload.size() < 4) return true;
    ForEachAttr(payload.substr(4), [&](uint16_t type, absl::string_view value) {
      if (type == NETNSA_NSID) found = AttrValue(value, &nsid);
    });
    return false;
  });
  RETURN_IF_ERROR(error);
  if (!found) return absl::InternalError("RTM_GETNSID reply without NETNSA_NSID");
  return nsid;
}

std::vector<LinkInfo> PeersInNamespace(const std::vector<LinkInfo>& host_links, int32_t nsid) {
  std::vector<LinkInfo> out;
  if (nsid < 0) return out;
  for (const auto& link : host_links) {
    if (link.link_netnsid == nsid && link.link_ifindex != 0) out.push_back(link);
  }
  return out;
}

absl::StatusOr<std::optional<pid_t>> FirstPidInCgroup(const std::string& dir, int max_depth) {
  std::deque<std::pair<std::string, int>> queue{{dir, 0}};
  int visited = 0;
  while (!queue.empty() && visited < 256) {
    auto [path, depth] = queue.front();
    queue.pop_front();
    ++visited;
    std::string procs;
    if (!ReadSmallFile(path + "/cgroup.procs", &procs)) {
      if (depth == 0) return absl::NotFoundError(absl::StrCat("reading ", path, "/cgroup.procs"));
      continue;  // a child that vanished
    }
    std::istringstream lines(procs);
    pid_t pid = 0;
    if (lines >> pid && pid > 0) return std::optional<pid_t>(pid);
    if (depth >= max_depth) continue;
    std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(path.c_str()), closedir);
    if (!d) continue;
    while (struct dirent* entry = readdir(d.get())) {
      if (entry->d_type != DT_DIR) continue;
      std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      queue.emplace_back(absl::StrCat(path, "/", name), depth + 1);
    }
  }
  return std::optional<pid_t>();
}

absl::StatusOr<NetnsIdentity> NetnsOf(const std::string& proc_ns_net_path) {
  struct stat st {};
  if (stat(proc_ns_net_path.c_str(), &st) != 0) {
    return ErrnoStatus(errno, absl::StrCat("stat ", proc_ns_net_path));
  }
  return NetnsIdentity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

absl::StatusOr<TcpSnmp> ParseTcpSnmp(absl::string_view text) {
  // "Tcp: RtoAlgorithm ... OutSegs RetransSegs ..." then "Tcp: 1 ... 123 4 ...".
  std::vector<absl::string_view> names;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, "Tcp:")) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (names.empty()) {
      names = std::move(fields);
      continue;
    }
    if (fields.size() != names.size()) break;
    TcpSnmp out;
    bool have_out = false, have_retrans = false;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "OutSegs") have_out = absl::SimpleAtoi(fields[i], &out.out_segs);
      if (names[i] == "RetransSegs") have_retrans = absl::SimpleAtoi(fields[i], &out.retrans_segs);
    }
    if (have_out && have_retrans) return out;
    break;
  }
  return absl::InvalidArgumentError("no Tcp: OutSegs and RetransSegs in snmp");
}

absl::StatusOr<TcpSnmp> ReadTcpSnmpIn(pid_t pid, const NetnsIdentity& netns) {
  const std::string proc = absl::StrCat("/proc/", pid);
  Fd dir(open(proc.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", proc));
  struct stat st {};
  if (fstatat(dir.fd, "ns/net", &st, 0) != 0) {
    return ErrnoStatus(errno, absl::StrCat("stat ", proc, "/ns/net"));
  }
  if (!(NetnsIdentity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)} ==
        netns)) {
    return absl::NotFoundError(absl::StrCat(proc, " is in another network namespace now"));
  }
  Fd file(openat(dir.fd, "net/snmp", O_RDONLY | O_CLOEXEC));
  if (file.fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", proc, "/net/snmp"));
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = read(file.fd, buffer, sizeof(buffer))) > 0;) {
    text.append(buffer, static_cast<size_t>(n));
  }
  return ParseTcpSnmp(text);
}

absl::StatusOr<TenantNetns> ResolveTenantNetns(const v1::Tenant& tenant, const CgroupMounts& mounts,
                                               const std::vector<LinkInfo>& host_links) {
  TenantNetns result;
  std::optional<pid_t> pid;
  for (const auto& ref : tenant.cgroups()) {
    absl::StatusOr<std::string> mount = mounts.MountOf(ref.hierarchy());
    if (!mount.ok()) continue;
    absl::StatusOr<std::optional<pid_t>> found =
        FirstPidInCgroup(absl::StrCat(*mount, "/", ref.path()));
    if (found.ok() && found->has_value()) {
      pid = *found;
      break;
    }
  }
  if (!pid) return result;
  const std::string ns_path = absl::StrCat("/proc/", *pid, "/ns/net");
  ASSIGN_OR_RETURN(NetnsIdentity own, NetnsOf("/proc/self/ns/net"));
  absl::StatusOr<NetnsIdentity> theirs = NetnsOf(ns_path);
  // The process may have exited since cgroup.procs was read: try again next time.
  if (!theirs.ok()) return result;
  result.has_pid = true;
  result.pid = *pid;
  result.netns = *theirs;
  if (*theirs == own) return result;
  result.host_netns = false;
  Fd ns_fd(open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (ns_fd.fd < 0) {
    if (errno == ENOENT || errno == ESRCH) return result;
    return ErrnoStatus(errno, absl::StrCat("opening ", ns_path));
  }
  ASSIGN_OR_RETURN(int32_t nsid, NetnsIdOf(ns_fd.fd));
  result.peers = PeersInNamespace(host_links, nsid);
  return result;
}

}  // namespace fairwatch::agent
