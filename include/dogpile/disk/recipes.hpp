#pragma once
/// @file recipes.hpp
/// python-diskcache's recipes (`diskcache.recipes`) over a `DiskCache` or a `FanoutCache`:
/// cross-thread and cross-process `Lock`, `RLock`, `BoundedSemaphore`, `Averager`, `throttle`,
/// `barrier` and `memoize_stampede` (XFetch early recomputation).
///
/// ```cpp
/// dogpile::DiskCache cache("/var/cache/app", {.eviction_policy = dogpile::EvictionPolicy::none});
/// dogpile::recipes::Lock lock(cache, "report-lock", {.expire = 30s});
/// { std::lock_guard guard(lock); /* one process at a time */ }
/// ```
///
/// The names live in `dogpile::recipes` (Python's module is `diskcache.recipes`) because
/// `dogpile::Lock` is already dogpile's own lock (`<dogpile/lock.hpp>`).
///
/// As in Python, every recipe keeps its state in one cache key and assumes that key is never
/// evicted: use `EvictionPolicy::none` (or a cache that never reaches its size limit). With a
/// `FanoutCache`, a recipe works on the shard that holds its key (`shard_for(key)`), so its
/// transactions lock one shard rather than every shard as Python's `FanoutCache.transact` does,
/// and it waits for that shard's lock (retry) instead of reporting a timeout.
///
/// Keys shared with python-diskcache: `Lock` (any value; held = key present) and
/// `BoundedSemaphore` (an int count) exclude each other across C++ and Python on the same key.
/// `RLock`, `Averager`, `throttle` and `memoize_stampede` store text Python pickles would not
/// match, so a C++ and a Python instance must not share their keys.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include <nlohmann/json.hpp>

#include "dogpile/clock.hpp"
#include "dogpile/detail/json_decode.hpp"
#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"
#include "dogpile/duration.hpp"
#include "dogpile/error.hpp"

namespace dogpile::recipes {

/// Options shared by the recipes: the expiry and tag written with every update of the key.
/// For the locks, `expire` is a lease: a holder that dies without releasing frees the lock
/// once it runs out. Plain aggregate.
struct RecipeOptions {
  std::optional<Duration> expire{};  ///< time to live of the key; nullopt = never expires
  std::optional<Key> tag{};          ///< tag stored with the key
};

/// Seconds as a double, the unit of the throttle's and memoize_stampede's time arithmetic.
using Seconds = std::chrono::duration<double>;

/// A sleep function (`std::this_thread::sleep_for` by default); tests pass one that advances a
/// `ManualClock` instead.
using SleepFn = std::function<void(Seconds)>;

namespace detail {

/// The cache that holds `key`: the cache itself, or the key's shard of a FanoutCache.
inline DiskCache home(DiskCache& cache, const Key& /*key*/) { return cache; }
/// The cache that holds `key`: the key's shard (so a transaction locks one shard only).
inline DiskCache home(FanoutCache& cache, const Key& key) { return cache.shard_for(key); }

/// `pid-tid`, python-diskcache's RLock owner format; a forked child is a new owner.
inline std::string owner_id() {
  std::ostringstream s;
  s << ::getpid() << '-' << std::this_thread::get_id();
  return s.str();
}

/// A random 128-bit token in hex: identifies one acquisition of a `Lock`.
inline std::string random_token() {
  thread_local std::mt19937_64 rng{std::random_device{}() ^ static_cast<std::uint64_t>(::getpid())
                                                                << 32};
  std::ostringstream s;
  s << std::hex << rng() << rng();
  return s.str();
}

/// Waits between attempts: 1 ms doubling to a 32 ms cap, each sleep jittered to 50-100 % so
/// waiters of many processes do not retry in lockstep (Python spins on a fixed 1 ms).
class Backoff {
 public:
  /// Sleeps once, at most until `deadline` when given.
  void wait(std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) {
    thread_local std::mt19937 rng{std::random_device{}()};
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    auto d = std::chrono::duration_cast<std::chrono::microseconds>(next_ * jitter(rng));
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::microseconds>(
          *deadline - std::chrono::steady_clock::now());
      if (left < d) d = left;
    }
    if (d.count() > 0) std::this_thread::sleep_for(d);
    next_ = std::min(next_ * 2, std::chrono::duration<double, std::micro>(32000));
  }

 private:
  std::chrono::duration<double, std::micro> next_{1000};
};

/// `try_once()` until it succeeds or `timeout` (nullopt: forever) elapses.
template <class TryOnce>
bool wait_until_acquired(TryOnce&& try_once, std::optional<std::chrono::nanoseconds> timeout) {
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (timeout) deadline = std::chrono::steady_clock::now() + *timeout;
  Backoff backoff;
  for (;;) {
    if (try_once()) return true;
    if (deadline && std::chrono::steady_clock::now() >= *deadline) return false;
    backoff.wait(deadline);
  }
}

/// Set options from recipe options, waiting for the write lock (Python's `retry=True`).
inline SetOptions set_options(const RecipeOptions& o) {
  return SetOptions{.expire = o.expire, .tag = o.tag, .retry = true};
}

}  // namespace detail

/// A cross-process mutex on one cache key (python-diskcache's `Lock`): held while the key
/// exists. `lock()` loops on `add` with capped, jittered backoff; `unlock()` deletes the key.
/// Satisfies *Lockable* and *TimedLockable* for durations, so it works with `std::lock_guard`,
/// `std::unique_lock` and `std::scoped_lock`.
///
/// Compatible with Python's `diskcache.Lock` on the same key: each sees the other's holder
/// (both `add` the key), so they exclude each other. Beyond Python, each acquisition stores a
/// random token, and `unlock` deletes the key only if it still holds this acquisition's token:
/// after the lease (`expire`) ran out and another process took the lock, a late `unlock` leaves
/// the new holder's key alone (Python would delete it).
///
/// Not re-entrant: a second `lock()` of the held lock waits (use `RLock`). Thread-safety: a
/// `Lock` may be shared by threads (copies share the handle's state, like one Python object);
/// one thread may unlock what another locked through the same handle.
class Lock {
 public:
  /// A lock on `key` of `cache` (a `DiskCache` or a `FanoutCache`); nothing is written yet.
  template <class Cache>
  Lock(Cache& cache, Key key, RecipeOptions options = {})
      : cache_(detail::home(cache, key)),
        key_(std::move(key)),
        options_(std::move(options)),
        state_(std::make_shared<State>()) {}

  /// Waits (without a deadline) until the lock is acquired. @throws DatabaseError.
  void lock() {
    detail::wait_until_acquired([this] { return try_lock(); }, std::nullopt);
  }
  /// Python's name for `lock()`.
  void acquire() { lock(); }
  /// One attempt: true if the key was absent (or expired) and is now held by this handle.
  /// @throws DatabaseError.
  bool try_lock() {
    std::string token = "dogpile-lock:" + detail::random_token();
    if (!cache_.add(key_, token, detail::set_options(options_))) return false;
    std::lock_guard g(state_->mutex);
    state_->token = std::move(token);
    state_->pid = ::getpid();
    return true;
  }
  /// Tries until acquired or `timeout` elapses; false on timeout. @throws DatabaseError.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_until_acquired(
        [this] { return try_lock(); },
        std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  /// Releases the lock. Returns true if this acquisition still held the key (deleted), false if
  /// its lease had run out meanwhile (the key, absent or another holder's, is left alone).
  /// @throws LockError if this handle does not hold the lock (never locked, already released,
  /// or locked by the parent of this forked process), DatabaseError.
  bool release() {
    std::optional<std::string> token;
    {
      std::lock_guard g(state_->mutex);
      if (!state_->token) {
        throw LockError("recipes::Lock " + key_.repr() +
                        ": unlock without holding the lock; call unlock once per successful "
                        "lock/try_lock of this handle");
      }
      if (state_->pid != ::getpid()) {
        // A forked child inherited the handle: the parent holds the lock, not the child.
        throw LockError("recipes::Lock " + key_.repr() +
                        ": unlock in a forked child of the process that holds the lock; the "
                        "holder must unlock it");
      }
      token.swap(state_->token);
    }
    auto tx = cache_.transact(/*retry=*/true);
    std::optional<Item<DiskValue>> rec;
    try {
      rec = cache_.get_record(key_, false);
    } catch (const UnsupportedFormat&) {
      return false;  // a Python holder's pickled None: not ours
    }
    const auto* text = rec ? std::get_if<std::string>(&rec->value) : nullptr;
    if (text == nullptr || *text != *token) return false;
    cache_.erase(key_, /*retry=*/true);
    return true;
  }
  /// `release()` for std::lock_guard and friends, which call it from destructors: like every
  /// BasicLockable's `unlock` it never throws. An error (a database error, or a misuse
  /// `release()` would report as LockError) is swallowed; the key then stays until its lease
  /// (`expire`) runs out. Call `release()` to see errors.
  void unlock() noexcept {
    try {
      (void)release();
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented; release() reports errors
    }
  }
  /// True if someone (any handle, process or language) holds the lock: the key exists.
  /// @throws DatabaseError.
  [[nodiscard]] bool locked() { return cache_.contains(key_); }
  /// The key.
  [[nodiscard]] const Key& key() const noexcept { return key_; }

 private:
  struct State {
    std::mutex mutex;
    std::optional<std::string> token;
    pid_t pid = 0;
  };
  DiskCache cache_;
  Key key_;
  RecipeOptions options_;
  std::shared_ptr<State> state_;
};

/// A re-entrant cross-process mutex (python-diskcache's `RLock`): the owner (pid and thread)
/// may lock it again; it is free when the owner has unlocked as often as it locked. The key
/// holds the text `"<pid>-<thread> <count>"` and is deleted at count 0 (Python keeps a count-0
/// key). Python stores a pickled tuple, so C++ and Python RLocks must not share a key.
/// Satisfies *Lockable* and timed locking for durations. Thread-safety: any thread; ownership
/// is per thread.
class RLock {
 public:
  /// An RLock on `key` of `cache` (a `DiskCache` or a `FanoutCache`).
  template <class Cache>
  RLock(Cache& cache, Key key, RecipeOptions options = {})
      : cache_(detail::home(cache, key)), key_(std::move(key)), options_(std::move(options)) {}

  /// Waits until this thread owns the lock (again). @throws LockError if the key holds a value
  /// that is not a C++ RLock's (e.g. a Python RLock's), DatabaseError.
  void lock() {
    detail::wait_until_acquired([this] { return try_lock(); }, std::nullopt);
  }
  /// Python's name for `lock()`.
  void acquire() { lock(); }
  /// One attempt. @throws as lock.
  bool try_lock() {
    const std::string me = detail::owner_id();
    auto tx = cache_.transact(/*retry=*/true);
    auto [owner, count] = read();
    if (count > 0 && owner != me) return false;
    cache_.set(key_, me + " " + std::to_string(count + 1), detail::set_options(options_));
    return true;
  }
  /// Tries until owned or `timeout` elapses; false on timeout. @throws as lock.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_until_acquired(
        [this] { return try_lock(); },
        std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  /// Undoes one `lock()` (Python's name). @throws LockError if this thread does not own the
  /// lock (Python's "cannot release un-acquired lock"), DatabaseError.
  void release() {
    const std::string me = detail::owner_id();
    auto tx = cache_.transact(/*retry=*/true);
    auto [owner, count] = read();
    if (count == 0 || owner != me) {
      throw LockError("recipes::RLock " + key_.repr() +
                      ": cannot release un-acquired lock (this thread does not own it)");
    }
    if (count == 1) {
      cache_.erase(key_, /*retry=*/true);
    } else {
      cache_.set(key_, me + " " + std::to_string(count - 1), detail::set_options(options_));
    }
  }
  /// `release()` for std::lock_guard and friends: never throws (BasicLockable); an error is
  /// swallowed and the count stays (until the key's `expire`, if any). Call `release()` to see
  /// errors.
  void unlock() noexcept {
    try {
      release();
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented; release() reports errors
    }
  }

 private:
  std::pair<std::string, std::int64_t> read() {
    std::optional<std::string> v;
    try {
      v = cache_.get<std::string>(key_);
    } catch (const UnsupportedFormat&) {
      throw LockError("recipes::RLock " + key_.repr() +
                      ": the key holds a pickled value (a Python RLock's tuple?); C++ and "
                      "Python RLocks cannot share a key, give the C++ RLock a key of its own");
    } catch (const TypeMismatch&) {
      throw LockError("recipes::RLock " + key_.repr() +
                      ": the key holds a number, not an RLock state; use a key of its own");
    }
    if (!v) return {std::string(), 0};
    const auto space = v->rfind(' ');
    try {
      if (space == std::string::npos) throw std::invalid_argument("no count");
      return {v->substr(0, space), std::stoll(v->substr(space + 1))};
    } catch (const std::exception&) {
      throw LockError("recipes::RLock " + key_.repr() + ": the key holds '" + *v +
                      "', not an RLock state; use a key of its own for the RLock");
    }
  }
  DiskCache cache_;
  Key key_;
  RecipeOptions options_;
};

/// A cross-process counting semaphore (python-diskcache's `BoundedSemaphore`): the key holds
/// the number of free slots as an int (missing = `value`), exactly as Python stores it, so C++
/// and Python semaphores on one key share the count. Satisfies *Lockable* and timed locking.
/// Thread-safety: any thread; slots are not owned (any thread or process may release).
class BoundedSemaphore {
 public:
  /// A semaphore of `value` slots on `key`. @throws ValidationError if `value` < 1.
  template <class Cache>
  BoundedSemaphore(Cache& cache, Key key, std::int64_t value = 1, RecipeOptions options = {})
      : cache_(detail::home(cache, key)),
        key_(std::move(key)),
        value_(value),
        options_(std::move(options)) {
    if (value_ < 1) {
      throw ValidationError("recipes::BoundedSemaphore: value must be at least 1, got " +
                            std::to_string(value_));
    }
  }

  /// A semaphore of one slot on `key` (what `LockFactory<BoundedSemaphore>` builds, as
  /// Python's `barrier` does with its default `value=1`).
  template <class Cache>
  BoundedSemaphore(Cache& cache, Key key, RecipeOptions options)
      : BoundedSemaphore(cache, std::move(key), 1, std::move(options)) {}

  /// Waits for a free slot and takes it. @throws DatabaseError, TypeMismatch if the key holds
  /// something other than an int.
  void lock() {
    detail::wait_until_acquired([this] { return try_lock(); }, std::nullopt);
  }
  /// Python's name for `lock()`.
  void acquire() { lock(); }
  /// Takes a slot if one is free. @throws as lock.
  bool try_lock() {
    auto tx = cache_.transact(/*retry=*/true);
    const std::int64_t free = cache_.get<std::int64_t>(key_).value_or(value_);
    if (free <= 0) return false;
    cache_.set(key_, free - 1, detail::set_options(options_));
    return true;
  }
  /// Tries until a slot is free or `timeout` elapses; false on timeout. @throws as lock.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_until_acquired(
        [this] { return try_lock(); },
        std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  /// Returns a slot (Python's name). @throws LockError if every slot is already free ("cannot
  /// release un-acquired semaphore"), DatabaseError.
  void release() {
    auto tx = cache_.transact(/*retry=*/true);
    const std::int64_t free = cache_.get<std::int64_t>(key_).value_or(value_);
    if (free >= value_) {
      throw LockError("recipes::BoundedSemaphore " + key_.repr() +
                      ": cannot release un-acquired semaphore (all " + std::to_string(value_) +
                      " slots are free)");
    }
    cache_.set(key_, free + 1, detail::set_options(options_));
  }
  /// `release()` for std::lock_guard and friends: never throws (BasicLockable); an error is
  /// swallowed (the slot stays taken until the key's `expire`, if any). Call `release()` to see
  /// errors.
  void unlock() noexcept {
    try {
      release();
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented; release() reports errors
    }
  }
  /// Free slots now (`value` when the key is missing). @throws DatabaseError.
  [[nodiscard]] std::int64_t available() { return cache_.get<std::int64_t>(key_).value_or(value_); }

 private:
  DiskCache cache_;
  Key key_;
  std::int64_t value_;
  RecipeOptions options_;
};

/// A running average kept in one key (python-diskcache's `Averager`), shared by every thread
/// and process that adds to it. The key holds the text JSON `[total, count]` (Python pickles a
/// tuple: do not share the key with Python). Thread-safety: any thread.
class Averager {
 public:
  /// An averager on `key` of `cache` (a `DiskCache` or a `FanoutCache`).
  template <class Cache>
  Averager(Cache& cache, Key key, RecipeOptions options = {})
      : cache_(detail::home(cache, key)), key_(std::move(key)), options_(std::move(options)) {}

  /// Adds `value` atomically. @throws DatabaseError, CantDeserialize if the key holds
  /// something else.
  void add(double value) {
    auto tx = cache_.transact(/*retry=*/true);
    auto [total, count] = parse(cache_.get<std::string>(key_));
    cache_.set(key_, nlohmann::json::array({total + value, count + 1}).dump(),
               detail::set_options(options_));
  }
  /// The average, or nullopt when nothing was added. @throws as add.
  [[nodiscard]] std::optional<double> get() {
    return average(parse(cache_.get<std::string>(key_)));
  }
  /// The average, removing the key (nullopt when nothing was added). @throws as add.
  std::optional<double> pop() {
    return average(parse(cache_.pop<std::string>(key_, /*retry=*/true)));
  }

 private:
  std::pair<double, std::int64_t> parse(const std::optional<std::string>& v) const {
    if (!v) return {0.0, 0};
    try {
      const auto j = dogpile::detail::parse_json_limited(*v, nlohmann::json::input_format_t::json);
      return {j.at(0).get<double>(), j.at(1).get<std::int64_t>()};
    } catch (const nlohmann::json::exception& e) {
      throw CantDeserialize("recipes::Averager " + key_.repr() + ": the key holds '" + *v +
                            "', not [total, count] (" + e.what() +
                            "); use a key of its own for the averager");
    }
  }
  static std::optional<double> average(std::pair<double, std::int64_t> s) {
    if (s.second == 0) return std::nullopt;
    return s.first / static_cast<double>(s.second);
  }
  DiskCache cache_;
  Key key_;
  RecipeOptions options_;
};

/// Options of `throttle`. Plain aggregate.
struct ThrottleOptions {
  std::optional<Duration> expire{};  ///< time to live of the bucket key
  std::optional<Key> tag{};          ///< tag of the bucket key (written on every update,
                                     ///< unlike Python, which drops it after the first)
  Clock clock = system_clock();      ///< "now" (Python's `time_func`)
  SleepFn sleep{};                   ///< sleeps between tries (default: this thread sleeps)
};

/// A rate-limited function returned by `throttle`: a token bucket of `count` calls per
/// `seconds` kept in one cache key, shared by every thread and process using the key.
/// The key holds the text JSON `[last_time, tally]` (Python pickles a tuple: do not share).
/// Thread-safe if the wrapped function is.
template <class F>
class Throttled {
 public:
  /// Wraps `fn` (see `throttle`, which builds this).
  Throttled(DiskCache cache, Key key, double count, double seconds, F fn, ThrottleOptions opts)
      : cache_(std::move(cache)),
        key_(std::move(key)),
        count_(count),
        rate_(count / seconds),
        fn_(std::move(fn)),
        opts_(std::move(opts)) {
    if (!opts_.sleep) opts_.sleep = [](Seconds d) { std::this_thread::sleep_for(d); };
  }

  /// Waits until the bucket holds a token, takes it, then calls the function.
  /// @throws whatever the function throws, DatabaseError.
  template <class... Args>
  decltype(auto) operator()(Args&&... args) {
    for (;;) {
      const double delay = take();
      if (delay <= 0) break;
      opts_.sleep(Seconds(delay));
    }
    return std::invoke(fn_, std::forward<Args>(args)...);
  }

  /// The wrapped function.
  [[nodiscard]] const F& wrapped() const noexcept { return fn_; }

 private:
  // One transaction of Python's loop: 0 when a token was taken, else the seconds to wait.
  double take() {
    const SetOptions so{.expire = opts_.expire, .tag = opts_.tag, .retry = true};
    auto tx = cache_.transact(/*retry=*/true);
    const double now = to_unix_seconds(opts_.clock());  // read under the lock, as Python does
    double last = now;
    double tally = count_;
    if (auto v = cache_.get<std::string>(key_)) {
      try {
        const auto j =
            dogpile::detail::parse_json_limited(*v, nlohmann::json::input_format_t::json);
        last = j.at(0).get<double>();
        tally = j.at(1).get<double>();
      } catch (const nlohmann::json::exception& e) {
        throw CantDeserialize("recipes::throttle " + key_.repr() + ": the key holds '" + *v +
                              "', not [time, tally] (" + e.what() + ")");
      }
    }
    tally += (now - last) * rate_;
    if (tally > count_) {
      cache_.set(key_, nlohmann::json::array({now, count_ - 1}).dump(), so);
      return 0;
    }
    if (tally >= 1) {
      cache_.set(key_, nlohmann::json::array({now, tally - 1}).dump(), so);
      return 0;
    }
    return (1 - tally) / rate_;
  }
  DiskCache cache_;
  Key key_;
  double count_;
  double rate_;
  F fn_;
  ThrottleOptions opts_;
};

/// python-diskcache's `throttle`: `fn` may run at most `count` times per `seconds` across all
/// threads and processes using `name` on `cache` (a `DiskCache` or a `FanoutCache`); callers
/// beyond the rate sleep. As in Python, building it resets the bucket to full (every process
/// that builds it does so).
/// @throws ValidationError if `count` or `seconds` is not positive, DatabaseError.
template <class Cache, class F>
Throttled<F> throttle(Cache& cache, double count, double seconds, std::string name, F fn,
                      ThrottleOptions options = {}) {
  if (!(count > 0) || !(seconds > 0) || !std::isfinite(count) || !std::isfinite(seconds)) {
    throw ValidationError("recipes::throttle: count and seconds must be positive and finite");
  }
  Key key(std::move(name));
  DiskCache home = detail::home(cache, key);
  home.set(key, nlohmann::json::array({to_unix_seconds(options.clock()), count}).dump(),
           SetOptions{.expire = options.expire, .tag = options.tag, .retry = true});
  return Throttled<F>(std::move(home), std::move(key), count, seconds, std::move(fn),
                      std::move(options));
}

/// A lock factory for `barrier`: builds an `L` (`Lock`, `RLock`, `BoundedSemaphore` with one
/// slot) from `(cache, key, options)`.
template <class L>
struct LockFactory {
  /// Builds the lock.
  template <class Cache>
  L operator()(Cache& cache, Key key, RecipeOptions options) const {
    return L(cache, std::move(key), std::move(options));
  }
};

/// A function that runs under a lock, returned by `barrier`. Thread-safe; copies share the
/// lock.
template <class L, class F>
class Barrier {
 public:
  /// Wraps `fn` under `lock`.
  Barrier(std::shared_ptr<L> lock, F fn) : lock_(std::move(lock)), fn_(std::move(fn)) {}
  /// Calls the function holding the lock. @throws whatever the function or the lock throws.
  template <class... Args>
  decltype(auto) operator()(Args&&... args) {
    std::lock_guard<L> guard(*lock_);
    return std::invoke(fn_, std::forward<Args>(args)...);
  }

 private:
  std::shared_ptr<L> lock_;
  F fn_;
};

/// python-diskcache's `barrier`: every call of the returned function runs under one lock built
/// once by `factory(cache, name, options)` (e.g. `LockFactory<Lock>{}`), so calls are serialized
/// across threads and processes.
/// @throws whatever the factory throws.
template <class Cache, class Factory, class F>
auto barrier(Cache& cache, Factory factory, std::string name, F fn, RecipeOptions options = {}) {
  using L = std::decay_t<std::invoke_result_t<Factory&, Cache&, Key, RecipeOptions>>;
  auto lock = std::make_shared<L>(factory(cache, Key(std::move(name)), std::move(options)));
  return Barrier<L, F>(std::move(lock), std::move(fn));
}

/// Options of `memoize_stampede`. Plain aggregate.
struct StampedeOptions {
  std::optional<Key> tag{};                   ///< tag stored with results
  double beta = 1.0;                          ///< > 1 recomputes earlier, < 1 later (must be > 0)
  Duration lease = std::chrono::seconds(60);  ///< longest a recomputing caller may hold the
                                              ///< single-flight key if it dies
  Clock clock = system_clock();               ///< "now" and the measure of the compute time (delta)
  std::function<double()> uniform{};          ///< U in (0, 1]; default: a thread-local mt19937_64
};

/// A function memoized with early probabilistic recomputation (XFetch), returned by
/// `memoize_stampede`. The key is `Memoized`'s (`[name, args…]` JSON text); the stored value is
/// the text JSON `{"delta": seconds, "value": result}`, so results must be JSON-convertible
/// and the key must not be shared with plain `memoize` or with Python.
/// Thread-safe if the wrapped function is.
template <class Cache, class F>
class StampedeMemoized {
 public:
  /// Wraps `fn` (see `memoize_stampede`, which validates the arguments).
  StampedeMemoized(Cache cache, Duration expire, std::string name, F fn, StampedeOptions opts)
      : cache_(std::move(cache)),
        expire_(expire),
        name_(std::move(name)),
        fn_(std::move(fn)),
        opts_(std::move(opts)) {
    if (!opts_.uniform) {
      opts_.uniform = [] {
        thread_local std::mt19937_64 rng{std::random_device{}()};
        return 1.0 - std::uniform_real_distribution<double>(0.0, 1.0)(rng);  // (0, 1]
      };
    }
  }

  /// The cache key of a call.
  template <class... Args>
  [[nodiscard]] Key cache_key(const Args&... args) const {
    nlohmann::json j = nlohmann::json::array({name_});
    (j.push_back(nlohmann::json(args)), ...);
    return Key(j.dump());
  }

  /// Returns the cached result; on a miss computes it (one caller per key across threads and
  /// processes, the others wait for it); on a hit close to expiry, with XFetch's probability
  /// `exp(-ttl / (delta * beta))`, one caller recomputes and stores the result while the others
  /// keep getting the current value.
  /// @throws whatever the function throws (nothing is stored then), ValidationError if
  /// `uniform` returns a value outside (0, 1], CantDeserialize for a foreign value, DatabaseError.
  template <class... Args>
  auto operator()(Args&&... args) {
    using R = std::decay_t<std::invoke_result_t<F&, Args...>>;
    const Key key = cache_key(args...);
    const auto compute = [&]() -> std::pair<R, double> {
      const TimePoint start = opts_.clock();
      R r = std::invoke(fn_, args...);
      return {std::move(r), Seconds(opts_.clock() - start).count()};
    };
    const auto pack = [](const R& r, double delta) {
      return nlohmann::json{{"delta", delta}, {"value", r}}.dump();
    };

    if (auto item = cache_.template get_item<std::string>(key)) {
      auto [result, delta] = unpack<R>(item->value, key);
      if (!item->expire_time || !recompute_due(*item->expire_time, delta)) return result;
      // Early recomputation: one caller wins the lease key; everyone else keeps the old value.
      const Key lease(Bytes{"dogpile-stampede-lease:" + key.repr()});
      DiskCache home = detail::home(cache_, lease);
      if (!home.add(lease, std::int64_t{::getpid()},
                    SetOptions{.expire = opts_.lease, .tag = std::nullopt, .retry = true})) {
        return result;
      }
      struct Release {
        DiskCache& c;
        const Key& k;
        ~Release() {
          try {
            c.erase(k, true);
          } catch (...) {  // the lease expires on its own
          }
        }
      } release{home, lease};
      auto [fresh, fresh_delta] = compute();
      cache_.set(key, pack(fresh, fresh_delta),
                 SetOptions{.expire = expire_, .tag = opts_.tag, .retry = true});
      return fresh;
    }

    // A miss: single flight through memoize's core (a per-key mutex and an added lock key).
    std::optional<R> mine;
    DiskValue stored = cache_.memoize_value(
        key,
        MemoizeOptions{
            .expire = expire_, .tag = opts_.tag, .single_flight = true, .lease = opts_.lease},
        [&]() -> DiskValue {
          auto [r, delta] = compute();
          std::string packed = pack(r, delta);
          mine.emplace(std::move(r));
          return packed;
        });
    if (mine) return std::move(*mine);
    auto* text = std::get_if<std::string>(&stored);
    if (text == nullptr) {
      throw CantDeserialize("memoize_stampede " + key.repr() +
                            ": the key holds a value memoize_stampede did not write; give the "
                            "function a name of its own");
    }
    return unpack<R>(*text, key).first;
  }

  /// The wrapped function.
  [[nodiscard]] const F& wrapped() const noexcept { return fn_; }

 private:
  bool recompute_due(TimePoint expire_time, double delta) {
    const double u = opts_.uniform();
    if (!(u > 0.0 && u <= 1.0)) {
      throw ValidationError("memoize_stampede: uniform() returned " + std::to_string(u) +
                            "; it must return a value in (0, 1]");
    }
    const double ttl = Seconds(expire_time - opts_.clock()).count();
    return -delta * opts_.beta * std::log(u) >= ttl;
  }
  template <class R>
  static std::pair<R, double> unpack(const std::string& text, const Key& key) {
    try {
      const auto j =
          dogpile::detail::parse_json_limited(text, nlohmann::json::input_format_t::json);
      return {j.at("value").template get<R>(), j.at("delta").template get<double>()};
    } catch (const nlohmann::json::exception& e) {
      throw CantDeserialize("memoize_stampede " + key.repr() + ": the stored value is not " +
                            "{\"delta\", \"value\"} JSON (" + e.what() +
                            "); give the function a name of its own");
    }
  }
  Cache cache_;
  Duration expire_;
  std::string name_;
  F fn_;
  StampedeOptions opts_;
};

/// python-diskcache's `memoize_stampede`: memoizes `fn` under `name` on `cache` (a `DiskCache`
/// or a `FanoutCache`) with results living `expire`, recomputed early by XFetch (see
/// `StampedeMemoized`). Beyond Python: misses are single-flight, U is drawn from (0, 1] (no
/// `log(0)`), the recomputation runs in the calling thread (no detached thread) and its lease
/// key is removed when it ends (so it may outlast `delta`).
/// @throws ValidationError if `expire` is not positive or `beta` is not a positive finite number.
template <class Cache, class F>
StampedeMemoized<Cache, F> memoize_stampede(Cache& cache, Duration expire, std::string name, F fn,
                                            StampedeOptions options = {}) {
  if (expire.count() <= 0) {
    throw ValidationError("memoize_stampede: expire must be positive (XFetch needs an expiry)");
  }
  if (!(options.beta > 0) || !std::isfinite(options.beta)) {
    throw ValidationError("memoize_stampede: beta must be a positive finite number, got " +
                          std::to_string(options.beta));
  }
  return StampedeMemoized<Cache, F>(cache, expire, std::move(name), std::move(fn),
                                    std::move(options));
}

}  // namespace dogpile::recipes
