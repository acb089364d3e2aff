// Names of fairwatch.v1 case enums as operators read them, shared by the
// controller's logs and the CLI.
#pragma once

#include "absl/strings/string_view.h"
#include "fairwatch/v1/cases.pb.h"

namespace fairwatch {

// "limit", "step-down", "step-up", "renew", "release", "skip"; "-" otherwise.
absl::string_view ActionKindName(v1::ActionKind kind);

}  // namespace fairwatch
