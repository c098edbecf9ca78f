#pragma once
/// @file lease_lock.hpp
/// `LeaseLock`: the one distributed dogpile lock the disk, Redis and memcached backends share.
/// A backend supplies only a `LeaseStore` (four atomic operations on one lock key: add with
/// expiry, owner-checked renew, owner-checked delete, exists); `LeaseLock` adds everything else:
///
/// * a fresh random owner token per acquisition (`<pid>-<16 hex digits>`, reseeded after fork),
///   so only the owner can renew or release;
/// * a lease: the lock key expires after `lease`, so a holder that dies or stays paused frees
///   the lock for others;
/// * renewal: while held, one process-wide thread renews the lease (owner-checked) about every
///   `lease / 3`, so a slow but live holder never loses it; the thread runs only while some
///   lease is held, so a process holding none has no extra thread when it forks;
/// * capped, jittered exponential backoff between attempts, with a deadline (`try_acquire_for`);
/// * in-process wake-up: threads of one process waiting on the same `LeaseLock` object queue in
///   memory and are woken at release, so only one of them polls the store.
///
/// ```cpp
/// class RedisLeaseStore final : public dogpile::LeaseStore { /* SET NX PX, Lua CAS ... */ };
/// auto lock = std::make_shared<dogpile::LeaseLock>(std::make_shared<RedisLeaseStore>(...),
///                                                  dogpile::LeaseLockOptions{.lease = 30s});
/// ```
///
/// If a renewal finds the lock gone or owned by another token, the lease is *lost*: renewal
/// stops and `release()` throws `LockError` without touching the store (the lock may belong to
/// another holder now). A region reports that instead of failing the caller.
///
/// Fork: a child process does not own its parent's leases. It does not renew them (it has its
/// own renewer thread, started when it first acquires), and `release()` of a lock its parent
/// acquired throws `LockError` without deleting it. A child may acquire locks of its own.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "dogpile/error.hpp"
#include "dogpile/mutex.hpp"

namespace dogpile {

/// Where one lease lock lives: one lock key on a server or in a database, holding the owner
/// token of its current holder until it is deleted or its expiry passes. This is the whole
/// backend-specific part of a `LeaseLock`; implement it with the store's atomic primitives
/// (disk: `add` with expire, and transactions; Redis: `SET NX PX` and Lua compare-and-delete /
/// compare-and-`PEXPIRE`; memcached: `add` and `gets`/`cas`).
///
/// Each operation must be atomic with respect to the others, from any process, and bounded in
/// time (a network store uses its I/O timeouts). Thread-safety: an implementation must accept
/// concurrent calls from several threads (the renewer thread renews while another thread may
/// release).
class LeaseStore {
 public:
  virtual ~LeaseStore() = default;
  LeaseStore() = default;
  LeaseStore(const LeaseStore&) = delete;
  LeaseStore& operator=(const LeaseStore&) = delete;

  /// Creates the lock key holding `token`, expiring after `lease`, if no unexpired lock key
  /// exists. @returns true if this call created it. A store that is momentarily busy may
  /// return false (the caller backs off and retries). @throws BackendError on failure.
  virtual bool try_acquire(std::string_view token, std::chrono::milliseconds lease) = 0;
  /// Resets the expiry of the lock key to `lease` from now, only if it exists, is unexpired
  /// and holds `token`; never creates it. @returns false if the lock is no longer `token`'s
  /// (the lease was lost). @throws BackendError on failure (the renewer retries).
  virtual bool renew(std::string_view token, std::chrono::milliseconds lease) = 0;
  /// Deletes the lock key only if it is unexpired and holds `token`. @returns false if it was
  /// no longer `token`'s (nothing is deleted then). @throws BackendError on failure.
  virtual bool release(std::string_view token) = 0;
  /// True if an unexpired lock key exists, whoever holds it. @throws BackendError on failure.
  [[nodiscard]] virtual bool held() const = 0;
  /// Names the lock in error messages, e.g. `disk lock '_lockuser:1'`. Never throws.
  [[nodiscard]] virtual std::string describe() const { return "lease lock"; }
  /// Called between two failed `try_acquire`s by the one thread of this process polling this
  /// lock: waits `duration`. A store that hears of releases (Redis publishes them) returns as soon
  /// as the lock is released, so a waiter retries at once instead of at its next poll. It may
  /// return early for no reason (the caller simply tries again). Never throws.
  virtual void nap(std::chrono::microseconds duration) { std::this_thread::sleep_for(duration); }
};

/// Settings of a `LeaseLock`. Plain aggregate.
struct LeaseLockOptions {
  std::chrono::milliseconds lease = std::chrono::seconds(30);  ///< expiry of the lock key; a
                                                               ///< holder that stops renewing
                                                               ///< loses the lock after this
  std::chrono::milliseconds lock_sleep = std::chrono::milliseconds(100);     ///< backoff cap: the
                                                                             ///< longest nap
                                                                             ///< between attempts
  std::chrono::milliseconds initial_backoff = std::chrono::milliseconds(1);  ///< first nap; it
                                                                             ///< doubles up to
                                                                             ///< `lock_sleep`
  bool renew = true;  ///< renew the lease while held (off: the lock simply expires after
                      ///< `lease`, as dogpile.cache's Redis lock without `thread_local_lock`)
  /// The longest a blocking `acquire()` (no timeout of its own) waits before giving up and
  /// returning false (dogpile's `lock_blocking_timeout`); none = forever.
  std::optional<std::chrono::milliseconds> blocking_timeout{};
};

namespace detail {

/// A thread's random generator for owner tokens and jitter, reseeded in a forked child so it
/// does not replay its parent's sequence. Thread-safety: thread-local.
inline std::mt19937_64& lease_rng() {
  struct Rng {
    pid_t pid = -1;
    std::mt19937_64 gen;
  };
  thread_local Rng rng;
  if (rng.pid != ::getpid()) {
    rng.pid = ::getpid();
    std::random_device rd;
    rng.gen.seed((static_cast<std::uint64_t>(rd()) << 32U) ^ rd() ^
                 static_cast<std::uint64_t>(rng.pid));
  }
  return rng.gen;
}

/// A new owner token, `<pid>-<16 hex digits>` (the format Python processes see in the store).
inline std::string make_lease_token() {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%ld-%016llx", static_cast<long>(::getpid()),
                static_cast<unsigned long long>(lease_rng()()));
  return buf;
}

/// How often a held lease is renewed: a third of it, so it never runs past two thirds unrenewed.
constexpr std::chrono::milliseconds lease_renew_interval(std::chrono::milliseconds lease) {
  return std::max(lease / 3, std::chrono::milliseconds(1));
}

/// Capped, jittered exponential backoff: each nap is the current delay scaled by a uniform
/// factor in [0.5, 1]; the delay starts at `initial` and doubles up to `cap` (both at least
/// 1 ms). So no nap exceeds the cap. Thread-safety: one object per waiting thread.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds cap) noexcept
      : cap_(std::max(cap, std::chrono::milliseconds(1))),
        delay_(std::clamp(initial, std::chrono::milliseconds(1), cap_)) {}
  /// The next nap; advances the delay.
  std::chrono::microseconds next(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    const double us = std::chrono::duration<double, std::micro>(delay_).count() * jitter(rng);
    delay_ = delay_ > cap_ / 2 ? cap_ : delay_ * 2;
    return std::chrono::microseconds(static_cast<std::int64_t>(us));
  }
  /// The longest nap.
  [[nodiscard]] std::chrono::milliseconds cap() const noexcept { return cap_; }

 private:
  std::chrono::milliseconds cap_;
  std::chrono::milliseconds delay_;
};

/// One held lease as the renewer sees it. `store`, `token` and `lease` are fixed;
/// `due` and `registered` are guarded by the renewer's mutex.
struct LeaseEntry {
  std::shared_ptr<LeaseStore> store;
  std::string token;
  std::chrono::milliseconds lease{};
  std::chrono::steady_clock::time_point due;
  bool registered = false;
  std::atomic<bool> lost{false};  ///< a renewal found the lock no longer ours
};

/// The process-wide thread that renews every held lease. Started when a lease is taken while
/// none is held, it ends when the last one is released (exit waits for it), so a process that
/// holds no lease has no extra thread and can fork safely (after a multi-threaded fork a child
/// may only call async-signal-safe functions, and ThreadSanitizer reuses the ids of the
/// parent's threads). The thread is detached: ending by itself, it leaves nothing to join. The
/// object is never destroyed: a forked child gets a new one and leaves the copy of its parent's
/// untouched (its mutex and condition variable may be in a state only the parent's threads could
/// finish). Thread-safety: every call may be made from any thread.
class LeaseRenewer {
 public:
  /// This process's renewer.
  static LeaseRenewer& instance() {
    static std::atomic<LeaseRenewer*> current{nullptr};
    // At exit, stop and join this process's renewer thread (the object stays, so a lock
    // destroyed later can still unregister).
    struct JoinAtExit {
      explicit JoinAtExit(std::atomic<LeaseRenewer*>* c) : cur(c) {}
      JoinAtExit(const JoinAtExit&) = delete;
      JoinAtExit& operator=(const JoinAtExit&) = delete;
      ~JoinAtExit() {
        LeaseRenewer* r = cur->load(std::memory_order_acquire);
        if (r != nullptr && r->pid_ == ::getpid()) r->shutdown();
      }
      std::atomic<LeaseRenewer*>* cur;
    };
    static JoinAtExit join_at_exit{&current};
    const pid_t me = ::getpid();
    LeaseRenewer* r = current.load(std::memory_order_acquire);
    while (r == nullptr || r->pid_ != me) {
      auto* fresh = new LeaseRenewer(me, r);
      if (current.compare_exchange_strong(r, fresh, std::memory_order_acq_rel)) return *fresh;
      delete fresh;  // another thread of this process installed one first; `r` is it now
    }
    return *r;
  }

  LeaseRenewer(const LeaseRenewer&) = delete;
  LeaseRenewer& operator=(const LeaseRenewer&) = delete;

  /// Starts renewing `e`, first at `acquired_at + lease / 3`. No-op once the process exits.
  /// @throws std::system_error if the thread cannot be started.
  void add(const std::shared_ptr<LeaseEntry>& e,
           std::chrono::steady_clock::time_point acquired_at) {
    std::lock_guard lk(mu_);
    if (stop_) return;
    if (!running_) {
      std::thread([this] { run(); }).detach();
      running_ = true;
    }
    e->due = acquired_at + lease_renew_interval(e->lease);
    e->registered = true;
    entries_.push_back(e);
    cv_.notify_one();
  }
  /// Stops renewing `e` (a renewal already under way may still complete). Never throws.
  void remove(const std::shared_ptr<LeaseEntry>& e) noexcept {
    std::lock_guard lk(mu_);
    e->registered = false;
    std::erase(entries_, e);
    if (entries_.empty()) cv_.notify_all();  // let the thread end now
  }

 private:
  LeaseRenewer(pid_t pid, LeaseRenewer* forked_from) : pid_(pid), forked_from_(forked_from) {}

  void shutdown() {
    std::unique_lock lk(mu_);
    stop_ = true;
    for (auto& e : entries_) e->registered = false;
    entries_.clear();
    cv_.notify_all();
    ended_.wait(lk, [&] { return !running_; });
  }

  void run() {
    using SteadyClock = std::chrono::steady_clock;
    std::unique_lock lk(mu_);
    while (!stop_ && !entries_.empty()) {
      auto next = SteadyClock::time_point::max();
      for (const auto& e : entries_) next = std::min(next, e->due);
      if (next > SteadyClock::now()) {
        cv_.wait_until(lk, next);
        continue;
      }
      std::vector<std::shared_ptr<LeaseEntry>> due;
      const auto now = SteadyClock::now();
      for (const auto& e : entries_) {
        if (e->due <= now) {
          due.push_back(e);
          e->due = SteadyClock::time_point::max();  // in flight
        }
      }
      lk.unlock();
      for (const auto& e : due) {
        enum class Outcome { renewed, lost, failed } outcome = Outcome::failed;
        const auto t0 = SteadyClock::now();
        try {
          outcome = e->store->renew(e->token, e->lease) ? Outcome::renewed : Outcome::lost;
        } catch (...) {  // a store error must not end the thread: retry soon, while time remains
        }
        lk.lock();
        if (e->registered) {
          if (outcome == Outcome::renewed) {
            e->due = t0 + lease_renew_interval(e->lease);
          } else if (outcome == Outcome::failed) {
            e->due = SteadyClock::now() + std::max(e->lease / 6, std::chrono::milliseconds(1));
          } else {
            e->lost.store(true);
            e->registered = false;
            std::erase(entries_, e);
          }
        }
        lk.unlock();
      }
      lk.lock();
    }
    running_ = false;  // nothing held (or exiting): end; add() starts a new thread when needed
    ended_.notify_all();
  }

  const pid_t pid_;
  [[maybe_unused]] LeaseRenewer* const forked_from_;  // the parent's copy: reachable, untouched
  std::mutex mu_;
  std::condition_variable cv_;     // wakes the thread: a lease added or removed, exit
  std::condition_variable ended_;  // the thread has left run() (exit waits for it)
  std::vector<std::shared_ptr<LeaseEntry>> entries_;
  bool running_ = false;  // a thread is in run()
  bool stop_ = false;
};

}  // namespace detail

/// A cross-process dogpile lock on a `LeaseStore`: owner token, lease, renewal, capped jittered
/// backoff with a deadline, in-process wake-up (see the file comment). `is_lease()` is true.
///
/// One object stands for one lock key, held at most once at a time: a second `acquire` on the
/// same object waits for the first holder's `release` (or gives up at its deadline), like a
/// `ThreadMutex`. Distinct objects on the same key (other processes, other backend objects)
/// exclude each other through the store.
///
/// Destroying a held `LeaseLock` stops renewing it without releasing: the lock key expires
/// after the lease, as if the holder had died. Release it first (`MutexHandle` does).
///
/// Thread-safety: every call may be made from any thread; `release()` may come from another
/// thread than `acquire()` (the async creation runner's case), not from another process.
class LeaseLock : public CacheMutex {
 public:
  /// A lock on `store`. @throws ValidationError if `store` is null, `options.lease` is not
  /// positive or a backoff setting is negative.
  explicit LeaseLock(std::shared_ptr<LeaseStore> store, LeaseLockOptions options = {})
      : store_(std::move(store)), opts_(options) {
    if (!store_) detail::throw_error<ValidationError>("LeaseLock: the store is null");
    if (opts_.lease.count() <= 0) {
      detail::throw_error<ValidationError>("LeaseLock: 'lease' must be positive");
    }
    if (opts_.lock_sleep.count() < 0 || opts_.initial_backoff.count() < 0) {
      detail::throw_error<ValidationError>(
          "LeaseLock: 'lock_sleep' and 'initial_backoff' must not be negative");
    }
  }
  LeaseLock(const LeaseLock&) = delete;
  LeaseLock& operator=(const LeaseLock&) = delete;
  /// Abandons the lock if held (see the class comment). Never throws.
  ~LeaseLock() override { abandon(); }

  /// Stops renewing and forgets the hold without touching the store, so the lock key expires
  /// after the lease (what a crashed holder does). @returns true if this object held the lock.
  /// Thread-safety: any thread. Never throws.
  bool abandon() noexcept {
    std::shared_ptr<detail::LeaseEntry> entry;
    bool held = false;
    {
      std::lock_guard lk(m_);
      held = busy_ && !token_.empty();
      if (held && busy_pid_ == ::getpid()) entry = entry_;
      if (held) clear_locked();
    }
    if (entry) detail::LeaseRenewer::instance().remove(entry);
    if (held) cv_.notify_one();
    return held;
  }

  /// True while this object holds the lock and a renewal has found the lease lost (release
  /// will throw `LockError`). Thread-safety: any thread. Never throws.
  [[nodiscard]] bool lost() const noexcept {
    std::lock_guard lk(m_);
    return entry_ && entry_->lost.load();
  }
  /// The owner token of the current hold, empty when not held. Thread-safety: any thread.
  [[nodiscard]] std::string token() const {
    std::lock_guard lk(m_);
    return token_;
  }
  /// The settings. Never throws.
  [[nodiscard]] const LeaseLockOptions& options() const noexcept { return opts_; }
  /// The store. Never throws.
  [[nodiscard]] const std::shared_ptr<LeaseStore>& store() const noexcept { return store_; }

 protected:
  /// Queues behind other threads of this process using this object, then tries the store with
  /// backoff until `timeout` (nullopt: `options().blocking_timeout`, else forever; zero: once).
  /// @throws what the store throws.
  bool do_acquire(std::optional<std::chrono::milliseconds> timeout) override {
    using SteadyClock = std::chrono::steady_clock;
    if (!timeout) timeout = opts_.blocking_timeout;
    const auto deadline = timeout ? SteadyClock::now() + *timeout : SteadyClock::time_point::max();
    {
      std::unique_lock lk(m_);
      if (busy_ && busy_pid_ != ::getpid()) clear_locked();  // the parent's, in a forked child
      if (!timeout) {
        cv_.wait(lk, [&] { return !busy_; });
      } else if (!cv_.wait_until(lk, deadline, [&] { return !busy_; })) {
        return false;
      }
      busy_ = true;
      busy_pid_ = ::getpid();
    }
    try {
      std::string token = detail::make_lease_token();
      detail::Backoff backoff(opts_.initial_backoff, opts_.lock_sleep);
      for (;;) {
        const auto t0 = SteadyClock::now();
        if (store_->try_acquire(token, opts_.lease)) {
          hold(std::move(token), t0);
          return true;
        }
        const auto now = SteadyClock::now();
        if (timeout && now >= deadline) break;
        auto nap =
            std::chrono::duration_cast<SteadyClock::duration>(backoff.next(detail::lease_rng()));
        if (timeout) nap = std::min<SteadyClock::duration>(nap, deadline - now);
        store_->nap(std::chrono::duration_cast<std::chrono::microseconds>(nap));
      }
    } catch (...) {
      free_local();
      throw;
    }
    free_local();
    return false;
  }

  /// Stops renewal and deletes the lock key if still ours. @throws LockError if this object
  /// does not hold the lock, if the lease was lost, or in a forked child for its parent's
  /// lock; BackendError from the store (the lock then expires after the lease).
  void do_release() override {
    std::string token;
    std::shared_ptr<detail::LeaseEntry> entry;
    {
      std::lock_guard lk(m_);
      if (!busy_ || token_.empty()) {
        detail::throw_error<LockError>(store_->describe() +
                                       ": release of a lock this mutex does not hold");
      }
      if (busy_pid_ != ::getpid()) {
        const auto parent = busy_pid_;
        clear_locked();
        detail::throw_error<LockError>(
            store_->describe() + ": acquired by process " + std::to_string(parent) +
            "; a forked child does not own its parent's lease and must not release it");
      }
      token = token_;
      entry = entry_;
    }
    struct FreeOnExit {
      explicit FreeOnExit(LeaseLock* s) : self(s) {}
      FreeOnExit(const FreeOnExit&) = delete;
      FreeOnExit& operator=(const FreeOnExit&) = delete;
      ~FreeOnExit() { self->free_local(); }
      LeaseLock* self;
    } free_on_exit{this};
    if (entry) detail::LeaseRenewer::instance().remove(entry);
    const bool lost = entry && entry->lost.load();
    if (lost || !store_->release(token)) {
      detail::throw_error<LockError>(
          store_->describe() +
          ": lease lost (it expired before release); the lock may belong to another holder");
    }
  }

  /// True if anyone holds the lock key. @throws what the store throws.
  [[nodiscard]] bool do_locked() const override { return store_->held(); }
  /// A lease: true.
  [[nodiscard]] bool do_is_lease() const override { return true; }

 private:
  void hold(std::string token, std::chrono::steady_clock::time_point acquired_at) {
    std::shared_ptr<detail::LeaseEntry> entry;
    if (opts_.renew) {
      entry = std::make_shared<detail::LeaseEntry>();
      entry->store = store_;
      entry->token = token;
      entry->lease = opts_.lease;
      try {
        detail::LeaseRenewer::instance().add(entry, acquired_at);
      } catch (...) {  // no renewer: do not keep a lock that would silently expire
        try {
          store_->release(token);
        } catch (...) {
        }
        throw;
      }
    }
    std::lock_guard lk(m_);
    token_ = std::move(token);
    entry_ = std::move(entry);
  }

  void clear_locked() noexcept {
    busy_ = false;
    busy_pid_ = 0;
    token_.clear();
    entry_.reset();
  }

  void free_local() noexcept {
    {
      std::lock_guard lk(m_);
      clear_locked();
    }
    cv_.notify_one();
  }

  std::shared_ptr<LeaseStore> store_;
  LeaseLockOptions opts_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  bool busy_ = false;  // a thread of process `busy_pid_` holds or is acquiring the lock
  pid_t busy_pid_ = 0;
  std::string token_;                          // non-empty while held
  std::shared_ptr<detail::LeaseEntry> entry_;  // the renewer's record while held (renew on)
};

}  // namespace dogpile
