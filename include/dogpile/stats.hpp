#pragma once
/// @file stats.hpp
/// Per-region statistics and the listener hook.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <string_view>

namespace dogpile {

/// A snapshot of a region's counters.
struct RegionStats {
  std::uint64_t hits = 0;          ///< fresh values returned (get, get_or_create)
  std::uint64_t misses = 0;        ///< reads that found no usable value
  std::uint64_t stale_served = 0;  ///< stale values returned while another caller regenerated
  std::uint64_t creations = 0;     ///< creator calls (sync and async)
  std::uint64_t lock_waits = 0;    ///< times a caller blocked on the dogpile lock
  std::chrono::nanoseconds lock_wait_time{0};  ///< total time blocked
  std::uint64_t backend_errors = 0;  ///< backend failures (propagated or treated as misses)
  std::uint64_t locks_lost = 0;      ///< dogpile locks whose lease ran out under a running creator
};

/// One event, as the listener sees it.
struct RegionEvent {
  /// The kinds of event.
  enum class Kind : std::uint8_t {
    hit,            ///< a fresh value was returned
    miss,           ///< no usable value was found
    stale_served,   ///< a stale value was returned while another caller regenerated
    created,        ///< a creator ran
    lock_wait,      ///< a caller blocked on the dogpile lock (`duration`)
    backend_error,  ///< the backend failed
    lock_lost,      ///< a dogpile lock's lease ran out under a running creator
  };
  Kind kind = Kind::hit;                 ///< what happened
  std::string_view key{};                ///< the (unmangled) key, empty for multi-key events
  std::chrono::nanoseconds duration{0};  ///< lock_wait: time blocked
  /// backend_error: the `BackendError`; lock_lost: the `LockError` also passed to the error
  /// callback; null for the other kinds. Valid only during the listener call (copy `what()`).
  const std::exception* error = nullptr;
  /// backend_error, lock_lost: the same exception, owned: keep it past the call, or
  /// `std::rethrow_exception` it to branch on its type (`ConnectionError`, `TimeoutError`…).
  std::exception_ptr exception{};
};

/// Called synchronously on the calling thread for every event; must be thread-safe and fast.
using RegionListener = std::function<void(const RegionEvent&)>;

namespace detail {
/// One set of counters, a cache line of its own. Relaxed atomics: counters, not
/// synchronization.
struct alignas(64) StatsShard {
  std::atomic<std::uint64_t> hits{0}, misses{0}, stale_served{0}, creations{0}, lock_waits{0},
      lock_wait_ns{0}, backend_errors{0}, locks_lost{0};
};

/// The shard of the calling thread: threads take shards in turn, so up to `kStatsShards`
/// threads each write a cache line no other thread writes (a single shared hit counter was a
/// contended write on every read of every thread).
inline constexpr std::size_t kStatsShards = 16;
inline std::size_t stats_shard_index() {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t index =
      next.fetch_add(1, std::memory_order_relaxed) % kStatsShards;
  return index;
}

/// The live counters of a region, sharded per thread; `snapshot` sums the shards.
struct StatsCounters {
  StatsShard shards[kStatsShards];

  /// The calling thread's shard.
  StatsShard& local() { return shards[stats_shard_index()]; }

  RegionStats snapshot() const {
    constexpr auto r = std::memory_order_relaxed;
    RegionStats out;
    std::uint64_t wait_ns = 0;
    for (const auto& s : shards) {
      out.hits += s.hits.load(r);
      out.misses += s.misses.load(r);
      out.stale_served += s.stale_served.load(r);
      out.creations += s.creations.load(r);
      out.lock_waits += s.lock_waits.load(r);
      wait_ns += s.lock_wait_ns.load(r);
      out.backend_errors += s.backend_errors.load(r);
      out.locks_lost += s.locks_lost.load(r);
    }
    out.lock_wait_time = std::chrono::nanoseconds(wait_ns);
    return out;
  }
  void reset() {
    constexpr auto r = std::memory_order_relaxed;
    for (auto& s : shards) {
      for (auto* c : {&s.hits, &s.misses, &s.stale_served, &s.creations, &s.lock_waits,
                      &s.lock_wait_ns, &s.backend_errors, &s.locks_lost}) {
        c->store(0, r);
      }
    }
  }
};
}  // namespace detail

}  // namespace dogpile
