#include "common/config_file.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace fairwatch {
namespace {

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectErrors(std::string source) : source_(std::move(source)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    // The parser counts from zero.
    errors_.push_back(absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column,
                  const std::string& message) override {
    AddError(line, column, message);
  }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

}  // namespace

absl::Status ParseTextConfig(const std::string& text, const std::string& source,
                             google::protobuf::Message* message) {
  CollectErrors errors(source);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  message->Clear();
  if (!parser.ParseFromString(text, message) || !errors.errors().empty()) {
    std::string detail = errors.errors().empty() ? absl::StrCat(source, ": could not be parsed")
                                                 : absl::StrJoin(errors.errors(), "; ");
    return absl::InvalidArgumentError(
        absl::StrCat("config ", detail, " (schema ", message->GetDescriptor()->full_name(), ")"));
  }
  return absl::OkStatus();
}

absl::Status LoadTextConfig(const std::string& path, google::protobuf::Message* message) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("config file ", path, " cannot be opened"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseTextConfig(buffer.str(), path, message);
}

}  // namespace fairwatch
