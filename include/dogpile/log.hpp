#pragma once
/// @file log.hpp
/// The process-wide log hook for what is worth knowing but is not an error: arguments a
/// backend accepts and ignores (the Python-only names of a dogpile.cache configuration), a
/// dogpile lock that lost its lease, a connection that was lost and re-opened, a Sentinel or
/// Cluster failover. Errors are exceptions (`error.hpp`), never only log lines.
///
/// By default warnings go to `stderr` (`dogpile: warning: …`) and `info` lines nowhere; install
/// your own with `dogpile::set_logger` (e.g. to forward to spdlog), or silence it with an empty
/// `Logger`.

#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace dogpile {

/// How much a log line matters.
enum class LogLevel : unsigned char {
  info,     ///< routine but worth a trace: a reconnect, a failover followed
  warning,  ///< something was ignored or lost: an ignored argument, a lost lock lease
};

/// Receives one line (no trailing newline). Called on the thread where the event happened,
/// possibly from many threads at once, sometimes under a backend's internal lock: must be
/// thread-safe, must not throw and must not call into dogpile-cpp.
using Logger = std::function<void(LogLevel level, std::string_view message)>;

/// The default logger: warnings to `stderr` as `dogpile: warning: <message>`; info dropped.
inline void stderr_logger(LogLevel level, std::string_view message) {
  if (level < LogLevel::warning) return;
  std::fprintf(stderr, "dogpile: warning: %.*s\n", static_cast<int>(message.size()),
               message.data());
}

namespace detail {
struct LoggerSlot {
  std::mutex m;
  std::shared_ptr<const Logger> logger = std::make_shared<const Logger>(&stderr_logger);
};
inline LoggerSlot& logger_slot() {
  static LoggerSlot slot;
  return slot;
}
/// Sends `message` to the installed logger. Never throws (a throwing logger is ignored).
inline void log(LogLevel level, std::string_view message) noexcept {
  std::shared_ptr<const Logger> l;
  {
    auto& s = logger_slot();
    const std::lock_guard lk(s.m);
    l = s.logger;
  }
  if (l && *l) {
    try {
      (*l)(level, message);
    } catch (...) {  // a logger must not break the cache call that logs
    }
  }
}
}  // namespace detail

/// Installs `logger` for the whole process (every region and backend) and returns the previous
/// one; an empty `Logger` silences the library. Thread-safe; a call already in the old logger
/// finishes there.
inline Logger set_logger(Logger logger) {
  auto next = std::make_shared<const Logger>(std::move(logger));
  auto& s = detail::logger_slot();
  const std::lock_guard lk(s.m);
  Logger previous = s.logger ? *s.logger : Logger{};
  s.logger = std::move(next);
  return previous;
}

}  // namespace dogpile
