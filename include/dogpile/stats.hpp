#pragma once
/// @file stats.hpp
/// Per-region statistics and the listener hook.

#include <atomic>
#include <chrono>
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
/// The live counters. Relaxed atomics: counters, not synchronization.
struct StatsCounters {
  std::atomic<std::uint64_t> hits{0}, misses{0}, stale_served{0}, creations{0}, lock_waits{0},
      lock_wait_ns{0}, backend_errors{0}, locks_lost{0};
  RegionStats snapshot() const {
    constexpr auto r = std::memory_order_relaxed;
    return {hits.load(r),           misses.load(r),
            stale_served.load(r),   creations.load(r),
            lock_waits.load(r),     std::chrono::nanoseconds(lock_wait_ns.load(r)),
            backend_errors.load(r), locks_lost.load(r)};
  }
  void reset() {
    constexpr auto r = std::memory_order_relaxed;
    for (auto* c : {&hits, &misses, &stale_served, &creations, &lock_waits, &lock_wait_ns,
                    &backend_errors, &locks_lost}) {
      c->store(0, r);
    }
  }
};
}  // namespace detail

}  // namespace dogpile
