// mutex.hpp's ThreadMutex, compiled once.

#include "dogpile/mutex.hpp"

namespace dogpile {

bool ThreadMutex::do_acquire(std::optional<std::chrono::milliseconds> timeout) {
  std::unique_lock lk(m_);
  if (!timeout) {
    cv_.wait(lk, [&] { return !held_; });
  } else if (!cv_.wait_for(lk, *timeout, [&] { return !held_; })) {
    return false;
  }
  held_ = true;
  return true;
}
void ThreadMutex::do_release() {
  {
    std::lock_guard lk(m_);
    if (!held_) detail::throw_error<LockError>("release of a mutex that is not held");
    held_ = false;
  }
  cv_.notify_one();
}
bool ThreadMutex::do_locked() const {
  std::lock_guard lk(m_);
  return held_;
}

}  // namespace dogpile
