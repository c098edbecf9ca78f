#pragma once
/// @file codec.hpp
/// Values to bytes and back: `Codec<T>` (the payload) and the envelope (the metadata around it).
///
/// * `Codec<T>` turns a `T` into payload bytes. Strings and byte vectors pass through; any type
///   nlohmann_json can convert goes through JSON (default), MessagePack or CBOR.
///   `CodecOptions::string_codec = StringCodec::json` stores `std::string` as a JSON string
///   instead, for fleets shared with Python JSON serializers (`encode_payload`).
///   Specialize `dogpile::Codec<T>` for a type of your own.
/// * The envelope adds the creation time. By default it is byte-compatible with dogpile.cache:
///   `{"ct": 1700000000.123, "v": 2}|payload`. `EnvelopeFormat::compact` is a 20-byte binary
///   header instead. Payloads above `compress_threshold` are zlib-compressed (flagged in the
///   envelope; a Python reader does not understand that flag, so leave it off for interop).

#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/detail/json_decode.hpp"
#include "dogpile/detail/python_float.hpp"
#include "dogpile/detail/type_name.hpp"
#include "dogpile/detail/zlib.hpp"
#include "dogpile/error.hpp"
#include "dogpile/limits.hpp"
#include "dogpile/metadata.hpp"

namespace dogpile {

/// Payload encoding for types that go through nlohmann_json.
enum class Format : std::uint8_t {
  json,     ///< text JSON (default; what a Python dogpile JSON serializer reads)
  msgpack,  ///< nlohmann::json::to_msgpack
  cbor,     ///< nlohmann::json::to_cbor
};

namespace detail {
/// `j` written as `format` (text JSON, MessagePack or CBOR). Compiled in dogpile::core
/// (src/core/json_decode.cpp): nlohmann's writers are instantiated once there.
/// @throws nlohmann::json::exception (e.g. a string that is not UTF-8 cannot be JSON text).
std::string json_bytes(const nlohmann::json& j, Format format);
}  // namespace detail

/// Envelope (metadata) layout.
enum class EnvelopeFormat : std::uint8_t {
  dogpile,  ///< `{"ct": <float seconds>, "v": 2}|payload`, readable by Python dogpile.cache
  compact,  ///< binary: magic, version, flags, fixed64 microseconds, payload
};

/// How a region stores a `std::string` value on a byte backend (`CodecOptions::string_codec`).
/// The choice is a trade-off between C++ and Python: see docs/envelope.md, "Strings".
enum class StringCodec : std::uint8_t {
  /// The string's bytes are the payload (default): any bytes (binary data too), no quoting, no
  /// copy through a JSON writer. A Python dogpile.cache JSON deserializer cannot read it.
  raw,
  /// A string of the region's `Format`: a JSON string (`"text"`, what Python's `json.dumps`
  /// writes for a `str`), or a MessagePack/CBOR string. For fleets shared with a Python JSON
  /// serializer. The string must be valid UTF-8 (else `ValidationError` on write); a read of
  /// stored bytes that are not such a string is `TypeMismatch` (another type) or a miss (not
  /// JSON at all, e.g. a raw string written before the switch).
  json,
};

/// How a region serializes values for a byte backend. Plain aggregate.
struct CodecOptions {
  Format format = Format::json;                       ///< payload encoding
  StringCodec string_codec = StringCodec::raw;        ///< how `std::string` values are stored
  EnvelopeFormat envelope = EnvelopeFormat::dogpile;  ///< metadata layout
  std::size_t compress_threshold = 0;  ///< zlib-compress payloads at least this long; 0 = never
  int compress_level = 6;              ///< zlib level 1..9
  /// Largest payload a read decompresses; a larger one is `CantDeserialize` (a miss) before the
  /// memory is taken. Applies to compressed payloads only (see dogpile/limits.hpp).
  std::size_t max_value_bytes = default_max_value_bytes;
};

namespace detail {
/// Numbers whose decoding is range-checked (not bool or the character types).
template <class T>
inline constexpr bool is_checked_number_v =
    std::is_floating_point_v<T> ||
    (std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char> &&
     !std::is_same_v<T, wchar_t> && !std::is_same_v<T, char8_t> && !std::is_same_v<T, char16_t> &&
     !std::is_same_v<T, char32_t>);

/// `j` as the number type `T`, or CantDeserialize when it is not a number or does not fit
/// (nlohmann's own conversion would truncate silently, or be undefined behaviour for floats
/// out of range). An integral `T` accepts a float only when it is a whole number.
template <class T>
T json_to_number(const nlohmann::json& j) {
  if constexpr (std::is_integral_v<T>) {
    if (j.is_number_unsigned()) {
      const auto u = j.get<std::uint64_t>();
      if (std::in_range<T>(u)) return static_cast<T>(u);
    } else if (j.is_number_integer()) {
      const auto i = j.get<std::int64_t>();
      if (std::in_range<T>(i)) return static_cast<T>(i);
    } else if (j.is_number_float()) {
      const double d = j.get<double>();
      // The bounds are powers of two, exact in a double.
      const double lo = static_cast<double>(std::numeric_limits<T>::min());
      const double hi = static_cast<double>(std::numeric_limits<T>::max()) + 1.0;
      if (d >= lo && d < hi && std::trunc(d) == d) return static_cast<T>(d);
    }
  } else if (j.is_number()) {
    const double d = j.get<double>();
    if (!std::isfinite(d) || std::fabs(d) <= static_cast<double>(std::numeric_limits<T>::max())) {
      return static_cast<T>(d);
    }
  }
  throw_error<TypeMismatch>("the stored " + std::string(j.type_name()) + " " +
                            (j.is_number() ? j.dump() + " " : std::string()) +
                            "does not fit the requested type " + type_name<T>());
}
}  // namespace detail

/// True when nlohmann_json converts `T` both ways (a `to_json`/`from_json` pair found by ADL,
/// an `nlohmann::adl_serializer<T>` specialization, or a type nlohmann supports natively).
template <class T>
concept JsonConvertible = std::same_as<T, nlohmann::json> ||
    requires(nlohmann::json& j, const nlohmann::json& cj, const T& v, T& out) {
  nlohmann::adl_serializer<T>::to_json(j, v);
  nlohmann::adl_serializer<T>::from_json(cj, out);
};

/// Payload codec. The primary template handles every type nlohmann_json can convert.
/// Specialize for your own types: `static std::string encode(const T&, Format)` and
/// `static T decode(std::string_view, Format)` (throw `CantDeserialize` on bad bytes).
template <class T, class Enable = void>
struct Codec {
  /// Marks the primary (JSON) template, so `HasCodec` can tell it from a specialization.
  using dogpile_json_codec = void;
  /// `value` as payload bytes. @throws ValidationError if it cannot be written (e.g. a string
  /// that is not UTF-8 cannot be JSON text).
  static std::string encode(const T& value, Format format) requires JsonConvertible<T> {
    try {
      return detail::json_bytes(nlohmann::json(value), format);
    } catch (const nlohmann::json::exception& e) {
      // e.g. a string that is not valid UTF-8 cannot be written as JSON text.
      detail::throw_error<ValidationError>(std::string("cannot encode value: ") + e.what());
    }
  }
  /// The value in `bytes`. @throws CantDeserialize when the bytes are not valid in `format`
  /// or nest arrays/objects deeper than `max_nesting_depth`;
  /// TypeMismatch when they are, but hold something that does not convert to `T` (another
  /// type, or a number that does not fit).
  static T decode(std::string_view bytes, Format format) requires JsonConvertible<T> {
    nlohmann::json j;
    try {
      // Depth-limited (max_nesting_depth): a deeply nested payload is refused before the
      // reader, or the get<T> below, recurses into it.
      using input_format = nlohmann::json::input_format_t;
      switch (format) {
        case Format::msgpack:
          j = detail::parse_json_limited(bytes, input_format::msgpack);
          break;
        case Format::cbor:
          j = detail::parse_json_limited(bytes, input_format::cbor);
          break;
        case Format::json:
          j = detail::parse_json_limited(bytes, input_format::json);
          break;
      }
    } catch (const nlohmann::json::exception& e) {
      detail::throw_error<CantDeserialize>(std::string("cannot decode value: ") + e.what());
    }
    if constexpr (detail::is_checked_number_v<T>) {
      return detail::json_to_number<T>(j);
    } else {
      try {
        return j.template get<T>();
      } catch (const nlohmann::json::exception& e) {
        detail::throw_error<TypeMismatch>("the stored " + std::string(j.type_name()) +
                                          " does not convert to " + detail::type_name<T>() + ": " +
                                          e.what());
      }
    }
  }
  /// A type without a codec: a compile error with one message saying what to do, instead of
  /// nlohmann_json's template backtrace (`HasCodec` is false for it: a region never calls this).
  static std::string encode(const T& /*value*/, Format /*format*/) requires(!JsonConvertible<T>) {
    static_assert(JsonConvertible<T>,
                  "dogpile::Codec<T>: this type has no codec; define to_json/from_json for it "
                  "(nlohmann_json, e.g. NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) or specialize "
                  "dogpile::Codec<T>");
    std::terminate();
  }
  /// A type without a codec: a compile error, as `encode`.
  static T decode(std::string_view /*bytes*/, Format /*format*/) requires(!JsonConvertible<T>) {
    static_assert(JsonConvertible<T>,
                  "dogpile::Codec<T>: this type has no codec; define to_json/from_json for it "
                  "(nlohmann_json, e.g. NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) or specialize "
                  "dogpile::Codec<T>");
    std::terminate();
  }
};

/// Strings pass through unchanged (whatever the format).
template <>
struct Codec<std::string> {
  /// The string itself.
  static std::string encode(const std::string& v, Format /*format*/) { return v; }
  /// The bytes as a string.
  static std::string decode(std::string_view b, Format /*format*/) { return std::string(b); }
};

/// Byte vectors pass through unchanged.
template <class Byte>
struct Codec<std::vector<Byte>, std::enable_if_t<sizeof(Byte) == 1 && std::is_trivial_v<Byte>>> {
  /// The bytes themselves.
  static std::string encode(const std::vector<Byte>& v, Format /*format*/) {
    return {reinterpret_cast<const char*>(v.data()), v.size()};
  }
  /// The bytes as a vector.
  static std::vector<Byte> decode(std::string_view b, Format /*format*/) {
    std::vector<Byte> out(b.size());
    if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
    return out;
  }
};

/// True when `Codec<T>` can encode and decode `T` (a JSON-convertible type, a string, a byte
/// vector, or your own `Codec<T>` specialization): what a byte backend needs.
template <class T>
concept HasCodec = requires(const T& v, std::string_view b, Format f) {
  { Codec<T>::encode(v, f) } -> std::convertible_to<std::string>;
  { Codec<T>::decode(b, f) } -> std::convertible_to<T>;
}
&&(JsonConvertible<T> || !requires { typename Codec<T>::dogpile_json_codec; });

namespace detail {
/// What to do when a value of type `T` meets a backend that stores bytes and `T` has no codec.
template <class T>
std::string no_codec_message(std::string_view where) {
  return "cannot store a " + type_name<T>() + " in " + std::string(where) +
         ": it keeps bytes, and this type has no codec. Make it serializable: define "
         "to_json/from_json for it (nlohmann_json, e.g. NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE), or "
         "specialize dogpile::Codec<" +
         type_name<T>() + ">; or keep it on the `memory` backend, which stores live objects";
}
}  // namespace detail

/// An unpacked envelope: metadata plus the (decompressed) payload bytes.
struct Unpacked {
  Metadata meta{};        ///< the envelope's metadata
  std::string payload{};  ///< the payload bytes, decompressed
};

namespace detail {
inline constexpr char kCompactMagic0 = '\xDC';
inline constexpr char kCompactMagic1 = 'P';
inline constexpr std::uint8_t kFlagZlib = 1;

inline void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline std::uint64_t get_u64(std::string_view in) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return v;
}
}  // namespace detail

namespace detail {
/// True when `ct` is a creation time an envelope may carry: finite and within
/// +-`max_unix_seconds` of the epoch.
inline bool valid_envelope_ct(double ct) {
  return std::isfinite(ct) && std::fabs(ct) <= max_unix_seconds;
}
/// True when `delta` (how long creating the value took) is finite, not negative and not absurd.
inline bool valid_envelope_delta(double delta) {
  return std::isfinite(delta) && delta >= 0 && delta <= max_unix_seconds;
}
}  // namespace detail

/// Wraps `payload` in an envelope.
/// @throws ValidationError when `meta.ct` is outside +-`max_unix_seconds` or `meta.delta` is
/// negative, not finite or beyond it (such an envelope would read back as corrupt); BackendError
/// if compression fails (out of memory).
inline std::string pack_envelope(const Metadata& meta, std::string_view payload,
                                 const CodecOptions& opts) {
  if (!detail::valid_envelope_ct(meta.ct) || !detail::valid_envelope_delta(meta.delta)) {
    detail::throw_error<ValidationError>(
        "envelope: creation time " + std::to_string(meta.ct) + " / delta " +
        std::to_string(meta.delta) + " out of range (the creation time must be within " +
        std::to_string(max_unix_seconds) + " s of the Unix epoch; is the clock sane?)");
  }
  std::string compressed;
  bool zipped = false;
  if (opts.compress_threshold > 0 && payload.size() >= opts.compress_threshold) {
    compressed = detail::zlib_compress(payload, opts.compress_level);
    if (compressed.size() < payload.size()) {
      zipped = true;
      payload = compressed;
    }
  }
  std::string out;
  if (opts.envelope == EnvelopeFormat::compact) {
    out.reserve(payload.size() + 20);
    out.push_back(detail::kCompactMagic0);
    out.push_back(detail::kCompactMagic1);
    out.push_back(static_cast<char>(meta.v));
    out.push_back(static_cast<char>(zipped ? detail::kFlagZlib : 0));
    detail::put_u64(out, static_cast<std::uint64_t>(static_cast<std::int64_t>(meta.ct * 1e6)));
    detail::put_u64(out, static_cast<std::uint64_t>(static_cast<std::int64_t>(meta.delta * 1e6)));
  } else {
    // Python's json.dumps writes `{"ct": 1700000000.123, "v": 2}`: floats as repr() (shortest
    // round trip), which append_python_float reproduces, so the header is byte-identical.
    out.reserve(payload.size() + 64);
    out += "{\"ct\": ";
    detail::append_python_float(out, meta.ct);
    out += ", \"v\": ";
    out += std::to_string(meta.v);
    if (meta.delta > 0) {
      out += ", \"d\": ";
      detail::append_python_float(out, meta.delta);
    }
    if (zipped) out += ", \"z\": 1";
    out += "}|";
  }
  out.append(payload.data(), payload.size());
  return out;
}

namespace detail {
/// Reads the top-level "ct", "v", "d" and "z" members of a dogpile envelope header as
/// nlohmann's SAX parser reports them (the values of other members, and anything nested, are
/// skipped). Internal to `unpack_envelope`.
struct EnvelopeHeaderSax {
  using json = nlohmann::json;
  int depth = 0;
  bool object = false;  // the top level is an object
  std::string member;   // the current top-level key
  double ct = 0;
  bool has_ct = false;
  int v = 0;
  double d = 0;
  bool has_d = false;
  bool has_z = false;

  // A top-level member's number.
  void number(double x, bool integral, std::int64_t i) {
    if (depth != 1) return;
    if (member == "ct") {
      ct = x;
      has_ct = true;
    } else if (member == "v" && integral) {
      v = std::in_range<int>(i) ? static_cast<int>(i) : -1;  // no version of ours
    } else if (member == "d") {
      d = x;
      has_d = true;
    }
  }
  bool null() { return true; }
  bool boolean(bool /*b*/) { return true; }
  bool number_integer(json::number_integer_t i) {
    number(static_cast<double>(i), true, i);
    return true;
  }
  bool number_unsigned(json::number_unsigned_t u) {
    number(static_cast<double>(u), u <= static_cast<json::number_unsigned_t>(INT32_MAX),
           static_cast<std::int64_t>(std::min<json::number_unsigned_t>(u, INT32_MAX)));
    return true;
  }
  bool number_float(json::number_float_t f, const json::string_t& /*text*/) {
    number(f, false, 0);
    return true;
  }
  bool string(json::string_t& /*s*/) { return true; }
  bool binary(json::binary_t& /*b*/) { return true; }
  bool start_object(std::size_t /*n*/) {
    if (depth == 0) object = true;
    ++depth;
    return true;
  }
  bool key(json::string_t& k) {
    if (depth == 1) {
      member = k;
      if (k == "z") has_z = true;
    }
    return true;
  }
  bool end_object() {
    --depth;
    return true;
  }
  bool start_array(std::size_t /*n*/) {
    ++depth;
    return true;
  }
  bool end_array() {
    --depth;
    return true;
  }
  bool parse_error(std::size_t /*pos*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& /*e*/) {
    return false;
  }
};
}  // namespace detail

namespace detail {
/// An envelope's metadata and a view of its payload, as stored (still compressed when
/// `zipped`): what a reader needs before it decides to copy or inflate anything.
struct EnvelopeView {
  Metadata meta{};           // the envelope's metadata
  std::string_view payload;  // the payload bytes inside the envelope
  bool zipped = false;       // the payload is the length-prefixed zlib stream of section 3
};

/// One JSON number of the form `-?(0|[1-9][0-9]*)(\.[0-9]+)?` at `[p, end)` (what Python's
/// repr writes for a time in the envelope's range), as a double rounded as strtod (and so
/// nlohmann) rounds it. Returns the end of the number, or null for anything else (an exponent,
/// a leading zero, no digits, ...), which sends the caller to the general parser.
inline const char* scan_simple_number(const char* p, const char* end, double& out) {
  const auto digit = [&](const char* q) { return q < end && *q >= '0' && *q <= '9'; };
  const bool negative = p < end && *p == '-';
  if (negative) ++p;
  const char* const magnitude = p;
  if (!digit(p)) return nullptr;
  // Every digit into one integer mantissa while it stays below 2^53 (exact in a double).
  std::uint64_t mantissa = 0;
  int digits = 0;
  if (*p == '0') {
    ++p;
    if (digit(p)) return nullptr;  // a leading zero is not JSON
  } else {
    for (; digit(p); ++p, ++digits) mantissa = mantissa * 10 + static_cast<unsigned>(*p - '0');
  }
  int fraction = 0;
  bool integral = true;
  if (p < end && *p == '.') {
    ++p;
    if (!digit(p)) return nullptr;
    integral = false;
    for (; digit(p); ++p, ++fraction, ++digits) {
      mantissa = mantissa * 10 + static_cast<unsigned>(*p - '0');
    }
  }
  if (p < end && (*p == 'e' || *p == 'E')) return nullptr;
  // Clinger's fast path: a mantissa below 2^53 and a power of ten up to 10^22 are both exact
  // doubles, so one division rounds correctly, exactly as strtod would. (pack_envelope's
  // microsecond times always fit; Python's 17-digit times take from_chars below.)
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  if (digits <= 18 && mantissa < (std::uint64_t{1} << 53) && fraction <= 22) {
    out = static_cast<double>(mantissa) / kPow10[fraction];
  } else {
    if (p - magnitude > 40) return nullptr;  // far more digits than a time in range needs
    const auto r = std::from_chars(magnitude, p, out);
    if (r.ec != std::errc() || r.ptr != p) return nullptr;
  }
  // nlohmann reads "-0" as the integer 0, "-0.0" as the double -0.0.
  if (negative && !(integral && out == 0)) out = -out;
  return p;
}

/// The fast path for the exact header `pack_envelope` and Python's `json.dumps` write:
/// `{"ct": <number>, "v": <int>[, "d": <number>][, "z": 1]}|`, members in that order, with
/// Python's separators. Fills `out` and returns true only when the header is exactly that;
/// anything else (other spacing, order, members, an exponent, ...) returns false and goes to
/// the general parser, which then accepts or rejects it. Range checks are the caller's.
inline bool parse_dogpile_header_fast(std::string_view bytes, EnvelopeView& out) {
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  // `lit` (without its NUL) at p: advance past it.
  const auto take = [&]<std::size_t N>(const char(&lit)[N]) {
    if (static_cast<std::size_t>(end - p) < N - 1 || std::memcmp(p, lit, N - 1) != 0) return false;
    p += N - 1;
    return true;
  };
  if (!take("{\"ct\": ")) return false;
  p = scan_simple_number(p, end, out.meta.ct);
  if (p == nullptr || !take(", \"v\": ")) return false;
  // The version: a small non-negative integer (Python writes 2); anything else goes to the
  // general parser, which knows what nlohmann makes of it.
  int v = 0;
  int digits = 0;
  for (; p < end && *p >= '0' && *p <= '9'; ++p, ++digits) {
    if (digits == 9 || (digits == 1 && v == 0)) return false;  // too long, or a leading zero
    v = v * 10 + (*p - '0');
  }
  if (digits == 0) return false;
  out.meta.v = v;
  out.meta.delta = 0;
  if (take(", \"d\": ")) {
    p = scan_simple_number(p, end, out.meta.delta);
    if (p == nullptr) return false;
  }
  out.zipped = take(", \"z\": 1");
  if (!take("}|")) return false;
  out.payload = std::string_view(p, static_cast<std::size_t>(end - p));
  return true;
}

/// `header` through nlohmann's SAX parser (strict JSON) into `sax`; false when it is not JSON.
/// Compiled in dogpile::core (src/core/json_decode.cpp), so nlohmann's parser is instantiated
/// there once. @throws what nlohmann's parser throws.
bool sax_parse_header(std::string_view header, EnvelopeHeaderSax& sax);

/// The general reader of a dogpile (JSON) header: any JSON object before the first `|` with a
/// numeric `ct`, read with nlohmann's SAX parser. Range checks are the caller's.
/// @throws CantDeserialize when there is no `|` or the header is not such an object.
template <class = void>
void parse_dogpile_header_general(std::string_view bytes, EnvelopeView& u) {
  u = EnvelopeView{};
  auto bar = bytes.find('|');
  if (bar == std::string_view::npos) {
    throw_error<CantDeserialize>("envelope has no '|' separator");
  }
  // nlohmann's SAX parser: the same JSON grammar as json::parse without building a DOM
  // (the header is read for every value; the DOM's allocations dominated a cache hit).
  EnvelopeHeaderSax sax;
  const bool ok = sax_parse_header(bytes.substr(0, bar), sax);
  if (!ok || !sax.object || !sax.has_ct) {
    throw_error<CantDeserialize>("envelope metadata is not {\"ct\": <number>, ...}");
  }
  u.meta.ct = sax.ct;
  u.meta.v = sax.v;
  if (sax.has_d) u.meta.delta = sax.d;
  u.zipped = sax.has_z;
  u.payload = bytes.substr(bar + 1);
}

/// The metadata and payload view of either envelope format (detected from the first bytes),
/// without copying the payload.
/// @throws CantDeserialize on corrupt or truncated bytes, and on a creation time outside
/// +-`max_unix_seconds` (or a negative or absurd delta).
/// (A template for the reason `unpack_envelope` is one.)
template <class = void>
EnvelopeView view_envelope(std::string_view bytes) {
  EnvelopeView u;
  if (bytes.size() >= 2 && bytes[0] == kCompactMagic0 && bytes[1] == kCompactMagic1) {
    if (bytes.size() < 20) throw_error<CantDeserialize>("truncated compact envelope");
    u.meta.v = static_cast<unsigned char>(bytes[2]);
    u.zipped = (static_cast<unsigned char>(bytes[3]) & kFlagZlib) != 0;
    u.meta.ct = static_cast<double>(static_cast<std::int64_t>(get_u64(bytes.substr(4)))) / 1e6;
    u.meta.delta = static_cast<double>(static_cast<std::int64_t>(get_u64(bytes.substr(12)))) / 1e6;
    u.payload = bytes.substr(20);
  } else if (!parse_dogpile_header_fast(bytes, u)) {
    parse_dogpile_header_general(bytes, u);
  }
  // A stored time outside the range is corrupt: converting it to a TimePoint would overflow.
  if (!valid_envelope_ct(u.meta.ct) || !valid_envelope_delta(u.meta.delta)) {
    throw_error<CantDeserialize>("envelope creation time or delta out of range");
  }
  return u;
}
}  // namespace detail

/// Parses either envelope format (detected from the first bytes).
/// @throws CantDeserialize on corrupt or truncated bytes, on a creation time outside
/// +-`max_unix_seconds` (or a negative or absurd delta), and on a compressed payload that would
/// inflate beyond `max_value_bytes` (refused before it is inflated).
/// (A template only so that nlohmann's parser is instantiated where envelopes are read, not in
/// every file that includes this header; call it as `unpack_envelope(bytes)`.)
template <class = void>
Unpacked unpack_envelope(std::string_view bytes,
                         std::size_t max_value_bytes = default_max_value_bytes) {
  const detail::EnvelopeView e = detail::view_envelope(bytes);
  Unpacked u;
  u.meta = e.meta;
  if (e.zipped) {
    u.payload = detail::zlib_decompress(e.payload, max_value_bytes);
  } else {
    u.payload.assign(e.payload.data(), e.payload.size());
  }
  return u;
}

/// `value` as payload bytes under `opts`: `Codec<T>` with `opts.format`, except that a
/// `std::string` is stored as `opts.string_codec` says.
/// @throws ValidationError when the value cannot be written (e.g. a string that is not UTF-8
/// under `StringCodec::json`).
template <class T>
std::string encode_payload(const T& value, const CodecOptions& opts) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (opts.string_codec == StringCodec::json) {
      return Codec<nlohmann::json>::encode(nlohmann::json(value), opts.format);
    }
  }
  return Codec<T>::encode(value, opts.format);
}

/// Payload bytes as a `T` under `opts` (the inverse of `encode_payload`).
/// @throws CantDeserialize on bytes that are not valid in `opts.format`; TypeMismatch when they
/// hold something that is not a `T` (under `StringCodec::json`, a `std::string` read of a
/// stored number or object).
template <class T>
T decode_payload(std::string_view bytes, const CodecOptions& opts) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (opts.string_codec == StringCodec::json) {
      nlohmann::json j = Codec<nlohmann::json>::decode(bytes, opts.format);
      if (!j.is_string()) {
        detail::throw_error<TypeMismatch>(
            "the stored " + std::string(j.type_name()) +
            " is not a string (the region stores strings with StringCodec::json)");
      }
      return std::move(j.get_ref<std::string&>());
    }
  }
  return Codec<T>::decode(bytes, opts.format);
}

/// Encodes `value` with `encode_payload` (`Codec<T>`) and wraps it in an envelope.
template <class T>
std::string encode_value(const T& value, const Metadata& meta, const CodecOptions& opts) {
  static_assert(HasCodec<T>,
                "dogpile::encode_value: T has no dogpile::Codec<T>; define to_json/from_json "
                "for it (nlohmann_json) or specialize dogpile::Codec<T>");
  return pack_envelope(meta, encode_payload(value, opts), opts);
}

}  // namespace dogpile
