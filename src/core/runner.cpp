// The thread-pool runner (runner.hpp), compiled once: <thread>, <condition_variable> and the
// pool's code stay out of the files that include a region.

#include "dogpile/runner.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "dogpile/error.hpp"

namespace dogpile {

namespace detail {
namespace {
/// A fixed pool of threads with a FIFO queue; destroying it finishes the queued jobs.
/// The queue state is shared with the workers: the last owner of the pool can be a job on a
/// pool thread (it holds the region, which holds the runner), and that worker keeps running
/// its loop after the pool object is gone.
class ThreadPool {
 public:
  explicit ThreadPool(std::size_t n) : s_(std::make_shared<State>()) {
    for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([s = s_] { work(*s); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lk(s_->m);
      s_->stop = true;
    }
    s_->cv.notify_all();
    for (auto& t : threads_) {
      // The last owner can be a job on a pool thread; it cannot join itself.
      if (t.get_id() == std::this_thread::get_id()) {
        t.detach();
      } else {
        t.join();
      }
    }
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard lk(s_->m);
      s_->queue.push_back(std::move(job));
    }
    s_->cv.notify_one();
  }

 private:
  struct State {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::function<void()>> queue;
    bool stop = false;
  };
  static void work(State& s) {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lk(s.m);
        s.cv.wait(lk, [&] { return s.stop || !s.queue.empty(); });
        if (s.queue.empty()) return;
        job = std::move(s.queue.front());
        s.queue.pop_front();
      }
      try {
        job();
      } catch (...) {  // a failed background creation must not kill the pool; the next
      }                // expired read retries it
    }
  }
  std::shared_ptr<State> s_;
  std::vector<std::thread> threads_;
};
}  // namespace
}  // namespace detail

AsyncCreationRunner thread_pool_runner(std::size_t n) {
  if (n == 0) detail::throw_error<ValidationError>("thread_pool_runner: thread count must be > 0");
  auto pool = std::make_shared<detail::ThreadPool>(n);
  return [pool](std::string /*key*/, std::function<void()> job, MutexHandle handle) {
    auto h = std::make_shared<MutexHandle>(std::move(handle));
    pool->post([job = std::move(job), h]() mutable {
      job();
      h->release();
    });
  };
}

}  // namespace dogpile
