#pragma once
/// @file weigher.hpp
/// `Weigher<T>`: how many bytes a value held by the `memory` backend costs, for its `max_bytes`
/// bound (Caffeine's `Weigher`). The memory backend keeps live objects, so `sizeof(T)` says
/// nothing about a `std::string` of 10 KiB: the default weigher counts what a value owns.
///
/// * strings and contiguous containers of trivially copyable elements: their capacity in bytes;
/// * other ranges (vector, map, list, …): the sum of their elements' weights plus a per-node
///   overhead for node-based containers;
/// * `std::optional`, `std::pair`, `std::tuple`, `std::shared_ptr`/`std::unique_ptr`: what they
///   hold;
/// * a type with an ADL-found `dogpile_weight(const T&) -> std::size_t`: that;
/// * anything else: `sizeof(T)`.
///
/// For your own types, either declare `std::size_t dogpile_weight(const User&)` next to
/// `User`, or specialize `dogpile::Weigher<User>` with `std::size_t operator()(const User&) const`.
/// The region stores `sizeof(T)` plus the weigher's estimate of heap memory as the entry weight.

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace dogpile {

template <class T, class Enable = void>
struct Weigher;
template <class T>
std::size_t weigh(const T& v);

namespace detail {

template <class T>
inline constexpr bool is_optional_like_v = false;
template <class T>
inline constexpr bool is_optional_like_v<std::optional<T>> = true;
template <class T>
inline constexpr bool is_smart_ptr_v = false;
template <class T>
inline constexpr bool is_smart_ptr_v<std::shared_ptr<T>> = true;
template <class T, class D>
inline constexpr bool is_smart_ptr_v<std::unique_ptr<T, D>> = true;
template <class T>
inline constexpr bool is_tuple_like_v = false;
template <class A, class B>
inline constexpr bool is_tuple_like_v<std::pair<A, B>> = true;
template <class... A>
inline constexpr bool is_tuple_like_v<std::tuple<A...>> = true;

template <class T>
concept has_adl_weight = requires(const T& v) {
  { dogpile_weight(v) } -> std::convertible_to<std::size_t>;
};

/// Bytes a node-based container spends per element beyond the element (two pointers and
/// allocator bookkeeping: libstdc++'s list/map/unordered nodes are 16–32 bytes plus malloc's).
inline constexpr std::size_t kNodeOverhead = 32;

/// Heap bytes owned by a part of a value, through its own (maybe specialized) weigher.
template <class T>
std::size_t part_bytes(const T& v) {
  const std::size_t w = weigh(v);
  return w > sizeof(T) ? w - sizeof(T) : 0;
}

/// Heap bytes owned by `v` beyond `sizeof(v)`.
template <class T>
std::size_t owned_bytes(const T& v) {
  if constexpr (has_adl_weight<T>) {
    const std::size_t w = dogpile_weight(v);
    return w > sizeof(T) ? w - sizeof(T) : 0;
  } else if constexpr (std::is_same_v<T, std::string>) {
    // Short strings live inside the object.
    return v.capacity() > 15 ? v.capacity() + 1 : 0;
  } else if constexpr (is_optional_like_v<T>) {
    return v ? part_bytes(*v) : 0;
  } else if constexpr (is_smart_ptr_v<T>) {
    using E = typename T::element_type;
    if constexpr (std::is_object_v<E> && !std::is_array_v<E>) {
      return v ? weigh(*v) : 0;
    } else {
      return 0;
    }
  } else if constexpr (is_tuple_like_v<T>) {
    return std::apply([](const auto&... e) { return (std::size_t{0} + ... + part_bytes(e)); }, v);
  } else if constexpr (std::ranges::sized_range<const T>) {
    using E = std::remove_cvref_t<std::ranges::range_reference_t<const T>>;
    std::size_t n = 0;
    if constexpr (std::ranges::contiguous_range<const T> && requires { v.capacity(); }) {
      n = v.capacity() * sizeof(E);
    } else if constexpr (std::ranges::contiguous_range<const T>) {
      n = std::ranges::size(v) * sizeof(E);
    } else {
      n = std::ranges::size(v) * (sizeof(E) + kNodeOverhead);
    }
    if constexpr (!std::is_trivially_copyable_v<E>) {
      for (const auto& e : v) n += part_bytes(e);
    }
    return n;
  } else {
    return 0;
  }
}

}  // namespace detail

/// The default weigher: `sizeof(T)` plus the heap memory `v` owns (see the file comment).
/// Specialize for your own types. Must be thread-safe and must not throw.
template <class T, class Enable>
struct Weigher {
  /// The weight of `v` in bytes.
  std::size_t operator()(const T& v) const { return sizeof(T) + detail::owned_bytes(v); }
};

/// The weight of `v` as `Weigher<T>` computes it.
template <class T>
std::size_t weigh(const T& v) {
  return Weigher<T>{}(v);
}

}  // namespace dogpile
