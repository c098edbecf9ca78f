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

#include <functional>
#include <string_view>

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
void stderr_logger(LogLevel level, std::string_view message);

namespace detail {
/// Sends `message` to the installed logger. Never throws (a throwing logger is ignored).
void log(LogLevel level, std::string_view message) noexcept;
}  // namespace detail

/// Installs `logger` for the whole process (every region and backend) and returns the previous
/// one; an empty `Logger` silences the library. Thread-safe; a call already in the old logger
/// finishes there.
Logger set_logger(Logger logger);

}  // namespace dogpile
