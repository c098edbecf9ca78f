// Stampedes, with creator calls counted exactly. No sleeps: threads start together on a latch,
// and a creator holds the lock until it can see (through counters) that every other thread
// is waiting for it or has already returned. Catch2 assertions run on the main thread only.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::ManualClock;
using dogpile_test::wait_until;

namespace {
/// Runs `body(i)` on `n` threads released together; joins them.
template <class F>
void run_threads(int n, F body) {
  std::latch start(n);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      body(i);
    });
  }
  for (auto& t : threads) t.join();
}
}  // namespace

TEST_CASE("Stampede: 32 threads on a missing key, blocked waiters: exactly 1 creation",
          "[stampede]") {
  constexpr int kThreads = 32;
  auto proxy = std::make_shared<dogpile_test::WaitCountingProxy>();
  const char* backend = GENERATE("memory", "memory_serialized");
  CAPTURE(backend);
  auto r = dogpile::make_region();
  r.configure(backend, {.expiration_time = 1h, .wrap = {proxy}});
  std::atomic<int> creations{0};
  std::atomic<bool> all_waited{false};
  std::vector<std::string> results(kThreads);
  run_threads(kThreads, [&](int i) {
    results[static_cast<std::size_t>(i)] = r.get_or_create("key", [&] {
      const int n = ++creations;
      // Hold the lock until every other thread is blocked on it.
      all_waited = wait_until([&] { return proxy->waits->load() >= kThreads - 1; });
      return "value " + std::to_string(n);
    });
  });
  CHECK(all_waited);
  CHECK(creations == 1);
  CHECK(proxy->waits->load() == kThreads - 1);
  for (const auto& v : results) CHECK(v == "value 1");
  const auto s = r.stats();
  CHECK(s.creations == 1);
  CHECK(s.lock_waits == kThreads - 1);
  CHECK(s.hits == kThreads - 1);  // the waiters re-read the new value
}

TEST_CASE("Stampede: 32 threads on a missing key, default thread mutex: exactly 1 creation",
          "[stampede]") {
  constexpr int kThreads = 32;
  auto counting = std::make_shared<dogpile_test::CountingProxy>();
  auto r = dogpile::make_region();
  r.configure("memory", {.wrap = {counting}});
  std::atomic<int> creations{0};
  std::atomic<bool> all_read{false};
  std::vector<int> results(kThreads);
  run_threads(kThreads, [&](int i) {
    results[static_cast<std::size_t>(i)] = r.get_or_create("key", [&] {
      // Every thread's first read (32) plus this creator's re-read under the lock: all the
      // others have seen "missing" and must now wait for this creation.
      all_read = wait_until([&] { return counting->gets.load() >= kThreads + 1; });
      return ++creations * 100;
    });
  });
  CHECK(all_read);
  CHECK(creations == 1);
  for (int v : results) CHECK(v == 100);
  CHECK(r.stats().creations == 1);
}

TEST_CASE("Stampede: 16 threads on an expired key: 1 creation, 15 stale without waiting",
          "[stampede]") {
  constexpr int kThreads = 16;
  const bool soft = GENERATE(false, true);
  const char* backend = GENERATE("memory", "memory_serialized");
  CAPTURE(soft, backend);
  ManualClock clock;
  auto r = dogpile::make_region({.clock = clock});
  r.configure(backend, {.expiration_time = soft ? std::chrono::milliseconds(1h) : 1s});
  r.set("key", std::string("old"));
  if (soft) {
    clock.advance(1ms);
    r.invalidate({.hard = false});
  } else {
    clock.advance(2s);
  }
  std::atomic<int> creations{0};
  std::atomic<int> returned{0};
  std::atomic<bool> others_returned{false};
  std::vector<std::string> results(kThreads);
  run_threads(kThreads, [&](int i) {
    results[static_cast<std::size_t>(i)] = r.get_or_create("key", [&] {
      ++creations;
      // The others must come back with the stale value while this creator still runs: it
      // only proceeds once all of them have returned (bounded, so a bug fails, not hangs).
      others_returned = wait_until([&] { return returned.load() >= kThreads - 1; });
      return std::string("new");
    });
    ++returned;
  });
  CHECK(others_returned);
  CHECK(creations == 1);
  int stale = 0, fresh = 0;
  for (const auto& v : results) {
    stale += v == "old" ? 1 : 0;
    fresh += v == "new" ? 1 : 0;
  }
  CHECK(stale == kThreads - 1);
  CHECK(fresh == 1);
  const auto s = r.stats();
  CHECK(s.stale_served == kThreads - 1);
  CHECK(s.lock_waits == 0);
  CHECK(s.creations == 1);
  CHECK(r.get<std::string>("key") == "new");
}

TEST_CASE("Stampede: hard invalidation makes everyone wait for one creation", "[stampede]") {
  constexpr int kThreads = 16;
  ManualClock clock;
  auto proxy = std::make_shared<dogpile_test::WaitCountingProxy>();
  auto r = dogpile::make_region({.clock = clock});
  r.configure("memory", {.expiration_time = 1h, .wrap = {proxy}});
  r.set("key", 1);
  clock.advance(1ms);
  r.invalidate();
  std::atomic<int> creations{0};
  std::atomic<bool> all_waited{false};
  std::vector<int> results(kThreads);
  run_threads(kThreads, [&](int i) {
    results[static_cast<std::size_t>(i)] = r.get_or_create("key", [&] {
      ++creations;
      all_waited = wait_until([&] { return proxy->waits->load() >= kThreads - 1; });
      return 2;
    });
  });
  CHECK(all_waited);
  CHECK(creations == 1);
  for (int v : results) CHECK(v == 2);
}

TEST_CASE("Stampede: async runner, 16 threads on an expired key: one background creation",
          "[stampede][async]") {
  constexpr int kThreads = 16;
  ManualClock clock;
  auto r = dogpile::make_region(
      {.async_creation_runner = dogpile::thread_pool_runner(2), .clock = clock});
  r.configure("memory", {.expiration_time = 1s});
  std::atomic<int> creations{0};
  std::atomic<bool> release{false};
  r.set("key", 0);
  clock.advance(2s);
  std::vector<int> results(kThreads);
  run_threads(kThreads, [&](int i) {
    results[static_cast<std::size_t>(i)] = r.get_or_create("key", [&] {
      ++creations;
      wait_until([&] { return release.load(); });
      return 1;
    });
  });
  // every caller returned the stale value while the job is still held back
  for (int v : results) CHECK(v == 0);
  CHECK(r.key_is_locked("key"));
  release = true;
  REQUIRE(wait_until([&] { return !r.key_is_locked("key"); }));
  CHECK(creations == 1);
  CHECK(r.get<int>("key") == 1);
}

TEST_CASE("Stampede: get_or_create_multi with overlapping key sets: each key created once",
          "[stampede][multi]") {
  constexpr int kThreads = 12;
  constexpr int kKeys = 30;
  const char* backend = GENERATE("memory", "memory_serialized");
  CAPTURE(backend);
  auto r = dogpile::make_region();
  r.configure(backend, {.expiration_time = 1h});
  std::mutex m;
  std::map<std::string, int> created;  // key -> creation count
  std::atomic<int> serial{0};
  std::vector<std::vector<std::string>> key_sets(kThreads);
  std::vector<std::vector<std::string>> results(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    // overlapping windows, in a thread-specific order, with a duplicate
    for (int k = 0; k < 8; ++k) {
      const int key = (t * 2 + k * (t % 2 == 0 ? 1 : 3)) % kKeys;
      key_sets[static_cast<std::size_t>(t)].push_back("k" + std::to_string(key));
    }
    key_sets[static_cast<std::size_t>(t)].push_back(key_sets[static_cast<std::size_t>(t)][0]);
  }
  run_threads(kThreads, [&](int t) {
    const auto ti = static_cast<std::size_t>(t);
    for (int round = 0; round < 3; ++round) {
      results[ti] =
          r.get_or_create_multi<std::string>(key_sets[ti], [&](std::span<const std::string> keys) {
            std::vector<std::string> out;
            const int s = ++serial;
            std::lock_guard lk(m);
            for (const auto& k : keys) {
              ++created[k];
              out.push_back(k + "#" + std::to_string(s));
            }
            std::this_thread::yield();
            return out;
          });
    }
  });
  std::set<std::string> all_keys;
  for (const auto& ks : key_sets) all_keys.insert(ks.begin(), ks.end());
  CHECK(created.size() == all_keys.size());
  for (const auto& [k, n] : created) {
    CAPTURE(k);
    CHECK(n == 1);
  }
  // every thread saw the one value of each key, in its own order
  for (std::size_t t = 0; t < key_sets.size(); ++t) {
    REQUIRE(results[t].size() == key_sets[t].size());
    for (std::size_t i = 0; i < key_sets[t].size(); ++i) {
      const auto& k = key_sets[t][i];
      CHECK(results[t][i].rfind(k + "#", 0) == 0);
      CHECK(r.get<std::string>(k) == results[t][i]);
    }
  }
  CHECK(r.stats().creations == all_keys.size());
}

TEST_CASE("Stampede: many keys, many threads, creators never overlap per key", "[stampede]") {
  constexpr int kThreads = 8;
  ManualClock clock;
  auto r = dogpile::make_region({.clock = clock});
  r.configure("memory", {.expiration_time = 1s});
  std::mutex m;
  std::map<std::string, bool> running;
  std::atomic<int> overlaps{0};
  std::atomic<int> creations{0};
  for (int phase = 0; phase < 4; ++phase) {
    run_threads(kThreads, [&](int t) {
      for (int i = 0; i < 50; ++i) {
        const std::string key = "k" + std::to_string((t + i) % 5);
        r.get_or_create(key, [&] {
          {
            std::lock_guard lk(m);
            if (running[key]) ++overlaps;
            running[key] = true;
          }
          ++creations;
          std::this_thread::yield();
          {
            std::lock_guard lk(m);
            running[key] = false;
          }
          return i;
        });
      }
    });
    clock.advance(2s);  // everything expires between phases
  }
  CHECK(overlaps == 0);
  // 5 keys x 4 phases at least; a late try-lock winner may regenerate again (dogpile)
  CHECK(creations >= 20);
}
