// Loads config files written in protobuf text format into their proto schema.
// Unknown fields, bad values and syntax errors are errors naming the line.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace fairwatch {

// Parses `text` (named `source` in messages) into `message`.
absl::Status ParseTextConfig(const std::string& text, const std::string& source,
                             google::protobuf::Message* message);

// Reads and parses the file at `path`.
absl::Status LoadTextConfig(const std::string& path, google::protobuf::Message* message);

}  // namespace fairwatch
