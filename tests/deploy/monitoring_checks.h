// Checks of what deploy/prometheus and deploy/grafana ship against what the
// daemons export: the metric names a PromQL expression reads, the names a
// /metrics text exposes, the rules of fairwatch.rules.yml and the queries of
// the Grafana dashboard. No YAML library: the rule file's layout is ours.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"

namespace fairwatch::testing::deploy {

// A member of a JSON object read into google.protobuf.Struct: nullptr when
// absent; its string value, "" when absent or not a string.
const google::protobuf::Value* Field(const google::protobuf::Struct& s, const std::string& name);
std::string StringField(const google::protobuf::Struct& s, const std::string& name);

// Metric names (recorded ones too) an expression reads: identifiers that are
// not functions, aggregations, keywords, or label names in by/without/on/
// ignoring/group_left/group_right lists. Strings, label matchers and ranges
// are skipped. Grafana variables must be substituted first.
std::set<std::string> MetricNamesIn(absl::string_view expr);

// Every name a /metrics text declares or samples: `# TYPE` families (with
// _bucket, _sum and _count for histograms) and sample names, so a family
// without series yet (no open case, no disk) still counts.
std::set<std::string> ExposedNames(absl::string_view exposition);

struct Rule {
  std::string name;  // the record's or the alert's
  std::string expr;
  // Keys of the lines under the rule (labels, annotations, for, ...).
  std::set<std::string> keys;
};
struct RuleFile {
  std::vector<Rule> records;
  std::vector<Rule> alerts;
};
// Reads `- record:` / `- alert:` rules with their `expr:`, inline or as a
// folded or literal block (>-, |). Fails on a rule without an expr.
absl::StatusOr<RuleFile> ParseRuleFile(absl::string_view yaml);

// The names of `names` that are neither in `exposed` nor recorded by a rule
// of `rules` whose own sources exist (transitively).
std::vector<std::string> MissingNames(const std::set<std::string>& names,
                                      const std::set<std::string>& exposed, const RuleFile& rules);

struct DashboardQuery {
  std::string where;  // "panel 12 \"CPU (cores)\" target A", "variable host"
  std::string expr;   // PromQL, Grafana variables still in it
};
struct Dashboard {
  int schema_version = 0;
  std::vector<DashboardQuery> queries;
  // Panels (rows excluded) by id: their datasource uid ("" when unset).
  std::map<int, std::string> panel_datasources;
  std::vector<std::string> problems;  // structure: duplicate ids, a panel without targets, ...
  std::map<std::string, std::string> variables;  // name -> type
};
// Panels (and rows' nested panels), their targets, and the query variables;
// label_values(SELECTOR, label) and query_result(QUERY) give their PromQL.
absl::StatusOr<Dashboard> ParseDashboard(absl::string_view json);

// Grafana's variables in `expr` replaced: $__rate_interval, $__interval and
// $__range by "1m", $host and ${host} by `host`. Other variables stay.
std::string SubstituteVariables(absl::string_view expr, absl::string_view host);

}  // namespace fairwatch::testing::deploy
