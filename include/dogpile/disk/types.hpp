#pragma once
/// @file types.hpp
/// Vocabulary types of the disk cache: `Bytes`, `Key`, `DiskValue`, the eviction policies, the
/// per-call option structs and the disk-specific exceptions. Included by `cache.hpp`.

#include <chrono>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "dogpile/clock.hpp"
#include "dogpile/duration.hpp"
#include "dogpile/error.hpp"

namespace dogpile {

/// Raw bytes: Python `bytes`, stored as an SQLite BLOB. Distinct from `std::string`, which is
/// text (Python `str`, SQLite TEXT, expected to be UTF-8). Every constructor keeps every byte,
/// NULs included:
///
/// ```cpp
/// dogpile::Bytes a{std::string_view("\x00\x01key", 5)};  // 5 bytes
/// dogpile::Bytes b{"\x00\x01key"};                        // a literal: all 5 bytes (N - 1)
/// dogpile::Bytes c{std::string(...)};                     // the string's bytes
/// ```
///
/// A `const char*` that is not an array is refused (its length would be a guess at the first
/// NUL); wrap it in a `std::string_view` with an explicit length.
struct Bytes {
  /// Empty.
  Bytes() = default;
  /// Takes `bytes` as they are.
  explicit Bytes(std::string bytes) noexcept : data(std::move(bytes)) {}
  /// Copies `bytes`: all `bytes.size()` of them, NULs included.
  explicit Bytes(std::string_view bytes) : data(bytes) {}
  /// Copies a character array such as a string literal: its `N - 1` bytes (all of them but the
  /// terminating NUL the compiler adds), NULs inside included, so `Bytes{"\x00\x01key"}` holds
  /// 5 bytes.
  template <std::size_t N>
  explicit Bytes(const char (&literal)[N]) : data(literal, N - 1) {}
  /// A pointer is not an array: refused (see the type comment). A template, so that a literal
  /// still picks the array constructor above.
  template <class P>
  requires std::is_pointer_v<P>
  explicit Bytes(P) = delete;

  std::string data;  ///< the bytes (any content, NULs included)

  friend bool operator==(const Bytes&, const Bytes&) = default;
  friend auto operator<=>(const Bytes&, const Bytes&) = default;
};

/// A disk-cache key: int64, double, text or bytes, stored natively (`raw = 1`) exactly as
/// python-diskcache stores `int`, `float`, `str` and `bytes` keys, so both read each other's keys.
/// As in diskcache, `1` and `1.0` are the same key in one `DiskCache` (SQLite compares numbers
/// numerically) but usually route to different `FanoutCache` shards.
/// Keys Python pickled (tuples, `None`, big ints…) cannot be named from C++ and are skipped by
/// key listings.
class Key {
 public:
  /// The stored alternatives, in SQLite's sort order.
  using Variant = std::variant<std::int64_t, double, std::string, Bytes>;

  /// An integer key. @throws ValidationError if an unsigned value does not fit int64.
  template <std::integral I>
  requires(!std::same_as<I, bool>)
      Key(I v)  // NOLINT(google-explicit-constructor): keys convert implicitly by design
      : v_(checked_int(v)) {}
  /// A floating-point key (Python float; SQLite REAL).
  template <std::floating_point F>
  Key(F v) : v_(static_cast<double>(v)) {}  // NOLINT(google-explicit-constructor)
  /// A text key (Python str; SQLite TEXT).
  Key(std::string v) : v_(std::move(v)) {}  // NOLINT(google-explicit-constructor)
  /// A text key from a view (all `v.size()` characters).
  Key(std::string_view v) : v_(std::string(v)) {}  // NOLINT(google-explicit-constructor)
  /// A text key from a NUL-terminated string.
  Key(const char* v) : v_(std::string(v)) {}  // NOLINT(google-explicit-constructor)
  /// A bytes key (Python bytes; SQLite BLOB).
  Key(Bytes v) : v_(std::move(v)) {}  // NOLINT(google-explicit-constructor)
  /// From the variant.
  explicit Key(Variant v) : v_(std::move(v)) {}

  /// The stored alternative.
  [[nodiscard]] const Variant& value() const noexcept { return v_; }
  /// True for an integer key.
  [[nodiscard]] bool is_int() const noexcept { return v_.index() == 0; }
  /// True for a floating-point key.
  [[nodiscard]] bool is_real() const noexcept { return v_.index() == 1; }
  /// True for a text key.
  [[nodiscard]] bool is_text() const noexcept { return v_.index() == 2; }
  /// True for a bytes key.
  [[nodiscard]] bool is_bytes() const noexcept { return v_.index() == 3; }
  /// The integer (throws std::bad_variant_access if not an int key).
  [[nodiscard]] std::int64_t as_int() const { return std::get<0>(v_); }
  /// The double (throws std::bad_variant_access if not a real key).
  [[nodiscard]] double as_real() const { return std::get<1>(v_); }
  /// The text (throws std::bad_variant_access if not a text key).
  [[nodiscard]] const std::string& as_text() const { return std::get<2>(v_); }
  /// The bytes (throws std::bad_variant_access if not a bytes key).
  [[nodiscard]] const Bytes& as_bytes() const { return std::get<3>(v_); }
  /// A Python-like repr for messages and the CLI: `42`, `1.5`, `'text'`, `b'\\x00ab'`.
  [[nodiscard]] std::string repr() const;

  friend bool operator==(const Key&, const Key&) = default;
  friend auto operator<=>(const Key&, const Key&) = default;

 private:
  template <class I>
  static std::int64_t checked_int(I v) {
    if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t)) {
      if (v > static_cast<I>(std::numeric_limits<std::int64_t>::max())) {
        detail::throw_error<ValidationError>("key: unsigned integer does not fit int64");
      }
    }
    return static_cast<std::int64_t>(v);
  }
  Variant v_;
};

/// A value as stored natively: INTEGER, REAL, TEXT or BLOB (python-diskcache mode RAW, or
/// TEXT/BINARY when held in a file). `get<DiskValue>` returns whatever is stored.
using DiskValue = std::variant<std::int64_t, double, std::string, Bytes>;

/// The eviction policy (python-diskcache's `eviction_policy` setting, same names on disk with
/// dashes: `least-recently-stored`, …).
enum class EvictionPolicy : std::uint8_t {
  least_recently_stored,  ///< cull by store_time (default)
  least_recently_used,    ///< cull by access_time (updated on get; buffered, see DiskCache)
  least_frequently_used,  ///< cull by access_count (updated on get; buffered)
  none,                   ///< never cull by size (expired rows are still culled)
};

/// The on-disk name of a policy (`"least-recently-used"`, …).
std::string_view to_string(EvictionPolicy p) noexcept;
/// Parses an on-disk policy name. @throws ValidationError on an unknown name.
EvictionPolicy eviction_policy_from_string(std::string_view name);

/// Which end of a queue.
enum class Side : std::uint8_t { front, back };

/// Options of `set`, `add`, `set_stream`, `set_many`. Plain aggregate.
struct SetOptions {
  std::optional<Duration> expire{};  ///< time to live (`5s`, `1.5s`…); nullopt = never expires
  std::optional<Key> tag{};          ///< tag (int, double, text or bytes)
  bool retry = false;  ///< wait for the write lock without a deadline instead of `timeout`
};

/// Options of `push`. Plain aggregate.
struct PushOptions {
  std::optional<std::string> prefix{};  ///< nullopt: int keys; else text keys `prefix-%015d`
  Side side = Side::back;               ///< which end to push on
  std::optional<Duration> expire{};     ///< time to live; nullopt = never expires
  std::optional<Key> tag{};             ///< tag
  bool retry = false;                   ///< wait for the write lock without deadline
};

/// Options of `pull` and `peek`. Plain aggregate.
struct PullOptions {
  std::optional<std::string> prefix{};  ///< the queue (as in PushOptions)
  Side side = Side::front;              ///< which end to take from
  bool retry = false;                   ///< wait for the write lock without deadline
};

/// Options of `memoize`. Plain aggregate.
struct MemoizeOptions {
  std::optional<Duration> expire{};  ///< ttl of results; nullopt = never; 0 = look up only
  std::optional<Key> tag{};          ///< tag stored with results
  bool single_flight = true;  ///< concurrent misses of one key compute once (threads and processes)
  Duration lease = std::chrono::seconds(60);  ///< max time a computing caller holds the
                                              ///< cross-process lock
};

/// A value with its metadata (diskcache's `expire_time=True, tag=True` tuple).
template <class T>
struct Item {
  Key key{0};                              ///< the key
  T value{};                               ///< the value
  std::optional<TimePoint> expire_time{};  ///< when it expires; nullopt = never
  std::optional<Key> tag{};                ///< its tag; nullopt = none
};

/// `stats()` result: `auto [hits, misses] = cache.stats();`.
struct CacheStats {
  std::int64_t hits = 0;    ///< counted gets that found a value
  std::int64_t misses = 0;  ///< counted gets that did not
};

/// `DiskCache::hot_cache_stats()` result: what the process-local hot-read cache did.
struct HotCacheStats {
  std::uint64_t hits = 0;              ///< lookups answered from memory
  std::uint64_t misses = 0;            ///< lookups that went to SQLite (absent, stale or expired)
  std::uint64_t invalidations = 0;     ///< times a commit (by anyone) dropped every entry
  std::uint64_t own_commits_kept = 0;  ///< own set/erase commits that kept the other entries
  std::uint64_t stand_downs = 0;       ///< times it judged itself not paying and stood down
  std::uint64_t skipped = 0;           ///< lookups sent straight to SQLite while standing down
  std::size_t entries = 0;             ///< entries held now
  std::size_t bytes = 0;               ///< their accounted size (≤ hot_cache_bytes)
};

/// One problem found by `check()`.
struct CheckWarning {
  /// What kind of problem.
  enum class Kind : std::uint8_t {
    integrity,     ///< `PRAGMA integrity_check` message
    missing_file,  ///< a row names a value file that does not exist (fix: delete the row)
    file_size,     ///< a value file's size differs from the row (fix: correct the row)
    unknown_file,  ///< a file no row references, e.g. left by a killed writer (fix: delete)
    empty_dir,     ///< an empty hex directory (fix: remove)
    count,         ///< Settings.count differs from the row count (fix: rewrite)
    size,          ///< Settings.size differs from the sum of file sizes (fix: rewrite)
    bad_filename,  ///< a row names a file that is not the cache's own value file: a name
                   ///< outside the `ab/cd/<hex>.val` layout (`../x`, `/x`) or a symlink; the
                   ///< row is treated as a miss (fix: delete the row; the named file is never
                   ///< read or deleted)
  };
  Kind kind = Kind::integrity;  ///< what kind
  std::string message{};        ///< human-readable, names the path/row
};

/// The disk database could not be used: SQLite reported an error (I/O, full disk, locked file
/// system…). The message names the database path and SQLite's message.
class DatabaseError : public BackendError {
 public:
  using BackendError::BackendError;
};

/// `cache.db` is not a database or is corrupt ("file is not a database", "malformed").
class CorruptDatabaseError : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
};

/// A stored value or key is larger than the cache's `max_value_bytes`: refused before it was
/// read, so it took no memory. What to do: raise `max_value_bytes`, stream a file value with
/// `read`, or delete the entry. The `disk` and `fanout` backends read it as a miss.
class ValueTooLargeError : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
};

/// A write was attempted on a cache opened read-only, or the directory/database is not writable.
class ReadOnlyError : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
};

/// A key that must exist does not (e.g. `incr` with no default on a missing key).
class KeyNotFound : public Error {
 public:
  using Error::Error;
};

}  // namespace dogpile
