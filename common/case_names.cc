#include "common/case_names.h"

namespace fairwatch {

absl::string_view ActionKindName(v1::ActionKind kind) {
  switch (kind) {
    case v1::ACTION_KIND_LIMIT:
      return "limit";
    case v1::ACTION_KIND_STEP_DOWN:
      return "step-down";
    case v1::ACTION_KIND_STEP_UP:
      return "step-up";
    case v1::ACTION_KIND_RENEW:
      return "renew";
    case v1::ACTION_KIND_RELEASE:
      return "release";
    case v1::ACTION_KIND_SKIP:
      return "skip";
    default:
      return "-";
  }
}

}  // namespace fairwatch
