#include "tests/deploy/monitoring_checks.h"

#include <cctype>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace fairwatch::testing::deploy {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

bool IsNameStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool IsNameChar(char c) { return IsNameStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

// Index just past the string literal that starts at `i` (", ' or `).
size_t SkipString(absl::string_view s, size_t i) {
  const char quote = s[i++];
  while (i < s.size() && s[i] != quote) {
    if (s[i] == '\\' && quote != '`') ++i;
    ++i;
  }
  return i + 1;
}

// Index just past the bracket that closes the one at `i`, strings skipped.
size_t SkipBracketed(absl::string_view s, size_t i) {
  const char open = s[i];
  const char close = open == '(' ? ')' : open == '[' ? ']' : '}';
  int depth = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '"' || c == '\'' || c == '`') {
      i = SkipString(s, i);
      continue;
    }
    if (c == open) ++depth;
    if (c == close && --depth == 0) return i + 1;
    ++i;
  }
  return i;
}

size_t SkipSpace(absl::string_view s, size_t i) {
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return i;
}

const std::set<std::string>& Aggregations() {
  static const auto* names =
      new std::set<std::string>{"sum",    "min",   "max",          "avg",  "group",   "stddev",
                                "stdvar", "count", "count_values", "topk", "bottomk", "quantile"};
  return *names;
}
const std::set<std::string>& LabelListKeywords() {
  static const auto* names =
      new std::set<std::string>{"by", "without", "on", "ignoring", "group_left", "group_right"};
  return *names;
}
const std::set<std::string>& Keywords() {
  static const auto* names =
      new std::set<std::string>{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"};
  return *names;
}

// Splits "  - key: value" or "key: value"; false for any other line.
bool SplitKey(absl::string_view line, std::string* key, absl::string_view* value) {
  line = absl::StripLeadingAsciiWhitespace(line);
  absl::ConsumePrefix(&line, "- ");
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  for (char c : line.substr(0, colon)) {
    if (!IsNameChar(c) || c == ':') return false;
  }
  *key = std::string(line.substr(0, colon));
  *value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  return true;
}

size_t Indent(absl::string_view line) {
  size_t n = 0;
  while (n < line.size() && line[n] == ' ') ++n;
  return n;
}

std::string Unquote(absl::string_view v) {
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) {
    std::string out(v.substr(1, v.size() - 2));
    if (v.front() == '\'') absl::StrReplaceAll({{"''", "'"}}, &out);
    return out;
  }
  return std::string(v);
}

// The PromQL of a Prometheus query variable; empty when it reads no metric.
std::string VariablePromql(absl::string_view query) {
  query = absl::StripAsciiWhitespace(query);
  auto inner = [&](absl::string_view prefix) -> std::optional<absl::string_view> {
    if (!absl::ConsumePrefix(&query, prefix) || !absl::ConsumeSuffix(&query, ")")) {
      return std::nullopt;
    }
    return query;
  };
  if (std::optional<absl::string_view> args = inner("label_values(")) {
    // label_values(label) reads no metric; label_values(selector, label) does.
    size_t depth = 0;
    for (size_t i = 0; i < args->size(); ++i) {
      const char c = (*args)[i];
      if (c == '"' || c == '\'' || c == '`') {
        i = SkipString(*args, i) - 1;
      } else if (c == '(' || c == '{' || c == '[') {
        ++depth;
      } else if (c == ')' || c == '}' || c == ']') {
        --depth;
      } else if (c == ',' && depth == 0) {
        return std::string(absl::StripAsciiWhitespace(args->substr(0, i)));
      }
    }
    return "";
  }
  if (std::optional<absl::string_view> q = inner("query_result(")) return std::string(*q);
  if (absl::StartsWith(query, "label_names(") || absl::StartsWith(query, "metrics(")) return "";
  return std::string(query);
}

void WalkPanels(const google::protobuf::ListValue& panels, Dashboard* out, std::set<int>* ids) {
  for (const Value& entry : panels.values()) {
    if (!entry.has_struct_value()) {
      out->problems.push_back("a panel that is not an object");
      continue;
    }
    const Struct& panel = entry.struct_value();
    const std::string type = StringField(panel, "type");
    const std::string title = StringField(panel, "title");
    const Value* id_value = Field(panel, "id");
    const int id = id_value != nullptr && id_value->has_number_value()
                       ? static_cast<int>(id_value->number_value())
                       : -1;
    if (id < 0 || !ids->insert(id).second) {
      out->problems.push_back(absl::StrCat("panel \"", title, "\": missing or duplicate id"));
    }
    if (Field(panel, "gridPos") == nullptr) {
      out->problems.push_back(absl::StrCat("panel \"", title, "\": no gridPos"));
    }
    if (const Value* nested = Field(panel, "panels");
        nested != nullptr && nested->has_list_value()) {
      WalkPanels(nested->list_value(), out, ids);
    }
    if (type == "row") continue;
    const Value* ds = Field(panel, "datasource");
    out->panel_datasources[id] =
        ds != nullptr && ds->has_struct_value() ? StringField(ds->struct_value(), "uid") : "";
    const Value* targets = Field(panel, "targets");
    if (targets == nullptr || !targets->has_list_value() ||
        targets->list_value().values().empty()) {
      out->problems.push_back(absl::StrCat("panel ", id, " \"", title, "\": no targets"));
      continue;
    }
    for (const Value& t : targets->list_value().values()) {
      const Struct& target = t.struct_value();
      const std::string expr = StringField(target, "expr");
      const std::string where =
          absl::StrCat("panel ", id, " \"", title, "\" target ", StringField(target, "refId"));
      if (expr.empty()) {
        out->problems.push_back(absl::StrCat(where, ": no expr"));
        continue;
      }
      out->queries.push_back({where, expr});
    }
  }
}

}  // namespace

const Value* Field(const Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? nullptr : &it->second;
}

std::string StringField(const Struct& s, const std::string& name) {
  const Value* v = Field(s, name);
  return v != nullptr && v->has_string_value() ? v->string_value() : "";
}

std::set<std::string> MetricNamesIn(absl::string_view expr) {
  std::set<std::string> names;
  size_t i = 0;
  while (i < expr.size()) {
    const char c = expr[i];
    if (c == '"' || c == '\'' || c == '`') {
      i = SkipString(expr, i);
    } else if (c == '{' || c == '[') {
      i = SkipBracketed(expr, i);
    } else if (c == '#') {
      while (i < expr.size() && expr[i] != '\n') ++i;
    } else if (std::isdigit(static_cast<unsigned char>(c)) ||
               (c == '.' && i + 1 < expr.size() &&
                std::isdigit(static_cast<unsigned char>(expr[i + 1])))) {
      // A number or a duration (1e-3, 0x1f, 5m30s).
      ++i;
      while (i < expr.size() &&
             (std::isalnum(static_cast<unsigned char>(expr[i])) || expr[i] == '.' ||
              ((expr[i] == '+' || expr[i] == '-') && (expr[i - 1] == 'e' || expr[i - 1] == 'E')))) {
        ++i;
      }
    } else if (IsNameStart(c)) {
      const size_t start = i;
      while (i < expr.size() && IsNameChar(expr[i])) ++i;
      const std::string word(expr.substr(start, i - start));
      const std::string lower = absl::AsciiStrToLower(word);
      const size_t next = SkipSpace(expr, i);
      const bool call = next < expr.size() && expr[next] == '(';
      if (LabelListKeywords().count(lower) > 0) {
        if (call) i = SkipBracketed(expr, next);
      } else if (Keywords().count(lower) > 0 || Aggregations().count(lower) > 0 || call) {
        // Not a metric.
      } else {
        names.insert(word);
      }
    } else {
      ++i;
    }
  }
  return names;
}

std::set<std::string> ExposedNames(absl::string_view exposition) {
  std::set<std::string> names;
  for (absl::string_view line : absl::StrSplit(exposition, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() != 2) continue;
      names.insert(parts[0]);
      if (parts[1] == "histogram" || parts[1] == "summary") {
        names.insert(parts[0] + "_sum");
        names.insert(parts[0] + "_count");
      }
      if (parts[1] == "histogram") names.insert(parts[0] + "_bucket");
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    size_t end = 0;
    while (end < line.size() && IsNameChar(line[end])) ++end;
    if (end > 0) names.insert(std::string(line.substr(0, end)));
  }
  return names;
}

absl::StatusOr<RuleFile> ParseRuleFile(absl::string_view yaml) {
  RuleFile file;
  Rule* rule = nullptr;
  size_t rule_indent = 0;
  const std::vector<absl::string_view> lines = absl::StrSplit(yaml, '\n');
  for (size_t n = 0; n < lines.size(); ++n) {
    absl::string_view line = lines[n];
    if (absl::StripAsciiWhitespace(line).empty() ||
        absl::StartsWith(absl::StripLeadingAsciiWhitespace(line), "#")) {
      continue;
    }
    std::string key;
    absl::string_view value;
    if (!SplitKey(line, &key, &value)) continue;
    const size_t indent = Indent(line);
    const bool item = absl::StartsWith(absl::StripLeadingAsciiWhitespace(line), "- ");
    if (item && (key == "record" || key == "alert")) {
      std::vector<Rule>& list = key == "record" ? file.records : file.alerts;
      list.push_back(Rule{Unquote(value), "", {}});
      rule = &list.back();
      rule_indent = indent;
      continue;
    }
    if (rule == nullptr || indent <= rule_indent) {
      rule = nullptr;  // a new group or a key outside any rule
      continue;
    }
    rule->keys.insert(key);
    if (key != "expr") continue;
    if (value == ">" || value == ">-" || value == "|" || value == "|-") {
      // A block: the following lines indented deeper than "expr:".
      std::vector<std::string> block;
      while (n + 1 < lines.size() &&
             (absl::StripAsciiWhitespace(lines[n + 1]).empty() || Indent(lines[n + 1]) > indent)) {
        block.emplace_back(absl::StripAsciiWhitespace(lines[++n]));
      }
      rule->expr = absl::StrJoin(block, "\n");
    } else {
      rule->expr = Unquote(value);
    }
  }
  for (const std::vector<Rule>* list : {&file.records, &file.alerts}) {
    for (const Rule& r : *list) {
      if (absl::StripAsciiWhitespace(r.expr).empty()) {
        return absl::InvalidArgumentError(absl::StrCat("rule ", r.name, " has no expr"));
      }
    }
  }
  return file;
}

std::vector<std::string> MissingNames(const std::set<std::string>& names,
                                      const std::set<std::string>& exposed, const RuleFile& rules) {
  // Recorded names whose sources exist, to a fixed point (a record may read another).
  std::set<std::string> known = exposed;
  bool grew = true;
  while (grew) {
    grew = false;
    for (const Rule& r : rules.records) {
      if (known.count(r.name) > 0) continue;
      bool sources = true;
      for (const std::string& source : MetricNamesIn(r.expr)) sources &= known.count(source) > 0;
      if (sources) grew = known.insert(r.name).second || grew;
    }
  }
  std::vector<std::string> missing;
  for (const std::string& name : names) {
    if (known.count(name) == 0) missing.push_back(name);
  }
  return missing;
}

absl::StatusOr<Dashboard> ParseDashboard(absl::string_view json) {
  Struct root;
  google::protobuf::util::JsonParseOptions options;
  auto parsed = google::protobuf::util::JsonStringToMessage(std::string(json), &root, options);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the dashboard is not valid JSON: ", std::string(parsed.message())));
  }
  Dashboard out;
  if (const Value* v = Field(root, "schemaVersion"); v != nullptr && v->has_number_value()) {
    out.schema_version = static_cast<int>(v->number_value());
  }
  std::set<int> ids;
  if (const Value* panels = Field(root, "panels"); panels != nullptr && panels->has_list_value()) {
    WalkPanels(panels->list_value(), &out, &ids);
  } else {
    out.problems.push_back("no panels");
  }
  const Value* templating = Field(root, "templating");
  const Value* list = templating != nullptr && templating->has_struct_value()
                          ? Field(templating->struct_value(), "list")
                          : nullptr;
  if (list != nullptr && list->has_list_value()) {
    for (const Value& v : list->list_value().values()) {
      const Struct& var = v.struct_value();
      const std::string name = StringField(var, "name");
      const std::string type = StringField(var, "type");
      out.variables[name] = type;
      if (type != "query") continue;
      const Value* query = Field(var, "query");
      std::string text;
      if (query != nullptr && query->has_string_value()) text = query->string_value();
      if (query != nullptr && query->has_struct_value()) {
        text = StringField(query->struct_value(), "query");
      }
      if (text.empty()) {
        out.problems.push_back(absl::StrCat("variable ", name, ": no query"));
        continue;
      }
      std::string promql = VariablePromql(text);
      if (!promql.empty()) out.queries.push_back({absl::StrCat("variable ", name), promql});
    }
  }
  return out;
}

std::string SubstituteVariables(absl::string_view expr, absl::string_view host) {
  return absl::StrReplaceAll(expr, {{"$__rate_interval", "1m"},
                                    {"${__rate_interval}", "1m"},
                                    {"$__interval", "1m"},
                                    {"${__interval}", "1m"},
                                    {"$__range", "1m"},
                                    {"${__range}", "1m"},
                                    {"${host}", host},
                                    {"$host", host}});
}

}  // namespace fairwatch::testing::deploy
