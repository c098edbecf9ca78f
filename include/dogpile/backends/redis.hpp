#pragma once
/// @file redis.hpp
/// The Redis region backends of `dogpile::redis` (hiredis underneath; no hiredis header here):
/// `redis` (one server), `redis_sentinel` (the master a Sentinel set names, followed across
/// failovers) and `redis_cluster` (slot routing with MOVED/ASK). Including this header
/// registers the three names and their `dogpile.cache.*` aliases:
///
/// ```cpp
/// #include <dogpile/backends/redis.hpp>
/// region.configure("redis", {.expiration_time = 10min,
///                            .arguments = {{"url", "redis://127.0.0.1:6379/0"},
///                                          {"distributed_lock", true},
///                                          {"lock_timeout", 30}}});
/// region.configure(std::make_shared<dogpile::RedisBackend>(dogpile::RedisOptions{
///     .host = "127.0.0.1", .port = 6379, .distributed_lock = true}));
/// ```
///
/// **Storage.** Values are the region's envelope bytes (`SET key value [PX ms]` with
/// `redis_expiration_time`), so a Python dogpile.cache region with a JSON serializer reads
/// what C++ writes and the other way. Keys are binary-safe (NUL, CR, LF are fine).
/// `get_multi` is one `MGET` per hash slot group, `set_multi` one `MSET` (no TTL) or a pipeline
/// of `SET … PX`, `erase_multi` one `DEL` per slot group: on a cluster, commands are split by
/// slot and pipelined per node, so no CROSSSLOT error reaches you.
///
/// **Connections.** A thread-safe pool per server (`pool_size` connections at most), each call
/// bounded by `socket_connect_timeout` and `socket_timeout` (a deadline for the whole call:
/// sending it and reading every reply in full, however slowly the server trickles bytes). A
/// reply is bounded by `max_value_bytes`; a malformed or oversized reply is a `BackendError`
/// and closes that connection (it never goes back to the pool). A dead connection is dropped and
/// re-dialled; after a server restart the next call succeeds. A call on a down server throws
/// `BackendError` (`ConnectionError`, `TimeoutError` when a reply timed out, `ReplyError`,
/// `ClusterDownError`: docs/backends.md, "Errors") within the timeouts, so a region with
/// `on_backend_error = treat_as_miss` keeps serving. A forked child opens its own connections.
///
/// **The distributed lock** (`distributed_lock`, on by default for `redis_sentinel` as in
/// dogpile): a `dogpile::LeaseLock` on the key `lock_prefix + key` (default `_lock<key>`, as
/// dogpile, so Python and C++ processes of one fleet exclude each other). Acquire is
/// `SET lockkey token NX PX lock_timeout` with a fresh random token; release is a Lua
/// compare-and-delete (`EVALSHA`, falling back to `EVAL`), so only the owner releases, and a
/// lease lost before release is reported (`LockError`) without deleting anyone's lock. While
/// held, the lease is renewed every `lock_timeout / 3` (owner-checked `PEXPIRE` in Lua), so a
/// slow live creator keeps it and a crashed or paused one loses it after `lock_timeout`.
/// Release publishes the lock key on the channel `dogpile:lock-released`; waiting processes
/// subscribe to it (one connection and thread per backend, started at the first wait) and
/// retry at once, else they poll with jittered backoff capped at `lock_sleep`. A blocking
/// acquire gives up after `lock_blocking_timeout` (the region then throws `TimeoutError`). The
/// handle may be released from another thread.
///
/// **The near cache** (`near_cache`, off by default): an in-process L1 of
/// the values read, kept coherent by Redis client-side caching (`CLIENT TRACKING … REDIRECT …
/// BCAST`, two extra connections and a reader thread). A write by anyone drops the copy; fills
/// are race-free; no read is served from L1 more than `max_staleness` after the last heartbeat
/// fence proved it fresh. `near_cache_stats()` reports it. docs/backends.md "Near cache".
///
/// Thread-safety: every call may be made from many threads at once.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/duration.hpp"
#include "dogpile/mutex.hpp"
#include "dogpile/registry.hpp"

namespace dogpile {

// Internal to dogpile::redis (src/redis/): declared only, so no hiredis header leaks out.
namespace redis_detail {
class Client;
class ReleaseNotifier;
class NearCaches;
class NearCache;
struct NearNode;
}  // namespace redis_detail

/// A `host, port` pair, as dogpile's `sentinels` and `startup_nodes` lists hold them.
using RedisNode = std::pair<std::string, int>;

/// TLS to Redis, with redis-py's argument names and meanings. Off by default; when on, the
/// server's certificate is verified (against `ssl_ca_certs` / `ssl_ca_path`, else the system
/// store) and must name the host, unless `ssl_cert_reqs` is "none". A failed handshake is a
/// `BackendError` saying why (never a plain-text fallback). Plain aggregate.
struct RedisTlsOptions {
  bool ssl = false;                        ///< use TLS (a `rediss://` URL sets it)
  std::string ssl_cert_reqs = "required";  ///< "required", "optional" (= required) or "none"
  std::string ssl_ca_certs{};              ///< PEM file of the CAs to trust
  std::string ssl_ca_path{};               ///< directory of hashed CA certificates
  std::string ssl_certfile{};              ///< client certificate (mutual TLS), PEM
  std::string ssl_keyfile{};               ///< its private key; empty = in ssl_certfile
  bool ssl_check_hostname = true;          ///< the certificate must name the host
  std::string ssl_server_hostname{};  ///< SNI and the name checked; empty = the host connected to
};

/// The near cache (an in-process L1 in front of Redis, kept coherent by Redis client-side
/// caching; see docs/backends.md "Near cache"). Off unless `max_bytes` > 0. Plain aggregate.
struct RedisNearCacheOptions {
  std::size_t max_bytes = 0;  ///< L1 bound (keys + values + overhead); 0 = no near cache
  /// Longest time after the last proof of freshness (a heartbeat fence seen on the
  /// invalidation connection) that L1 may still serve a value; reads then go to Redis.
  Duration max_staleness = std::chrono::seconds(1);
  /// The key prefixes L1 covers (`CLIENT TRACKING … BCAST PREFIX p …`, the lock keys under
  /// them too): only keys starting with one of them are kept in L1, every other key is read
  /// from Redis each time, and writes to other keys, by anyone, send this process nothing.
  /// Empty (the default): every key, and every write on the server reaches every near-cache
  /// process. Keep them few and shared by the fleet (the server compares each written key
  /// with every distinct prefix). Two prefixes where one starts the other are refused
  /// (`ValidationError`), as Redis refuses them.
  std::vector<std::string> prefixes{};
};

/// What the near cache did. Plain aggregate (a snapshot).
struct RedisNearCacheStats {
  bool enabled = false;             ///< a near cache is configured
  bool tracking = false;            ///< invalidations are flowing (subscriber and anchor up)
  std::uint64_t l1_hits = 0;        ///< reads served from L1 (no round trip)
  std::uint64_t fills = 0;          ///< values installed into L1 after a read from Redis
  std::uint64_t refused_fills = 0;  ///< fills not installed: invalidated or flushed meanwhile
  std::uint64_t invalidations = 0;  ///< keys invalidated by the server's messages
  std::uint64_t flushes = 0;        ///< times L1 was emptied
  std::string last_flush_reason{};  ///< why L1 was last emptied ("" = never)
  std::size_t entries = 0;          ///< entries in L1 now
  std::size_t bytes = 0;            ///< their weight
};

/// Options of `RedisBackend` (dogpile's argument names). Plain aggregate.
struct RedisOptions {
  /// `redis://[[user]:password@]host[:port][/db]` or `unix://[[user]:password@]/path[?db=N]`;
  /// when set, it overrides host, port, db, username and password.
  std::string url{};
  std::string host = "localhost";                     ///< server host
  int port = 6379;                                    ///< server port
  int db = 0;                                         ///< database number (SELECT)
  std::string username{};                             ///< ACL user (Redis 6+); empty = default user
  std::string password{};                             ///< AUTH password; empty = none
  Duration socket_timeout = std::chrono::seconds(2);  ///< longest a call may take (send + reply)
  Duration socket_connect_timeout = std::chrono::seconds(1);  ///< longest wait to connect
  /// Largest value a reply may carry (a reply: this much per key it answers); a server that
  /// sends more gets `BackendError` and its connection closed, before the memory is taken.
  std::size_t max_value_bytes = std::size_t{64} << 20;
  std::size_t pool_size = 16;  ///< most connections open at once (dogpile: `connection_pool`)
  std::optional<Duration> redis_expiration_time{};  ///< server TTL of stored values; none = no TTL
  bool distributed_lock = false;  ///< use the Redis lock as the dogpile lock (else in-process)
  Duration lock_timeout = std::chrono::seconds(30);      ///< the lease (renewed while held)
  Duration lock_sleep = std::chrono::milliseconds(100);  ///< longest poll interval of a waiter
  std::optional<Duration> lock_blocking_timeout{};       ///< longest blocking wait; none = forever
  std::string lock_prefix{};           ///< lock key = prefix + key; empty = dogpile's `_lock`
  RedisTlsOptions tls{};               ///< TLS (`ssl=true` or a `rediss://` URL)
  RedisNearCacheOptions near_cache{};  ///< in-process L1 (off by default)
};

/// Options of `RedisSentinelBackend`. Plain aggregate.
struct RedisSentinelOptions {
  std::vector<RedisNode> sentinels{};     ///< sentinel addresses (required)
  std::string service_name = "mymaster";  ///< the monitored master's name
  std::string sentinel_username{};        ///< AUTH user for the sentinels (`sentinel_kwargs`)
  std::string sentinel_password{};        ///< AUTH password for the sentinels (`sentinel_kwargs`)
  int db = 0;                             ///< database number on the master
  std::string username{};                 ///< ACL user on the master
  std::string password{};                 ///< AUTH password on the master
  /// Longest a call may take (a deadline for the whole call, not a silence); also bounds a
  /// write held through a failover.
  Duration socket_timeout = std::chrono::seconds(2);
  Duration socket_connect_timeout = std::chrono::seconds(1);  ///< longest wait to connect
  /// Largest value a reply may carry (a reply: this much per key it answers); a server that
  /// sends more gets `BackendError` and its connection closed, before the memory is taken.
  std::size_t max_value_bytes = std::size_t{64} << 20;
  std::size_t pool_size = 16;                       ///< most connections open at once
  std::optional<Duration> redis_expiration_time{};  ///< server TTL of stored values
  bool distributed_lock = true;  ///< on by default, as dogpile's sentinel backend
  Duration lock_timeout = std::chrono::seconds(30);      ///< the lease (renewed while held)
  Duration lock_sleep = std::chrono::milliseconds(100);  ///< longest poll interval of a waiter
  std::optional<Duration> lock_blocking_timeout{};       ///< longest blocking wait
  std::string lock_prefix{};                             ///< lock key prefix; empty = `_lock`
  RedisTlsOptions tls{};           ///< TLS to the master and replicas (`ssl_*` arguments)
  RedisTlsOptions sentinel_tls{};  ///< TLS to the sentinels (`sentinel_kwargs`' `ssl_*`)
  /// In-process L1 (off by default), tracked against the current master; emptied when a
  /// failover is followed.
  RedisNearCacheOptions near_cache{};
};

/// Options of `RedisClusterBackend`. Plain aggregate.
struct RedisClusterOptions {
  std::string url{};                       ///< one node, `redis://[[user]:password@]host:port`
  std::vector<RedisNode> startup_nodes{};  ///< nodes to learn the slot map from
  std::string username{};                  ///< ACL user on every node
  std::string password{};                  ///< AUTH password on every node
  Duration socket_timeout = std::chrono::seconds(2);          ///< longest a call may take
  Duration socket_connect_timeout = std::chrono::seconds(1);  ///< longest wait to connect
  /// Largest value a reply may carry (a reply: this much per key it answers); a server that
  /// sends more gets `BackendError` and its connection closed, before the memory is taken.
  std::size_t max_value_bytes = std::size_t{64} << 20;
  std::size_t pool_size = 16;                        ///< most connections open at once, per node
  std::optional<Duration> redis_expiration_time{};   ///< server TTL of stored values
  bool distributed_lock = false;                     ///< use the Redis lock as the dogpile lock
  Duration lock_timeout = std::chrono::seconds(30);  ///< the lease (renewed while held)
  Duration lock_sleep = std::chrono::milliseconds(100);  ///< longest poll interval of a waiter
  std::optional<Duration> lock_blocking_timeout{};       ///< longest blocking wait
  std::string lock_prefix{};                             ///< lock key prefix; empty = `_lock`
  RedisTlsOptions tls{};  ///< TLS to every node (`ssl=true` or a `rediss://` URL)
  /// In-process L1 (off by default): tracked per master, `max_bytes` split between them;
  /// emptied on a slot map change.
  RedisNearCacheOptions near_cache{};
};

/// What the three Redis backends share: storage commands and the lock, over a router that
/// sends each command to the right server. Not constructed directly: use `RedisBackend`,
/// `RedisSentinelBackend` or `RedisClusterBackend`. Thread-safe.
class RedisBackendBase : public CacheBackend {
 public:
  /// Closes the connections and stops the release-notice subscriber, if a wait started one.
  /// Lock handles taken from this backend share what they use and stay valid.
  ~RedisBackendBase() override;
  /// The lock key of `key`: `lock_prefix + key`.
  [[nodiscard]] std::string lock_key(std::string_view key) const;
  /// The near cache's counters (all zero, `enabled` false, without one). Thread-safe.
  [[nodiscard]] RedisNearCacheStats near_cache_stats() const;
  /// For tests: `hook(key)` runs in every near-cache fill after Redis answered and before the
  /// install decision, so a test can write in between (the fill race). No-op without a near
  /// cache. Set it before concurrent use.
  void set_near_cache_fill_hook_for_testing(std::function<void(std::string_view key)> hook);

  /// The lock and TTL settings every Redis backend takes. Plain aggregate.
  struct Common {
    std::optional<Duration> redis_expiration_time{};       ///< server TTL of stored values
    bool distributed_lock = false;                         ///< Redis lock on or off
    Duration lock_timeout = std::chrono::seconds(30);      ///< the lease
    Duration lock_sleep = std::chrono::milliseconds(100);  ///< poll cap
    std::optional<Duration> lock_blocking_timeout{};       ///< blocking wait bound
    std::string lock_prefix{};                             ///< lock key prefix
    RedisNearCacheOptions near_cache{};                    ///< L1 (off by default)
  };

 protected:
  /// Validates `common` (ValidationError naming the argument).
  RedisBackendBase(std::string name, std::shared_ptr<redis_detail::Client> client, Common common);

  /// `GET`.
  std::optional<std::string> do_get(std::string_view key) override;
  /// `SET [PX]`.
  void do_set(std::string_view key, std::string_view value) override;
  /// `DEL`.
  void do_erase(std::string_view key) override;
  /// One `MGET` per slot group, pipelined per node. With a near cache: L1 hits first, then
  /// the misses in one round trip (`MGET` per slot group and a `PTTL` per key), filled as `get`.
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override;
  /// `MSET` per slot group, or a pipeline of `SET … PX`.
  void do_set_multi(std::span<const BytesItem> items) override;
  /// One `DEL` per slot group.
  void do_erase_multi(std::span<const std::string> keys) override;
  /// The Redis lease lock of `key`, or nullptr when `distributed_lock` is off.
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key) override;
  /// True with a near cache: a region's decoded value is kept next to the L1 bytes.
  [[nodiscard]] bool do_keeps_decoded() const override { return near_ != nullptr; }
  /// With a near cache: the decoded value of `kind` kept in L1, else the bytes (from L1 or a
  /// fill) with their L1 entry as the slot.
  DecodableBytes do_get_decodable(std::string_view key, const DecodedKind& kind) override;
  /// Attaches a decoded value to its L1 entry (see NearCache::Node).
  void do_keep_decoded(const std::shared_ptr<void>& slot,
                       std::shared_ptr<const DecodedValue> value) noexcept override;

 private:
  std::optional<std::string> near_get(std::string_view key);
  // A near-cache miss: GET + PTTL, installed in L1 if no invalidation raced it; `installed`
  // (when given) receives the L1 entry (null if none).
  std::optional<std::string> near_fill(redis_detail::NearCache& nc, std::string_view key,
                                       std::shared_ptr<redis_detail::NearNode>* installed);
  std::vector<std::optional<std::string>> near_get_multi(std::span<const std::string> keys);
  void near_forget(std::string_view key);  // after this process's own write
  // Whether `key` goes through the near cache (one is configured and its prefixes cover it).
  [[nodiscard]] bool near_covers(std::string_view key) const noexcept;
  std::optional<std::string> server_get(std::string_view key);  // a GET, no near cache
  std::vector<std::optional<std::string>> server_get_multi(std::span<const std::string> keys);

  std::shared_ptr<redis_detail::Client> client_;
  Common common_;
  std::shared_ptr<redis_detail::ReleaseNotifier> notifier_;
  std::shared_ptr<redis_detail::NearCaches> near_;
};

/// The `redis` backend: one server. See the file comment.
class RedisBackend final : public RedisBackendBase {
 public:
  /// Validates the options; connects lazily (the first call dials). @throws ValidationError
  /// naming a bad option (a malformed `url`, a bad `lock_prefix`...).
  explicit RedisBackend(RedisOptions options);
  /// dogpile's arguments: `url`, `host`, `port`, `db`, `username`, `password`,
  /// `socket_timeout`, `socket_connect_timeout` (seconds), `connection_pool` / `pool_size` /
  /// `max_connections` (an integer), `max_value_bytes` (an integer), `redis_expiration_time`
  /// (seconds), `distributed_lock`, `lock_timeout`, `lock_sleep`, `lock_blocking_timeout`
  /// (seconds), `lock_prefix`, `near_cache` (an object: `max_bytes`, `max_staleness` seconds,
  /// `prefixes` a list of strings), `thread_local_lock` (accepted and ignored: handles may be
  /// released from any thread),
  /// `connection_kwargs` (its username/password/timeouts applied, other keys ignored),
  /// `socket_keepalive[_options]` (ignored), redis-py's `ssl`/`ssl_*` names. An unknown name is
  /// refused (unlike dogpile) with a "did you mean" and the known names.
  /// @throws ValidationError naming a wrong or unknown argument.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);
  /// The options, with `url` already applied to host/port/db/username/password.
  [[nodiscard]] const RedisOptions& options() const noexcept { return opts_; }

 protected:
  /// `max_value_bytes`: also the bound a region decodes this backend's values with.
  [[nodiscard]] std::size_t do_max_value_bytes() const override { return opts_.max_value_bytes; }

 private:
  RedisOptions opts_;
};

/// The `redis_sentinel` backend: the master of `service_name`. See the file comment.
/// It subscribes to every sentinel's failover events (a thread per sentinel, started at the
/// first call) and holds writes while a failover is between the leader's election and the new
/// master's promotion, so that no write it acknowledges is lost in a planned failover; a held
/// write that cannot be placed within `socket_timeout` throws `BackendError` unsent. Reads are
/// not held. docs/backends.md says what can still be lost. Thread-safe.
class RedisSentinelBackend final : public RedisBackendBase {
 public:
  /// Validates the options; discovers the master at the first call. @throws ValidationError.
  explicit RedisSentinelBackend(RedisSentinelOptions options);
  /// The `redis` arguments (less url/host/port) plus `sentinels` (`[["host", port], …]`),
  /// `service_name`, `sentinel_kwargs` (an object: `username`, `password` for the sentinels).
  /// @throws ValidationError naming a wrong or unknown argument.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);
  /// The options.
  [[nodiscard]] const RedisSentinelOptions& options() const noexcept { return opts_; }

 protected:
  /// `max_value_bytes`: also the bound a region decodes this backend's values with.
  [[nodiscard]] std::size_t do_max_value_bytes() const override { return opts_.max_value_bytes; }

 private:
  RedisSentinelOptions opts_;
};

/// The `redis_cluster` backend: a Redis Cluster. See the file comment.
class RedisClusterBackend final : public RedisBackendBase {
 public:
  /// Validates the options; loads the slot map at the first call. @throws ValidationError.
  explicit RedisClusterBackend(RedisClusterOptions options);
  /// `url` or `startup_nodes` (`[["host", port], …]` or `"host:port"` strings), `username`,
  /// `password`, the timeouts, `pool_size`, `max_value_bytes`, `redis_expiration_time` and the
  /// lock arguments, and the accepted Python names of `redis`.
  /// @throws ValidationError naming a wrong or unknown argument.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);
  /// The options.
  [[nodiscard]] const RedisClusterOptions& options() const noexcept { return opts_; }

 protected:
  /// `max_value_bytes`: also the bound a region decodes this backend's values with.
  [[nodiscard]] std::size_t do_max_value_bytes() const override { return opts_.max_value_bytes; }

 private:
  RedisClusterOptions opts_;
};

/// Registers `redis`, `redis_sentinel` and `redis_cluster` (idempotent, thread-safe). Runs
/// automatically before `main` in every program that includes this header.
void register_redis_backends();

namespace detail {
/// Makes `configure("redis", …)` work for any program that includes this header.
inline const bool redis_backends_registered = (register_redis_backends(), true);
}  // namespace detail

}  // namespace dogpile
