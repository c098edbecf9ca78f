#pragma once
/// @file disk.hpp
/// The `disk` and `fanout` region backends: a region's envelope bytes stored as BLOB values in a
/// `DiskCache` / `FanoutCache` directory, with a cross-process dogpile lock built on the cache
/// itself. Part of `dogpile::disk`; including this header registers both names, so
/// `region.configure("disk", {.arguments = {{"directory", "/var/cache/app"}}})` works.
///
/// ```cpp
/// #include <dogpile/backends/disk.hpp>
/// region.configure("disk", {.expiration_time = 10min,
///                           .arguments = {{"directory", "/var/cache/app"},
///                                         {"size_limit", 1 << 30}}});
/// region.configure("fanout", {.arguments = {{"directory", "/var/cache/app2"}, {"shards", 8}}});
/// ```
///
/// Keys are stored as TEXT (the region key as given, after the key mangler), values as BLOBs
/// (Python `bytes`), so python-diskcache sees `cache["key"] == b'{"ct": ..., "v": 2}|...'`.
/// A stored value that is not text or bytes (a number, a Python pickle) reads as a miss.
///
/// **The lock** (`get_mutex`) is a `dogpile::LeaseLock` (`<dogpile/lease_lock.hpp>`) on the
/// key `lock_prefix + key` (default `"_lock" + key`; fanout: in that key's shard): acquiring
/// `add`s the key holding a fresh owner token (`<pid>-<random>`) that expires after
/// `lock_timeout` (the lease), retrying with capped, jittered exponential backoff (1 ms doubling
/// up to `lock_sleep`) until the caller's deadline; threads of one process that share a mutex
/// object queue in memory, so only one of them polls the database. While held, the lease is
/// renewed every `lock_timeout / 3` (the owner is checked inside a write transaction), so a slow
/// creator keeps the lock and a holder that dies or is paused loses it after the lease.
/// `release` deletes the key inside a write transaction only if it still holds this owner's
/// token, else throws `LockError` (the lease was lost and another holder may have it; a region
/// reports that rather than failing its caller). `locked()` is true while the key is present and
/// unexpired; `is_lease()` is true.
///
/// Errors: the DiskCache exceptions (`TimeoutError` when the database stays write-locked past
/// `timeout`, `DatabaseError`…) all derive from `BackendError`, so a region's
/// `on_backend_error` policy applies. Unlike `FanoutCache::set`, the `fanout` backend reports a
/// timed-out write as `TimeoutError` instead of silently dropping it.
///
/// Thread-safety: every call may be made from many threads and processes at once.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"
#include "dogpile/limits.hpp"
#include "dogpile/mutex.hpp"
#include "dogpile/registry.hpp"

namespace dogpile {

/// Settings of the cross-process dogpile lock of the `disk` / `fanout` backends. Plain aggregate.
struct DiskLockOptions {
  Duration lock_timeout = std::chrono::seconds(30);      ///< lease: the lock key expires after this
                                                         ///< unless renewed
  Duration lock_sleep = std::chrono::milliseconds(100);  ///< backoff cap
  std::string lock_prefix = "_lock";  ///< prepended to the key to name the lock key
};

/// Options of `DiskBackend`. Plain aggregate.
struct DiskBackendOptions {
  std::filesystem::path directory{};  ///< the cache directory (required)
  DiskCacheOptions cache{};  ///< DiskCache settings (size_limit, eviction_policy, timeout…)
  std::optional<Duration> expire{};  ///< native TTL of stored values; none = never
  DiskLockOptions lock{};            ///< the dogpile lock
  /// Largest value a read returns and a region decodes (a compressed payload inflating past
  /// it, or a larger stored value, is a miss). At least 1.
  std::size_t max_value_bytes = default_max_value_bytes;
};

/// Options of `FanoutBackend`. Plain aggregate. Note `cache.timeout` defaults to diskcache's
/// 10 ms per shard; `from_arguments` uses 1 s unless `timeout` is given.
struct FanoutBackendOptions {
  std::filesystem::path directory{};  ///< the fanout directory (required)
  FanoutCacheOptions cache{};         ///< FanoutCache settings (shards, size_limit, timeout…)
  std::optional<Duration> expire{};   ///< native TTL of stored values; none = never
  DiskLockOptions lock{};             ///< the dogpile lock
  /// As `DiskBackendOptions::max_value_bytes`.
  std::size_t max_value_bytes = default_max_value_bytes;
};

/// The `disk` backend: a `DiskCache` directory. See the file comment.
class DiskBackend final : public CacheBackend {
 public:
  /// Opens (or creates) the cache. @throws ValidationError (empty directory, bad option),
  /// DatabaseError and subclasses from `DiskCache`.
  explicit DiskBackend(DiskBackendOptions options);
  /// Arguments (JSON object): `directory` (string, required), `size_limit`, `eviction_policy`
  /// (`"least-recently-stored"` / `"least_recently_stored"`, …, `"none"`), `cull_limit`,
  /// `statistics`, `tag_index`, `disk_min_file_size`, `sqlite_auto_vacuum`, `sqlite_cache_size`,
  /// `sqlite_journal_mode`, `sqlite_mmap_size`, `sqlite_synchronous`, `timeout` (seconds),
  /// `read_only`, `hot_cache_bytes` (default 8 MiB, 0 = off; docs/disk.md "Hot-read cache"),
  /// `serializer` (`"zlib"`: large values compressed; `"none"`), `expire` (seconds, native TTL),
  /// `lock_timeout` (seconds, the lease), `lock_sleep` (seconds, backoff cap), `lock_prefix`.
  /// @throws ValidationError naming a missing, bad or unknown argument.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);

  /// The underlying cache (a shared handle).
  [[nodiscard]] DiskCache& cache() noexcept { return cache_; }
  /// The options this backend was built with.
  [[nodiscard]] const DiskBackendOptions& options() const noexcept { return opts_; }

 protected:
  /// `max_value_bytes`.
  [[nodiscard]] std::size_t do_max_value_bytes() const override { return opts_.max_value_bytes; }
  /// The BLOB under the TEXT key `key`; a miss for an absent key or a value that is not bytes.
  std::optional<std::string> do_get(std::string_view key) override;
  /// Stores `value` as a BLOB with the native TTL `expire`. @throws TimeoutError, DatabaseError.
  void do_set(std::string_view key, std::string_view value) override;
  /// Deletes `key` if present.
  void do_erase(std::string_view key) override;
  /// One read snapshot for every key.
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override;
  /// One write transaction for every item.
  void do_set_multi(std::span<const BytesItem> items) override;
  /// One write transaction for every key.
  void do_erase_multi(std::span<const std::string> keys) override;
  /// The cross-process lease lock of `key` (see the file comment).
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key) override;

 private:
  DiskBackendOptions opts_;
  DiskCache cache_;
};

/// The `fanout` backend: a `FanoutCache` directory (keys routed to shards as diskcache does;
/// the lock key lives in its own key's shard). See the file comment.
class FanoutBackend final : public CacheBackend {
 public:
  /// Opens (or creates) the fanout cache. @throws as `FanoutCache`'s constructor.
  explicit FanoutBackend(FanoutBackendOptions options);
  /// Arguments: those of `DiskBackend::from_arguments` (`timeout` is per shard, default 1 s)
  /// plus `shards` (positive integer). @throws ValidationError naming the argument.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);

  /// The underlying cache (a shared handle).
  [[nodiscard]] FanoutCache& cache() noexcept { return cache_; }
  /// The options this backend was built with.
  [[nodiscard]] const FanoutBackendOptions& options() const noexcept { return opts_; }

 protected:
  /// `max_value_bytes`.
  [[nodiscard]] std::size_t do_max_value_bytes() const override { return opts_.max_value_bytes; }
  /// The BLOB under the TEXT key `key`; a miss for an absent key or a value that is not bytes.
  std::optional<std::string> do_get(std::string_view key) override;
  /// Stores `value` as a BLOB with the native TTL `expire`. @throws TimeoutError, DatabaseError.
  void do_set(std::string_view key, std::string_view value) override;
  /// Deletes `key` if present.
  void do_erase(std::string_view key) override;
  /// One read snapshot for every key.
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override;
  /// One write transaction for every item.
  void do_set_multi(std::span<const BytesItem> items) override;
  /// One write transaction for every key.
  void do_erase_multi(std::span<const std::string> keys) override;
  /// The cross-process lease lock of `key` (see the file comment).
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key) override;

 private:
  FanoutBackendOptions opts_;
  FanoutCache cache_;
};

/// Registers the `disk` and `fanout` backend names (idempotent, thread-safe). Runs
/// automatically before `main` in every program that includes this header.
void register_disk_backends();

namespace detail {
/// Makes `configure("disk", …)` work for any program that includes this header.
inline const bool disk_backends_registered = (register_disk_backends(), true);
}  // namespace detail

}  // namespace dogpile
