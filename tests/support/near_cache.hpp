// What the near-cache tests of the three redis backends share. Header-only; include as
// "support/near_cache.hpp".
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/error.hpp"

namespace dogpile::test {

/// Reads `key` through `b` until one read is an L1 hit (tracking up and a fence seen); false
/// when none came within `limit`. `Backend`: any redis backend (near_cache_stats(), get()).
/// Polls every millisecond (tracking comes up within a few).
template <class Backend>
bool l1_serves(Backend& b, const std::string& key,
               std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto before = b.near_cache_stats().l1_hits;
    (void)b.get(key);
    if (b.near_cache_stats().l1_hits > before) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// The staleness checker of the near cache: one writer (a thread of this process) writes
/// increasing versions of one key, each retried until acknowledged, a new one every
/// millisecond; readers in other processes (each its own backend, so its own connections,
/// subscriber and L1) read the key through L1 in two threads each, while the test injects
/// faults. A read that began more than `max_staleness` after the version it returned had been
/// overwritten (its successor's write acknowledged) is a violation. The ack time is the latest
/// the overwrite can have happened, so the check never blames a correct read.
///
/// Under ThreadSanitizer, which cannot start threads in a child forked from a process that has
/// some, the readers are threads of this process (still separate clients of the server).
/// Not thread-safe: one test thread drives it. Throws std::runtime_error when the shared board
/// cannot be mapped. Declare what `write` uses (the writer's backend) before the checker: its
/// destructor stops the writer.
class StalenessChecker {
 public:
  /// What the readers saw, after finish().
  struct Summary {
    int versions = 0;                // the last version acknowledged
    std::int64_t reads = 0;          // reads that returned (a failed read is not counted)
    std::int64_t l1_hits = 0;        // of which L1 served
    std::int64_t violations = 0;     // reads staler than max_staleness
    std::int64_t worst_late_us = 0;  // how far past max_staleness the worst read was
    int reader_failures = 0;         // readers that did not run to the end (an exception)
    /// The counts, for a test's INFO.
    [[nodiscard]] std::string describe() const {
      return "versions written " + std::to_string(versions) + ", reads " + std::to_string(reads) +
             ", L1 hits " + std::to_string(l1_hits) + ", violations " + std::to_string(violations) +
             ", worst lateness " + std::to_string(worst_late_us) + " us, reader failures " +
             std::to_string(reader_failures);
    }
  };

  StalenessChecker(std::string key, std::chrono::milliseconds max_staleness)
      : key_(std::move(key)),
        staleness_ns_(std::chrono::nanoseconds(max_staleness).count()),
        mem_(::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                    0)) {
    if (mem_ == MAP_FAILED) throw std::runtime_error("StalenessChecker: mmap failed");
    board_ = new (mem_) Board();
  }
  StalenessChecker(const StalenessChecker&) = delete;
  StalenessChecker& operator=(const StalenessChecker&) = delete;
  ~StalenessChecker() {
    (void)stop();
    board_->~Board();
    ::munmap(mem_, sizeof(Board));
  }

  /// The key every version is written to.
  [[nodiscard]] const std::string& key() const { return key_; }

  /// Writes version 0 with `write(value)` (here, so that readers find one), then starts the
  /// writer thread. `write` throws a dogpile::BackendError when the write was not acknowledged.
  void start_writer(std::function<void(const std::string& value)> write) {
    write("0");
    board_->acked_ns[0] = now_ns();
    write_ = std::move(write);
    writer_ = std::thread([this] { write_loop(); });
  }

  /// Starts `processes` readers; each calls `make()` (in its own process) for a backend with
  /// near caching (a shared_ptr to any redis backend: get(), near_cache_stats()). Call it
  /// before start_writer(): a fork is safest with the fewest threads running.
  template <class Make>
  void start_readers(Make make, int processes = 2) {
    for (int p = 0; p < processes; ++p) {
      if (!kReaderProcesses) {
        reader_threads_.emplace_back([this, make] { reader_failures_ += read(make) ? 0 : 1; });
        continue;
      }
      const pid_t pid = ::fork();
      if (pid == 0) ::_exit(read(make) ? 0 : 1);
      if (pid > 0) reader_pids_.push_back(pid);
    }
  }

  /// Stops the writer and the readers and says what they saw (idempotent).
  Summary stop() {
    board_->stop = true;
    if (writer_.joinable()) writer_.join();
    // A reader stops within a read (socket_timeout); one that does not (stuck) is killed after
    // 10 s and counts as failed, so that a test never hangs here.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (const pid_t pid : reader_pids_) {
      int status = 0;
      pid_t got = 0;
      while ((got = ::waitpid(pid, &status, WNOHANG)) == 0 &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      const bool stuck = got == 0;
      if (stuck) {
        ::kill(pid, SIGKILL);
        got = ::waitpid(pid, &status, 0);
      }
      if (got != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ++reader_failures_;
        std::fprintf(stderr, "staleness reader process %d: %s %d\n", static_cast<int>(pid),
                     stuck                 ? "still running 10 s after stop, killed; status"
                     : WIFSIGNALED(status) ? "killed by signal"
                                           : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
      }
    }
    reader_pids_.clear();
    for (auto& t : reader_threads_) t.join();
    reader_threads_.clear();
    return Summary{version_.load(),
                   board_->reads.load(),
                   board_->l1_hits.load(),
                   board_->violations.load(),
                   board_->worst_late_ns.load() / 1000,
                   reader_failures_.load()};
  }

 private:
#if defined(__SANITIZE_THREAD__)
  static constexpr bool kReaderProcesses = false;
#else
  static constexpr bool kReaderProcesses = true;
#endif

  // Shared between the writer (this process) and the reader processes: when each version's
  // successor was acknowledged, and what the readers saw. Lock-free atomics work across fork().
  struct Board {
    static constexpr int kVersions = 1 << 16;
    std::atomic<std::int64_t> acked_ns[kVersions];  // ack time of version v's write (0: not yet)
    std::atomic<std::int64_t> reads{0};
    std::atomic<std::int64_t> l1_hits{0};
    std::atomic<std::int64_t> violations{0};
    std::atomic<std::int64_t> worst_late_ns{0};
    std::atomic<bool> stop{false};
  };

  static std::int64_t now_ns() {  // CLOCK_MONOTONIC: one clock for every process
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  void write_loop() {
    int v = 0;
    while (!board_->stop.load() && v + 1 < Board::kVersions) {
      ++v;
      for (;;) {
        try {
          write_(std::to_string(v));
          break;
        } catch (const dogpile::BackendError&) {  // not acknowledged: the same version again
          if (board_->stop.load()) return;
        }
      }
      board_->acked_ns[v] = now_ns();
      version_ = v;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // One reader: its backend and two threads reading until stop. True when it ran to the end.
  template <class Make>
  bool read(const Make& make) {
    try {
      auto b = make();
      auto loop = [&] {
        while (!board_->stop.load()) {
          const std::int64_t start = now_ns();
          const auto hits = b->near_cache_stats().l1_hits;
          std::optional<std::string> v;
          try {
            v = b->get(key_);
          } catch (const dogpile::BackendError&) {  // a paused server, a failover: a timeout
            continue;
          }
          board_->reads.fetch_add(1);
          if (b->near_cache_stats().l1_hits > hits) board_->l1_hits.fetch_add(1);
          if (v) judge(std::stoi(*v), start);  // (FLUSHALL: no version)
        }
      };
      // Whatever ends a reader early is said on stderr: a failed reader must be explainable.
      std::string failure;
      std::mutex failure_m;
      auto guarded = [&] {
        try {
          loop();
        } catch (const std::exception& e) {
          const std::lock_guard lk(failure_m);
          failure = e.what();
        } catch (...) {
          const std::lock_guard lk(failure_m);
          failure = "an exception that is not a std::exception";
        }
      };
      std::thread second(guarded);
      guarded();
      second.join();
      if (!failure.empty()) std::fprintf(stderr, "staleness reader failed: %s\n", failure.c_str());
      return failure.empty();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "staleness reader failed: %s\n", e.what());
      return false;
    }
  }

  // A read begun at `start` returned version `ver`.
  void judge(int ver, std::int64_t start) {
    if (ver + 1 >= Board::kVersions) return;
    const std::int64_t overwritten = board_->acked_ns[ver + 1].load();
    if (overwritten == 0 || start <= overwritten + staleness_ns_) return;
    board_->violations.fetch_add(1);
    const std::int64_t late = start - overwritten - staleness_ns_;
    std::int64_t worst = board_->worst_late_ns.load();
    while (late > worst && !board_->worst_late_ns.compare_exchange_weak(worst, late)) {
    }
  }

  std::string key_;
  std::int64_t staleness_ns_;
  void* mem_;
  Board* board_ = nullptr;
  std::function<void(const std::string&)> write_;
  std::atomic<int> version_{0};
  std::atomic<int> reader_failures_{0};
  std::vector<pid_t> reader_pids_;
  std::vector<std::thread> reader_threads_;
  std::thread writer_;
};

}  // namespace dogpile::test
