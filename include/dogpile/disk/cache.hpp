#pragma once
/// @file cache.hpp
/// `dogpile::DiskCache`: python-diskcache's `Cache` in C++ on SQLite, on-disk compatible with
/// python-diskcache 5.x (same `cache.db` schema, Settings rows, triggers and value files), so a
/// directory written by either is read by the other for int / float / str / bytes keys and values.
///
/// ```cpp
/// dogpile::DiskCache cache("/var/cache/app", {.size_limit = 1ull << 30,
///     .eviction_policy = dogpile::EvictionPolicy::least_recently_used});
/// cache.set("k", "v", {.expire = 5s, .tag = "data"});
/// std::optional<std::string> v = cache.get<std::string>("k");
/// ```
///
/// Values: integers -> SQLite INTEGER, floating point -> REAL, `std::string` -> TEXT (Python
/// `str`), `dogpile::Bytes` / `std::vector<std::uint8_t>` -> BLOB (Python `bytes`); any other type
/// goes through `dogpile::Codec<T>` (JSON by default) and is stored as a BLOB, so Python sees it
/// as `bytes` (mode RAW inline, BINARY in a file), never as a pickle. Text and bytes of at least
/// `disk_min_file_size` (characters for text, as Python counts) live in value files
/// `<dir>/ab/cd/<28 hex>.val` (mode TEXT / BINARY), exactly as python-diskcache writes them.
/// A value Python pickled (mode PICKLE) throws `UnsupportedFormat` naming the key.
///
/// Beyond diskcache:
/// * Reads never take the write lock. Under LRU/LFU and with statistics on, access times,
///   access counts and hit/miss counters are buffered in memory and flushed in batches inside a
///   write transaction (at the next write, after `access_flush_events` events or
///   `access_flush_interval`, at `flush()`, `stats()`, `cull()` and `close()`). A flush attempted
///   from a read never waits for the lock: if another writer holds it, the buffer is kept.
/// * Writes are single upserts (`INSERT … ON CONFLICT(key, raw) DO UPDATE`, keeping the rowid as
///   python's in-place UPDATE does) with prepared statements cached per connection.
/// * Contention: `BEGIN IMMEDIATE` is retried with capped, jittered exponential backoff until
///   `timeout` elapses, then `TimeoutError`; `retry = true` waits without a deadline.
/// * Connections: one per (cache, thread). After `fork()`, a child that uses an inherited
///   `DiskCache` notices the pid change and opens fresh connections (the inherited SQLite
///   handles are abandoned, never closed or used: SQLite forbids carrying a connection across
///   fork), and drops buffered access updates that belong to the parent.
/// * Crash safety: value files are written under a temporary name, renamed to their final name
///   and only then is the row committed; a writer killed at any point leaves at most an
///   unreferenced file, which `check(true)` removes. Rolled-back writes delete their new file;
///   replaced and deleted files are removed only after the outermost commit.
/// * `memoize` is single-flight: concurrent misses of one key compute once, across threads (a
///   per-key mutex) and processes (an `add`ed lock key with a lease).
///
/// * A process forked while it holds a write transaction on a cache cannot use that cache in
///   the child (SQLite's inherited lock state would make it hang): the child gets a
///   `DatabaseError` saying so. Forking outside transactions is fine.
/// * A thread's connection is closed when the thread exits (no descriptor leak per thread).
///
/// Not supported (python-diskcache features with no C++ equivalent here): pickled keys and
/// values (reported, never decoded), custom `Disk` subclasses / `JSONDisk`, custom eviction
/// policies registered in Python's `EVICTION_POLICY` (opening such a cache throws
/// `ValidationError`), memoize's `typed`/`ignore`. Like diskcache, `check(true)` treats a value
/// file that another process wrote but has not committed yet as unknown; run it when writers
/// are idle.
///
/// Thread-safety: every method may be called from any thread. `DiskCache` is a cheap handle:
/// copies share one open cache. A `Transaction` belongs to the thread that opened it.
/// Process-safety: many processes (C++ or Python) may use one directory at once.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <istream>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/clock.hpp"
#include "dogpile/disk/detail/convert.hpp"
#include "dogpile/disk/serializer.hpp"
#include "dogpile/disk/types.hpp"
#include "dogpile/duration.hpp"
#include "dogpile/error.hpp"

namespace dogpile {

namespace detail {
class DiskCacheImpl;
}  // namespace detail

/// Options of `DiskCache`. Plain aggregate. Fields that are `std::optional` are *settings*:
/// python-diskcache semantics, left unset they keep the value stored in the database's Settings
/// table (or diskcache's default for a new cache); set, they are written there and so affect
/// every other client of the directory.
struct DiskCacheOptions {
  std::optional<std::uint64_t> size_limit{};        ///< bytes; culling starts at it (default 1 GiB)
  std::optional<EvictionPolicy> eviction_policy{};  ///< default least_recently_stored
  std::optional<std::int64_t> cull_limit{};  ///< max rows culled per write (default 10; 0 = off)
  std::optional<bool> statistics{};          ///< count hits/misses on get (default false)
  std::optional<bool> tag_index{};           ///< keep the (tag, rowid) index (default false)
  std::optional<std::int64_t> disk_min_file_size{};  ///< inline/file threshold (default 32768)
  std::optional<std::int64_t> sqlite_auto_vacuum{};  ///< PRAGMA auto_vacuum (default 1 = FULL)
  std::optional<std::int64_t> sqlite_cache_size{};   ///< PRAGMA cache_size pages (default 8192)
  std::optional<std::string> sqlite_journal_mode{};  ///< PRAGMA journal_mode (default "wal")
  std::optional<std::int64_t> sqlite_mmap_size{};    ///< PRAGMA mmap_size (default 64 MiB)
  std::optional<std::int64_t> sqlite_synchronous{};  ///< PRAGMA synchronous (default 1 = NORMAL)
  Duration timeout = std::chrono::seconds(60);       ///< deadline for the write lock, then
                                                     ///< TimeoutError (`60s`, `0.5s`…)
  Clock clock = system_clock();  ///< source of "now" for expiry, store/access times
  /// Open SQLITE_OPEN_READONLY: no writes at open, writes throw ReadOnlyError; the cache must
  /// already exist.
  bool read_only = false;
  /// Keep the cache to this user: the directory is made 0700 and the database, its WAL/shm and
  /// the value files 0600; an existing directory that group or others can read or write, or
  /// that another user owns, is refused (`DatabaseError` naming it and its mode). Default
  /// false: modes follow the process umask, as python-diskcache's do (0777/0666 & ~umask).
  /// Not a persisted setting: every process opening the directory should set it.
  bool private_cache = false;
  std::size_t access_flush_events = 1024;  ///< flush buffered LRU/LFU/stat updates after this many
  Duration access_flush_interval = std::chrono::seconds(1);  ///< …or this long
  /// Encodes every stored value and decodes every value read (`<dogpile/disk/serializer.hpp>`:
  /// `JsonSerializer`, `ZlibSerializer` or your own); null (the default) stores values natively,
  /// the format python-diskcache's default `Disk` reads. It is not persisted: open a directory
  /// with the serializer it was written with (docs/disk.md, "Value serialization").
  std::shared_ptr<const ValueSerializer> serializer{};
  /// Bytes of this process's hot-read cache (default 8 MiB; 0 = off): `get`, `get_item` and
  /// `contains` answer from memory for inline values while no commit by any connection or
  /// process happened since the SQLite read that filled the entry (checked against the WAL's
  /// shared-memory header, a few loads). Exact as SQLite reads: expiry against `clock`,
  /// statistics and LRU/LFU updates. Where it does not pay (few hits, entries dropped by
  /// commits or by the bound) it stands down for a while: those reads go straight to SQLite.
  /// WAL journal mode only (otherwise off); off for read-only opens; not a persisted setting.
  /// See docs/disk.md, "Hot-read cache".
  std::size_t hot_cache_bytes = std::size_t{8} << 20;
  /// Largest value (as stored: after the serializer) a read takes into memory, and a write
  /// accepts; nullopt (the default, as python-diskcache) = no bound but SQLite's 1 GB per inline
  /// value. A larger stored value is refused *before* it is read: a value file by its size, an
  /// inline value or a key by SQLite (`SQLITE_LIMIT_LENGTH`, set to this plus 1 MiB for the
  /// key), so a tampered `cache.db` or a planted value file cannot make one `get` take the
  /// memory. Reads over it throw `ValueTooLargeError`, writes `ValidationError`. `read` and
  /// `set_stream` stream a value file of any size. The `disk` and `fanout` backends set it to
  /// their `max_value_bytes` (default 64 MiB). At least 1; not a persisted setting.
  std::optional<std::size_t> max_value_bytes{};
};

/// The effective settings of an open cache (as stored in its Settings table).
struct DiskCacheSettings {
  std::uint64_t size_limit = 1ull << 30;                                   ///< bytes
  EvictionPolicy eviction_policy = EvictionPolicy::least_recently_stored;  ///< policy
  std::int64_t cull_limit = 10;                                            ///< rows per write
  bool statistics = false;                                                 ///< hit/miss counting
  bool tag_index = false;                                                  ///< tag index present
  std::int64_t disk_min_file_size = 1 << 15;                               ///< file threshold
};

class DiskCache;

/// A write transaction (`BEGIN IMMEDIATE`) held until destruction: diskcache's `transact()`.
/// Reads and writes of the *same thread* on the same cache run inside it, atomically.
/// Re-entrant: a nested `transact()` on the same thread is a no-op level. The destructor commits,
/// or rolls back if it runs during stack unwinding. Not shareable between threads. Movable.
class Transaction {
 public:
  /// Takes over `other`'s transaction; `other` no longer commits or rolls back.
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  /// Commits (or rolls back during unwinding). Never throws; a failed commit rolls back.
  ~Transaction();
  /// Commits now (outermost level only; inner levels just end). @throws DatabaseError.
  void commit();
  /// Rolls back the whole transaction (also when called on an inner level); new value files
  /// are deleted.
  void rollback() noexcept;

 private:
  friend class DiskCache;
  Transaction(std::shared_ptr<detail::DiskCacheImpl> impl, bool outermost, int uncaught);
  std::shared_ptr<detail::DiskCacheImpl> impl_;
  bool outermost_ = false;
  bool done_ = false;
  int uncaught_ = 0;
};

/// A memoized function returned by `DiskCache::memoize` / `FanoutCache::memoize`.
/// Calling it looks `name(args…)` up; on a miss it calls the function and stores the result.
/// The key is TEXT: the JSON array `[name, args…]` (arguments must be JSON-convertible by
/// nlohmann_json); results are stored like any value (native kinds or Codec<R>).
/// Thread-safe if the wrapped function is.
template <class Cache, class F>
class Memoized {
 public:
  /// Wraps `fn`, caching its results in `cache` under keys `[name, args…]` (see
  /// `DiskCache::memoize`, which builds this).
  Memoized(Cache cache, std::string name, F fn, MemoizeOptions opts)
      : cache_(std::move(cache)),
        name_(std::move(name)),
        fn_(std::move(fn)),
        opts_(std::move(opts)) {}

  /// The cache key of a call (diskcache's `__cache_key__`).
  template <class... Args>
  [[nodiscard]] Key cache_key(const Args&... args) const {
    nlohmann::json j = nlohmann::json::array({name_});
    (j.push_back(nlohmann::json(args)), ...);
    return Key(j.dump());
  }

  /// Calls through the cache. @throws whatever the function throws (nothing is stored then),
  /// TimeoutError (DiskCache only) if the cache stays locked past its timeout.
  template <class... Args>
  auto operator()(Args&&... args) {
    using R = std::decay_t<std::invoke_result_t<F&, Args...>>;
    Key key = cache_key(args...);
    std::optional<R> result;
    DiskValue stored = cache_.memoize_value(key, opts_, [&]() -> DiskValue {
      result.emplace(std::invoke(fn_, std::forward<Args>(args)...));
      return detail::to_disk_value(*result);
    });
    if (result) return std::move(*result);
    return detail::from_disk_value<R>(std::move(stored), key);
  }

  /// The wrapped function (diskcache's `__wrapped__`).
  [[nodiscard]] const F& wrapped() const noexcept { return fn_; }

 private:
  Cache cache_;
  std::string name_;
  F fn_;
  MemoizeOptions opts_;
};

/// python-diskcache's `Cache`: one directory, one SQLite database, value files beside it.
/// See the file comment for the storage format and the guarantees.
class DiskCache {
 public:
  /// Opens (creating if needed, mode 0755) the cache in `directory`, applying `options` (settings
  /// given there are persisted, as python-diskcache's kwargs).
  /// @throws ValidationError for a bad option (named), DatabaseError if the directory cannot be
  /// created or the database cannot be opened (e.g. `directory` is a file), CorruptDatabaseError
  /// if `cache.db` is not a database, ReadOnlyError if it cannot be initialized for lack of
  /// write access (use `.read_only = true` for read-only media).
  explicit DiskCache(const std::filesystem::path& directory, DiskCacheOptions options = {});
  /// Copies share the same open cache.
  DiskCache(const DiskCache&) = default;
  /// Copies share the same open cache.
  DiskCache& operator=(const DiskCache&) = default;
  /// Moves the handle; the moved-from handle must not be used again.
  DiskCache(DiskCache&&) noexcept = default;
  /// Moves the handle; the moved-from handle must not be used again.
  DiskCache& operator=(DiskCache&&) noexcept = default;
  /// The last handle flushes buffered updates and closes the connections.
  ~DiskCache();

  /// The cache directory.
  [[nodiscard]] const std::filesystem::path& directory() const noexcept;
  /// The write-lock deadline.
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept;
  /// The effective settings (re-read from the database).
  [[nodiscard]] DiskCacheSettings settings() const;

  // ---- single items -------------------------------------------------------------------------

  /// Stores `value` under `key` (overwriting in place: the insertion position is kept), then
  /// culls at most `cull_limit` rows. Always returns true.
  /// @throws TimeoutError if the write lock stays busy past `timeout` (unless `.retry`),
  /// ReadOnlyError, DatabaseError; no value file is left behind on failure.
  template <class T>
  bool set(const Key& key, const T& value, const SetOptions& options = {}) {
    return set_value(key, detail::to_disk_value(value), options, /*add_only=*/false);
  }
  /// Streams `in` into a value file (always a file, mode BINARY, as diskcache's `read=True`).
  /// The bytes are stored as they are: `DiskCacheOptions::serializer` is not applied.
  /// @throws as `set`; BackendError if the stream or the file fails.
  bool set_stream(const Key& key, std::istream& in, const SetOptions& options = {});
  /// Stores only if `key` is absent or expired. Atomic: of concurrent adds exactly one wins.
  /// @throws as `set`.
  template <class T>
  bool add(const Key& key, const T& value, const SetOptions& options = {}) {
    return set_value(key, detail::to_disk_value(value), options, /*add_only=*/true);
  }
  /// The unexpired value under `key`, or nullopt. Never takes the write lock.
  /// @throws UnsupportedFormat (pickled by Python), TypeMismatch (stored kind is not a T),
  /// CantDeserialize (Codec<T> rejected the bytes), DatabaseError.
  template <class T>
  std::optional<T> get(const Key& key) {
    auto rec = get_record(key, false);
    if (!rec) return std::nullopt;
    return detail::from_disk_value<T>(std::move(rec->value), key);
  }
  /// The value with its expire time and tag (diskcache's `expire_time=True, tag=True`).
  template <class T>
  std::optional<Item<T>> get_item(const Key& key) {
    auto rec = get_record(key, true);
    if (!rec) return std::nullopt;
    return convert_item<T>(std::move(*rec));
  }
  /// A stream over the value: a stream reading the value file for file-stored values, an
  /// in-memory stream for inline text/bytes; nullptr on a miss (or when the file vanished, or
  /// the row names something that is not this cache's own value file: see docs/disk.md,
  /// "Threat model").
  /// It streams the stored bytes: `DiskCacheOptions::serializer` is not applied.
  /// @throws UnsupportedFormat for pickles, TypeMismatch for numbers.
  std::unique_ptr<std::istream> read(const Key& key);
  /// The path of the value file holding `key`'s value, or nullopt if missing, inline, or not
  /// this cache's own regular file (a tampered name or a symlink). Checked when called: the
  /// caller opening the path later should itself refuse symlinks (`O_NOFOLLOW`).
  std::optional<std::filesystem::path> file_path(const Key& key);
  /// True if `key` holds an unexpired value (no statistics, no LRU update).
  bool contains(const Key& key);
  /// Sets a new expiry on an unexpired key (`10s`, `1.5s`; nullopt = never expires). False if
  /// absent/expired.
  bool touch(const Key& key, std::optional<Duration> expire = std::nullopt, bool retry = false);
  /// Atomically adds `delta` to an integer value and returns the result (store_time is updated,
  /// expiry and tag are kept). A missing or expired key starts from `default_value`
  /// (expire never, no tag); with no default it throws `KeyNotFound`.
  /// @throws TypeMismatch if the stored value is not an inline integer (text, bytes, a float, a
  /// file or a pickle), ValidationError on int64 overflow or on a cache with a
  /// `DiskCacheOptions::serializer`, KeyNotFound, TimeoutError.
  std::int64_t incr(const Key& key, std::int64_t delta = 1,
                    std::optional<std::int64_t> default_value = 0, bool retry = false);
  /// `incr(key, -delta, default_value, retry)`.
  std::int64_t decr(const Key& key, std::int64_t delta = 1,
                    std::optional<std::int64_t> default_value = 0, bool retry = false);
  /// Removes and returns the unexpired value, or nullopt. @throws as get/set.
  template <class T>
  std::optional<T> pop(const Key& key, bool retry = false) {
    auto rec = pop_record(key, retry);
    if (!rec) return std::nullopt;
    return detail::from_disk_value<T>(std::move(rec->value), key);
  }
  /// `pop` with expire time and tag.
  template <class T>
  std::optional<Item<T>> pop_item(const Key& key, bool retry = false) {
    auto rec = pop_record(key, retry);
    if (!rec) return std::nullopt;
    return convert_item<T>(std::move(*rec));
  }
  /// Deletes an unexpired key; true if it was there (diskcache's `delete`).
  bool erase(const Key& key, bool retry = false);

  // ---- bulk (one transaction each) ----------------------------------------------------------

  /// One result per key, in order; one read snapshot.
  template <class T>
  std::vector<std::optional<T>> get_many(std::span<const Key> keys) {
    auto recs = get_many_values(keys);
    std::vector<std::optional<T>> out;
    out.reserve(recs.size());
    for (std::size_t i = 0; i < recs.size(); ++i) {
      if (recs[i]) {
        out.emplace_back(detail::from_disk_value<T>(std::move(*recs[i]), keys[i]));
      } else {
        out.emplace_back(std::nullopt);
      }
    }
    return out;
  }
  /// Stores every pair in one write transaction (one cull at the end).
  template <class T>
  void set_many(std::span<const std::pair<Key, T>> items, const SetOptions& options = {}) {
    std::vector<std::pair<Key, DiskValue>> conv;
    conv.reserve(items.size());
    for (const auto& [k, v] : items) conv.emplace_back(k, detail::to_disk_value(v));
    set_many_values(conv, options);
  }
  /// `set_many` for a vector.
  template <class T>
  void set_many(const std::vector<std::pair<Key, T>>& items, const SetOptions& options = {}) {
    set_many(std::span<const std::pair<Key, T>>(items), options);
  }
  /// Deletes every key in one write transaction; returns how many were present.
  std::size_t erase_many(std::span<const Key> keys, bool retry = false);

  // ---- queues --------------------------------------------------------------------------------

  /// Pushes onto a queue; returns the new key (int 500000000000000 first; or text
  /// `prefix-500000000000000`), as diskcache's `push`.
  template <class T>
  Key push(const T& value, const PushOptions& options = {}) {
    return push_value(detail::to_disk_value(value), options);
  }
  /// Removes and returns the (key, value) at the front (or back); expired items are dropped.
  template <class T>
  std::optional<std::pair<Key, T>> pull(const PullOptions& options = {}) {
    return as_pair<T>(pull_record(options, /*peek=*/false));
  }
  /// `pull` with expire time and tag.
  template <class T>
  std::optional<Item<T>> pull_item(const PullOptions& options = {}) {
    auto rec = pull_record(options, false);
    if (!rec) return std::nullopt;
    return convert_item<T>(std::move(*rec));
  }
  /// Like pull without removing (expired items met at the head are deleted).
  template <class T>
  std::optional<std::pair<Key, T>> peek(const PullOptions& options = {}) {
    return as_pair<T>(pull_record(options, /*peek=*/true));
  }
  /// `peek` with expire time and tag.
  template <class T>
  std::optional<Item<T>> peek_item(const PullOptions& options = {}) {
    auto rec = pull_record(options, true);
    if (!rec) return std::nullopt;
    return convert_item<T>(std::move(*rec));
  }
  /// The last (or first) item in insertion order; expired items met are deleted; nullopt if empty.
  template <class T>
  std::optional<std::pair<Key, T>> peekitem(bool last = true, bool retry = false) {
    return as_pair<T>(peekitem_record(last, retry));
  }

  // ---- whole cache ---------------------------------------------------------------------------

  /// Keys in insertion (rowid) order, expired included (as diskcache's iteration). A snapshot:
  /// keys inserted later are not listed. Keys Python pickled are skipped.
  std::vector<Key> keys(bool reverse = false);
  /// Keys in database sort order (numbers < text < bytes), diskcache's `iterkeys`.
  std::vector<Key> sorted_keys(bool reverse = false);
  /// Calls `fn` for each key in insertion order, paging 100 rows at a time; stop by returning
  /// false.
  void for_each_key(const std::function<bool(const Key&)>& fn, bool reverse = false);
  /// Number of rows (expired included), from the Settings counter (diskcache's `len`).
  std::int64_t size();
  /// Bytes used: page_count * page_size + the sum of value-file sizes.
  std::uint64_t volume();
  /// Removes every row (in batches of 100); returns the count. @throws TimeoutError.
  std::size_t clear(bool retry = false);
  /// Removes expired rows (by `now`, default the clock); returns the count.
  std::size_t expire(std::optional<TimePoint> now = std::nullopt, bool retry = false);
  /// Removes every row tagged `tag`; returns the count.
  std::size_t evict(const Key& tag, bool retry = false);
  /// `expire()`, then removes rows in policy order until volume <= size_limit; returns the total
  /// (expired rows included, unlike diskcache's policy-`none` bug).
  std::size_t cull(bool retry = false);
  /// Verifies the database and the value files; with `fix`, repairs them (VACUUM, rows whose file
  /// is missing or is not this cache's own file (`bad_filename`: deleted, the file it names is
  /// never touched), wrong sizes, unknown files and symlinks, empty directories, the count/size
  /// counters).
  /// Returns the problems found (empty when clean).
  std::vector<CheckWarning> check(bool fix = false, bool retry = false);
  /// The hit/miss counters, then optionally zeroes them, then sets `statistics = enable`
  /// (diskcache semantics: the default call turns counting on).
  CacheStats stats(bool enable = true, bool reset = false);
  /// This process's hot-read cache counters (all zero when `hot_cache_bytes` is 0 or before the
  /// first read), e.g. to see its hit rate under a workload. Thread-safety: any thread. Never
  /// throws.
  [[nodiscard]] HotCacheStats hot_cache_stats() const noexcept;
  /// Creates the tag index and sets `tag_index = 1`.
  void create_tag_index();
  /// Drops the tag index and sets `tag_index = 0`.
  void drop_tag_index();
  /// Reads (no `value`) or writes a setting by its diskcache name (`"size_limit"`,
  /// `"sqlite_mmap_size"`, `"count"`…); writing a `sqlite_*` setting applies the pragma.
  /// Returns the (new) value. @throws ValidationError for an unknown name or a bad value.
  DiskValue reset(std::string_view name, std::optional<DiskValue> value = std::nullopt);
  /// Stored settings this open could not read back (a wrong type or range, e.g. a
  /// `size_limit` of `'abc'`), each replaced by its default, as messages; empty normally.
  /// Such a setting does not make the cache unopenable. Thread-safety: any thread.
  [[nodiscard]] std::vector<std::string> setting_problems() const;
  /// Opens a write transaction held until the returned object is destroyed.
  /// @throws TimeoutError if the lock stays busy past `timeout` (unless `retry`).
  [[nodiscard]] Transaction transact(bool retry = false);
  /// Writes buffered LRU/LFU access updates and hit/miss counters now.
  void flush();
  /// Flushes and closes this process's connections to the database (they reopen lazily on the
  /// next call). Must not run concurrently with other calls on this cache. Idempotent.
  void close();

  /// Memoizes `fn` under `name` (see `Memoized`). `expire = 0` only looks up.
  template <class F>
  Memoized<DiskCache, F> memoize(std::string name, F fn, MemoizeOptions options = {}) {
    return Memoized<DiskCache, F>(*this, std::move(name), std::move(fn), std::move(options));
  }

  // ---- type-erased core (used by the templates above, FanoutCache and the backends) ---------

  /// Stores a native value; `add_only` gives `add` semantics.
  bool set_value(const Key& key, DiskValue value, const SetOptions& options, bool add_only);
  /// The unexpired record (with expire time and tag if `with_meta`), or nullopt.
  std::optional<Item<DiskValue>> get_record(const Key& key, bool with_meta);
  /// Deletes and returns the unexpired record.
  std::optional<Item<DiskValue>> pop_record(const Key& key, bool retry);
  /// Bulk read.
  std::vector<std::optional<DiskValue>> get_many_values(std::span<const Key> keys);
  /// Bulk write.
  void set_many_values(std::span<const std::pair<Key, DiskValue>> items, const SetOptions& options);
  /// Queue push.
  Key push_value(DiskValue value, const PushOptions& options);
  /// Queue pull/peek.
  std::optional<Item<DiskValue>> pull_record(const PullOptions& options, bool peek);
  /// peekitem.
  std::optional<Item<DiskValue>> peekitem_record(bool last, bool retry);
  /// Single-flight memoization core: the cached value of `key`, or `compute()`'s (stored unless
  /// `options.expire <= 0`).
  DiskValue memoize_value(const Key& key, const MemoizeOptions& options,
                          const std::function<DiskValue()>& compute);

 private:
  template <class T>
  static std::optional<std::pair<Key, T>> as_pair(std::optional<Item<DiskValue>> rec) {
    if (!rec) return std::nullopt;
    T v = detail::from_disk_value<T>(std::move(rec->value), rec->key);
    return std::make_optional(std::pair<Key, T>(std::move(rec->key), std::move(v)));
  }
  template <class T>
  static Item<T> convert_item(Item<DiskValue>&& rec) {
    T v = detail::from_disk_value<T>(std::move(rec.value), rec.key);
    return Item<T>{std::move(rec.key), std::move(v), rec.expire_time, std::move(rec.tag)};
  }

  std::shared_ptr<detail::DiskCacheImpl> impl_;
};

}  // namespace dogpile
