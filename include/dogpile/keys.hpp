#pragma once
/// @file keys.hpp
/// Cache keys: the `dogpile::to_key_string` customization point, the default function key
/// generators (`make_key`, `function_key_generator`, …) and the key manglers
/// (`sha1_mangle_key`, `length_conditional_mangler`).
///
/// Keys are built as dogpile.cache builds them, so a Python program and a C++ program that
/// cache the same function under the same namespace compute the same keys:
/// `namespace + "|" + " ".join(str(arg) for arg in args)`. `to_key_string(x)` is Python's
/// `str(x)`: `1` → `"1"`, `1.0` → `"1.0"`, `true` → `"True"`, `std::nullopt` → `"None"`,
/// `std::vector{1, 2}` → `"[1, 2]"`, `std::tuple{1, "a"}` → `"(1, 'a')"`.

#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <functional>
#include <iterator>
#include <optional>
#include <ostream>
#include <ranges>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dogpile/detail/python_float.hpp"
#include "dogpile/detail/sha1.hpp"
#include "dogpile/error.hpp"

namespace dogpile {

/// Turns a key into the key the backend sees (dogpile's `key_mangler`). Must be thread-safe.
using KeyMangler = std::function<std::string(std::string_view)>;

namespace detail {

/// Appends Python's `repr(str)`: single quotes unless the text has a `'` and no `"`; escapes
/// backslash, the quote, control characters. Bytes >= 0x80 (UTF-8) pass through unchanged.
inline void append_python_repr(std::string& out, std::string_view s) {
  const bool dq = s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos;
  const char quote = dq ? '"' : '\'';
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back(quote);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0x0F]);
    } else {
      out.push_back(c);
    }
  }
  out.push_back(quote);
}

// ---- classification ---------------------------------------------------------------------------

namespace key_string_adl {
// Poison pill: unqualified lookup stops here, so only argument-dependent lookup finds a user's
// `to_key_string(const T&)` (and never the `dogpile::to_key_string` object).
void to_key_string() = delete;

template <class T>
concept has_adl = requires(const T& x) {
  { to_key_string(x) } -> std::convertible_to<std::string>;
};

template <class T>
std::string call(const T& x) {
  return std::string(to_key_string(x));
}
}  // namespace key_string_adl

template <class T>
inline constexpr bool is_optional_v = false;
template <class T>
inline constexpr bool is_optional_v<std::optional<T>> = true;

template <class T>
concept null_like = std::same_as<T, std::nullptr_t> || std::same_as<T, std::nullopt_t>;

template <class T>
concept string_like = !null_like<T> && (std::convertible_to<const T&, std::string_view> ||
                                        std::convertible_to<const T&, std::string>);

template <class T>
concept tuple_like = requires {
  std::tuple_size<T>::value;
};

template <class T>
concept ostreamable = requires(std::ostream& os, const T& x) {
  os << x;
};

template <class T>
concept map_like = requires {
  typename T::key_type;
  typename T::mapped_type;
};

template <class T>
concept set_like = !map_like<T> && requires {
  typename T::key_type;
};

template <class T>
constexpr bool key_stringable();

template <class Tuple, std::size_t... I>
constexpr bool tuple_elements_key_stringable(std::index_sequence<I...> /*unused*/) {
  return (key_stringable<std::tuple_element_t<I, Tuple>>() && ...);
}

/// True if `to_key_string` accepts a `T` (checked recursively for containers and tuples).
template <class T>
constexpr bool key_stringable() {
  using U = std::remove_cvref_t<T>;
  if constexpr (key_string_adl::has_adl<U>) {
    return true;
  } else if constexpr (std::is_arithmetic_v<U> || std::is_enum_v<U> || null_like<U> ||
                       string_like<U>) {
    return true;
  } else if constexpr (is_optional_v<U>) {
    return key_stringable<typename U::value_type>();
  } else if constexpr (std::ranges::input_range<const U>) {
    return key_stringable<std::ranges::range_value_t<const U>>();
  } else if constexpr (tuple_like<U>) {
    return tuple_elements_key_stringable<U>(std::make_index_sequence<std::tuple_size_v<U>>{});
  } else {
    return ostreamable<U>;
  }
}

// ---- formatting -------------------------------------------------------------------------------

/// Appends Python's `str(x)` (`nested == false`) or `repr(x)` (inside a container) of `x`.
template <class T>
void append_key(std::string& out, const T& x, bool nested) {
  if constexpr (key_string_adl::has_adl<T>) {
    out += key_string_adl::call(x);
  } else if constexpr (std::same_as<T, bool>) {
    out += x ? "True" : "False";
  } else if constexpr (std::same_as<T, char>) {
    if (nested) {
      append_python_repr(out, std::string_view(&x, 1));
    } else {
      out.push_back(x);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    append_python_float(out, x);
  } else if constexpr (std::is_integral_v<T>) {
    std::array<char, 24> buf{};
    std::to_chars_result res{};
    if constexpr (std::is_signed_v<T>) {
      res = std::to_chars(buf.data(), buf.data() + buf.size(), static_cast<long long>(x));
    } else {
      res = std::to_chars(buf.data(), buf.data() + buf.size(), static_cast<unsigned long long>(x));
    }
    out.append(buf.data(), res.ptr);
  } else if constexpr (std::is_enum_v<T>) {
    append_key(out, +static_cast<std::underlying_type_t<T>>(x), nested);
  } else if constexpr (null_like<T>) {
    out += "None";
  } else if constexpr (string_like<T>) {
    std::string_view s;
    std::string tmp;
    if constexpr (std::is_pointer_v<T>) {
      if (x == nullptr) {
        out += "None";
        return;
      }
    }
    if constexpr (std::convertible_to<const T&, std::string_view>) {
      s = x;
    } else {
      tmp = x;
      s = tmp;
    }
    if (nested) {
      append_python_repr(out, s);
    } else {
      out += s;
    }
  } else if constexpr (is_optional_v<T>) {
    if (x) {
      append_key(out, *x, nested);
    } else {
      out += "None";
    }
  } else if constexpr (std::ranges::input_range<const T>) {
    const bool brace = map_like<T> || set_like<T>;
    if constexpr (set_like<T>) {
      if (std::ranges::empty(x)) {
        out += "set()";
        return;
      }
    }
    out.push_back(brace ? '{' : '[');
    bool first = true;
    for (const auto& e : x) {
      if (!first) out += ", ";
      first = false;
      if constexpr (map_like<T>) {
        append_key(out, std::get<0>(e), true);
        out += ": ";
        append_key(out, std::get<1>(e), true);
      } else {
        append_key(out, e, true);
      }
    }
    out.push_back(brace ? '}' : ']');
  } else if constexpr (tuple_like<T>) {
    out.push_back('(');
    std::apply(
        [&out](const auto&... e) {
          bool first = true;
          ((out += first ? "" : ", ", first = false, append_key(out, e, true)), ...);
        },
        x);
    if constexpr (std::tuple_size_v<T> == 1) out.push_back(',');
    out.push_back(')');
  } else {
    static_assert(ostreamable<T>, "dogpile::to_key_string: no conversion for this type");
    std::ostringstream os;
    os << x;
    out += os.str();
  }
}

/// The type of `dogpile::to_key_string`.
struct ToKeyStringFn {
  template <class T>
  requires(key_stringable<T>()) std::string operator()(const T& x) const {
    std::string out;
    append_key(out, x, false);
    return out;
  }
};

}  // namespace detail

/// Types `dogpile::to_key_string` accepts: integers, floating point, `bool`, `char`, strings,
/// enums, `std::optional`, `std::nullopt`/`nullptr`, tuples/pairs and ranges of accepted types,
/// any type with an ADL `to_key_string(const T&)` returning a string, and any type with an
/// `operator<<(std::ostream&, const T&)`.
template <class T>
concept KeyStringable = detail::key_stringable<T>();

/// The customization point that turns one function argument into its part of a cache key,
/// as Python's `str()`: integers as decimal; floating point as the shortest round-trip form
/// with Python's notation (`1.0`, `0.1`, `1e+16`, `inf`, `nan`); `true`/`false` as
/// `True`/`False`; strings verbatim; enums as their underlying integer; an empty optional as
/// `None`; tuples as `(1, 'a')`, single-element tuples as `(1,)`; maps as `{'a': 1}`, sets as
/// `{1, 2}`, other ranges as `[1, 2]` (elements inside containers use Python's `repr`, so
/// strings are quoted). Customize for your type with a function found by argument-dependent
/// lookup, `std::string to_key_string(const MyType&)`, which takes precedence; otherwise an
/// `operator<<` is used.
/// Thread-safety: stateless; safe from any thread.
inline constexpr detail::ToKeyStringFn to_key_string{};

/// `ns + "|" + args joined by " "`, each argument through `to_key_string`: dogpile.cache's
/// `function_key_generator`. `make_key("app.get_user", 42)` → `"app.get_user|42"`;
/// with no arguments the key is `"ns|"`.
template <KeyStringable... Args>
std::string make_key(std::string_view ns, const Args&... args) {
  std::string out(ns);
  out.push_back('|');
  [[maybe_unused]] std::size_t i = 0;
  (((i++ > 0 ? out.push_back(' ') : void()), detail::append_key(out, args, false)), ...);
  return out;
}

/// One key per argument, `ns + "|" + to_key_string(arg)`: dogpile.cache's
/// `function_multi_key_generator`, used by `cache_multi_on_arguments`.
template <KeyStringable... Args>
std::vector<std::string> make_keys([[maybe_unused]] std::string_view ns, const Args&... args) {
  std::vector<std::string> keys;
  keys.reserve(sizeof...(Args));
  (keys.push_back(make_key(ns, args)), ...);
  return keys;
}

/// `ns + "|" + parts joined by " "`, for key generators that hold the arguments already
/// converted to strings (type-erased generators).
inline std::string join_key(std::string_view ns, std::span<const std::string> parts) {
  std::string out(ns);
  out.push_back('|');
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.push_back(' ');
    out += parts[i];
  }
  return out;
}

/// A region's or decorator's key generator: builds the key of a decorated call from its
/// namespace and its arguments, each already converted with `to_key_string`
/// (`RegionOptions::function_key_generator`, `DecoratorOptions::key_generator`).
using FunctionKeyGenerator =
    std::function<std::string(std::string_view ns, const std::vector<std::string>& args)>;
/// The multi-key form: one key per argument.
using FunctionMultiKeyGenerator = std::function<std::vector<std::string>(
    std::string_view ns, const std::vector<std::string>& args)>;

/// The default `FunctionKeyGenerator`: `ns + "|" + args joined by " "`.
inline std::string default_key_generator(std::string_view ns,
                                         const std::vector<std::string>& args) {
  return join_key(ns, args);
}
/// The default `FunctionMultiKeyGenerator`: `ns + "|" + arg` for each argument.
inline std::vector<std::string> default_multi_key_generator(std::string_view ns,
                                                            const std::vector<std::string>& args) {
  std::vector<std::string> out;
  out.reserve(args.size());
  for (const auto& a : args) out.push_back(join_key(ns, std::span<const std::string>(&a, 1)));
  return out;
}

/// The default function key generator bound to a namespace: calling it with the function's
/// arguments returns `make_key(ns, args...)`. Copyable; thread-safe.
struct BoundKeyGenerator {
  std::string ns{};  ///< the namespace, e.g. "app.get_user"

  /// The key for these arguments.
  template <KeyStringable... Args>
  std::string operator()(const Args&... args) const {
    return make_key(ns, args...);
  }
};

/// The default multi-key generator bound to a namespace: one key per argument
/// (`make_keys(ns, args...)`). Copyable; thread-safe.
struct BoundMultiKeyGenerator {
  std::string ns{};  ///< the namespace, e.g. "app.get_users"

  /// One key per argument, in order.
  template <KeyStringable... Args>
  std::vector<std::string> operator()(const Args&... args) const {
    return make_keys(ns, args...);
  }
};

/// dogpile.cache's `function_key_generator(namespace, fn)`: a generator whose keys are
/// `ns + "|" + args joined by " "`.
inline BoundKeyGenerator function_key_generator(std::string_view ns) {
  return BoundKeyGenerator{std::string(ns)};
}

/// dogpile.cache's `function_multi_key_generator`: one key `ns + "|" + arg` per argument.
inline BoundMultiKeyGenerator function_multi_key_generator(std::string_view ns) {
  return BoundMultiKeyGenerator{std::string(ns)};
}

/// The SHA-1 hex digest of `key` (40 lowercase hex characters), equal to Python's
/// `hashlib.sha1(key.encode()).hexdigest()` and to dogpile.cache's `sha1_mangle_key`.
/// Use as `.key_mangler = dogpile::sha1_mangle_key`. Thread-safe.
/// @throws Error if libcrypto cannot compute SHA-1.
inline std::string sha1_mangle_key(std::string_view key) { return detail::sha1_hex(key); }

/// A mangler that applies `mangler` only to keys of at least `length` bytes and leaves shorter
/// keys unchanged: dogpile.cache's `length_conditional_mangler`. Example:
/// `length_conditional_mangler(250, dogpile::sha1_mangle_key)` for memcached's key limit.
/// The result is thread-safe if `mangler` is.
/// @throws ValidationError if `mangler` is empty.
inline KeyMangler length_conditional_mangler(std::size_t length, KeyMangler mangler) {
  if (!mangler) {
    detail::throw_error<ValidationError>("length_conditional_mangler: mangler must not be empty");
  }
  return [length, m = std::move(mangler)](std::string_view key) -> std::string {
    if (key.size() >= length) return m(key);
    return std::string(key);
  };
}

}  // namespace dogpile
