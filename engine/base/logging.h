// Minimal leveled logging to stderr (Abseil 20220623 has no absl/log).
// Thread-safe: each message is formatted first and written with one fwrite.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"

namespace reformer {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below this level are dropped. Default kInfo; REFORMER_LOG_LEVEL=debug|info|warning|error.
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();
void LogMessage(LogLevel level, const char* file, int line, const std::string& msg);

}  // namespace reformer

#define REFORMER_LOG(level, ...)                                                          \
  do {                                                                                    \
    if (::reformer::LogLevel::level >= ::reformer::MinLogLevel())                         \
      ::reformer::LogMessage(::reformer::LogLevel::level, __FILE__, __LINE__,             \
                             ::absl::StrCat(__VA_ARGS__));                                \
  } while (0)
#define LOG_INFO(...) REFORMER_LOG(kInfo, __VA_ARGS__)
#define LOG_WARNING(...) REFORMER_LOG(kWarning, __VA_ARGS__)
#define LOG_ERROR(...) REFORMER_LOG(kError, __VA_ARGS__)
#define LOG_DEBUG(...) REFORMER_LOG(kDebug, __VA_ARGS__)
