// dogpile::LeaseLock against an in-memory LeaseStore whose lease runs out only when a test says
// so (`expire()`): ownership, lost leases, renewal, backoff, wake-up, deadlines and fork.
// Real time is used only where the renewer thread must run; margins are seconds, not
// milliseconds, so a loaded machine or a sanitizer cannot make them flaky.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/lease_lock.hpp"

using namespace std::chrono_literals;
using dogpile::LeaseLock;
using dogpile::LeaseLockOptions;
using dogpile::LockError;
using SteadyClock = std::chrono::steady_clock;

namespace {

/// One lock key in memory. It never expires by itself: `expire()` is the lease running out.
class FakeStore final : public dogpile::LeaseStore {
 public:
  bool try_acquire(std::string_view token, std::chrono::milliseconds /*lease*/) override {
    std::lock_guard lk(mu_);
    attempts_.push_back(SteadyClock::now());
    if (owner_) return false;
    owner_ = std::string(token);
    return true;
  }
  bool renew(std::string_view token, std::chrono::milliseconds /*lease*/) override {
    std::lock_guard lk(mu_);
    ++renews_;
    renew_tokens_.emplace_back(token);
    if (fail_renew_) throw dogpile::BackendError("store down");
    return owner_ == token;
  }
  bool release(std::string_view token) override {
    std::lock_guard lk(mu_);
    ++releases_;
    if (owner_ != token) return false;
    owner_.reset();
    return true;
  }
  [[nodiscard]] bool held() const override {
    std::lock_guard lk(mu_);
    return owner_.has_value();
  }
  [[nodiscard]] std::string describe() const override { return "fake lock"; }

  void expire() {
    std::lock_guard lk(mu_);
    owner_.reset();
  }
  void take(std::string token) {
    std::lock_guard lk(mu_);
    owner_ = std::move(token);
  }
  void fail_renewals(bool on) {
    std::lock_guard lk(mu_);
    fail_renew_ = on;
  }
  std::optional<std::string> owner() const {
    std::lock_guard lk(mu_);
    return owner_;
  }
  int attempts() const {
    std::lock_guard lk(mu_);
    return static_cast<int>(attempts_.size());
  }
  std::vector<SteadyClock::time_point> attempt_times() const {
    std::lock_guard lk(mu_);
    return attempts_;
  }
  int renews() const {
    std::lock_guard lk(mu_);
    return renews_;
  }
  std::vector<std::string> renew_tokens() const {
    std::lock_guard lk(mu_);
    return renew_tokens_;
  }
  int releases() const {
    std::lock_guard lk(mu_);
    return releases_;
  }

 private:
  mutable std::mutex mu_;
  std::optional<std::string> owner_;
  std::vector<SteadyClock::time_point> attempts_;
  int renews_ = 0;
  std::vector<std::string> renew_tokens_;
  int releases_ = 0;
  bool fail_renew_ = false;
};

// Polls `pred` for up to `limit`.
template <class P>
bool eventually(P pred, std::chrono::milliseconds limit = 10s) {
  const auto end = SteadyClock::now() + limit;
  while (!pred()) {
    if (SteadyClock::now() > end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Threads of this process (Linux).
int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

LeaseLockOptions no_renewal() {
  LeaseLockOptions o;
  o.renew = false;
  return o;
}

}  // namespace

TEST_CASE("LeaseLock: is a lease; options are validated", "[lease_lock]") {
  auto store = std::make_shared<FakeStore>();
  LeaseLock lock(store);
  CHECK(lock.is_lease());
  CHECK_FALSE(dogpile::ThreadMutex().is_lease());
  CHECK_FALSE(dogpile::NullMutex().is_lease());
  CHECK_THROWS_AS(LeaseLock(nullptr), dogpile::ValidationError);
  CHECK_THROWS_AS(LeaseLock(store, {.lease = 0ms}), dogpile::ValidationError);
  CHECK_THROWS_AS(LeaseLock(store, {.lock_sleep = -1ms}), dogpile::ValidationError);
  CHECK_THROWS_AS(LeaseLock(store, {.initial_backoff = -1ms}), dogpile::ValidationError);
}

TEST_CASE("LeaseLock: only the owner releases; tokens are fresh per acquisition", "[lease_lock]") {
  auto store = std::make_shared<FakeStore>();
  LeaseLock a(store, no_renewal());
  LeaseLock b(store, no_renewal());
  CHECK(a.token().empty());
  REQUIRE(a.acquire(false));
  const std::string first = a.token();
  CHECK(std::regex_match(first, std::regex(std::to_string(::getpid()) + "-[0-9a-f]{16}")));
  CHECK(store->owner() == first);
  CHECK(a.locked());
  CHECK(b.locked());
  CHECK_FALSE(b.acquire(false));
  CHECK_THROWS_AS(b.release(), LockError);  // b does not hold it
  CHECK(store->owner() == first);           // ...and did not touch it
  CHECK(store->releases() == 0);
  a.release();
  CHECK_FALSE(store->owner());
  CHECK(a.token().empty());
  CHECK_THROWS_WITH(a.release(), Catch::Contains("does not hold"));  // twice
  REQUIRE(a.acquire(false));
  CHECK(a.token() != first);
  a.release();
  CHECK(store->releases() == 1 + 1);
}

TEST_CASE("LeaseLock: a lease lost before release throws and spares the new holder",
          "[lease_lock]") {
  auto store = std::make_shared<FakeStore>();
  LeaseLock a(store, no_renewal());
  LeaseLock b(store, no_renewal());
  REQUIRE(a.acquire(false));
  store->expire();            // the lease ran out while `a` worked...
  REQUIRE(b.acquire(false));  // ...and `b` took the lock
  const auto b_token = b.token();
  CHECK_THROWS_WITH(a.release(), Catch::Contains("lease lost") &&
                                     Catch::Contains("may belong to another holder"));
  CHECK(store->owner() == b_token);  // b's lock survives a's release
  CHECK(a.token().empty());          // a is free to try again
  CHECK_FALSE(a.acquire(false));
  b.release();
  CHECK(a.acquire(false));
  a.release();
}

TEST_CASE("LeaseLock: renewal keeps a slow holder's lease, with its own token",
          "[lease_lock][renewal]") {
  auto store = std::make_shared<FakeStore>();
  LeaseLock a(store, {.lease = 300ms});
  REQUIRE(a.acquire(false));
  const auto token = a.token();
  // A holder 4x slower than the lease: renewed every ~100 ms.
  REQUIRE(eventually([&] { return store->renews() >= 3; }));
  std::this_thread::sleep_for(300ms);
  CHECK_FALSE(a.lost());
  for (const auto& t : store->renew_tokens()) CHECK(t == token);
  a.release();
  CHECK_FALSE(store->owner());
  // Renewal stops at release.
  const int renews = store->renews();
  std::this_thread::sleep_for(400ms);
  CHECK(store->renews() == renews);
}

TEST_CASE("LeaseLock: the renewer thread runs only while a lease is held",
          "[lease_lock][renewal]") {
  // So a process holding no lease forks single-threaded.
  std::this_thread::sleep_for(200ms);  // a renewer left by an earlier test ends
  const int base = thread_count();
  auto store = std::make_shared<FakeStore>();
  LeaseLock a(store, {.lease = 300ms});
  LeaseLock b(std::make_shared<FakeStore>(), {.lease = 300ms});
  REQUIRE(a.acquire(false));
  REQUIRE(b.acquire(false));
  CHECK(thread_count() == base + 1);  // one renewer for both
  a.release();
  CHECK(thread_count() == base + 1);  // b is still held
  b.release();
  CHECK(eventually([&] { return thread_count() == base; }));
  // ...and it starts again for the next lease.
  REQUIRE(a.acquire(false));
  CHECK(thread_count() == base + 1);
  REQUIRE(eventually([&] { return store->renews() >= 1; }));
  a.release();
  CHECK(eventually([&] { return thread_count() == base; }));
}

TEST_CASE("LeaseLock: a renewal that finds the lease lost stops and makes release throw",
          "[lease_lock][renewal]") {
  auto store = std::make_shared<FakeStore>();
  LeaseLock a(store, {.lease = 300ms});
  REQUIRE(a.acquire(false));
  store->take("4242-another-holder");  // the lease ran out and another process took it
  REQUIRE(eventually([&] { return a.lost(); }));
  const int renews = store->renews();
  std::this_thread::sleep_for(400ms);
  CHECK(store->renews() == renews);  // no more renewals of a lost lease
  const int releases = store->releases();
  CHECK_THROWS_AS(a.release(), LockError);
  CHECK(store->releases() == releases);  // a known-lost lease does not even try the store
  CHECK(store->owner() == std::string("4242-another-holder"));
  CHECK_FALSE(a.lost());
}

TEST_CASE("LeaseLock: a store error during renewal is retried, not fatal",
          "[lease_lock][renewal]") {
  auto store = std::make_shared<FakeStore>();
  store->fail_renewals(true);
  LeaseLock a(store, {.lease = 300ms});
  REQUIRE(a.acquire(false));
  REQUIRE(eventually([&] { return store->renews() >= 3; }));  // retried after failures
  CHECK_FALSE(a.lost());
  store->fail_renewals(false);
  const int renews = store->renews();
  REQUIRE(eventually([&] { return store->renews() > renews; }));
  CHECK_FALSE(a.lost());
  a.release();
  CHECK_FALSE(store->owner());
}

TEST_CASE("LeaseLock: abandoning (or destroying) a held lock leaves it to expire", "[lease_lock]") {
  auto store = std::make_shared<FakeStore>();
  {
    LeaseLock a(store, {.lease = 300ms});
    REQUIRE(a.acquire(false));
    CHECK(a.abandon());
    CHECK_FALSE(a.abandon());
    CHECK(store->held());  // not released: it expires by itself
    CHECK_THROWS_AS(a.release(), LockError);
    const int renews = store->renews();
    std::this_thread::sleep_for(400ms);
    CHECK(store->renews() == renews);
    store->expire();
    REQUIRE(a.acquire(false));
  }  // destroyed while held
  CHECK(store->held());
  const int renews = store->renews();
  std::this_thread::sleep_for(400ms);
  CHECK(store->renews() == renews);
  CHECK(store->releases() == 0);
}

TEST_CASE("LeaseLock: backoff is exponential, jittered and capped", "[lease_lock][backoff]") {
  std::mt19937_64 rng(42);
  dogpile::detail::Backoff b(1ms, 20ms);
  std::vector<std::chrono::microseconds> naps;
  naps.reserve(200);
  for (int i = 0; i < 200; ++i) naps.push_back(b.next(rng));
  CHECK(naps[0] <= 1ms);
  CHECK(naps[0] >= 500us);
  for (const auto& n : naps) {
    CHECK(n <= 20ms);
    CHECK(n >= 500us);
  }
  // From the 6th nap on the delay is at the cap: every nap in [cap/2, cap].
  for (std::size_t i = 5; i < naps.size(); ++i) CHECK(naps[i] >= 10ms);
  CHECK(*std::max_element(naps.begin(), naps.end()) > 15ms);  // jitter reaches near the cap
  // Degenerate settings: initial above the cap is clamped; a zero cap means 1 ms.
  dogpile::detail::Backoff c(5s, 2ms);
  CHECK(c.next(rng) <= 2ms);
  dogpile::detail::Backoff z(0ms, 0ms);
  CHECK(z.next(rng) <= 1ms);
  CHECK(z.cap() == 1ms);
}

TEST_CASE("LeaseLock: polling a held lock never sleeps far past the backoff cap",
          "[lease_lock][backoff]") {
  auto store = std::make_shared<FakeStore>();
  store->take("someone-else");
  LeaseLock a(store, {.lock_sleep = 50ms});
  const auto t0 = SteadyClock::now();
  CHECK_FALSE(a.try_acquire_for(3s));
  const auto elapsed = SteadyClock::now() - t0;
  CHECK(elapsed >= 3s);
  CHECK(elapsed < 3s + 2s);  // the last nap is cut at the deadline
  const auto times = store->attempt_times();
  REQUIRE(times.size() >= 2);
  // Uncapped doubling from 1 ms would reach naps of 1-2 s within 3 s; capped at 50 ms, a gap
  // past 50 ms + 700 ms could only be the scheduler.
  std::chrono::nanoseconds max_gap{0};
  for (std::size_t i = 1; i < times.size(); ++i)
    max_gap = std::max(max_gap, times[i] - times[i - 1]);
  CHECK(max_gap < 750ms);
  // At least cap/2 between attempts once ramped up: no busy polling (3 s / 25 ms = 120).
  CHECK(store->attempts() <= 120 + 10);
}

TEST_CASE("LeaseLock: a timeout returns false; zero tries exactly once", "[lease_lock]") {
  auto store = std::make_shared<FakeStore>();
  store->take("someone-else");
  LeaseLock a(store, no_renewal());
  CHECK_FALSE(a.acquire(false));
  CHECK(store->attempts() == 1);
  CHECK_FALSE(a.try_acquire_for(0ms));
  CHECK(store->attempts() == 2);
  const auto t0 = SteadyClock::now();
  CHECK_FALSE(a.try_acquire_for(100ms));
  CHECK(SteadyClock::now() - t0 >= 100ms);
  CHECK(store->attempts() > 2);
  CHECK(a.token().empty());
  // Held by this very object: a second acquire waits in memory, without asking the store.
  store->expire();
  REQUIRE(a.acquire(false));
  const int attempts = store->attempts();
  CHECK_FALSE(a.acquire(false));
  CHECK_FALSE(a.try_acquire_for(50ms));
  CHECK(store->attempts() == attempts);
  a.release();
}

TEST_CASE("LeaseLock: a thread waiting on the same object is woken at release, not polling",
          "[lease_lock][wakeup]") {
  auto store = std::make_shared<FakeStore>();
  // If the waiter polled the store it would nap 15-30 s between attempts.
  LeaseLock lock(store, {.lock_sleep = 30s, .initial_backoff = 30s, .renew = false});
  REQUIRE(lock.acquire(false));
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    if (lock.acquire(true)) {
      got = true;
      lock.release();
    }
  });
  std::this_thread::sleep_for(100ms);
  CHECK(store->attempts() == 1);  // the waiter queues in memory
  const auto t0 = SteadyClock::now();
  lock.release();
  waiter.join();
  CHECK(got);
  CHECK(SteadyClock::now() - t0 < 10s);
  CHECK(store->attempts() == 2);  // one attempt by the woken waiter, which won
  CHECK_FALSE(store->held());
}

TEST_CASE("LeaseLock: a forked child neither renews nor releases its parent's lease",
          "[lease_lock][fork]") {
  auto store = std::make_shared<FakeStore>();
  LeaseLock a(store, {.lease = 300ms});
  REQUIRE(a.acquire(false));
  const auto token = a.token();
  REQUIRE(eventually([&] { return store->renews() >= 1; }));  // the parent's renewer runs

  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child's copy of the store only changes through the child's own calls.
    int failures = 0;
    try {
      const int renews = store->renews();
      std::this_thread::sleep_for(500ms);  // 5 renewal intervals
      if (store->renews() != renews) failures |= 1;
      try {
        a.release();
        failures |= 2;
      } catch (const LockError&) {
      }
      if (store->owner() != token || store->releases() != 0) failures |= 4;
      if (a.acquire(false)) failures |= 8;  // the parent's lock is held: no hang, no win
      // The child's own leases are renewed by its own renewer.
      auto mine = std::make_shared<FakeStore>();
      LeaseLock b(mine, {.lease = 300ms});
      if (!b.acquire(false)) failures |= 16;
      if (!eventually([&] { return mine->renews() >= 1; })) failures |= 32;
      b.release();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      failures |= 64;
    }
    ::_exit(failures);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // The parent still owns and renews its lock.
  const int renews = store->renews();
  REQUIRE(eventually([&] { return store->renews() > renews; }));
  CHECK_FALSE(a.lost());
  a.release();
  CHECK_FALSE(store->held());
}
