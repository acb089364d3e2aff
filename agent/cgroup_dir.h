// A tenant's cgroup directory opened safely, and its control files read and
// written through it (limits: agent/enforcer.h).
//
// The path is resolved component by component from the hierarchy's mount
// point with openat(O_NOFOLLOW): no absolute input, no "." or "..", no
// symlink anywhere on the way, and the result is on the same mount. A file is
// then opened relative to that directory, again without following links, so
// a path swapped after the check cannot redirect a write.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fairwatch::agent {

class CgroupDir {
 public:
  // Opens `relative` (e.g. "machine/vm1") under `mount` (e.g. /sys/fs/cgroup/cpu).
  static absl::StatusOr<CgroupDir> Open(const std::string& mount, const std::string& relative);

  CgroupDir(CgroupDir&& other) noexcept;
  CgroupDir& operator=(CgroupDir&& other) noexcept;
  CgroupDir(const CgroupDir&) = delete;
  CgroupDir& operator=(const CgroupDir&) = delete;
  ~CgroupDir();

  // Whole content of a control file, trailing newline removed. NOT_FOUND when
  // the file does not exist (the controller is not enabled here).
  absl::StatusOr<std::string> Read(const std::string& file) const;
  // Writes `value` in one write(2), as the kernel expects.
  absl::Status Write(const std::string& file, const std::string& value) const;

  const std::string& path() const { return path_; }  // for messages

 private:
  CgroupDir(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  absl::StatusOr<int> OpenFile(const std::string& file, int flags) const;
  int fd_ = -1;
  std::string path_;
};

}  // namespace fairwatch::agent
