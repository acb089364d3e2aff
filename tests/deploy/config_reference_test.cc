// docs/reference/policy.md against the config schema and the code that fills
// in defaults: every field of ControllerConfig and AgentConfig, reached
// recursively, has a row with its type and default, and every row is a field.
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/config.h"
#include "common/config_file.h"
#include "controller/config.h"
#include "controller/detectors.h"
#include "fairwatch/v1/config.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "gtest/gtest.h"
#include "tests/deploy/doc_tables.h"

namespace fairwatch {
namespace {

using ::fairwatch::deploy_testing::DocRow;
using ::fairwatch::deploy_testing::FirstCodeSpan;
using ::fairwatch::deploy_testing::ReadDocRows;
using ::google::protobuf::Descriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::Message;
using ::google::protobuf::Reflection;

const std::string kPage = std::string(FAIRWATCH_SOURCE_DIR) + "/docs/reference/policy.md";

// Field paths of `descriptor` and everything below it: "fairness",
// "fairness.harm", "fairness.harm.ratio", ...
void CollectPaths(const Descriptor* descriptor, const std::string& prefix,
                  std::map<std::string, const FieldDescriptor*>* out) {
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    const std::string path =
        prefix.empty() ? field->name() : absl::StrCat(prefix, ".", field->name());
    (*out)[path] = field;
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      CollectPaths(field->message_type(), path, out);
    }
  }
}

// "double", "repeated string", "TlsConfig", "repeated Resource": as the page writes it.
std::string TypeOf(const FieldDescriptor* field) {
  std::string type;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      type = field->message_type()->name();
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      type = field->enum_type()->name();
      break;
    default:
      type = field->type_name();
      break;
  }
  return field->is_repeated() ? absl::StrCat("repeated ", type) : type;
}

// The rows of the page's section on `message` ("## `fairwatch.v1.AgentConfig`").
std::map<std::string, DocRow> RowsOf(const std::string& message) {
  std::string error;
  std::vector<DocRow> rows = ReadDocRows(kPage, &error);
  EXPECT_TRUE(error.empty()) << error;
  std::map<std::string, DocRow> by_path;
  const std::string section = absl::StrCat("`fairwatch.v1.", message, "`");
  for (DocRow& row : rows) {
    if (row.section != section) continue;
    const std::optional<std::string> path = FirstCodeSpan(row.cells[0]);
    if (!path.has_value()) continue;
    EXPECT_FALSE(by_path.contains(*path))
        << kPage << ":" << row.line << ": `" << *path << "` is documented twice under " << section;
    by_path.emplace(*path, std::move(row));
  }
  return by_path;
}

void ExpectEveryFieldDocumented(const Descriptor* descriptor) {
  std::map<std::string, const FieldDescriptor*> fields;
  CollectPaths(descriptor, "", &fields);
  const std::map<std::string, DocRow> rows = RowsOf(descriptor->name());
  ASSERT_FALSE(rows.empty()) << kPage << " has no section \"## `fairwatch.v1." << descriptor->name()
                             << "`\" with a table of fields";
  for (const auto& [path, field] : fields) {
    auto row = rows.find(path);
    if (row == rows.end()) {
      ADD_FAILURE() << descriptor->name() << " field `" << path << "` (" << TypeOf(field)
                    << ") is not documented in " << kPage << ": add a row | `" << path
                    << "` | type | default | meaning |";
      continue;
    }
    ASSERT_GE(row->second.cells.size(), 4u)
        << kPage << ":" << row->second.line << ": expected | path | type | default | meaning |";
    EXPECT_EQ(row->second.cells[1], TypeOf(field))
        << kPage << ":" << row->second.line << ": type of `" << path << "`";
  }
  for (const auto& [path, row] : rows) {
    EXPECT_TRUE(fields.contains(path))
        << kPage << ":" << row.line << ": `" << path << "` is not a field of fairwatch.v1."
        << descriptor->name() << " (renamed or removed from proto/fairwatch/v1/config.proto?)";
  }
}

TEST(ConfigReference, EveryControllerConfigFieldIsDocumentedWithItsType) {
  ExpectEveryFieldDocumented(v1::ControllerConfig::descriptor());
}

TEST(ConfigReference, EveryAgentConfigFieldIsDocumentedWithItsType) {
  ExpectEveryFieldDocumented(v1::AgentConfig::descriptor());
}

// The value at `path` in `message` as text, or nullopt when the path goes
// through a repeated field or ends at a message (no single default to show).
std::optional<std::string> ScalarAt(const Message& message, const std::string& path) {
  const Message* current = &message;
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const Descriptor* descriptor = current->GetDescriptor();
    const Reflection* reflection = current->GetReflection();
    const FieldDescriptor* field = descriptor->FindFieldByName(parts[i]);
    if (field == nullptr || field->is_repeated()) return std::nullopt;
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (i + 1 == parts.size()) return std::nullopt;
      current = &reflection->GetMessage(*current, field);
      continue;
    }
    if (i + 1 != parts.size()) return std::nullopt;
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        return absl::StrCat("\"", reflection->GetString(*current, field), "\"");
      case FieldDescriptor::CPPTYPE_BOOL:
        return reflection->GetBool(*current, field) ? "true" : "false";
      case FieldDescriptor::CPPTYPE_DOUBLE:
        return absl::StrCat(reflection->GetDouble(*current, field));
      case FieldDescriptor::CPPTYPE_UINT32:
        return absl::StrCat(reflection->GetUInt32(*current, field));
      case FieldDescriptor::CPPTYPE_INT32:
        return absl::StrCat(reflection->GetInt32(*current, field));
      case FieldDescriptor::CPPTYPE_ENUM:
        return reflection->GetEnum(*current, field)->name();
      default:
        ADD_FAILURE() << "no rendering for the type of `" << path << "`";
        return std::nullopt;
    }
  }
  return std::nullopt;
}

bool SameValue(const std::string& documented, const std::string& actual) {
  if (documented == actual) return true;
  double a = 0;
  double b = 0;
  if (!absl::SimpleAtod(documented, &a) || !absl::SimpleAtod(actual, &b)) return false;
  return std::fabs(a - b) <= 1e-12 * std::max(1.0, std::fabs(b));
}

// Defaults that depend on the machine: the page names them in words.
const std::map<std::string, std::string> kMachineDefaults = {{"host_id", "hostname"}};

// For every singular field outside repeated messages, the page's default (the
// first code span of its third cell) equals the value in `defaulted`.
void ExpectDocumentedDefaults(const Message& defaulted) {
  std::map<std::string, const FieldDescriptor*> fields;
  CollectPaths(defaulted.GetDescriptor(), "", &fields);
  const std::map<std::string, DocRow> rows = RowsOf(defaulted.GetDescriptor()->name());
  int checked = 0;
  for (const auto& [path, field] : fields) {
    const std::optional<std::string> actual = ScalarAt(defaulted, path);
    auto row = rows.find(path);
    if (!actual.has_value() || row == rows.end() || row->second.cells.size() < 3) continue;
    const std::string& cell = row->second.cells[2];
    const std::string where = absl::StrCat(kPage, ":", row->second.line, ": default of `", path,
                                           "` is \"", cell, "\"; the code fills in ", *actual);
    if (auto machine = kMachineDefaults.find(path); machine != kMachineDefaults.end()) {
      EXPECT_NE(*actual, "\"\"") << where;
      EXPECT_NE(cell.find(machine->second), std::string::npos) << where;
      ++checked;
      continue;
    }
    const std::optional<std::string> documented = FirstCodeSpan(cell);
    if (!documented.has_value()) {
      ADD_FAILURE() << where << " (write the value in backticks, e.g. `" << *actual << "`)";
      continue;
    }
    EXPECT_TRUE(SameValue(*documented, *actual)) << where;
    ++checked;
  }
  EXPECT_GT(checked, 10) << "too few defaults compared; is the page's table format intact?";
}

TEST(ConfigReference, ControllerDefaultsAreWhatTheControllerFillsIn) {
  // What the controller runs with when started without --config (the override
  // is the one setting it requires: TLS files or plaintext).
  controller::ConfigOverrides overrides;
  overrides.insecure_plaintext = true;
  absl::StatusOr<v1::ControllerConfig> config = controller::LoadControllerConfig("", overrides);
  ASSERT_TRUE(config.ok()) << config.status();
  config->clear_insecure_plaintext();
  ExpectDocumentedDefaults(*config);
}

TEST(ConfigReference, AgentDefaultsAreWhatTheAgentFillsIn) {
  // The agent's path (agent/main.cc): parse, then ApplyDefaults, then
  // Validate. libvirt {} so that its defaults are filled in too; the agent
  // requires a tenant source and plaintext or TLS.
  v1::AgentConfig config;
  ASSERT_TRUE(
      ParseTextConfig("libvirt {}\ninsecure_plaintext: true\n", "agent.textproto", &config).ok());
  agent::ApplyDefaults(&config);
  ASSERT_TRUE(agent::Validate(config).ok()) << agent::Validate(config);
  config.clear_insecure_plaintext();
  ExpectDocumentedDefaults(config);
}

TEST(ConfigReference, NamesEveryHarmDetectorAndEveryResource) {
  const std::map<std::string, DocRow> rows = RowsOf("ControllerConfig");
  auto detectors = rows.find("fairness.harm.disabled_detectors");
  ASSERT_NE(detectors, rows.end());
  for (const controller::HarmDetector& d : controller::HarmDetectors()) {
    EXPECT_NE(detectors->second.cells[3].find(absl::StrCat("`", d.name, "`")), std::string::npos)
        << kPage << ":" << detectors->second.line << ": detector `" << d.name << "` not listed";
  }
  auto resources = rows.find("fairness.dry_run_resources");
  ASSERT_NE(resources, rows.end());
  const auto* resource_enum = v1::Resource_descriptor();
  for (int i = 0; i < resource_enum->value_count(); ++i) {
    const std::string name = resource_enum->value(i)->name();
    if (resource_enum->value(i)->number() == 0) continue;
    EXPECT_NE(resources->second.cells[3].find(absl::StrCat("`", name, "`")), std::string::npos)
        << kPage << ":" << resources->second.line << ": resource `" << name << "` not listed";
  }
}

}  // namespace
}  // namespace fairwatch
