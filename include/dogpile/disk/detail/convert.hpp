#pragma once
/// @file convert.hpp
/// C++ values <-> the four native disk value kinds. Internal to the disk cache.
///
/// * integral types (bool included) -> INTEGER; floating point -> REAL;
///   `std::string`, `std::string_view`, `const char*` -> TEXT; `Bytes`, `std::vector<uint8_t>`,
///   `std::vector<std::byte>` -> BLOB (Python `bytes`).
/// * anything else goes through `dogpile::Codec<T>` with `Format::json` and is stored as a BLOB,
///   so python-diskcache reads it as `bytes` holding JSON (mode RAW inline, or BINARY in a file),
///   never as a pickle.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "dogpile/codec.hpp"
#include "dogpile/disk/types.hpp"
#include "dogpile/error.hpp"

namespace dogpile::detail {

template <class T>
inline constexpr bool is_byte_vector_v = false;
template <class B>
inline constexpr bool is_byte_vector_v<std::vector<B>> = sizeof(B) == 1 && std::is_trivial_v<B> &&
                                                         !std::is_same_v<B, char>;

template <class T>
inline constexpr bool is_texty_v =
    std::is_convertible_v<const T&, std::string_view> && !std::is_same_v<T, std::nullptr_t>;

/// The name of a kind, for messages.
inline const char* disk_value_kind(const DiskValue& v) noexcept {
  switch (v.index()) {
    case 0:
      return "an integer";
    case 1:
      return "a float";
    case 2:
      return "text";
    default:
      return "bytes";
  }
}

[[noreturn]] inline void throw_kind_mismatch(const Key& key, const DiskValue& v, const char* want) {
  throw_error<TypeMismatch>("disk cache: key " + key.repr() + " holds " + disk_value_kind(v) +
                            ", not " + want);
}

/// `v` as text for messages (`12345678901`, `1e+300`).
inline std::string disk_number_repr(const DiskValue& v) {
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  std::ostringstream os;
  os.precision(std::numeric_limits<double>::max_digits10);
  os << std::get<double>(v);
  return os.str();
}

/// `what` with T's range for messages: "an integer (32-bit signed, -2147483648 to 2147483647)",
/// "a float (32-bit floating point)".
template <class T>
std::string disk_number_type(const char* what) {
  std::string out = std::string(what) + " (";
  if constexpr (std::is_same_v<T, bool>) {
    out += "0 or 1";
  } else if constexpr (std::is_integral_v<T>) {
    out += std::to_string(sizeof(T) * 8) + "-bit " + (std::is_signed_v<T> ? "signed" : "unsigned") +
           ", " + std::to_string(+std::numeric_limits<T>::min()) + " to " +
           std::to_string(+std::numeric_limits<T>::max());
  } else {
    out += std::to_string(sizeof(T) * 8) + "-bit floating point";
  }
  return out + ")";
}

/// A stored number does not fit the requested type: `TypeMismatch`, never a narrowed value.
template <class T>
[[noreturn]] void throw_out_of_range(const Key& key, const DiskValue& v, const char* what) {
  throw_error<TypeMismatch>("disk cache: key " + key.repr() + " holds " + disk_value_kind(v) + " " +
                            disk_number_repr(v) + " that does not fit " +
                            disk_number_type<T>(what) + "; read it as " +
                            (v.index() == 0 ? "std::int64_t" : "double") + " instead");
}

/// True if the int64 `v` is a value of the integer type `T` (char types included, which
/// `std::in_range` refuses).
template <class T>
constexpr bool int64_fits(std::int64_t v) noexcept {
  using L = std::numeric_limits<T>;
  if constexpr (std::is_signed_v<T>) {
    if constexpr (sizeof(T) >= sizeof(std::int64_t)) {
      return true;
    } else {
      return v >= static_cast<std::int64_t>(L::min()) && v <= static_cast<std::int64_t>(L::max());
    }
  } else {
    if (v < 0) return false;
    if constexpr (sizeof(T) >= sizeof(std::int64_t)) {
      return true;
    } else {
      return static_cast<std::uint64_t>(v) <= static_cast<std::uint64_t>(L::max());
    }
  }
}

/// True if the int64 `v` converts to the floating-point `F` and back unchanged.
template <class F>
bool int64_exact_in(std::int64_t v) noexcept {
  const F f = static_cast<F>(v);
  // 2^63 itself (what INT64_MAX rounds to in a double) does not convert back.
  constexpr F two63 = static_cast<F>(9223372036854775808.0L);
  return f < two63 && static_cast<std::int64_t>(f) == v;
}

/// The native representation of `v`.
template <class T>
DiskValue to_disk_value(const T& v) {
  using U = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<U, DiskValue>) {
    return v;
  } else if constexpr (std::is_integral_v<U>) {
    if constexpr (std::is_unsigned_v<U> && sizeof(U) >= sizeof(std::int64_t)) {
      if (v > static_cast<U>(std::numeric_limits<std::int64_t>::max())) {
        throw_error<ValidationError>("disk cache: unsigned value does not fit int64");
      }
    }
    return static_cast<std::int64_t>(v);
  } else if constexpr (std::is_floating_point_v<U>) {
    return static_cast<double>(v);
  } else if constexpr (std::is_same_v<U, Bytes>) {
    return v;
  } else if constexpr (is_byte_vector_v<U>) {
    Bytes b;
    b.data.assign(reinterpret_cast<const char*>(v.data()), v.size());
    return b;
  } else if constexpr (is_texty_v<U>) {
    return std::string(std::string_view(v));
  } else {
    static_assert(HasCodec<U>,
                  "DiskCache: this type has no dogpile::Codec<T>; define to_json/from_json for it "
                  "(nlohmann_json) or specialize dogpile::Codec<T>");
    return Bytes{Codec<U>::encode(v, Format::json)};
  }
}

/// `v` as a `T`. @throws TypeMismatch when the stored kind cannot become a T or the stored
/// number does not fit it (an int64 outside T's range, an integer a floating-point T cannot
/// hold exactly, a double beyond a float's range, a bool other than 0/1): never a narrowed
/// value. CantDeserialize when Codec<T> rejects the bytes. Both messages name the key.
template <class T>
T from_disk_value(DiskValue&& v, const Key& key) {
  if constexpr (std::is_same_v<T, DiskValue>) {
    return std::move(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (auto* i = std::get_if<std::int64_t>(&v)) {
      if (*i == 0 || *i == 1) return *i != 0;
      throw_out_of_range<T>(key, v, "a bool");
    }
    throw_kind_mismatch(key, v, "a bool");
  } else if constexpr (std::is_integral_v<T>) {
    if (auto* i = std::get_if<std::int64_t>(&v)) {
      if (int64_fits<T>(*i)) return static_cast<T>(*i);
      throw_out_of_range<T>(key, v, "an integer");
    }
    throw_kind_mismatch(key, v, "an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (auto* i = std::get_if<std::int64_t>(&v)) {
      if (int64_exact_in<T>(*i)) return static_cast<T>(*i);
      throw_out_of_range<T>(key, v, "exactly in a floating-point number");
    }
    if (auto* d = std::get_if<double>(&v)) {
      // Rounding to a float's precision is what reading a float means; overflowing to
      // infinity is not. Infinities and NaN stored as such stay what they are.
      if constexpr (sizeof(T) < sizeof(double)) {
        if (std::isfinite(*d) &&
            std::fabs(*d) > static_cast<double>(std::numeric_limits<T>::max())) {
          throw_out_of_range<T>(key, v, "a float");
        }
      }
      return static_cast<T>(*d);
    }
    throw_kind_mismatch(key, v, "a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (auto* s = std::get_if<std::string>(&v)) return std::move(*s);
    if (auto* b = std::get_if<Bytes>(&v)) return std::move(b->data);
    throw_kind_mismatch(key, v, "text or bytes");
  } else if constexpr (std::is_same_v<T, Bytes>) {
    if (auto* b = std::get_if<Bytes>(&v)) return std::move(*b);
    if (auto* s = std::get_if<std::string>(&v)) return Bytes{std::move(*s)};
    throw_kind_mismatch(key, v, "bytes or text");
  } else {
    const std::string* raw = nullptr;
    if (auto* b = std::get_if<Bytes>(&v)) raw = &b->data;
    if (auto* s = std::get_if<std::string>(&v)) raw = s;
    if (raw == nullptr) throw_kind_mismatch(key, v, "bytes (an encoded object)");
    if constexpr (is_byte_vector_v<T>) {
      T out(raw->size());
      if (!raw->empty()) std::memcpy(out.data(), raw->data(), raw->size());
      return out;
    } else {
      static_assert(HasCodec<T>,
                    "DiskCache: this type has no dogpile::Codec<T>; define to_json/from_json for "
                    "it (nlohmann_json) or specialize dogpile::Codec<T>");
      try {
        return Codec<T>::decode(*raw, Format::json);
      } catch (const CantDeserialize& e) {
        throw_error<CantDeserialize>("disk cache: key " + key.repr() + ": " + e.what());
      } catch (const TypeMismatch& e) {
        throw_error<TypeMismatch>("disk cache: key " + key.repr() + ": " + e.what());
      }
    }
  }
}

}  // namespace dogpile::detail
