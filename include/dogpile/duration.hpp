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
  /// `std::chrono::round`). Saturating: a duration beyond what milliseconds hold (`1e17s`,
  /// `hours::max()`, infinity) becomes `milliseconds::max()` (or `min()` for negative ones), and
  /// NaN becomes zero, where a plain conversion would be undefined behaviour. Callers that
  /// refuse absurd values check the result (`ValidationError`); none can overflow here.
  template <class Rep, class Period>
  requires std::is_arithmetic_v<Rep>
  constexpr Duration(  // NOLINT(google-explicit-constructor): any duration converts, by design
      std::chrono::duration<Rep, Period> d) noexcept
      : std::chrono::milliseconds(saturated(d)) {}

 private:
  // The range check is done in long double milliseconds (a floating-point conversion never
  // overflows; its 64-bit mantissa holds every int64), and only an in-range value is converted
  // to the integer count. Everything here is constexpr (no std::round / std::isnan).
  template <class Rep, class Period>
  static constexpr std::chrono::milliseconds saturated(std::chrono::duration<Rep, Period> d) {
    using Ms = std::chrono::milliseconds;
    using Rep64 = Ms::rep;
    const long double w = std::chrono::duration<long double, std::milli>(d).count();
    if (w != w) return Ms(0);  // NaN
    if (w >= static_cast<long double>(Ms::max().count())) return Ms::max();
    if (w <= static_cast<long double>(Ms::min().count())) return Ms::min();
    if constexpr (std::is_floating_point_v<Rep>) {
      // Round half to even from the truncated value; |w| < 2^63 - 1, so neither step overflows.
      auto i = static_cast<Rep64>(w);
      const long double frac = w - static_cast<long double>(i);
      if (frac > 0.5L || (frac == 0.5L && i % 2 != 0)) ++i;
      if (frac < -0.5L || (frac == -0.5L && i % 2 != 0)) --i;
      return Ms(i);
    } else {
      return std::chrono::round<Ms>(d);  // exact integer arithmetic, in range as checked
    }
  }
};

}  // namespace dogpile
