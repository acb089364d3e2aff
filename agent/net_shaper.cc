#include "agent/net_shaper.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"

extern char** environ;

namespace fairwatch::agent {
namespace {

// Reads both pipes until they close.
void Drain(int out_fd, int err_fd, std::string* out, std::string* err) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_fds = 2;
  char buffer[4096];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n > 0) {
        (i == 0 ? out : err)->append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
}

// The number after "key": in tc's JSON (a flat search is enough for the
// few fields read here).
std::optional<double> JsonNumber(absl::string_view json, absl::string_view key) {
  const std::string needle = absl::StrCat("\"", key, "\":");
  const size_t at = json.find(needle);
  if (at == absl::string_view::npos) return std::nullopt;
  absl::string_view rest = json.substr(at + needle.size());
  const size_t end = rest.find_first_of(",}]");
  double v = 0;
  if (!absl::SimpleAtod(rest.substr(0, end), &v)) return std::nullopt;
  return v;
}

std::optional<std::string> JsonString(absl::string_view json, absl::string_view key) {
  const std::string needle = absl::StrCat("\"", key, "\":\"");
  const size_t at = json.find(needle);
  if (at == absl::string_view::npos) return std::nullopt;
  absl::string_view rest = json.substr(at + needle.size());
  return std::string(rest.substr(0, rest.find('"')));
}

std::string BitRate(double bytes_per_s) {
  return absl::StrCat(static_cast<uint64_t>(std::llround(std::max(8.0, bytes_per_s * 8))), "bit");
}

// The bucket: 20 ms at the rate, at least 64 KiB (a GSO packet on veth).
std::string Burst(double bytes_per_s) {
  return absl::StrCat(static_cast<uint64_t>(std::max(65536.0, bytes_per_s / 50)), "b");
}

}  // namespace

absl::Status ValidInterfaceName(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == ".." ||
      name.find_first_of("/: \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not an interface name"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RunTool(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return absl::InternalError("pipe");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  std::string out, err;
  if (rc == 0) Drain(out_pipe[0], err_pipe[0], &out, &err);
  close(out_pipe[0]);
  close(err_pipe[0]);
  const std::string command = absl::StrJoin(argv, " ");
  if (rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run '", command, "': ", std::strerror(rc)));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("'", command, "' failed: ", absl::StripAsciiWhitespace(err)));
  }
  return out;
}

absl::StatusOr<std::string> NetShaper::IfbName(const std::string& interface) const {
  RETURN_IF_ERROR(ValidInterfaceName(interface));
  const unsigned index = if_nametoindex(interface.c_str());
  if (index == 0) return absl::NotFoundError(absl::StrCat("no interface ", interface));
  return absl::StrCat(kIfbPrefix, index);
}

absl::StatusOr<double> NetShaper::RootTbfRate(const std::string& device) const {
  ASSIGN_OR_RETURN(std::string json,
                   RunTool({tools_.tc, "-j", "qdisc", "show", "dev", device, "root"}));
  const std::optional<std::string> kind = JsonString(json, "kind");
  const std::optional<std::string> handle = JsonString(json, "handle");
  if (!kind || !handle || *handle != kShaperQdiscHandle || *kind != "tbf") return 0.0;
  return JsonNumber(json, "rate").value_or(0);
}

absl::Status NetShaper::SetRootTbf(const std::string& device, double bytes_per_s) const {
  return RunTool({tools_.tc, "qdisc", "replace", "dev", device, "root", "handle",
                  kShaperQdiscHandle, "tbf", "rate", BitRate(bytes_per_s), "burst",
                  Burst(bytes_per_s), "latency", "50ms"})
      .status();
}

absl::Status NetShaper::CheckEgressFree(const std::string& interface) const {
  RETURN_IF_ERROR(ValidInterfaceName(interface));
  ASSIGN_OR_RETURN(std::string json,
                   RunTool({tools_.tc, "-j", "qdisc", "show", "dev", interface, "root"}));
  const std::optional<std::string> handle = JsonString(json, "handle");
  if (!handle || *handle == "0:" || *handle == kShaperQdiscHandle) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("interface ", interface, " has a root qdisc fairwatch did not create (",
                   JsonString(json, "kind").value_or("?"), " ", *handle, "); it is left alone"));
}

absl::Status NetShaper::SetEgress(const std::string& interface, double bytes_per_s) const {
  RETURN_IF_ERROR(CheckEgressFree(interface));
  return SetRootTbf(interface, bytes_per_s);
}

absl::Status NetShaper::ClearEgress(const std::string& interface) const {
  RETURN_IF_ERROR(ValidInterfaceName(interface));
  if (if_nametoindex(interface.c_str()) == 0) {
    return absl::NotFoundError(absl::StrCat("no interface ", interface));
  }
  ASSIGN_OR_RETURN(double rate, RootTbfRate(interface));
  if (rate == 0) return absl::OkStatus();  // not ours (any more)
  return RunTool(
             {tools_.tc, "qdisc", "del", "dev", interface, "root", "handle", kShaperQdiscHandle})
      .status();
}

absl::StatusOr<double> NetShaper::EgressRate(const std::string& interface) const {
  RETURN_IF_ERROR(ValidInterfaceName(interface));
  return RootTbfRate(interface);
}

absl::Status NetShaper::SetIngress(const std::string& interface, double bytes_per_s,
                                   bool* created_clsact) const {
  ASSIGN_OR_RETURN(std::string ifb, IfbName(interface));
  *created_clsact = false;
  ASSIGN_OR_RETURN(std::string qdiscs,
                   RunTool({tools_.tc, "-j", "qdisc", "show", "dev", interface}));
  if (!absl::StrContains(qdiscs, "\"kind\":\"clsact\"")) {
    if (absl::StrContains(qdiscs, "\"kind\":\"ingress\"")) {
      return absl::FailedPreconditionError(
          absl::StrCat("interface ", interface, " has an ingress qdisc fairwatch did not create"));
    }
    RETURN_IF_ERROR(RunTool({tools_.tc, "qdisc", "add", "dev", interface, "clsact"}).status());
    *created_clsact = true;
  }
  if (if_nametoindex(ifb.c_str()) == 0) {
    RETURN_IF_ERROR(RunTool({tools_.ip, "link", "add", ifb, "type", "ifb"}).status());
  }
  RETURN_IF_ERROR(RunTool({tools_.ip, "link", "set", "dev", ifb, "up"}).status());
  RETURN_IF_ERROR(SetRootTbf(ifb, bytes_per_s));
  // One redirect at our priority: replaced, never stacked.
  const std::string pref = absl::StrCat(kShaperFilterPriority);
  RemoveRedirect(interface);
  return RunTool({tools_.tc, "filter",   "add",    "dev",    interface,  "ingress", "pref",
                  pref,      "protocol", "all",    "u32",    "match",    "u32",     "0",
                  "0",       "action",   "mirred", "egress", "redirect", "dev",     ifb})
      .status();
}

absl::Status NetShaper::ClearIngress(const std::string& interface, bool remove_clsact) const {
  RETURN_IF_ERROR(ValidInterfaceName(interface));
  const bool present = if_nametoindex(interface.c_str()) != 0;
  if (present) {
    ASSIGN_OR_RETURN(std::string ifb, IfbName(interface));
    RemoveRedirect(interface);
    if (if_nametoindex(ifb.c_str()) != 0) RETURN_IF_ERROR(DeleteLink(ifb));
    if (remove_clsact) {
      ASSIGN_OR_RETURN(std::string in,
                       RunTool({tools_.tc, "filter", "show", "dev", interface, "ingress"}));
      ASSIGN_OR_RETURN(std::string out,
                       RunTool({tools_.tc, "filter", "show", "dev", interface, "egress"}));
      if (absl::StripAsciiWhitespace(in).empty() && absl::StripAsciiWhitespace(out).empty()) {
        RETURN_IF_ERROR(RunTool({tools_.tc, "qdisc", "del", "dev", interface, "clsact"}).status());
      }
    }
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("no interface ", interface));
}

absl::StatusOr<double> NetShaper::IngressRate(const std::string& interface) const {
  ASSIGN_OR_RETURN(std::string ifb, IfbName(interface));
  if (if_nametoindex(ifb.c_str()) == 0) return 0.0;
  ASSIGN_OR_RETURN(std::string filters,
                   RunTool({tools_.tc, "filter", "show", "dev", interface, "ingress"}));
  if (!absl::StrContains(filters, absl::StrCat("pref ", kShaperFilterPriority)) ||
      !absl::StrContains(filters, ifb)) {
    return 0.0;  // the IFB is there but nothing goes to it
  }
  return RootTbfRate(ifb);
}

absl::StatusOr<bool> NetShaper::HasClsact(const std::string& interface) const {
  RETURN_IF_ERROR(ValidInterfaceName(interface));
  ASSIGN_OR_RETURN(std::string qdiscs,
                   RunTool({tools_.tc, "-j", "qdisc", "show", "dev", interface}));
  return absl::StrContains(qdiscs, "\"kind\":\"clsact\"");
}

absl::StatusOr<std::vector<std::string>> NetShaper::ListIfbs() const {
  ASSIGN_OR_RETURN(std::string out, RunTool({tools_.ip, "-o", "link", "show", "type", "ifb"}));
  std::vector<std::string> names;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    // "12: fwi7: <BROADCAST,NOARP,UP,LOWER_UP> mtu ..."
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(": ", 2));
    if (f.size() < 2) continue;
    const std::string name(absl::StripSuffix(f[1], "@NONE"));
    if (absl::StartsWith(name, kIfbPrefix)) {
      uint32_t index = 0;
      if (absl::SimpleAtoi(name.substr(std::strlen(kIfbPrefix)), &index)) names.push_back(name);
    }
  }
  return names;
}

void NetShaper::RemoveRedirect(const std::string& interface) const {
  if (!ValidInterfaceName(interface).ok()) return;
  (void)RunTool({tools_.tc, "filter", "del", "dev", interface, "ingress", "pref",
                 absl::StrCat(kShaperFilterPriority)});
}

absl::Status NetShaper::DeleteLink(const std::string& name) const {
  RETURN_IF_ERROR(ValidInterfaceName(name));
  if (!absl::StartsWith(name, kIfbPrefix)) {
    return absl::PermissionDeniedError(absl::StrCat(name, " is not an IFB of fairwatch's"));
  }
  return RunTool({tools_.ip, "link", "del", "dev", name}).status();
}

}  // namespace fairwatch::agent
