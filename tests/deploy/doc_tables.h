// Reads the tables of a reference page in docs/reference/: the rows whose
// first cell is a code span (`name`), with the "## " heading they are under,
// so a test can hold the page to the code it describes.
#pragma once

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fairwatch::deploy_testing {

struct DocRow {
  std::string section;             // the "## " heading above it, without "## "
  int line = 0;                    // 1-based, for messages
  std::vector<std::string> cells;  // trimmed; cells[0] is the `name` cell
};

// The code spans of `text`, in order: "`a`, `b`" -> {"a", "b"}.
inline std::vector<std::string> CodeSpans(absl::string_view text) {
  std::vector<std::string> spans;
  while (true) {
    const size_t open = text.find('`');
    if (open == absl::string_view::npos) break;
    const size_t close = text.find('`', open + 1);
    if (close == absl::string_view::npos) break;
    spans.emplace_back(text.substr(open + 1, close - open - 1));
    text.remove_prefix(close + 1);
  }
  return spans;
}

inline std::optional<std::string> FirstCodeSpan(absl::string_view text) {
  std::vector<std::string> spans = CodeSpans(text);
  if (spans.empty()) return std::nullopt;
  return spans.front();
}

// Every table row of the page at `path` that starts with "| `", or an empty
// list (and `error` set) when the file cannot be read.
inline std::vector<DocRow> ReadDocRows(const std::string& path, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot read " + path;
    return {};
  }
  std::vector<DocRow> rows;
  std::string section;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view view(line);
    if (absl::ConsumePrefix(&view, "## ")) {
      section = std::string(absl::StripAsciiWhitespace(view));
      continue;
    }
    if (!absl::StartsWith(view, "| `")) continue;
    DocRow row;
    row.section = section;
    row.line = number;
    view.remove_prefix(1);  // the leading '|'
    if (absl::EndsWith(view, "|")) view.remove_suffix(1);
    for (absl::string_view cell : absl::StrSplit(view, '|')) {
      row.cells.emplace_back(absl::StripAsciiWhitespace(cell));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace fairwatch::deploy_testing
