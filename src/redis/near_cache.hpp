// `NearCache`: the in-process L1 in front of one Redis server, kept coherent with RESP2
// client-side caching (CLIENT TRACKING … REDIRECT … BCAST). Internal to dogpile::redis.
//
// Connections (both owned by one reader thread, besides the backend's untracked pool):
// * I, the invalidation subscriber: SUBSCRIBEd to `__redis__:invalidate` (where the server
//   redirects tracking messages) and to a private fence channel;
// * A, the anchor: holds `CLIENT TRACKING on REDIRECT <I> BCAST` (every write to the server,
//   from anyone, produces a message on I) and PUBLISHes the heartbeat fences.
//
// Why it is safe:
// * Fills are race-free: a fill registers an in-flight token (with the current epoch) before
//   its GET is sent; the reader marks tokens of invalidated keys dirty; the value is installed
//   only if the token is clean and the epoch unchanged. A write executed after the GET sends
//   its message after the token exists, so it either refuses the install or evicts the entry.
// * A nil message (FLUSHALL/FLUSHDB), the loss of I or A, or a fence not seen within
//   socket_timeout empties L1 and bumps the epoch (fills in flight are then refused).
// * Bounded staleness: A publishes a fence (one at a time); Redis delivers messages to I in
//   execution order, and a fence sent alone after a write was executed comes after that write's
//   BCAST invalidation, so a fence sent at time s and read on I proves every write executed
//   before s has been applied to L1. L1 serves only while now - s_last <= max_staleness, on
//   this process's steady clock (no clock sync needed): a paused or partitioned server makes
//   reads bypass L1 within max_staleness.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "client.hpp"
#include "connection.hpp"
#include "dogpile/backends/redis.hpp"
#include "dogpile/detail/eviction.hpp"

namespace dogpile::redis_detail {

/// One L1 entry: the bytes Redis served and, next to them, the value the first region that read
/// them decoded (CacheBackend::keep_decoded). Shared with readers: an invalidation removes the
/// node from L1, and with it the decoded copy (a reader still holding the node got it while it
/// was fresh; an attach to a removed node reaches nobody).
struct NearNode {
  NearNode(std::string v, std::int64_t expires, std::size_t budget)
      : value(std::move(v)), expires_ns(expires), decoded_budget(budget) {}
  /// The decoded copy, or null; valid while this node is (see set_decoded).
  [[nodiscard]] const DecodedValue* decoded() const noexcept {
    return decoded_.load(std::memory_order_acquire);
  }
  /// Keeps `v` when no copy is kept yet and it fits `decoded_budget`; else drops it.
  /// Write-once, so that a hit reads the copy with one load, no lock and no reference count
  /// of its own (it lives as long as the node the reader holds).
  void set_decoded(std::shared_ptr<const DecodedValue> v) noexcept {
    if (!v || v->size_hint > decoded_budget || claimed_.test_and_set()) return;
    owner_ = std::move(v);
    decoded_.store(owner_.get(), std::memory_order_release);
  }

  const std::string value;
  const std::int64_t expires_ns;     // steady clock; 0 = no server TTL
  const std::size_t decoded_budget;  // bytes charged to max_bytes for the decoded copy

 private:
  std::atomic_flag claimed_{};
  std::shared_ptr<const DecodedValue> owner_;  // written once, by the claimer
  std::atomic<const DecodedValue*> decoded_{nullptr};
};

class NearCache {
 public:
  using Node = NearNode;

  /// Starts the reader thread; it connects to `where()` (asked again at every reconnect).
  /// `*generation` is the client's topology generation (Client::topology_counter, never null): when
  /// it moves, L1 is emptied and tracking re-established on `where()` (a failover, a slot map
  /// change); fills and fences begun under another generation are refused. `not_master(ep)`
  /// is told when the server tracked says (ROLE) it is no longer a master, or (`cluster_node`)
  /// when the hash slots it serves changed.
  /// `prefixes`: the key prefixes tracked (BCAST PREFIX each; empty: every key).
  NearCache(std::function<Endpoint()> where, ConnectSettings settings, std::size_t max_bytes,
            milliseconds max_staleness, const std::atomic<std::uint64_t>* generation,
            std::function<void(const Endpoint&)> not_master = {}, bool cluster_node = false,
            std::vector<std::string> prefixes = {});
  /// Stops and joins the reader. In a forked child (no reader there) the thread is abandoned.
  ~NearCache();
  NearCache(const NearCache&) = delete;
  NearCache& operator=(const NearCache&) = delete;

  /// The L1 value of `key` when L1 may serve (tracking up, last fence recent enough, entry not
  /// past its server TTL); nullopt otherwise.
  std::optional<std::string> lookup(std::string_view key);
  /// The same, as the shared L1 node (its bytes and any decoded copy); null when not served.
  std::shared_ptr<Node> lookup_node(std::string_view key);
  /// Registers a fill of `key` before its GET is sent: a token, or 0 when L1 cannot take fills
  /// now (tracking not established).
  std::uint64_t begin_fill(std::string_view key);
  /// Ends fill `token`: installs `value` (server TTL `pttl_ms` as PTTL gives it: -1 = none) only if
  /// no invalidation of `key` and no flush happened since begin_fill. Token 0 is a no-op.
  /// Returns the installed node (null when nothing was installed).
  std::shared_ptr<Node> end_fill(std::string_view key, std::uint64_t token,
                                 const std::optional<std::string>& value, long long pttl_ms);
  /// Forgets fill `token` (the GET failed).
  void abandon_fill(std::uint64_t token);
  /// Drops `key` from L1 and refuses fills of it in flight (after this process's own write, so
  /// that it reads its own writes without waiting for the server's message).
  void invalidate_local(std::string_view key);
  /// Counters and state.
  [[nodiscard]] RedisNearCacheStats stats();
  /// Test hook: called in end_fill before the install decision (deterministic fill races).
  void set_fill_hook(std::function<void(std::string_view)> hook);
  /// `listener(key)` runs on the reader thread for every key an invalidation message names
  /// (after L1 dropped it; not under any lock of this class).
  void set_invalidation_listener(std::function<void(std::string_view)> listener);
  /// When L1 was last emptied (steady clock, ns; 0 never).
  std::int64_t last_flush_ns() const { return last_flush_ns_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  using Entry = std::shared_ptr<Node>;
  struct Pending {
    std::string key;
    std::uint64_t epoch = 0;
    bool dirty = false;
    std::int64_t started_ns = 0;   // before the GET was sent: the local TTL counts from here
    std::uint64_t generation = 0;  // the client's topology generation at begin_fill
  };
  std::uint64_t generation() const { return generation_->load(std::memory_order_acquire); }

  void loop();
  void connect_once();
  void handle(const Reply& r);
  void invalidate_key(std::string_view key);  // mu_ held
  void flush(const std::string& reason);      // empties L1, bumps the epoch
  // A cluster node's own slot ranges (CLUSTER NODES, its `myself` line). @throws
  // ConnectionFailure(protocol) when it cannot say.
  std::string own_slots();
  // The node's slots differ from `my_slots_`: remember `now`, empty L1, tell the client.
  void slots_changed(std::string now);
  static std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  }
  // A bound on now_ns() read from the coarse monotonic clock (the same clock, a few ns instead
  // of a few tens): its last tick plus one tick, so never earlier than now_ns(). Hits use it.
  static std::int64_t now_upper_ns() noexcept;

  std::function<Endpoint()> where_;
  ConnectSettings settings_;
  std::int64_t max_staleness_ns_;
  milliseconds fence_interval_;
  std::string fence_channel_;
  const std::atomic<std::uint64_t>* generation_;
  std::function<void(const Endpoint&)> not_master_;
  // The topology generation tracking was established under: L1 serves, and fills and fences
  // count, only while the client's generation is still this one.
  std::atomic<std::uint64_t> connected_gen_{0};

  detail::EvictingShard<Entry> l1_;
  std::mutex mu_;  // pending_, epoch_ changes, last_flush_reason_, hook_
  std::map<std::uint64_t, Pending> pending_;
  std::uint64_t next_token_ = 0;
  std::atomic<std::uint64_t> epoch_{1};
  std::atomic<bool> ready_{false};
  std::atomic<std::int64_t> last_proof_ns_{0};  // send time of the last fence seen on I; 0 none
  std::string last_flush_reason_;
  std::function<void(std::string_view)> hook_;
  std::function<void(std::string_view)> listener_;

  std::atomic<std::uint64_t> expired_{0};  // L1 entries found past their server TTL
  std::atomic<std::uint64_t> fills_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> invalidations_{0};
  std::atomic<std::uint64_t> flushes_{0};
  std::atomic<std::int64_t> last_flush_ns_{0};

  // Reader thread only.
  std::unique_ptr<Connection> sub_;
  std::unique_ptr<Connection> anchor_;
  Endpoint endpoint_;  // where sub_ and anchor_ are connected
  std::uint64_t fence_seq_ = 0;
  bool fence_inflight_ = false;
  std::int64_t fence_sent_ns_ = 0;
  Clock::time_point next_fence_{};
  // A cluster node: the slots it served at the last check (empty: not checked since connect).
  bool cluster_node_ = false;
  std::string my_slots_;
  std::vector<std::string> prefixes_;  // tracked (empty: every key)

  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  int pid_;
  std::unique_ptr<std::thread> thread_;
};

/// The near caches of a backend: one for a server or a sentinel's master; one per master for a
/// cluster (BCAST tracking is per node), each L1 holding only what its node served, with
/// `max_bytes` split evenly between the masters known when the first is made. Thread-safe.
class NearCaches {
 public:
  /// `prefixes`: the keys L1 may hold (empty: every key); `tracked`: the prefixes the server
  /// tracks for us (those, and the lock keys under them).
  NearCaches(std::shared_ptr<Client> client, bool per_node, std::size_t max_bytes,
             milliseconds max_staleness, std::vector<std::string> prefixes = {},
             std::vector<std::string> tracked = {});
  /// Whether `key` may be kept in L1 (it starts with one of the prefixes, or there are none).
  [[nodiscard]] bool covers(std::string_view key) const noexcept;
  /// The near cache of the master serving `key` now (made at first use). Throws the client's
  /// dogpile exceptions when the cluster cannot say.
  NearCache& for_key(std::string_view key);
  /// NearCache::invalidate_local on every node (the key's entry is in its old node's L1 if
  /// the slot moved).
  void invalidate_local(std::string_view key);
  /// The counters summed over the nodes; `tracking` when every node tracks; the reason of
  /// the latest flush (prefixed with the node's address in a cluster).
  RedisNearCacheStats stats();
  void set_fill_hook(std::function<void(std::string_view)> hook);
  /// NearCache::set_invalidation_listener on every node (and on those made later).
  void set_invalidation_listener(std::function<void(std::string_view)> listener);

 private:
  std::unique_ptr<NearCache> make(std::function<Endpoint()> where, std::size_t max_bytes,
                                  bool cluster_node);

  std::shared_ptr<Client> client_;
  std::size_t max_bytes_;
  milliseconds max_staleness_;
  std::vector<std::string> prefixes_;
  std::vector<std::string> tracked_;
  std::unique_ptr<NearCache> single_;  // not a cluster
  std::shared_mutex m_;                // nodes_, hook_
  std::map<std::string, std::unique_ptr<NearCache>> nodes_;
  std::size_t node_bytes_ = 0;
  std::function<void(std::string_view)> hook_;
  std::function<void(std::string_view)> listener_;
};

}  // namespace dogpile::redis_detail
