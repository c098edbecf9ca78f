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

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
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
    return Bytes{Codec<U>::encode(v, Format::json)};
  }
}

/// `v` as a `T`. @throws TypeMismatch when the stored kind cannot become a T,
/// CantDeserialize when Codec<T> rejects the bytes.
template <class T>
T from_disk_value(DiskValue&& v, const Key& key) {
  if constexpr (std::is_same_v<T, DiskValue>) {
    return std::move(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (auto* i = std::get_if<std::int64_t>(&v)) return *i != 0;
    throw_kind_mismatch(key, v, "a bool");
  } else if constexpr (std::is_integral_v<T>) {
    if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<T>(*i);
    throw_kind_mismatch(key, v, "an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<T>(*i);
    if (auto* d = std::get_if<double>(&v)) return static_cast<T>(*d);
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
      return Codec<T>::decode(*raw, Format::json);
    }
  }
}

}  // namespace dogpile::detail
