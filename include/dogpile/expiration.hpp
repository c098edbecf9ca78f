#pragma once
/// @file expiration.hpp
/// `Expiration`: how long a value stays fresh. A duration, `dogpile::never`, or a callable
/// evaluated on every call (for "until the end of the day"). A default-constructed
/// `Expiration` is "not set": the region's own expiration applies.

#include <chrono>
#include <functional>
#include <optional>
#include <type_traits>

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
  template <class Rep, class Period>
  Expiration(std::chrono::duration<Rep, Period> d)  // NOLINT(google-explicit-constructor)
      : kind_(Kind::fixed), value_(std::chrono::duration_cast<std::chrono::milliseconds>(d)) {
    if (value_.count() < 0) kind_ = Kind::forever;
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
