#pragma once
/// @file clock.hpp
/// The injectable clock. Every expiry decision in dogpile-cpp reads time through a `Clock`, so
/// tests can move time forward without sleeping.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>

#include "dogpile/limits.hpp"

namespace dogpile {

/// Wall-clock time point used for creation timestamps (dogpile stores Unix seconds).
using TimePoint = std::chrono::system_clock::time_point;

/// A source of "now". Any callable returning a `TimePoint`; copyable.
using Clock = std::function<TimePoint()>;

/// The default clock: `std::chrono::system_clock::now()`.
inline Clock system_clock() {
  return [] { return std::chrono::system_clock::now(); };
}

/// Seconds since the Unix epoch as a double, as Python's `time.time()`, in whole microseconds
/// (floored): `from_unix_seconds(to_unix_seconds(t))` is `t` floored to the microsecond, never
/// later than `t`, so a stored creation time is never in the future of the moment it stamps.
inline double to_unix_seconds(TimePoint t) {
  return std::chrono::duration<double>(
             std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()))
      .count();
}

/// The inverse of `to_unix_seconds` (microsecond resolution). Total, never undefined: `s` is
/// meant to lie within +-`max_unix_seconds` (dogpile/limits.hpp), which decoders of stored
/// times check first (an envelope outside it is corrupt); beyond it the result is clamped to
/// that bound, and NaN is the epoch.
inline TimePoint from_unix_seconds(double s) {
  // Converting an out-of-range double to the clock's integer ticks is undefined behaviour (a
  // stored ct of 1e10 read back as the year 1702): clamp first.
  if (std::isnan(s)) return TimePoint{};
  s = std::clamp(s, -max_unix_seconds, max_unix_seconds);
  // Rounded to the nearest microsecond, not truncated: a double near 1.7e9 holds about 0.2 us,
  // so truncation turned e.g. ...001007 s into ...001006 s, and a value created at the instant
  // of invalidate() read back as created before it (invalidated on every read).
  return TimePoint(std::chrono::round<std::chrono::microseconds>(std::chrono::duration<double>(s)));
}

/// A clock for tests: time stands still until `advance` or `set` moves it. Copies share state,
/// so a test can keep one copy and hand another to a region. Thread-safe.
class ManualClock {
 public:
  /// Starts at `start` (default: 1,700,000,000 s after the epoch).
  explicit ManualClock(TimePoint start = TimePoint(std::chrono::seconds(1'700'000'000)))
      : now_(std::make_shared<std::atomic<TimePoint::rep>>(start.time_since_epoch().count())) {}

  /// The current (frozen) time.
  TimePoint operator()() const { return TimePoint(TimePoint::duration(now_->load())); }
  /// Moves time forward by `d`.
  template <class Rep, class Period>
  void advance(std::chrono::duration<Rep, Period> d) {
    now_->fetch_add(std::chrono::duration_cast<TimePoint::duration>(d).count());
  }
  /// Sets the time.
  void set(TimePoint t) { now_->store(t.time_since_epoch().count()); }
  // A ManualClock is itself callable, so it converts to `Clock`; copies share the time.

 private:
  std::shared_ptr<std::atomic<TimePoint::rep>> now_;
};

}  // namespace dogpile
