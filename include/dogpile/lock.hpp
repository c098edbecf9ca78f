#pragma once
/// @file lock.hpp
/// The dogpile lock: decides, for one key, who regenerates an expiring value and who waits.
/// It implements dogpile.cache's decision table exactly (reference/dogpile.md §2):
///
/// | state of the cached value        | what a caller does                                   |
/// |----------------------------------|------------------------------------------------------|
/// | fresh                            | returns it; no mutex is touched                      |
/// | expired, present                 | tries the mutex without waiting: the winner          |
/// |                                  | regenerates, everyone else returns the stale value   |
/// | missing                          | waits for the mutex, re-reads, creates only if still |
/// |                                  | missing, so a stampede runs one creation             |
///
/// Beyond dogpile: the result of a blocking acquire is honoured (a wait timeout throws
/// `TimeoutError` instead of running an unguarded creator), a stale policy can make callers
/// wait instead of serving stale values, and XFetch early refresh regenerates hot keys a little
/// before they expire.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <typeindex>
#include <typeinfo>
#include <utility>

#include "dogpile/clock.hpp"
#include "dogpile/error.hpp"
#include "dogpile/mutex.hpp"

namespace dogpile {

/// A cached value with its creation time, as `value_and_created_fn` returns it.
template <class T>
struct Cached {
  T value;                                   ///< the payload
  TimePoint created;                         ///< when it was created
  std::chrono::duration<double> delta{0.0};  ///< how long creating it took (0 = unknown)
};

/// Thrown by a value function to say "no usable value" (dogpile's NeedRegenerationException).
/// Returning `std::nullopt` means the same thing.
class NeedRegeneration : public Error {
 public:
  NeedRegeneration() : Error("value needs regeneration") {}
};

/// What callers do while another caller regenerates an expired (present) value.
struct StalePolicy {
  /// The three policies.
  enum class Kind : std::uint8_t {
    serve_stale,      ///< return the stale value at once (dogpile's behaviour)
    block,            ///< wait for the fresh value
    serve_stale_for,  ///< serve stale values up to `max_age` past expiry, then wait
  };
  Kind kind = Kind::serve_stale;        ///< the policy
  std::chrono::milliseconds max_age{};  ///< for `serve_stale_for`
};
/// dogpile's behaviour: stale values are served while one caller regenerates.
inline constexpr StalePolicy serve_stale{};
/// Never serve a stale value: wait for the regenerating caller.
inline constexpr StalePolicy block{StalePolicy::Kind::block, {}};
/// Serve stale values for at most `max_age` past their expiry; older ones make callers wait.
template <class Rep, class Period>
constexpr StalePolicy serve_stale_for(std::chrono::duration<Rep, Period> max_age) {
  return {StalePolicy::Kind::serve_stale_for,
          std::chrono::duration_cast<std::chrono::milliseconds>(max_age)};
}

/// XFetch probabilistic early recomputation (Vattani et al.): a value is regenerated early with
/// a probability that grows as expiry nears and with the time its creation took.
struct EarlyRefresh {
  double beta = 1.0;  ///< > 1 refreshes earlier, < 1 later; 0 disables
};

/// What happened inside one lock decision; the region turns these into statistics.
enum class LockEvent : std::uint8_t {
  hit,            ///< a fresh value was returned without locking
  stale_served,   ///< a stale value was returned while someone else regenerates
  waited,         ///< the caller blocked on the mutex (duration reported)
  created,        ///< this caller ran the creator
  async_started,  ///< this caller handed creation to the async runner
  lease_lost      ///< the lock's lease expired before release (the value was still returned)
};

/// Options of one lock decision. Plain aggregate.
struct LockOptions {
  std::optional<std::chrono::milliseconds> expiration{};  ///< nullopt: values never expire
  StalePolicy stale_policy{};                             ///< see `StalePolicy`
  std::optional<EarlyRefresh> early_refresh{};            ///< XFetch; off when empty
  std::optional<std::chrono::milliseconds>
      lock_timeout{};  ///< limit on a blocking wait; none = forever
  Clock clock{};       ///< "now"; system clock when empty
  /// Called for every event (with the wait duration for `waited`); may be empty.
  std::function<void(LockEvent, std::chrono::nanoseconds)> observer{};
};

namespace detail {

/// A uniform random number in (0, 1], from a per-thread generator (src/core/lock.cpp).
double uniform_open01();

// ---- the decision table, one row per function ---------------------------------------------
// `run_dogpile_lock` (one key) and the region's `get_or_create_multi` (many keys) both decide
// with these, so the two cannot drift apart.

/// dogpile's `_is_expired`: strictly older than the expiration.
inline bool is_expired(const std::optional<std::chrono::milliseconds>& expiration,
                       TimePoint created, TimePoint now) {
  return expiration && (now - created) > *expiration;
}

/// Expired but present: may this caller return the stale value while another regenerates?
inline bool may_serve_stale(const StalePolicy& p,
                            const std::optional<std::chrono::milliseconds>& expiration,
                            TimePoint created, TimePoint now) {
  switch (p.kind) {
    case StalePolicy::Kind::serve_stale:
      return true;
    case StalePolicy::Kind::serve_stale_for:
      return !expiration || (now - created) - *expiration <= p.max_age;
    case StalePolicy::Kind::block:
      break;
  }
  return false;
}

/// Fresh: should this caller regenerate it early (XFetch)?
inline bool wants_early_refresh(const LockOptions& o,
                                const std::optional<std::chrono::milliseconds>& expiration,
                                TimePoint created, std::chrono::duration<double> took,
                                TimePoint now) {
  if (!o.early_refresh || o.early_refresh->beta <= 0 || !expiration) return false;
  const double delta = took.count() > 0 ? took.count() : 0.001;
  const double early = -delta * o.early_refresh->beta * std::log(uniform_open01());
  // Compared in double seconds: converting a large `early` (a big beta) to the clock's
  // integer nanoseconds overflowed and disabled the refresh.
  const double remaining = std::chrono::duration<double>(created + *expiration - now).count();
  return early >= remaining;
}

/// Missing (or stale under a blocking policy): wait for the mutex, honouring `lock_timeout`.
/// @throws TimeoutError when the wait gives up (never runs an unguarded creator).
template <class Emit>
void acquire_blocking(CacheMutex& m, const LockOptions& o, Emit&& emit) {
  if (m.acquire(false)) return;
  const auto t0 = std::chrono::steady_clock::now();
  const bool ok = o.lock_timeout ? m.try_acquire_for(*o.lock_timeout) : m.acquire(true);
  emit(LockEvent::waited, std::chrono::steady_clock::now() - t0);
  if (!ok) throw TimeoutError("timed out waiting for the dogpile lock");
}

/// A backend's distributed mutex as a region with `treat_as_miss` uses it: the holder always
/// takes an in-process mutex first (so threads of one process never create together), then
/// the backend's lock. If the backend's lock fails (`BackendError`: the server is down), the
/// failure is reported and the holder keeps only the in-process mutex, so the application
/// keeps serving with per-process exclusion until the server is back. A `LockError` (a lost
/// lease) passes through. Thread-safety: as `CacheMutex`.
class FallbackMutex final : public CacheMutex {
 public:
  /// `report` receives each BackendError the distributed lock threw (the exception in flight,
  /// so it may add the caller's context before it is passed on).
  FallbackMutex(std::shared_ptr<CacheMutex> distributed, std::function<void(BackendError&)> report)
      : distributed_(std::move(distributed)), report_(std::move(report)) {}

 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> timeout) override;
  void do_release() override;
  [[nodiscard]] bool do_locked() const override;
  [[nodiscard]] bool do_is_lease() const override { return distributed_->is_lease(); }

 private:
  std::shared_ptr<CacheMutex> distributed_;
  std::function<void(BackendError&)> report_;
  ThreadMutex local_;
  bool distributed_held_ = false;  // guarded by holding local_
};

/// A mutex handed to someone else (the async runner) whose release reports a lost lease
/// through `on_lost` instead of throwing it into code that cannot act on it.
class ReportingMutex final : public CacheMutex {
 public:
  ReportingMutex(std::shared_ptr<CacheMutex> inner, std::function<void()> on_lost)
      : inner_(std::move(inner)), on_lost_(std::move(on_lost)) {}

 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> timeout) override {
    return timeout ? inner_->try_acquire_for(*timeout) : inner_->acquire(true);
  }
  void do_release() override;
  [[nodiscard]] bool do_locked() const override { return inner_->locked(); }
  [[nodiscard]] bool do_is_lease() const override { return inner_->is_lease(); }

 private:
  std::shared_ptr<CacheMutex> inner_;
  std::function<void()> on_lost_;
};

/// The per-key mutex of a region under `treat_as_miss`: it also keeps the last value a creator
/// of this process made while the backend could not store it, so the callers that waited for
/// that creator take it instead of creating again (one creation per key per process while the
/// backend is down, not one per waiting thread). The value lives as long as the mutex, i.e.
/// while anyone waits on or holds the key's lock; expiry and invalidation apply to it as to a
/// stored value. Thread-safety: as `CacheMutex`; `put`/`take` may run on any thread.
class HandoffMutex final : public CacheMutex {
 public:
  explicit HandoffMutex(std::shared_ptr<CacheMutex> inner) : inner_(std::move(inner)) {}

  /// Keeps a copy of `v` for the callers that wait on this key.
  template <class T>
  void put(const Cached<T>& v) {
    auto p = std::make_shared<const Cached<T>>(v);
    const std::lock_guard lk(m_);
    value_ = std::move(p);
    type_ = typeid(T);
  }
  /// A copy of the value kept by `put`, if one of type `T` is kept.
  template <class T>
  [[nodiscard]] std::optional<Cached<T>> take() const {
    std::shared_ptr<const void> p;
    {
      const std::lock_guard lk(m_);
      if (!value_ || type_ != typeid(T)) return std::nullopt;
      p = value_;
    }
    return *static_cast<const Cached<T>*>(p.get());
  }

 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> timeout) override {
    return timeout ? inner_->try_acquire_for(*timeout) : inner_->acquire(true);
  }
  void do_release() override { inner_->release(); }
  [[nodiscard]] bool do_locked() const override { return inner_->locked(); }
  [[nodiscard]] bool do_is_lease() const override { return inner_->is_lease(); }

 private:
  std::shared_ptr<CacheMutex> inner_;
  mutable std::mutex m_;
  std::shared_ptr<const void> value_;
  std::type_index type_ = typeid(void);
};

/// Releases after a creation. A lease that ran out while the creator worked is not the
/// caller's problem (its value is fine and stored): it is reported as `lease_lost`.
template <class Emit>
void release_reporting(MutexHandle& held, Emit&& emit) {
  try {
    held.release();
  } catch (const LockError&) {
    emit(LockEvent::lease_lost, std::chrono::nanoseconds{0});
  }
}

/// The lock algorithm with its collaborators as template parameters, so the region's hit path
/// has no type erasure and touches no mutex. `get_mutex()` is only called when a lock is needed.
///  * `value_fn() -> std::optional<Cached<T>>` (may throw NeedRegeneration)
///  * `creator() -> Cached<T>` (creates and stores)
///  * `async_creator(MutexHandle)`: when callable (not nullptr_t), used on the stale path.
/// `observer(LockEvent, nanoseconds)` is called for every event; `expiration` overrides
/// `o.expiration` (so the region can reuse one LockOptions for every call).
template <class T, class GetMutex, class ValueFn, class Creator, class AsyncCreator, class Observer>
T run_dogpile_lock(GetMutex&& get_mutex, ValueFn&& value_fn, Creator&& creator,
                   AsyncCreator&& async_creator, bool has_async, const LockOptions& o,
                   const std::optional<std::chrono::milliseconds>& expiration,
                   Observer&& observer) {
  const auto now = [&] { return o.clock ? o.clock() : std::chrono::system_clock::now(); };
  const auto emit = [&](LockEvent e, std::chrono::nanoseconds d = {}) { observer(e, d); };
  const auto read = [&]() -> std::optional<Cached<T>> {
    try {
      return value_fn();
    } catch (const NeedRegeneration&) {
      return std::nullopt;
    }
  };
  // Runs the creator while holding `m`; releases it even if the creator throws.
  const auto create_holding = [&](MutexHandle held) -> T {
    Cached<T> c = creator();
    emit(LockEvent::created);
    release_reporting(held, emit);
    return std::move(c.value);
  };
  const auto start_async = [&](MutexHandle held, T stale) -> T {
    if constexpr (!std::is_same_v<std::decay_t<AsyncCreator>, std::nullptr_t>) {
      emit(LockEvent::async_started);
      async_creator(std::move(held));
    }
    return stale;
  };

  std::optional<Cached<T>> v = read();
  TimePoint t = now();
  if (v && !is_expired(expiration, v->created, t)) {
    if (!wants_early_refresh(o, expiration, v->created, v->delta, t)) {
      emit(LockEvent::hit);
      return std::move(v->value);
    }
    // Early refresh: the value is still good, so nobody ever waits for it.
    std::shared_ptr<CacheMutex> m = get_mutex();
    if (!m->acquire(false)) {
      emit(LockEvent::hit);
      return std::move(v->value);
    }
    if (has_async) return start_async(MutexHandle::adopt(std::move(m)), std::move(v->value));
    return create_holding(MutexHandle::adopt(std::move(m)));
  }

  std::shared_ptr<CacheMutex> m = get_mutex();
  if (v && may_serve_stale(o.stale_policy, expiration, v->created, t)) {
    if (!m->acquire(false)) {  // creation in progress elsewhere
      emit(LockEvent::stale_served);
      return std::move(v->value);
    }
    // The winner does not re-read (dogpile ticket #122): it regenerates.
    if (has_async) return start_async(MutexHandle::adopt(std::move(m)), std::move(v->value));
    return create_holding(MutexHandle::adopt(std::move(m)));
  }
  // Missing, or stale under a blocking policy: wait, then take what the previous holder made
  // if it is fresh.
  acquire_blocking(*m, o, emit);
  MutexHandle held = MutexHandle::adopt(m);
  std::optional<Cached<T>> again = read();
  if (again && !is_expired(expiration, again->created, now())) {
    emit(LockEvent::hit);  // a concurrent caller created it
    return std::move(again->value);
  }
  if (again && has_async && !v) {
    // Entered without a value but found an expired one after waiting (dogpile L161-170).
    // Not when we entered with a value: then a stale policy sent us here to wait for a fresh
    // value, and handing creation to the runner would return the stale one after all.
    return start_async(std::move(held), std::move(again->value));
  }
  return create_holding(std::move(held));
}

}  // namespace detail

/// dogpile's `Lock`, usable on its own (the region uses the same algorithm).
///
/// ```cpp
/// dogpile::Lock<int> lock(mutex, create /* stores and returns Cached<int> */,
///                         read /* optional<Cached<int>>, nullopt = missing */,
///                         {.expiration = 10s});
/// int v = lock.get();
/// ```
/// Thread-safety: a `Lock` object is immutable; `get()` may run on many threads at once, and
/// the shared `mutex` decides who creates.
template <class T>
class Lock {
 public:
  using ValueFn =
      std::function<std::optional<Cached<T>>()>;  ///< nullopt or NeedRegeneration = no value
  using Creator = std::function<Cached<T>()>;     ///< creates and stores
  using AsyncCreator = std::function<void(MutexHandle)>;  ///< owns the mutex from then on

  /// A lock deciding with `mutex`, creating with `creator`, reading with `value_fn`.
  /// @throws ValidationError if one of the three is empty.
  Lock(std::shared_ptr<CacheMutex> mutex, Creator creator, ValueFn value_fn,
       LockOptions options = {}, AsyncCreator async_creator = {})
      : mutex_(std::move(mutex)),
        creator_(std::move(creator)),
        value_fn_(std::move(value_fn)),
        options_(std::move(options)),
        async_(std::move(async_creator)) {
    if (!mutex_ || !creator_ || !value_fn_) {
      detail::throw_error<ValidationError>(
          "dogpile::Lock needs a mutex, a creator and a value function");
    }
  }

  /// Runs the decision table and returns the value (fresh, stale or newly created).
  /// @throws whatever the creator throws (the mutex is released first); TimeoutError if
  /// `lock_timeout` expires while waiting.
  T get() const {
    return detail::run_dogpile_lock<T>([this] { return mutex_; }, value_fn_, creator_,
                                       [this](MutexHandle h) { async_(std::move(h)); },
                                       static_cast<bool>(async_), options_, options_.expiration,
                                       [this](LockEvent e, std::chrono::nanoseconds d) {
                                         if (options_.observer) options_.observer(e, d);
                                       });
  }

 private:
  std::shared_ptr<CacheMutex> mutex_;
  Creator creator_;
  ValueFn value_fn_;
  LockOptions options_;
  AsyncCreator async_;
};

}  // namespace dogpile
