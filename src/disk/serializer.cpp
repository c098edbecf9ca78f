// The built-in value serializers (include/dogpile/disk/serializer.hpp). Compression is zlib's,
// JSON is nlohmann_json's: the formats are Python's zlib.compress / json.dumps, so the docs' small
// Disk subclasses read and write them.

#include "dogpile/disk/serializer.hpp"

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <nlohmann/json.hpp>

#include "dogpile/detail/json_decode.hpp"
#include "dogpile/detail/zlib.hpp"
#include "dogpile/disk/detail/convert.hpp"
#include "dogpile/error.hpp"

namespace dogpile {
namespace {

void check_level(int level, const char* who) {
  if (level < 0 || level > 9) {
    detail::throw_error<ValidationError>(std::string(who) + ": zlib level must be 0-9, not " +
                                         std::to_string(level));
  }
}

// zlib.compress(data, level): a zlib-wrapped deflate stream.
std::string deflate_bytes(std::string_view data, int level) {
  uLongf bound = compressBound(static_cast<uLong>(data.size()));
  std::string out(bound, '\0');
  int rc = compress2(reinterpret_cast<Bytef*>(out.data()), &bound,
                     reinterpret_cast<const Bytef*>(data.data()), static_cast<uLong>(data.size()),
                     level);
  if (rc != Z_OK) {
    detail::throw_error<Error>("disk serializer: zlib compress2 failed (" + std::to_string(rc) +
                               ")");
  }
  out.resize(bound);
  return out;
}

// zlib.decompress(data) bounded by max_bytes; the caller names the key and the serializer.
// A value inflating beyond the bound is refused before more than the bound is allocated.
// nullopt: not one complete zlib stream.
std::optional<std::string> inflate_or_throw(std::string_view data, std::size_t max_bytes,
                                            const char* who) {
  auto r = detail::zlib_inflate(data, max_bytes);
  switch (r.status) {
    case detail::InflateStatus::ok:
      return std::move(r.data);
    case detail::InflateStatus::too_large:
      detail::throw_error<CantDeserialize>(
          std::string(who) + ": the stored value inflates to more than max_value_bytes (" +
          std::to_string(max_bytes) + " bytes): corrupt or hostile");
    case detail::InflateStatus::corrupt:
      break;
  }
  return std::nullopt;
}

}  // namespace

// ---- JsonSerializer ----------------------------------------------------------------------------

JsonSerializer::JsonSerializer(int level, std::size_t max_value_bytes)
    : level_(level), max_value_bytes_(max_value_bytes) {
  check_level(level, "JsonSerializer");
}

std::string JsonSerializer::name() const { return "json"; }

DiskValue JsonSerializer::encode(const DiskValue& value) const {
  nlohmann::json j;
  if (const auto* i = std::get_if<std::int64_t>(&value)) {
    j = *i;
  } else if (const auto* d = std::get_if<double>(&value)) {
    if (!std::isfinite(*d)) {
      detail::throw_error<ValidationError>(
          "JsonSerializer: JSON has no NaN or infinity; store a finite number or use no "
          "serializer");
    }
    j = *d;
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    j = *s;
  } else {
    const auto& b = std::get<Bytes>(value);
    // Depth-limited: dump() below recurses once per nesting level.
    bool ok = true;
    try {
      j = detail::parse_json_limited(b.data, nlohmann::json::input_format_t::json);
    } catch (const nlohmann::json::exception&) {
      ok = false;
    } catch (const CantDeserialize& e) {
      detail::throw_error<ValidationError>(std::string("JsonSerializer: this bytes value ") +
                                           e.what() + " (max_nesting_depth)");
    }
    if (!ok) {
      detail::throw_error<ValidationError>(
          "JsonSerializer: this bytes value is not a JSON document and JSON has no bytes type; "
          "store text, a type with a JSON Codec<T>, or use ZlibSerializer / no serializer");
    }
  }
  std::string text;
  try {
    text = j.dump();
  } catch (const nlohmann::json::type_error& e) {  // invalid UTF-8 in a string
    detail::throw_error<ValidationError>(
        std::string("JsonSerializer: text is not valid UTF-8 (JSON strings are Unicode); store it "
                    "as bytes with ZlibSerializer or no serializer: ") +
        e.what());
  }
  return Bytes{deflate_bytes(text, level_)};
}

DiskValue JsonSerializer::decode(DiskValue stored) const {
  const auto* b = std::get_if<Bytes>(&stored);
  if (b == nullptr) {
    detail::throw_error<CantDeserialize>(
        std::string("JsonSerializer: the stored value is ") + detail::disk_value_kind(stored) +
        ", not zlib-compressed JSON bytes: it was written without this serializer (open the cache "
        "without a serializer to read it)");
  }
  const auto text = inflate_or_throw(b->data, max_value_bytes_, "JsonSerializer");
  if (!text) {
    detail::throw_error<CantDeserialize>(
        "JsonSerializer: the stored bytes are not a zlib stream: corrupt, or written without this "
        "serializer (open the cache without a serializer to read them)");
  }
  // Depth-limited (CantDeserialize beyond max_nesting_depth): dump() below recurses.
  nlohmann::json j;
  bool ok = true;
  try {
    j = detail::parse_json_limited(*text, nlohmann::json::input_format_t::json);
  } catch (const nlohmann::json::exception&) {
    ok = false;
  }
  if (!ok) {
    detail::throw_error<CantDeserialize>(
        "JsonSerializer: the stored value inflates to something that is not JSON (Python's "
        "NaN/Infinity are not JSON either)");
  }
  switch (j.type()) {
    case nlohmann::json::value_t::number_integer:
      return j.get<std::int64_t>();
    case nlohmann::json::value_t::number_unsigned: {
      auto u = j.get<std::uint64_t>();
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        return static_cast<std::int64_t>(u);
      }
      return static_cast<double>(u);
    }
    case nlohmann::json::value_t::number_float:
      return j.get<double>();
    case nlohmann::json::value_t::string:
      return j.get<std::string>();
    case nlohmann::json::value_t::boolean:
      return static_cast<std::int64_t>(j.get<bool>() ? 1 : 0);
    default:
      return Bytes{j.dump()};
  }
}

// ---- ZlibSerializer ----------------------------------------------------------------------------

ZlibSerializer::ZlibSerializer(std::size_t threshold, int level, std::size_t max_value_bytes)
    : threshold_(threshold), level_(level), max_value_bytes_(max_value_bytes) {
  check_level(level, "ZlibSerializer");
}

std::string ZlibSerializer::name() const { return "zlib"; }

DiskValue ZlibSerializer::encode(const DiskValue& value) const {
  const std::string* data = nullptr;
  char kind = 'b';
  if (const auto* s = std::get_if<std::string>(&value)) {
    if (s->size() < threshold_) return value;
    data = s;
    kind = 't';
  } else if (const auto* b = std::get_if<Bytes>(&value)) {
    // Small bytes that happen to begin with the magic are wrapped too: reading stays unambiguous.
    if (b->data.size() < threshold_ && !b->data.starts_with(magic)) return value;
    data = &b->data;
  } else {
    return value;
  }
  std::string out(magic);
  out += kind;
  out += deflate_bytes(*data, level_);
  return Bytes{std::move(out)};
}

DiskValue ZlibSerializer::decode(DiskValue stored) const {
  auto* b = std::get_if<Bytes>(&stored);
  if (b == nullptr || !b->data.starts_with(magic)) return stored;
  const std::string_view body = std::string_view(b->data).substr(magic.size());
  const char kind = body.empty() ? '\0' : body.front();
  if (kind != 't' && kind != 'b') {
    detail::throw_error<CantDeserialize>(
        "ZlibSerializer: the stored bytes begin with the compressed-value magic but have an "
        "unknown kind byte: corrupt, or not written by this serializer");
  }
  auto data = inflate_or_throw(body.substr(1), max_value_bytes_, "ZlibSerializer");
  if (!data) {
    detail::throw_error<CantDeserialize>(
        "ZlibSerializer: the compressed value's zlib stream is corrupt");
  }
  if (kind == 't') return std::move(*data);
  return Bytes{std::move(*data)};
}

}  // namespace dogpile
