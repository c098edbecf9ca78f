#pragma once
/// @file fanout.hpp
/// `dogpile::FanoutCache`: python-diskcache's `FanoutCache` — N independent `DiskCache` shards
/// in `<dir>/000` … `<dir>/NNN`, a key routed to shard `hash(key) % N` with diskcache's portable
/// hash (adler32 of the serialized key; `key % 0xFFFFFFFF` for ints; adler32 of the big-endian
/// double for floats), so C++ and Python agree on where every key lives.
///
/// Beyond diskcache: the shard count is persisted in `<dir>/dogpile-fanout.json`
/// (`{"shards": N, "hash": "diskcache-adler32"}`); a reopen with another explicit count throws
/// `ValidationError`. A directory Python created (no such file) is adopted: its count is taken
/// from the shard directories present (or the option, or 8) and then recorded.
///
/// Timeouts: as diskcache, a shard that stays locked past `timeout` makes the operation a
/// documented "not done" result instead of an exception — `false` from set/add/touch/erase,
/// `std::nullopt` from get/pop/incr/decr (so a timed-out get looks like a miss). Bulk
/// maintenance (clear/expire/evict/cull) retries each shard until it completes.
/// Thread- and process-safe like DiskCache; copies share the same shards.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dogpile/disk/cache.hpp"

namespace dogpile {

/// Options of `FanoutCache`. Plain aggregate. Settings fields as in `DiskCacheOptions`
/// (persisted in every shard); `size_limit` is the *total*, each shard gets `size_limit/shards`.
struct FanoutCacheOptions {
  std::optional<std::size_t> shards{};  ///< shard count; nullopt = the persisted count, else 8
  Duration timeout = std::chrono::milliseconds(10);  ///< per-shard lock deadline
  std::optional<std::uint64_t> size_limit{};         ///< total bytes (default 1 GiB)
  std::optional<EvictionPolicy> eviction_policy{};   ///< default least_recently_stored
  std::optional<std::int64_t> cull_limit{};  ///< rows culled per write per shard (default 10)
  std::optional<bool> statistics{};          ///< count hits/misses
  std::optional<bool> tag_index{};           ///< keep the tag index
  std::optional<std::int64_t> disk_min_file_size{};  ///< inline/file threshold (default 32768)
  std::optional<std::int64_t> sqlite_mmap_size{};    ///< PRAGMA mmap_size per shard
  std::optional<std::int64_t> sqlite_cache_size{};   ///< PRAGMA cache_size per shard
  Clock clock = system_clock();                      ///< source of "now"
  bool read_only = false;                            ///< open every shard read-only
  /// DiskCacheOptions::private_cache for the directory, every shard and the fanout's own files.
  bool private_cache = false;
  /// The value serializer of every shard (`DiskCacheOptions::serializer`); null = native values.
  std::shared_ptr<const ValueSerializer> serializer{};
  /// Per shard: DiskCacheOptions::hot_cache_bytes (0 = off). The default, 1 MiB per shard, is
  /// the 8 MiB of a default `DiskCache` spread over the default 8 shards.
  std::size_t hot_cache_bytes = std::size_t{1} << 20;
  /// Per shard: DiskCacheOptions::max_value_bytes (nullopt = unbounded, as python-diskcache).
  std::optional<std::size_t> max_value_bytes{};
};

/// diskcache's portable key hash (`Disk.hash`): adler32 over the serialized key. Exposed so tools
/// and tests can predict the shard: `fanout_hash(key) % shards`.
std::uint32_t fanout_hash(const Key& key);

/// A sharded disk cache. See the file comment.
class FanoutCache {
 public:
  /// Opens or creates the fanout directory.
  /// @throws ValidationError (bad option, shard count mismatch), DatabaseError and subclasses.
  explicit FanoutCache(const std::filesystem::path& directory, FanoutCacheOptions options = {});

  /// The directory.
  [[nodiscard]] const std::filesystem::path& directory() const noexcept;
  /// The shard count.
  [[nodiscard]] std::size_t shard_count() const noexcept;
  /// Shard `i` (0-based).
  [[nodiscard]] DiskCache& shard(std::size_t i);
  /// The shard index of `key`.
  [[nodiscard]] std::size_t shard_index(const Key& key) const;
  /// The shard holding `key`.
  [[nodiscard]] DiskCache& shard_for(const Key& key);

  /// `DiskCache::set`; false if the shard stayed locked past `timeout` (nothing stored).
  template <class T>
  bool set(const Key& key, const T& value, const SetOptions& options = {}) {
    try {
      return shard_for(key).set(key, value, options);
    } catch (const TimeoutError&) {
      return false;
    }
  }
  /// `DiskCache::set_stream`; false on timeout.
  bool set_stream(const Key& key, std::istream& in, const SetOptions& options = {});
  /// `DiskCache::add`; false if present or on timeout.
  template <class T>
  bool add(const Key& key, const T& value, const SetOptions& options = {}) {
    try {
      return shard_for(key).add(key, value, options);
    } catch (const TimeoutError&) {
      return false;
    }
  }
  /// `DiskCache::get`; nullopt on a miss or timeout.
  template <class T>
  std::optional<T> get(const Key& key) {
    try {
      return shard_for(key).get<T>(key);
    } catch (const TimeoutError&) {
      return std::nullopt;
    }
  }
  /// `DiskCache::get_item`; nullopt on a miss or timeout.
  template <class T>
  std::optional<Item<T>> get_item(const Key& key) {
    try {
      return shard_for(key).get_item<T>(key);
    } catch (const TimeoutError&) {
      return std::nullopt;
    }
  }
  /// `DiskCache::read`.
  std::unique_ptr<std::istream> read(const Key& key);
  /// `DiskCache::contains`.
  bool contains(const Key& key);
  /// `DiskCache::touch`; false if absent or on timeout.
  bool touch(const Key& key, std::optional<Duration> expire = std::nullopt, bool retry = false);
  /// `DiskCache::incr`; nullopt on timeout. @throws as DiskCache::incr otherwise.
  std::optional<std::int64_t> incr(const Key& key, std::int64_t delta = 1,
                                   std::optional<std::int64_t> default_value = 0,
                                   bool retry = false);
  /// `DiskCache::decr`; nullopt on timeout.
  std::optional<std::int64_t> decr(const Key& key, std::int64_t delta = 1,
                                   std::optional<std::int64_t> default_value = 0,
                                   bool retry = false);
  /// `DiskCache::pop`; nullopt on a miss or timeout.
  template <class T>
  std::optional<T> pop(const Key& key, bool retry = false) {
    try {
      return shard_for(key).pop<T>(key, retry);
    } catch (const TimeoutError&) {
      return std::nullopt;
    }
  }
  /// `DiskCache::erase`; false if absent or on timeout.
  bool erase(const Key& key, bool retry = false);

  /// Bulk get, grouped by shard; a timed-out shard's keys read as misses.
  template <class T>
  std::vector<std::optional<T>> get_many(std::span<const Key> keys) {
    auto vals = get_many_values(keys);
    std::vector<std::optional<T>> out;
    out.reserve(vals.size());
    for (std::size_t i = 0; i < vals.size(); ++i) {
      if (vals[i]) {
        out.emplace_back(detail::from_disk_value<T>(std::move(*vals[i]), keys[i]));
      } else {
        out.emplace_back(std::nullopt);
      }
    }
    return out;
  }
  /// Bulk set, one transaction per shard; false if any shard timed out (its items not stored).
  template <class T>
  bool set_many(std::span<const std::pair<Key, T>> items, const SetOptions& options = {}) {
    std::vector<std::pair<Key, DiskValue>> conv;
    conv.reserve(items.size());
    for (const auto& [k, v] : items) conv.emplace_back(k, detail::to_disk_value(v));
    return set_many_values(conv, options);
  }
  /// `set_many` for a vector.
  template <class T>
  bool set_many(const std::vector<std::pair<Key, T>>& items, const SetOptions& options = {}) {
    return set_many(std::span<const std::pair<Key, T>>(items), options);
  }
  /// Bulk erase; returns how many were present (timed-out shards count 0).
  std::size_t erase_many(std::span<const Key> keys, bool retry = false);

  /// Keys of every shard, shard by shard (insertion order within a shard).
  std::vector<Key> keys(bool reverse = false);
  /// Sum of the shards' row counts.
  std::int64_t size();
  /// Sum of the shards' volumes.
  std::uint64_t volume();
  /// Per-shard `clear`, retrying a shard that times out; returns the total.
  std::size_t clear();
  /// Per-shard `expire`; returns the total.
  std::size_t expire(std::optional<TimePoint> now = std::nullopt);
  /// Per-shard `evict`; returns the total.
  std::size_t evict(const Key& tag);
  /// Per-shard `cull`; returns the total.
  std::size_t cull();
  /// Concatenated per-shard warnings (messages name the shard directory).
  std::vector<CheckWarning> check(bool fix = false);
  /// Summed statistics; `enable`/`reset` apply to every shard.
  CacheStats stats(bool enable = true, bool reset = false);
  /// On every shard.
  void create_tag_index();
  /// On every shard.
  void drop_tag_index();
  /// `DiskCache::reset` on every shard; returns shard 0's value. (`size_limit` is per shard.)
  DiskValue reset(std::string_view name, std::optional<DiskValue> value = std::nullopt);
  /// Locks every shard in order 0..N-1 (a global lock; deadlock-free by the fixed order) and
  /// holds them until the returned object is destroyed. Always waits (retry), as diskcache.
  [[nodiscard]] std::vector<Transaction> transact();
  /// Flushes buffered access updates of every shard.
  void flush();
  /// Closes every shard (they reopen lazily).
  void close();
  /// A named sub-cache at `<dir>/cache/<name>` (60 s timeout), as diskcache's `cache(name)`.
  DiskCache cache(const std::string& name, DiskCacheOptions options = {});

  /// Memoizes `fn` under `name`; results are routed by key to the shards.
  template <class F>
  Memoized<FanoutCache, F> memoize(std::string name, F fn, MemoizeOptions options = {}) {
    return Memoized<FanoutCache, F>(*this, std::move(name), std::move(fn), std::move(options));
  }

  // ---- type-erased core ---------------------------------------------------------------------
  /// Bulk read core.
  std::vector<std::optional<DiskValue>> get_many_values(std::span<const Key> keys);
  /// Bulk write core.
  bool set_many_values(std::span<const std::pair<Key, DiskValue>> items, const SetOptions& options);
  /// Memoize core (single-flight within the key's shard; waits for locks).
  DiskValue memoize_value(const Key& key, const MemoizeOptions& options,
                          const std::function<DiskValue()>& compute);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace dogpile
