// The memcached client pool: libmemcached clients with bounded allocation and timeouts, lent one
// call at a time, and the one place a failed call becomes a dogpile error. Internal to
// dogpile::memcached.
#pragma once

#include <libmemcached/memcached.h>
#include <libmemcachedutil-1.0/pool.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "dogpile/backends/memcached.hpp"

namespace dogpile::memcached_detail {

/// memcached_strerror plus libmemcached's last error detail (host:port, system reason), without
/// the client's address and libmemcached's source line.
std::string rc_text(const memcached_st* mc, memcached_return_t rc);

/// Replies after which the connection is still in step: the server said something expected.
bool in_step(memcached_return_t rc);

/// Everything a call needs: the options and the client pool. Shared by the backend and its
/// locks. Thread-safe; a forked child builds its own pool on its first call.
struct Pool {
  MemcachedOptions opts;
  std::mutex mu;  // guards pool / pid (a forked child builds its own)
  memcached_st* master = nullptr;
  memcached_pool_st* pool = nullptr;
  // Clients for pipelined multi-key writes (multi.cpp): the same servers and behaviors, binary
  // protocol with buffered requests. Separate because switching buffering on a lent client
  // closes its connections.
  memcached_st* writer_master = nullptr;
  memcached_pool_st* writer_pool = nullptr;
  pid_t pid;
  std::atomic<std::size_t> size_limit{0};  // 0 = not asked yet

  /// @throws ValidationError for a bad option (see options.hpp), BackendError when libmemcached
  /// cannot allocate.
  explicit Pool(MemcachedOptions o);
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();

  // A client for one call, returned to the pool at scope exit. A client whose last call went
  // wrong (a reply libmemcached could not read, a timeout, a refused value) may have unread
  // bytes of that reply on its connections: they are closed before it goes back, so the next
  // call starts in step (libmemcached asserts on an out-of-step reply).
  class Client {
   public:
    Client(memcached_pool_st* pool, memcached_st* mc);
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client();
    [[nodiscard]] memcached_st* get() const { return mc_; }

   private:
    memcached_pool_st* pool_;
    memcached_st* mc_;
  };

  /// A free client, waiting at most socket_timeout. @throws TimeoutError.
  Client client();
  /// A free client of the pipelining pool (binary protocol, buffered requests), waiting at most
  /// socket_timeout. @throws TimeoutError.
  Client writer();

  /// Throws the error of a failed call (TimeoutError for a timeout, else BackendError), naming
  /// the server of `key` when there is one; resets the client's connections when the reply may
  /// be half read.
  [[noreturn]] void fail(const memcached_st* mc, memcached_return_t rc, const std::string& what,
                         std::string_view key);

  // ---- the stored bytes (values.cpp) ----

  /// The server expiry for `ttl` (0 = none; over 30 days as an absolute Unix time).
  [[nodiscard]] time_t expiry(std::chrono::milliseconds ttl) const;
  /// Decodes a stored value: zlib-flagged values are inflated; pickles are not ours (a miss).
  /// Over max_value_bytes (read under the allocator's slack, or inflated): BackendError.
  [[nodiscard]] std::optional<std::string> decode(const char* data, std::size_t len,
                                                  std::uint32_t flags) const;
  /// The servers' smallest item size limit less the item overhead, asked once.
  std::size_t limit();
  /// The bytes to send for `value` and their flags, refused (BackendError) before anything is
  /// sent when over the limit. `storage` holds compressed bytes.
  std::pair<std::string_view, std::uint32_t> encode(std::string_view key, std::string_view value,
                                                    std::string& storage);
  /// One `set` with memcached_expire_time. @throws BackendError, TimeoutError.
  void store(memcached_st* mc, std::string_view key, std::string_view value);
  /// One `delete`; a missing key is fine. @throws BackendError, TimeoutError.
  void remove(memcached_st* mc, std::string_view key);

  // ---- pipelined multi-key writes (multi.cpp) ----

  /// Every item sent before any reply is read: one round trip per server for a batch under
  /// libmemcached's I/O watermarks (io_msg_watermark requests, io_bytes_watermark bytes), one per
  /// chunk beyond. Every item is sent even when one fails; then the first failure is thrown
  /// (BackendError / TimeoutError naming its server), also when a reply could not be read.
  void store_many(std::span<const BytesItem> items);
  /// As store_many, for `delete` (a missing key is fine).
  void remove_many(std::span<const std::string> keys);

 private:
  void build_pool();
  void build_one(memcached_st*& m, memcached_pool_st*& p, bool pipelined);
  Client lend(memcached_pool_st* Pool::*which);
};

}  // namespace dogpile::memcached_detail
