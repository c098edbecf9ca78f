// A thread-safe pool of connections to one server. Internal to dogpile::redis.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "connection.hpp"

namespace dogpile::redis_detail {

/// At most `max_size` connections to one endpoint, dialled on demand and reused. A caller
/// waits for a free one at most connect + socket timeout (then TimeoutError). A connection that
/// failed is dropped, never returned; a `closed` failure also drops every idle connection (a
/// restarted server closed them all) and bumps `epoch()`. A forked child never reuses its
/// parent's sockets: it starts with an empty pool. Thread-safe.
class Pool {
 public:
  Pool(Endpoint ep, ConnectSettings settings, std::size_t max_size);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  /// A connection on loan; returned to the pool on destruction unless it broke.
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> c, bool reused)
        : pool_(pool), conn_(std::move(c)), reused_(reused) {}
    Lease(Lease&& o) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (pool_ != nullptr && conn_) pool_->give_back(std::move(conn_));
    }
    Connection& operator*() const { return *conn_; }
    Connection* operator->() const { return conn_.get(); }
    /// True if the connection was idle in the pool (it may have gone stale since).
    [[nodiscard]] bool reused() const { return reused_; }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
    bool reused_;
  };

  /// A connection: an idle one, a new one, or (when `max_size` are out) the next returned.
  /// @throws ConnectionFailure(connect), TimeoutError (pool exhausted).
  Lease acquire();

  /// Runs `f(Connection&)` on a pooled connection. A reused connection that turns out closed
  /// (the server restarted) is retried once on a fresh one: the command never reached a live
  /// server, so the retry cannot run it twice. @throws ConnectionFailure, what `f` throws.
  template <class F>
  auto run(F&& f) -> decltype(f(std::declval<Connection&>())) {
    for (int attempt = 0;; ++attempt) {
      Lease lease = acquire();
      try {
        return f(*lease);
      } catch (const ConnectionFailure& e) {
        if (e.kind() == Failure::closed) drop_idle();
        if (!(e.kind() == Failure::closed && lease.reused() && attempt == 0)) throw;
      }
    }
  }

  /// Drops every idle connection (after a failover or a restart); bumps the epoch.
  void drop_idle();
  [[nodiscard]] const Endpoint& endpoint() const noexcept { return ep_; }
  [[nodiscard]] const ConnectSettings& settings() const noexcept { return settings_; }
  /// Changes whenever connections were lost: a near cache compares it to detect a gap.
  [[nodiscard]] std::uint64_t epoch() const noexcept { return epoch_.load(); }

 private:
  void give_back(std::unique_ptr<Connection> c);
  void reset_if_forked();  // m_ held

  Endpoint ep_;
  ConnectSettings settings_;
  std::size_t max_size_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t out_ = 0;  // connections on loan
  int pid_;
  std::atomic<std::uint64_t> epoch_{0};
  std::atomic<bool> lost_{false};  // a connection broke since the last one opened (log line)
};

}  // namespace dogpile::redis_detail
