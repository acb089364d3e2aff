// Status helpers shared by every binary. absl::Status codes are chosen to map
// 1:1 onto gRPC codes: kUnavailable = retry, kFailedPrecondition = fix state
// first, kInvalidArgument = bad input.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

#define FW_CONCAT_INNER(a, b) a##b
#define FW_CONCAT(a, b) FW_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                \
  do {                                       \
    ::absl::Status fw_status_ = (expr);      \
    if (!fw_status_.ok()) return fw_status_; \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                          \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(*tmp)

#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL(FW_CONCAT(fw_statusor_, __LINE__), lhs, rexpr)

namespace fairwatch {

// Maps an errno value to the closest status code.
absl::StatusCode ErrnoToCode(int err);

// "what: strerror(err)" with a code that fits err.
absl::Status ErrnoStatus(int err, absl::string_view what);

// Prefixes a status message with context, keeping its code.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

// gRPC and absl status codes are the same numbers; these convert without loss.
absl::Status FromGrpcStatus(const grpc::Status& status);
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace fairwatch
