#include "agent/cgroup_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fairwatch::agent {
namespace {

absl::Status Errno(int err, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EINVAL:
    case ERANGE:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

absl::StatusOr<CgroupDir> CgroupDir::Open(const std::string& mount, const std::string& relative) {
  if (mount.empty() || mount.front() != '/') {
    return absl::InvalidArgumentError(absl::StrCat("cgroup mount '", mount, "' is not absolute"));
  }
  if (!relative.empty() && relative.front() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("cgroup path '", relative, "' must be relative to its hierarchy"));
  }
  int fd = open(mount.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno(errno, absl::StrCat("opening ", mount));
  struct stat root_stat {};
  if (fstat(fd, &root_stat) != 0) {
    const int err = errno;
    close(fd);
    return Errno(err, absl::StrCat("stat ", mount));
  }
  std::string path = mount;
  for (absl::string_view part : absl::StrSplit(relative, '/', absl::SkipEmpty())) {
    if (part == "." || part == "..") {
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup path '", relative, "' must not contain '.' or '..'"));
    }
    const std::string name(part);
    // O_NOFOLLOW with O_PATH|O_DIRECTORY: a symlink fails (ENOTDIR/ELOOP)
    // instead of being followed.
    const int next = openat(fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    const int err = errno;
    close(fd);
    absl::StrAppend(&path, "/", name);
    if (next < 0) {
      if (err == ENOTDIR || err == ELOOP) {
        return absl::PermissionDeniedError(
            absl::StrCat(path, " is not a directory (a symlink is never followed)"));
      }
      return Errno(err, absl::StrCat("opening ", path));
    }
    fd = next;
    struct stat st {};
    if (fstat(fd, &st) != 0 || st.st_dev != root_stat.st_dev) {
      close(fd);
      return absl::PermissionDeniedError(absl::StrCat(path, " is not on the cgroup mount ", mount));
    }
  }
  return CgroupDir(fd, std::move(path));
}

CgroupDir::CgroupDir(CgroupDir&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
  other.fd_ = -1;
}

CgroupDir& CgroupDir::operator=(CgroupDir&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

CgroupDir::~CgroupDir() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<int> CgroupDir::OpenFile(const std::string& file, int flags) const {
  if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
    return absl::InvalidArgumentError(absl::StrCat("'", file, "' is not a control file name"));
  }
  // O_PATH descriptors cannot be read through; reopen the file relative to it.
  const int fd = openat(fd_, file.c_str(), flags | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Errno(errno, absl::StrCat(path_, "/", file));
  return fd;
}

absl::StatusOr<std::string> CgroupDir::Read(const std::string& file) const {
  absl::StatusOr<int> fd = OpenFile(file, O_RDONLY);
  if (!fd.ok()) return fd.status();
  std::string out;
  char buffer[4096];
  while (true) {
    const ssize_t n = read(*fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(*fd);
      return Errno(err, absl::StrCat("reading ", path_, "/", file));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  close(*fd);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

absl::Status CgroupDir::Write(const std::string& file, const std::string& value) const {
  // O_TRUNC as a shell redirection does: kernfs ignores it, a plain file
  // (tests) needs it.
  absl::StatusOr<int> fd = OpenFile(file, O_WRONLY | O_TRUNC);
  if (!fd.ok()) return fd.status();
  ssize_t n;
  do {
    n = write(*fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  close(*fd);
  if (n < 0) return Errno(err, absl::StrCat("writing '", value, "' to ", path_, "/", file));
  if (static_cast<size_t>(n) != value.size()) {
    return absl::InternalError(absl::StrCat("short write to ", path_, "/", file));
  }
  return absl::OkStatus();
}

}  // namespace fairwatch::agent
