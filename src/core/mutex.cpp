// mutex.hpp's ThreadMutex, compiled once.

#include "dogpile/mutex.hpp"

#include <condition_variable>
#include <mutex>

namespace dogpile {

struct ThreadMutex::State {
  std::mutex m;
  std::condition_variable cv;
  bool held = false;
};

ThreadMutex::ThreadMutex() : s_(std::make_unique<State>()) {}
ThreadMutex::~ThreadMutex() = default;

bool ThreadMutex::do_acquire(std::optional<std::chrono::milliseconds> timeout) {
  std::unique_lock lk(s_->m);
  if (!timeout) {
    s_->cv.wait(lk, [&] { return !s_->held; });
  } else if (!s_->cv.wait_for(lk, *timeout, [&] { return !s_->held; })) {
    return false;
  }
  s_->held = true;
  return true;
}
void ThreadMutex::do_release() {
  {
    std::lock_guard lk(s_->m);
    if (!s_->held) detail::throw_error<LockError>("release of a mutex that is not held");
    s_->held = false;
  }
  s_->cv.notify_one();
}
bool ThreadMutex::do_locked() const {
  std::lock_guard lk(s_->m);
  return s_->held;
}

}  // namespace dogpile
