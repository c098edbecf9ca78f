#pragma once
/// @file serializer.hpp
/// Pluggable value serialization for `DiskCache` and `FanoutCache`
/// (`DiskCacheOptions::serializer`, `FanoutCacheOptions::serializer`): what python-diskcache
/// users get by subclassing `Disk` (`JSONDisk`, a compressing Disk). A serializer sits between
/// the C++ value (already a `DiskValue`: integer, float, text or bytes, see `detail/convert.hpp`)
/// and the SQLite row/value file: `encode` runs on every store, `decode` on every read of a
/// value (get, get_item, get_many, pop, pull, peek, peekitem, memoize hits). Keys are never
/// serialized. `DiskCache::read`/`set_stream`/`file_path` bypass it (they stream the stored
/// bytes). `incr`/`decr` throw `ValidationError` on a cache with a serializer.
/// docs/disk.md, "Value serialization", gives the formats and the Python rule.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "dogpile/disk/types.hpp"
#include "dogpile/limits.hpp"

namespace dogpile {

/// Turns values into what a disk cache stores and back. Implementations must be stateless or
/// internally synchronized: one instance is shared by every thread and every shard.
///
/// ```cpp
/// struct Reverse final : dogpile::ValueSerializer {
///   dogpile::DiskValue encode(const dogpile::DiskValue& v) const override {
///     auto s = std::get<std::string>(v);  // this one stores only text
///     return dogpile::Bytes{std::string(s.rbegin(), s.rend())};
///   }
///   dogpile::DiskValue decode(dogpile::DiskValue v) const override {
///     auto* b = std::get_if<dogpile::Bytes>(&v);
///     if (b == nullptr) throw dogpile::CantDeserialize("not written by Reverse");
///     return std::string(b->data.rbegin(), b->data.rend());
///   }
///   std::string name() const override { return "reverse"; }
/// };
/// ```
class ValueSerializer {
 public:
  /// Virtual: serializers are used through `std::shared_ptr<const ValueSerializer>`.
  virtual ~ValueSerializer() = default;
  /// What to store for `value`. Called on every store, outside the cache's write lock, from
  /// any thread. @throws ValidationError (or another `dogpile::Error`) for a value this
  /// serializer cannot store; the store then does not happen.
  [[nodiscard]] virtual DiskValue encode(const DiskValue& value) const = 0;
  /// The value `stored` (as read from the row or value file) holds. Called on every read of a
  /// value, from any thread, sometimes while the cache's write lock is held (`peek`): keep
  /// it quick and never call the cache from it. @throws CantDeserialize when `stored` is not in
  /// this serializer's format (corrupt, or written without it); the cache adds the directory and
  /// key to the message. Other exceptions propagate unchanged.
  [[nodiscard]] virtual DiskValue decode(DiskValue stored) const = 0;
  /// A short name for messages (`"json"`, `"zlib"`).
  [[nodiscard]] virtual std::string name() const = 0;
};

/// Python's `JSONDisk` for values: every value is stored as the BLOB
/// `zlib.compress(json.dumps(value).encode('utf-8'), level)`.
///
/// * encode: integers and doubles become JSON numbers (NaN and infinities are refused: JSON has
///   none), text a JSON string (must be UTF-8), and **bytes must hold a JSON document**, which
///   is what every `Codec<T>` type with the default JSON codec (and `nlohmann::json`) produces;
///   bytes that are not JSON are refused with `ValidationError` (JSON has no bytes type).
/// * decode: a JSON integer becomes an int64 (one beyond int64 a double), a number with a
///   fraction or exponent a double, a string text, `true`/`false` the integers 1/0 (as C++
///   stores `bool`), and `null`, arrays and objects bytes holding their compact JSON, which
///   `get<T>` decodes with `Codec<T>`.
///
/// A stored value that is not a BLOB, does not inflate or is not JSON throws CantDeserialize.
/// Thread-safe (immutable).
class JsonSerializer final : public ValueSerializer {
 public:
  /// @param level zlib level 0-9 (Python JSONDisk's `compress_level`, default 1).
  /// @param max_value_bytes largest inflated JSON text `decode` accepts; a stored value that
  ///        inflates beyond it is CantDeserialize, refused before the memory is taken
  ///        (dogpile/limits.hpp). JSON nested deeper than `max_nesting_depth` is refused too.
  /// @throws ValidationError when `level` is outside 0-9.
  explicit JsonSerializer(int level = 1, std::size_t max_value_bytes = default_max_value_bytes);
  /// See the class comment. @throws ValidationError as described there.
  [[nodiscard]] DiskValue encode(const DiskValue& value) const override;
  /// See the class comment. @throws CantDeserialize as described there.
  [[nodiscard]] DiskValue decode(DiskValue stored) const override;
  /// `"json"`.
  [[nodiscard]] std::string name() const override;
  /// The zlib level.
  [[nodiscard]] int level() const noexcept { return level_; }

 private:
  int level_;
  std::size_t max_value_bytes_;
};

/// Compresses large text and bytes with zlib; leaves everything else as it is, so small values
/// and numbers stay plain int / float / str / bytes to python-diskcache.
///
/// Layout: text or bytes of at least `threshold` bytes (and bytes of any size that begin with the
/// magic, so that reading is unambiguous) are stored as the BLOB
/// `b"\x89DPZ" + kind + zlib.compress(data)`, `kind` being `b"t"` for text (UTF-8) or `b"b"` for
/// bytes. Any other value is stored unchanged. Values written without a serializer therefore
/// read back unchanged (unless they are bytes beginning with the magic), and a compressed
/// BLOB whose stream is corrupt throws CantDeserialize. Thread-safe (immutable).
class ZlibSerializer final : public ValueSerializer {
 public:
  /// The 4-byte magic that starts a compressed value.
  static constexpr std::string_view magic{
      "\x89"
      "DPZ",
      4};

  /// @param threshold text/bytes of this many bytes or more are compressed (default 1024).
  /// @param level zlib level 0-9 (default 6, zlib's default).
  /// @param max_value_bytes largest inflated value `decode` accepts; a compressed value that
  ///        inflates beyond it is CantDeserialize, refused before the memory is taken
  ///        (dogpile/limits.hpp).
  /// @throws ValidationError when `level` is outside 0-9.
  explicit ZlibSerializer(std::size_t threshold = 1024, int level = 6,
                          std::size_t max_value_bytes = default_max_value_bytes);
  /// See the class comment. Does not throw except std::bad_alloc.
  [[nodiscard]] DiskValue encode(const DiskValue& value) const override;
  /// See the class comment. @throws CantDeserialize on a corrupt compressed value.
  [[nodiscard]] DiskValue decode(DiskValue stored) const override;
  /// `"zlib"`.
  [[nodiscard]] std::string name() const override;
  /// The compression threshold in bytes.
  [[nodiscard]] std::size_t threshold() const noexcept { return threshold_; }

 private:
  std::size_t threshold_;
  int level_;
  std::size_t max_value_bytes_;
};

}  // namespace dogpile
