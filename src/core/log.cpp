// log.hpp: the process-wide logger, one slot in the library (not one per shared object that
// includes the header).

#include "dogpile/log.hpp"

#include <cstdio>
#include <memory>
#include <mutex>
#include <utility>

namespace dogpile {

/// The default logger: warnings to `stderr` as `dogpile: warning: <message>`; info dropped.
void stderr_logger(LogLevel level, std::string_view message) {
  if (level < LogLevel::warning) return;
  std::fprintf(stderr, "dogpile: warning: %.*s\n", static_cast<int>(message.size()),
               message.data());
}

namespace detail {
namespace {
struct LoggerSlot {
  std::mutex m;
  std::shared_ptr<const Logger> logger = std::make_shared<const Logger>(&stderr_logger);
};
LoggerSlot& logger_slot() {
  static LoggerSlot slot;
  return slot;
}
}  // namespace
/// Sends `message` to the installed logger. Never throws (a throwing logger is ignored).
void log(LogLevel level, std::string_view message) noexcept {
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
Logger set_logger(Logger logger) {
  auto next = std::make_shared<const Logger>(std::move(logger));
  auto& s = detail::logger_slot();
  const std::lock_guard lk(s.m);
  Logger previous = s.logger ? *s.logger : Logger{};
  s.logger = std::move(next);
  return previous;
}

}  // namespace dogpile
