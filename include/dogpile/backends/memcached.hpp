#pragma once
/// @file memcached.hpp
/// The `memcached` region backend on libmemcached (dogpile.cache's `dogpile.cache.memcached`,
/// `pylibmc`, `bmemcached` and `pymemcache`, one backend for all four names). Part of
/// `dogpile::memcached`; including this header registers the names.
///
/// ```cpp
/// #include <dogpile/backends/memcached.hpp>
/// region.configure("memcached", {.expiration_time = 10min,
///                                .arguments = {{"url", {"10.0.0.1:11211", "10.0.0.2:11211"}},
///                                              {"distributed_lock", true},
///                                              {"lock_timeout", 30},
///                                              {"memcached_expire_time", 3600}}});
/// ```
///
/// **Servers and hashing**: keys are spread over the servers of `url` by consistent hashing
/// (ketama, MD5) unless `behaviors` says otherwise, so adding a server moves about 1/n of the
/// keys. A Python client sharing the servers must use the same distribution (pylibmc:
/// `behaviors={"ketama": True}`). Every call is bounded by `socket_timeout` (connect, send,
/// receive). A server that fails is not asked again for `dead_retry` seconds; meanwhile its keys
/// move to the live servers (consistent hashing: only its share moves; `remove_failed`, on by
/// default) and come back once it answers again — the copies written elsewhere meanwhile stay
/// there until they expire. With `remove_failed = false` calls on its keys fail at once with
/// `BackendError` instead (a region with `on_backend_error = treat_as_miss` serves from the
/// creator). Either way the call that finds the server dead fails with `BackendError`.
///
/// **Values** are the region's envelope bytes, stored with flags 0 (Python's bytes), so Python
/// dogpile.cache with a JSON serializer reads them and the other way. With `min_compress_len`,
/// longer values are zlib-compressed and flagged as pylibmc and python-memcached flag theirs
/// (flag 8). A value over the server's item size limit (`memcached -I`, asked from the servers)
/// is refused with `BackendError` before it is sent, so the value already stored stays (memcached
/// itself drops it on a too-large `set`).
///
/// **Keys** memcached cannot take (over 250 bytes, spaces, control characters) are never sent as
/// they are: by default they are replaced by their SHA-1 hex digest (as
/// `dogpile::length_conditional_mangler`); with `mangle_bad_keys = false` they are refused with
/// `ValidationError`.
///
/// **The lock** (`distributed_lock = true`; otherwise `get_mutex` returns nullptr and the region
/// uses its in-process mutex) is a `dogpile::LeaseLock` on dogpile's key `"_lock" + key`, so
/// Python dogpile.cache processes and this backend exclude each other. Acquire: an `add` of that
/// key holding a fresh owner token, expiring after `lock_timeout`, retried with jittered backoff
/// capped at `lock_sleep` (dogpile's backoff is uncapped: a waiter could oversleep by seconds).
/// While held, the lease is renewed
/// (`gets` + `cas` with the holder's token) every `lock_timeout / 3`. Release is owner-checked:
/// `gets`, compare the token, then a `cas` that replaces the value with a tombstone, then
/// `delete` of the tombstone; a lock that expired and was taken by another holder is never
/// released by us (the `cas` fails). memcached's clock has one-second resolution: the lock key
/// lives between `lock_timeout` and `lock_timeout + 1 s` after each renewal.
/// `lock_timeout = 0` (dogpile's default) means the lock key never expires: no renewal is needed,
/// but a holder that dies leaves the key until it is deleted by hand or evicted — set a
/// `lock_timeout` in production. `is_lease()` is false then.
///
/// Thread-safety: every call may be made from many threads at once: each call borrows a client
/// from a pool (`pool_size` clients at most), never sharing one handle. A forked child builds
/// its own pool on first use.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/duration.hpp"
#include "dogpile/mutex.hpp"
#include "dogpile/registry.hpp"

namespace dogpile {

/// Options of `MemcachedBackend` (dogpile's argument names). Plain aggregate.
struct MemcachedOptions {
  std::vector<std::string> url{};  ///< servers, `"host:port"` (port 11211 if absent); required
  bool distributed_lock = false;   ///< `get_mutex` returns the memcached lock (else nullptr)
  Duration lock_timeout = std::chrono::seconds(0);  ///< lock key expiry (whole seconds); 0 = never
  Duration lock_sleep = std::chrono::milliseconds(100);  ///< longest backoff nap of a lock waiter
  Duration memcached_expire_time = std::chrono::seconds(0);  ///< server expiry of values; 0 = none
  std::size_t min_compress_len = 0;  ///< zlib-compress values at least this long; 0 = never
  nlohmann::json behaviors = nlohmann::json::object();  ///< libmemcached behaviors by pylibmc name
  Duration socket_timeout = std::chrono::seconds(3);    ///< connect / send / receive timeout
  Duration dead_retry = std::chrono::seconds(30);       ///< how long a failed server is not retried
  /// A failed server leaves the consistent-hashing ring (its keys go to the live servers) until
  /// `dead_retry` has passed and it answers again (pylibmc's `remove_failed`). false: its keys
  /// fail with `BackendError` meanwhile.
  bool remove_failed = true;
  std::optional<std::string> username{};  ///< SASL user (binary protocol)
  std::optional<std::string> password{};  ///< SASL password
  std::size_t pool_size = 64;             ///< most clients open at once
  bool mangle_bad_keys = true;     ///< SHA-1 keys memcached cannot take (false: ValidationError)
  std::size_t max_value_size = 0;  ///< largest value sent; 0 = the servers' item size limit
  /// Largest value read back (as stored, and once inflated): a server announcing a larger one
  /// gets `BackendError` before libmemcached allocates it, and the connection is reset.
  std::size_t max_value_bytes = std::size_t{64} << 20;
};

/// The `memcached` backend. See the file comment.
class MemcachedBackend final : public CacheBackend {
 public:
  /// Builds the client pool (servers are connected on first use).
  /// @throws ValidationError for an empty or malformed `url`, a bad behavior or option.
  explicit MemcachedBackend(MemcachedOptions options);
  /// Closes the clients. Never throws.
  ~MemcachedBackend() override;
  /// Arguments (JSON object): `url` (string or list of strings, required), `distributed_lock`,
  /// `lock_timeout`, `lock_sleep`, `memcached_expire_time`, `socket_timeout`, `dead_retry`
  /// (seconds, integers or floats), `remove_failed` (bool), `min_compress_len`, `pool_size`,
  /// `max_value_size`, `max_value_bytes` (integers), `behaviors` (object), `username`, `password`
  /// (strings), `mangle_bad_keys` (bool); dogpile's `binary` (bool) is `behaviors.binary_protocol`.
  /// @throws ValidationError naming a missing, mistyped or unknown argument.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);

  /// The options this backend was built with.
  [[nodiscard]] const MemcachedOptions& options() const noexcept;
  /// The largest value this backend sends (the servers' item size limit less memcached's item
  /// overhead, or `max_value_size`). Asks the servers the first time. @throws BackendError.
  [[nodiscard]] std::size_t value_size_limit();

 protected:
  /// One `get`; a value another client stored pickled (flag 1) reads as a miss.
  std::optional<std::string> do_get(std::string_view key) override;
  /// One `set` with `memcached_expire_time`. @throws BackendError (oversized value, server).
  void do_set(std::string_view key, std::string_view value) override;
  /// One `delete`; a missing key is fine.
  void do_erase(std::string_view key) override;
  /// One multi-get (every server asked in parallel).
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override;
  /// Pipelined: every item sent before any reply is read (one round trip per server for a
  /// batch under libmemcached's I/O watermarks), every reply checked. Sizes are checked before
  /// the first item is sent; every item is sent even when one fails, then the first failure is
  /// thrown. @throws BackendError / TimeoutError (a write refused, unconfirmed or unsent).
  void do_set_multi(std::span<const BytesItem> items) override;
  /// Pipelined as `do_set_multi`; a missing key is fine.
  void do_erase_multi(std::span<const std::string> keys) override;
  /// The owner-checked `add` lock (see the file comment), or nullptr without `distributed_lock`.
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key) override;
  /// `max_value_bytes`: also the bound a region decodes this backend's values with.
  [[nodiscard]] std::size_t do_max_value_bytes() const override;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// Registers the names memcached, pylibmc, bmemcached and pymemcache, each also with the
/// prefix "dogpile.cache."; idempotent, thread-safe. Runs automatically before main() in every
/// program that includes this header.
void register_memcached_backends();

namespace detail {
/// Makes `configure("memcached", …)` work for any program that includes this header.
inline const bool memcached_backends_registered = (register_memcached_backends(), true);
}  // namespace detail

}  // namespace dogpile
