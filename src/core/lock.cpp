// lock.hpp's non-template parts, compiled once: the early-refresh random draw (<random> stays
// out of the headers) and the FallbackMutex / ReportingMutex hooks.

#include <algorithm>
#include <random>
#include <utility>

#include "dogpile/lock.hpp"

namespace dogpile::detail {

double uniform_open01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // (0, 1]: log(0) must never happen.
  return 1.0 - std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

bool FallbackMutex::do_acquire(std::optional<std::chrono::milliseconds> timeout) {
  using SteadyClock = std::chrono::steady_clock;
  const auto t0 = SteadyClock::now();
  if (!(timeout ? local_.try_acquire_for(*timeout) : local_.acquire(true))) return false;
  bool ok = false;
  try {
    if (timeout) {
      const auto left = std::max(
          *timeout - std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0),
          std::chrono::milliseconds(0));
      ok = distributed_->try_acquire_for(left);
    } else {
      ok = distributed_->acquire(true);
    }
  } catch (BackendError& e) {
    if (report_) report_(e);
    distributed_held_ = false;
    return true;  // degraded: in-process exclusion only
  } catch (...) {
    local_.release();
    throw;
  }
  if (!ok) {
    local_.release();
    return false;
  }
  distributed_held_ = true;
  return true;
}

void FallbackMutex::do_release() {
  // Only the holder gets here, so `distributed_held_` is stable.
  struct LocalRelease {
    explicit LocalRelease(ThreadMutex& m) : m_(m) {}
    LocalRelease(const LocalRelease&) = delete;
    LocalRelease& operator=(const LocalRelease&) = delete;
    ~LocalRelease() {
      try {
        m_.release();
      } catch (...) {
      }
    }
    ThreadMutex& m_;
  } on_exit(local_);
  if (!std::exchange(distributed_held_, false)) return;
  try {
    distributed_->release();
  } catch (BackendError& e) {
    if (report_) report_(e);  // the lock expires after its lease
  }
}

bool FallbackMutex::do_locked() const {
  try {
    return distributed_->locked() || local_.locked();
  } catch (const BackendError&) {
    return local_.locked();
  }
}

void ReportingMutex::do_release() {
  try {
    inner_->release();
  } catch (const LockError&) {
    if (on_lost_) on_lost_();
  }
}

}  // namespace dogpile::detail
