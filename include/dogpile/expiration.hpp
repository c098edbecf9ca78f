#pragma once
/// @file expiration.hpp
/// `Expiration`: how long a value stays fresh. A duration, `dogpile::never`, or a callable
/// evaluated on every call (for "until the end of the day"). A default-constructed
/// `Expiration` is "not set": the region's own expiration applies.

#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>

#include "dogpile/error.hpp"
#include "dogpile/limits.hpp"

namespace dogpile {

/// Tag type of `dogpile::never`.
struct never_t {
  explicit constexpr never_t() = default;
};
/// Values never expire (dogpile's `expiration_time=-1` in get_or_create).
inline constexpr never_t never{};

/// An expiration time. Negative durations mean `never` (dogpile's -1).
class Expiration {
 public:
  /// Not set: inherit the region's expiration.
  Expiration() = default;
  /// A fixed duration of millisecond precision or coarser; negative means never.
  /// @throws ValidationError when `d` is NaN or longer than `max_expiration_seconds` (100
  /// years; use `dogpile::never`): converting it to milliseconds, or adding it to a time,
  /// would overflow.
  template <class Rep, class Period>
  Expiration(std::chrono::duration<Rep, Period> d)  // NOLINT(google-explicit-constructor)
      : kind_(Kind::fixed) {
    // Checked in double seconds, before any integer conversion can overflow.
    const double s = std::chrono::duration<double>(d).count();
    if (std::isnan(s) || s > max_expiration_seconds) {
      detail::throw_error<ValidationError>(
          "expiration_time: " + std::to_string(s) +
          " seconds is not a usable expiration (at most " +
          std::to_string(static_cast<long long>(max_expiration_seconds)) +
          " s, 100 years; a negative value or dogpile::never means never)");
    }
    if (s < 0) {
      kind_ = Kind::forever;
    } else {
      value_ = std::chrono::duration_cast<std::chrono::milliseconds>(d);
    }
  }
  /// Never expire.
  Expiration(never_t /*never*/) : kind_(Kind::forever) {}  // NOLINT(google-explicit-constructor)
  /// A callable returning a duration (or `never`/`Expiration`), evaluated on every call.
  template <class F>
  requires(std::is_invocable_v<F&> && !std::is_same_v<std::decay_t<F>, Expiration>)
      Expiration(F f)  // NOLINT(google-explicit-constructor)
      : kind_(Kind::dynamic), fn_([f = std::move(f)]() mutable { return Expiration(f()); }) {}

  /// True unless default-constructed.
  [[nodiscard]] bool is_set() const { return kind_ != Kind::unset; }
  /// The effective value now: nullopt means "never expires". Call only when `is_set()`.
  [[nodiscard]] std::optional<std::chrono::milliseconds> resolve() const {
    switch (kind_) {
      case Kind::fixed:
        return value_;
      case Kind::dynamic:
        return fn_().resolve();
      case Kind::forever:
      case Kind::unset:
        break;
    }
    return std::nullopt;
  }
  /// `this` if set, else `fallback`.
  [[nodiscard]] const Expiration& or_else(const Expiration& fallback) const {
    return is_set() ? *this : fallback;
  }

 private:
  enum class Kind : unsigned char { unset, fixed, forever, dynamic };
  Kind kind_ = Kind::unset;
  std::chrono::milliseconds value_{0};
  std::function<Expiration()> fn_;
};

}  // namespace dogpile
