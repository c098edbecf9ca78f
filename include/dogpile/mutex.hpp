#pragma once
/// @file mutex.hpp
/// The mutex interface every dogpile lock is built on: the in-process per-key mutex of the
/// region, and the distributed locks of the backends (Redis SET NX PX, memcached add, GDBM
/// lock files, SQLite leases).

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "dogpile/error.hpp"

namespace dogpile {

/// A lock that may be acquired by one holder at a time. Unlike `std::mutex`, it may be
/// released from another thread than the one that acquired it (the async creation runner
/// needs that). One `CacheMutex` object stands for one lock; at most one holder at a time.
///
/// Public calls are non-virtual; implementations override the protected `do_*` hooks.
/// Thread-safety: every call may be made from any thread.
class CacheMutex {
 public:
  virtual ~CacheMutex() = default;

  /// dogpile's `acquire(wait)`: blocks until acquired when `wait`, else tries once.
  /// @returns true if this call acquired the lock.
  /// @throws BackendError if a distributed lock's server fails.
  bool acquire(bool wait = true) {
    return wait ? do_acquire(std::nullopt) : do_acquire(std::chrono::milliseconds(0));
  }
  /// Waits at most `timeout` for the lock. @returns true if acquired.
  template <class Rep, class Period>
  bool try_acquire_for(std::chrono::duration<Rep, Period> timeout) {
    return do_acquire(std::chrono::ceil<std::chrono::milliseconds>(timeout));
  }
  /// Releases the lock. @throws LockError if it is not held (or, for a distributed lock, no
  /// longer owned because its lease expired).
  void release() { do_release(); }
  /// True if anyone holds the lock (for a distributed lock: the lock key exists).
  [[nodiscard]] bool locked() const { return do_locked(); }
  /// True when the lock can expire underneath a holder that dies or pauses (a lease, as
  /// `LeaseLock`): exclusion then lasts only while the holder keeps renewing it, and a release
  /// may find it lost (`LockError`). False for locks held until released (in-process mutexes,
  /// file locks). Callers ask `backend->get_mutex(key)->is_lease()`.
  /// Thread-safety: any thread. Never throws.
  [[nodiscard]] bool is_lease() const { return do_is_lease(); }

 protected:
  /// `timeout`: nullopt waits forever; zero tries once.
  virtual bool do_acquire(std::optional<std::chrono::milliseconds> timeout) = 0;
  /// Releases; throws `LockError` when this holder does not (or no longer) hold it.
  virtual void do_release() = 0;
  /// True if anyone holds the lock.
  [[nodiscard]] virtual bool do_locked() const = 0;
  /// Override to return true for a lease (see `is_lease`); the default is false.
  [[nodiscard]] virtual bool do_is_lease() const { return false; }
};

/// The in-process mutex a region uses when its backend has none. Not tied to a thread.
class ThreadMutex final : public CacheMutex {
 public:
  /// An unlocked mutex.
  ThreadMutex();
  ~ThreadMutex() override;
  ThreadMutex(const ThreadMutex&) = delete;
  ThreadMutex& operator=(const ThreadMutex&) = delete;

 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> timeout) override;
  void do_release() override;
  [[nodiscard]] bool do_locked() const override;

 private:
  // A std::mutex, a std::condition_variable and the flag, in src/core/mutex.cpp: keeps
  // <condition_variable> (and the <thread>/<stop_token> machinery it brings) out of the headers.
  struct State;
  std::unique_ptr<State> s_;
};

/// A mutex that never excludes (the `null` backend's): acquire always succeeds.
class NullMutex final : public CacheMutex {
 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> /*timeout*/) override { return true; }
  void do_release() override {}
  [[nodiscard]] bool do_locked() const override { return false; }
};

/// An owned, movable handle to an acquired `CacheMutex`: releases it when destroyed. It can
/// be moved to another thread (the async creation runner receives one).
/// Thread-safety: one handle is used by one thread at a time.
class MutexHandle {
 public:
  MutexHandle() = default;
  /// Takes ownership of an already acquired mutex.
  static MutexHandle adopt(std::shared_ptr<CacheMutex> acquired) {
    MutexHandle h;
    h.mutex_ = std::move(acquired);
    return h;
  }
  /// Takes over `o`'s mutex; `o` owns nothing afterwards.
  MutexHandle(MutexHandle&& o) noexcept : mutex_(std::move(o.mutex_)) {}
  /// Releases what this handle holds, then takes over `o`'s mutex.
  MutexHandle& operator=(MutexHandle&& o) noexcept {
    if (this != &o) {
      reset();
      mutex_ = std::move(o.mutex_);
    }
    return *this;
  }
  MutexHandle(const MutexHandle&) = delete;
  MutexHandle& operator=(const MutexHandle&) = delete;
  ~MutexHandle() { reset(); }

  /// Releases now. @throws LockError if the lock was lost (lease expired) in the meantime.
  void release() {
    if (auto m = std::exchange(mutex_, nullptr)) m->release();
  }
  /// Gives up ownership without releasing: the caller now owns the acquired mutex.
  std::shared_ptr<CacheMutex> disown() noexcept { return std::exchange(mutex_, nullptr); }
  /// True while this handle holds the lock.
  [[nodiscard]] bool owns() const { return mutex_ != nullptr; }
  /// The mutex held (nullptr after release).
  [[nodiscard]] CacheMutex* mutex() const { return mutex_.get(); }

 private:
  void reset() noexcept {
    if (auto m = std::exchange(mutex_, nullptr)) {
      try {
        m->release();
      } catch (...) {  // a destructor must not throw; a lost lease is already harmless
      }
    }
  }
  std::shared_ptr<CacheMutex> mutex_;
};

}  // namespace dogpile
