// Minimal leveled logging to stderr (absl 20220623 has no absl/log).
#pragma once

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fairwatch {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug", "info", "warning", "error".
bool ParseLogLevel(absl::string_view text, LogLevel* out);
void LogLine(LogLevel level, absl::string_view message);

template <typename... Args>
void Log(LogLevel level, const Args&... args) {
  if (level < GetLogLevel()) return;
  LogLine(level, absl::StrCat(args...));
}

}  // namespace fairwatch

#define FW_LOG(level, ...) ::fairwatch::Log(::fairwatch::LogLevel::k##level, __VA_ARGS__)
