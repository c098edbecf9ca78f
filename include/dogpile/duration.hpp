#pragma once
/// @file duration.hpp
/// `dogpile::Duration`: the type of duration options (timeouts, time-to-live, leases) that
/// accepts any `std::chrono` duration — `5s`, `100ms`, `1min` and also `1.5s` — the way the
/// region's `Expiration` does.

#include <chrono>
#include <type_traits>

namespace dogpile {

/// A duration of millisecond resolution built from any `std::chrono::duration`, including
/// floating-point ones (`1.5s`, `std::chrono::duration<double>(0.25)`), which
/// `std::chrono::milliseconds` refuses to convert from implicitly. The value is rounded to the
/// nearest millisecond. It *is* a `std::chrono::milliseconds` (public base), so it compares,
/// adds and passes wherever one is expected:
///
/// ```cpp
/// cache.set("k", v, {.expire = 1.5s});   // SetOptions::expire is std::optional<Duration>
/// cache.set("k", v, {.expire = 5s});
/// dogpile::Duration d = 250ms;  d.count();  // 250
/// ```
///
/// Thread-safety: a value type.
class Duration : public std::chrono::milliseconds {
 public:
  /// Zero.
  constexpr Duration() noexcept : std::chrono::milliseconds(0) {}
  /// From any chrono duration, rounded to the nearest millisecond (ties to even, as
  /// `std::chrono::round`).
  template <class Rep, class Period>
  requires std::is_arithmetic_v<Rep>
  constexpr Duration(  // NOLINT(google-explicit-constructor): any duration converts, by design
      std::chrono::duration<Rep, Period> d) noexcept
      : std::chrono::milliseconds(std::chrono::round<std::chrono::milliseconds>(d)) {}
};

}  // namespace dogpile
