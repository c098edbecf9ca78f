#pragma once
/// @file runner.hpp
/// Async creation runners. When a value is expired and this caller wins the lock, the region
/// hands `(key, job, handle)` to the runner and returns the stale value at once. `job()`
/// creates and stores the value; `handle` owns the dogpile mutex and releases it when
/// destroyed, so a runner only has to run `job` and then drop `handle` (possibly on another
/// thread).

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/error.hpp"
#include "dogpile/mutex.hpp"

namespace dogpile {

/// `runner(key, job, handle)`. Must eventually run `job` (or not) and destroy `handle`.
using AsyncCreationRunner =
    std::function<void(std::string key, std::function<void()> job, MutexHandle handle)>;

namespace detail {
/// A fixed pool of threads with a FIFO queue; destroying it finishes the queued jobs.
class ThreadPool {
 public:
  explicit ThreadPool(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
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
      std::lock_guard lk(m_);
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lk(m_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        job();
      } catch (...) {  // a failed background creation must not kill the pool; the next
      }                // expired read retries it
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};
}  // namespace detail

/// A runner backed by `n` threads (shared by every copy of the returned function).
/// @throws ValidationError if `n == 0`.
inline AsyncCreationRunner thread_pool_runner(std::size_t n) {
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
