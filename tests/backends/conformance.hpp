#pragma once
/// @file conformance.hpp
/// The backend conformance suite: dogpile.cache's `_GenericBackendTestSuite`,
/// `_GenericSerializerTestSuite` and `_GenericMutexTestSuite` (reference/dogpile.md §5.6) as one
/// suite every backend runs. It depends on nothing but the core headers and Catch2.
///
/// ```cpp
/// #include "backends/conformance.hpp"   // or a relative include
/// DOGPILE_BACKEND_CONFORMANCE("redis", [] {
///   return dogpile::make_backend("redis", {{"url", url}, {"distributed_lock", true}});
/// })
/// ```
/// `factory` returns a configured backend; it is called several times (the mutex tests need
/// separate backend objects on the same storage). Every key is unique to one run
/// (`unique_key`), so the suite can run against a shared server, concurrently with others.
/// Catch2 assertions are only made on the test's own thread (never in a forked child).
///
/// A backend whose storage and lock every process shares (all but `memory`) uses
/// `DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE` instead, which adds cross-process creation, a killed
/// lock holder and, for lease locks, renewal and lease expiry (give its factory a short lease):
/// ```cpp
/// DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE("redis", [] {
///   return dogpile::make_backend("redis", {{"url", url}, {"distributed_lock", true},
///                                          {"lock_timeout", 2}});
/// })
/// ```

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "dogpile/lease_lock.hpp"

namespace dogpile_conformance {

using namespace std::chrono_literals;

/// Returns a configured backend; may be called many times.
using Factory = std::function<std::shared_ptr<dogpile::CacheBackend>()>;

/// A key no other run uses: `dpc_<random>_<counter>_<tag>` (no spaces, short: memcached-safe).
inline std::string unique_key(std::string_view tag) {
  static const std::string run = [] {
    std::random_device rd;
    std::ostringstream os;
    os << std::hex << rd() << rd();
    return os.str();
  }();
  static std::atomic<std::uint64_t> counter{0};
  return "dpc_" + run + "_" + std::to_string(counter.fetch_add(1)) + "_" + std::string(tag);
}

/// A region on `backend` with a manual clock.
struct Region {
  dogpile::ManualClock clock;
  dogpile::CacheRegion region;
  explicit Region(std::shared_ptr<dogpile::CacheBackend> backend, dogpile::ConfigureOptions co = {},
                  dogpile::RegionOptions ro = {}) {
    ro.clock = clock;
    region = dogpile::make_region(std::move(ro));
    region.configure(std::move(backend), std::move(co));
  }
};

/// Runs `body(i)` on `n` threads released together, then joins them.
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

/// The dogpile mutex a region on this backend uses for `key`: the backend's own, or (for
/// backends without one) the region's in-process mutex.
inline std::shared_ptr<dogpile::CacheMutex> mutex_of(const dogpile::CacheRegion& r,
                                                     std::string_view key) {
  return r.mutex_for(key);
}

// ---- _GenericBackendTestSuite: the raw backend ------------------------------------------------

inline void raw_backend(const Factory& factory) {
  auto b = factory();
  REQUIRE(b);
  const auto k = unique_key("raw");
  CHECK_FALSE(b->get(k));
  b->erase(k);  // deleting a missing key is fine
  const std::string bytes("some\0bytes|\xff\x01 value", 20);
  b->set(k, bytes);
  CHECK(b->get(k) == bytes);
  b->set(k, "replaced");
  CHECK(b->get(k) == std::string("replaced"));
  b->erase(k);
  CHECK_FALSE(b->get(k));
  b->erase(k);

  const std::vector<std::string> keys = {unique_key("m1"), unique_key("m2"), unique_key("m3")};
  b->set_multi(std::vector<dogpile::BytesItem>{{keys[0], "v1"}, {keys[2], "v3"}});
  CHECK(b->get_multi(keys) == std::vector<std::optional<std::string>>{"v1", std::nullopt, "v3"});
  b->erase_multi(std::vector<std::string>{keys[0], keys[1]});
  CHECK(b->get_multi(keys) ==
        std::vector<std::optional<std::string>>{std::nullopt, std::nullopt, "v3"});
  CHECK(b->get_multi(std::vector<std::string>{}).empty());
  b->set_multi(std::vector<dogpile::BytesItem>{});
  b->erase_multi(std::vector<std::string>{});
  b->erase_multi(keys);
  CHECK(b->get_multi(keys) == std::vector<std::optional<std::string>>(3));
  // a large value
  const std::string big(200 * 1024, 'x');
  b->set(keys[1], big);
  CHECK(b->get(keys[1]) == big);
  b->erase(keys[1]);
}

// ---- keys the backend declares it cannot take ---------------------------------------------------

/// Keys that break common storage limits (long, spaces, control bytes): each either round-trips
/// (the backend takes it as is, or mangles it by its `KeyRules`) or is refused with
/// `ValidationError` before anything is stored. Never a crash, a truncated key, or a value
/// stored under another key.
inline void key_limits(const Factory& factory) {
  auto b = factory();
  const dogpile::KeyRules rules = b->key_rules();
  const std::string base = unique_key("keys");
  const std::vector<std::string> odd = {base + std::string(300, 'L'), base + " with spaces",
                                        base + std::string("\x01ctl\n", 5),
                                        base + std::string(10 * 1024, 'H')};
  for (const auto& k : odd) {
    CAPTURE(k.size());
    const bool too_long = rules.max_length != 0 && k.size() > rules.max_length;
    const bool bad_bytes = rules.no_spaces_or_control &&
                           k.find_first_of(std::string(" \x01\n", 3)) != std::string::npos;
    if ((too_long || bad_bytes) && !rules.mangle_bad_keys) {
      CHECK_THROWS_AS(b->set(k, "v"), dogpile::ValidationError);
      CHECK_THROWS_AS(b->get(k), dogpile::ValidationError);
      continue;
    }
    b->set(k, "v:" + std::to_string(k.size()));
    CHECK(b->get(k) == "v:" + std::to_string(k.size()));
    CHECK(b->get_multi(std::vector<std::string>{k}) ==
          std::vector<std::optional<std::string>>{"v:" + std::to_string(k.size())});
    b->erase(k);
    CHECK_FALSE(b->get(k));
  }
  // Two long keys that share a prefix stay two entries.
  const std::string k1 = base + std::string(400, 'a') + "1";
  const std::string k2 = base + std::string(400, 'a') + "2";
  if (rules.max_length == 0 || rules.mangle_bad_keys) {
    b->set(k1, "one");
    b->set(k2, "two");
    CHECK(b->get(k1) == std::string("one"));
    CHECK(b->get(k2) == std::string("two"));
    b->erase_multi(std::vector<std::string>{k1, k2});
  }
}

// ---- native TTL ---------------------------------------------------------------------------------

/// For a backend configured with a native time-to-live of `ttl` (`redis_expiration_time`,
/// `memcached_expire_time`, the disk backends' `expire`): a value is there right after it is
/// stored and gone once the TTL has passed (server time: this waits, polling, at most 10 TTLs).
inline void native_ttl(const Factory& factory, std::chrono::milliseconds ttl) {
  auto b = factory();
  const auto k = unique_key("ttl");
  const auto t0 = std::chrono::steady_clock::now();
  b->set(k, "short-lived");
  const auto stored = b->get(k);
  if (std::chrono::steady_clock::now() - t0 < ttl / 2) CHECK(stored == std::string("short-lived"));
  b->set_multi(std::vector<dogpile::BytesItem>{{k + "_m", "also"}});
  const auto deadline = t0 + 10 * ttl;
  std::this_thread::sleep_for(ttl);
  while ((b->get(k) || b->get(k + "_m")) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(ttl / 10);
  }
  CHECK_FALSE(b->get(k));
  CHECK_FALSE(b->get(k + "_m"));
}

// ---- _GenericBackendTestSuite: through a region -----------------------------------------------

inline void region_basics(const Factory& factory) {
  Region t(factory());
  auto& r = t.region;
  const auto k = unique_key("basic");

  SECTION("key_is_locked is false and does not take the lock") {
    CHECK_FALSE(r.key_is_locked(k));
    auto m = mutex_of(r, k);
    REQUIRE(m->acquire(false));  // still free after key_is_locked
    CHECK(r.key_is_locked(k));
    m->release();
    CHECK_FALSE(r.key_is_locked(k));
  }
  SECTION("set / get / erase") {
    CHECK_FALSE(r.get<std::string>(k));
    r.set(k, std::string("some value"));
    CHECK(r.get<std::string>(k) == "some value");
    r.set(k, std::string("other value"));
    CHECK(r.get<std::string>(k) == "other value");
    r.erase(k);
    CHECK_FALSE(r.get<std::string>(k));
    r.erase(k);  // twice
    r.set(k + "_int", 42);
    CHECK(r.get<int>(k + "_int") == 42);
    r.set(k + "_vec", std::vector<std::string>{"a", "b"});
    CHECK(r.get<std::vector<std::string>>(k + "_vec") == std::vector<std::string>{"a", "b"});
    r.erase_multi({k + "_int", k + "_vec"});
  }
  SECTION("set_multi / get_multi with holes / erase_multi with missing keys") {
    const std::vector<std::string> keys = {k + "_1", k + "_2", k + "_3", k + "_4"};
    r.set_multi<std::string>({{keys[0], "v1"}, {keys[2], "v3"}});
    CHECK(r.get_multi<std::string>(keys) ==
          std::vector<std::optional<std::string>>{"v1", std::nullopt, "v3", std::nullopt});
    r.erase_multi({keys[0], keys[1]});
    CHECK(r.get_multi<std::string>(keys) ==
          std::vector<std::optional<std::string>>{std::nullopt, std::nullopt, "v3", std::nullopt});
    r.erase_multi(keys);
    CHECK(r.get_multi<std::string>(keys) == std::vector<std::optional<std::string>>(4));
  }
  SECTION("empty multi operations") {
    CHECK(r.get_multi<int>({}).empty());
    r.set_multi<int>({});
    r.erase_multi({});
    CHECK(r.get_or_create_multi<int>({}, [](std::span<const std::string>) -> std::vector<int> {
             throw std::logic_error("must not be called");
           }).empty());
  }
  SECTION("get_or_create and get_or_create_multi") {
    int calls = 0;
    auto creator = [&] {
      ++calls;
      return std::string("created");
    };
    CHECK(r.get_or_create(k, creator) == "created");
    CHECK(r.get_or_create(k, creator) == "created");
    CHECK(calls == 1);
    CHECK_FALSE(r.key_is_locked(k));
    r.erase(k);
    r.erase(k);
    CHECK(r.get_or_create(k, creator) == "created");
    CHECK(calls == 2);

    const std::vector<std::string> keys = {k + "_c", k + "_a", k + "_b", k + "_a"};
    std::vector<std::string> asked;
    auto multi = [&](std::span<const std::string> ks) {
      std::vector<std::string> out;
      for (const auto& x : ks) {
        asked.push_back(x);
        out.push_back("v" + x);
      }
      return out;
    };
    CHECK(r.get_or_create_multi<std::string>(keys, multi) ==
          std::vector<std::string>{"v" + keys[0], "v" + keys[1], "v" + keys[2], "v" + keys[1]});
    CHECK(asked == std::vector<std::string>{keys[1], keys[2], keys[0]});  // sorted, unique
    CHECK(r.get_or_create_multi<std::string>(keys, multi).size() == 4);
    CHECK(asked.size() == 3);  // all cached now
    r.erase_multi(keys);
  }
  SECTION("get_or_create_multi with should_cache rejecting every value") {
    const std::vector<std::string> keys = {k + "_x", k + "_y", k + "_z"};
    auto zeros = [](std::span<const std::string> ks) { return std::vector<int>(ks.size(), 0); };
    CHECK(r.get_or_create_multi<int>(keys, zeros, {.should_cache = [](const int& v) {
                                       return v != 0;
                                     }}) == std::vector<int>{0, 0, 0});
    CHECK(r.get_multi<int>(keys) == std::vector<std::optional<int>>(3));
  }
  SECTION("a creator exception propagates with its message; nothing cached, lock released") {
    CHECK_THROWS_WITH(r.get_or_create(k, []() -> int { throw std::runtime_error("some error"); }),
                      "some error");
    CHECK_FALSE(r.get<int>(k));
    CHECK_FALSE(r.key_is_locked(k));
  }
}

inline void region_expire(const Factory& factory) {
  Region t(factory(), {.expiration_time = 1s});
  const auto k = unique_key("expire");
  int n = 0;
  auto creator = [&] { return ++n; };
  CHECK(t.region.get_or_create(k, creator) == 1);
  CHECK(t.region.get_or_create(k, creator) == 1);
  t.clock.advance(1200ms);
  CHECK_FALSE(t.region.get<int>(k));
  CHECK(t.region.get<int>(k, {.ignore_expiration = true}) == 1);
  CHECK(t.region.get_or_create(k, creator) == 2);
  CHECK(t.region.get<int>(k) == 2);
  t.region.erase(k);
}

inline void decorated_function(const Factory& factory) {
  Region t(factory());
  int n = 0;
  auto fn = t.region.cache_on_arguments(unique_key("decorated"), [&n](int a, int b) {
    ++n;
    return a + b + n * 100;
  });
  CHECK(fn(1, 2) == 103);
  CHECK(fn(1, 2) == 103);
  fn.invalidate(1, 2);
  CHECK(fn(1, 2) == 203);
  CHECK(fn.get(1, 2) == 203);
  fn.invalidate(1, 2);
}

inline void invalidation(const Factory& factory) {
  Region t(factory(), {.expiration_time = 1h});
  const auto k = unique_key("inv");
  int n = 0;
  auto creator = [&] { return ++n; };
  CHECK(t.region.get_or_create(k, creator) == 1);
  t.clock.advance(10ms);
  t.region.invalidate();
  CHECK_FALSE(t.region.get<int>(k));
  CHECK(t.region.get_or_create(k, creator) == 2);
  t.clock.advance(10ms);
  t.region.invalidate({.hard = false});
  CHECK(t.region.get_or_create(k, creator) == 3);
  CHECK(t.region.get_or_create(k, creator) == 3);
  t.region.erase(k);
}

// ---- threaded dogpile ---------------------------------------------------------------------------

/// test_threaded_dogpile: 10 threads x 5 iterations; the creator try-locks a global mutex, so
/// two overlapping creators are seen. The clock moves past the expiration after every call.
inline void threaded_dogpile(const Factory& factory) {
  Region t(factory(), {.expiration_time = 250ms});
  const auto k = unique_key("threaded");
  std::mutex overlap;
  std::atomic<int> creations{0};
  std::atomic<int> overlapped{0};
  std::atomic<int> bad{0};
  run_threads(10, [&](int) {
    for (int i = 0; i < 5; ++i) {
      try {
        const int v = t.region.get_or_create(k, [&] {
          std::unique_lock lk(overlap, std::try_to_lock);
          if (!lk.owns_lock()) ++overlapped;
          std::this_thread::yield();
          return ++creations;
        });
        if (v < 1) ++bad;
      } catch (...) {
        ++bad;
      }
      t.clock.advance(300ms);
    }
  });
  CHECK(bad == 0);
  // The first creator's next call finds its value expired: at least two creations.
  CHECK(creations >= 2);
  CHECK(overlapped == 0);  // leases too: the holder renews its lease while it creates
  t.region.erase(k);
}

/// test_threaded_get_multi: 6 threads x 5 iterations of get_or_create_multi on subsets of ten
/// keys; per-key try-locks in the creator detect overlapping creators of one key.
inline void threaded_get_multi(const Factory& factory) {
  Region t(factory(), {.expiration_time = 250ms});
  std::vector<std::string> keys;
  for (int i = 1; i <= 10; ++i) keys.push_back(unique_key("tm" + std::to_string(i)));
  std::map<std::string, std::unique_ptr<std::mutex>> locks;
  for (const auto& k : keys) locks[k] = std::make_unique<std::mutex>();
  std::atomic<int> records{0};
  std::atomic<int> overlapped{0};
  std::atomic<int> bad{0};
  run_threads(6, [&](int th) {
    std::mt19937 rng(static_cast<unsigned>(th) * 7919u + 1u);
    for (int i = 0; i < 5; ++i) {
      std::vector<std::string> subset;
      if (th == 0 && i == 0) {
        subset = keys;  // one caller asks for every key
      } else {
        for (const auto& k : keys)
          if (rng() % 2 == 0) subset.push_back(k);
        if (subset.empty()) subset.push_back(keys[rng() % keys.size()]);
      }
      try {
        auto got =
            t.region.get_or_create_multi<std::string>(subset, [&](std::span<const std::string> ks) {
              std::vector<std::unique_lock<std::mutex>> held;
              for (const auto& k : ks) {
                held.emplace_back(*locks.at(k), std::try_to_lock);
                if (!held.back().owns_lock()) ++overlapped;
                ++records;
              }
              std::this_thread::yield();
              std::vector<std::string> out;
              for (const auto& k : ks) out.push_back("value of " + k);
              return out;
            });
        for (std::size_t j = 0; j < subset.size(); ++j)
          if (got[j] != "value of " + subset[j]) ++bad;
      } catch (...) {
        ++bad;
      }
      t.clock.advance(300ms);
    }
  });
  CHECK(bad == 0);
  CHECK(records >= 10);  // every key was created at least once
  CHECK(overlapped == 0);
  t.region.erase_multi(keys);
}

// ---- _GenericSerializerTestSuite ---------------------------------------------------------------

inline void serializer(const Factory& factory) {
  auto backend = factory();
  Region t(backend);
  const auto k = unique_key("ser");
  if (backend->stores_objects()) {
    // An object backend keeps live values: a type mismatch is an error, not a miss.
    t.region.set(k, 1);
    CHECK_THROWS_AS(t.region.get<std::string>(k), dogpile::TypeMismatch);
    t.region.erase(k);
    return;
  }
  const std::vector<int> value = {1, 2, 3};
  t.region.set(k, value);
  auto raw = backend->get(k);
  REQUIRE(raw);
  const auto bar = raw->find('|');
  REQUIRE(bar != std::string::npos);
  CHECK(raw->substr(0, bar) == R"({"ct": 1700000000.0, "v": 2})");
  CHECK(raw->substr(bar + 1) == nlohmann::json(value).dump());
  CHECK(t.region.get<std::vector<int>>(k) == value);
  // undecodable bytes are a miss, and get_or_create regenerates
  backend->set(k, R"({"ct": 1700000000.0, "v": 2}|not json)");
  CHECK_FALSE(t.region.get<std::vector<int>>(k));
  backend->set(k, "garbage without a separator");
  CHECK_FALSE(t.region.get<std::vector<int>>(k));
  CHECK(t.region.get_or_create(k, [] { return std::vector<int>{4}; }) == std::vector<int>{4});
  CHECK(t.region.get<std::vector<int>>(k) == std::vector<int>{4});
  t.region.erase(k);
}

/// Returns a backend configured with `max_value_bytes`, on the same storage at every call.
using SizedFactory = std::function<std::shared_ptr<dogpile::CacheBackend>(std::size_t)>;

/// A backend's `max_value_bytes` bounds what a region decodes from it: a value stored small
/// (compressed) that inflates past the bound is a miss (CantDeserialize), while a region on the
/// same storage with the default bound reads it; a value under the bound is a hit.
inline void max_value_bytes(const SizedFactory& factory) {
  constexpr std::size_t bound = 4096;
  auto small = factory(bound);
  REQUIRE(small->max_value_bytes() == bound);
  auto roomy = factory(dogpile::default_max_value_bytes);
  dogpile::RegionOptions ro;
  ro.codec.compress_threshold = 1;  // stored compressed: ~100 bytes on the wire for either value
  Region s(small, {}, ro);
  Region r(roomy, {}, ro);
  const auto big = unique_key("mvb_big");
  const auto fits = unique_key("mvb_fits");
  const std::string big_value(bound * 16, 'a');
  const std::string fitting_value(bound / 2, 'b');
  r.region.set(big, big_value);
  r.region.set(fits, fitting_value);
  CHECK(r.region.get<std::string>(big) == big_value);  // stored, readable under the default
  CHECK_FALSE(s.region.get<std::string>(big));         // over the backend's bound: a miss
  CHECK(s.region.get_or_create(big, [] { return std::string("fresh"); }) == "fresh");
  CHECK(s.region.get<std::string>(fits) == fitting_value);
  // Stored uncompressed over the bound (a writer with a larger bound): never returned; a miss,
  // or a BackendError where a server's reply is over it. Either way the backend stays usable.
  Region plain(roomy);
  const auto raw = unique_key("mvb_raw");
  plain.region.set(raw, big_value);
  CHECK(plain.region.get<std::string>(raw) == big_value);
  std::optional<std::string> got;
  try {
    got = s.region.get<std::string>(raw);
  } catch (const dogpile::BackendError& e) {
    CHECK_THAT(e.what(), Catch::Contains("max_value_bytes"));
  }
  CHECK_FALSE(got);
  CHECK(s.region.get<std::string>(fits) == fitting_value);
  plain.region.erase(raw);
  r.region.erase(big);
  r.region.erase(fits);
}

// ---- _GenericMutexTestSuite ---------------------------------------------------------------------

inline void mutex_basics(const Factory& factory) {
  Region t(factory());
  const auto k = unique_key("mutex");
  auto m = mutex_of(t.region, k);
  REQUIRE(m);
  CHECK_FALSE(m->locked());
  CHECK(m->acquire());
  CHECK_FALSE(m->acquire(false));  // same object, already held
  CHECK_FALSE(m->try_acquire_for(30ms));
  CHECK(m->locked());
  m->release();
  CHECK_FALSE(m->locked());
  CHECK(m->acquire());
  // released from another thread (what the async runner does)
  std::thread other([&] { m->release(); });
  other.join();
  CHECK_FALSE(m->locked());
  CHECK(m->try_acquire_for(30ms));
  m->release();
  CHECK_THROWS_AS(m->release(), dogpile::LockError);  // not held
  // MutexHandle releases on destruction
  {
    REQUIRE(m->acquire(false));
    auto h = dogpile::MutexHandle::adopt(m);
    CHECK(m->locked());
  }
  CHECK_FALSE(m->locked());
}

/// test_mutex_threaded: 5 threads x 5 iterations, each taking the mutex of one key (through a
/// separate backend object where the backend has its own lock); a global try-lock must never
/// find another holder inside.
inline void mutex_threaded(const Factory& factory) {
  const auto k = unique_key("mt");
  Region shared(factory());
  std::mutex inside;
  std::atomic<int> overlapped{0};
  std::atomic<int> acquired{0};
  std::atomic<int> bad{0};
  run_threads(5, [&](int) {
    auto backend = factory();
    for (int i = 0; i < 5; ++i) {
      try {
        std::shared_ptr<dogpile::CacheMutex> m = backend->get_mutex(k);
        if (!m) m = mutex_of(shared.region, k);  // no backend lock: the region's
        if (!m->acquire()) {
          ++bad;
          continue;
        }
        {
          std::unique_lock lk(inside, std::try_to_lock);
          if (!lk.owns_lock()) ++overlapped;
          ++acquired;
          std::this_thread::yield();
        }
        m->release();
      } catch (...) {
        ++bad;
      }
    }
  });
  CHECK(bad == 0);
  CHECK(acquired == 25);
  CHECK(overlapped == 0);
}

/// test_mutex_reentrant_across_keys: holding "foo", "bar" can be taken once, not twice.
inline void mutex_across_keys(const Factory& factory) {
  Region t(factory());
  auto foo = mutex_of(t.region, unique_key("foo"));
  auto bar = mutex_of(t.region, unique_key("bar"));
  REQUIRE(foo->acquire());
  CHECK(bar->acquire(false));
  CHECK_FALSE(bar->acquire(false));
  bar->release();
  foo->release();
}

/// test_reentrant_dogpile: a creator for "foo" calls get_or_create("bar").
inline void reentrant_dogpile(const Factory& factory) {
  Region t(factory());
  const auto foo = unique_key("foo");
  const auto bar = unique_key("bar");
  auto create_bar = [] { return std::string("bar"); };
  auto create_foo = [&] { return "foo" + t.region.get_or_create(bar, create_bar); };
  CHECK(t.region.get_or_create(foo, create_foo) == "foobar");
  CHECK(t.region.get_or_create(foo, create_foo) == "foobar");
  t.region.erase_multi({foo, bar});
}

// ---- distributed backends: leases and other processes -------------------------------------------

/// The lease of a lease mutex (`is_lease()`), which the suite requires to be a `LeaseLock`
/// configured with a short lease (so these cases finish): 500 ms to 10 s.
inline std::chrono::milliseconds lease_of(const dogpile::CacheMutex& m) {
  const auto* lease_lock = dynamic_cast<const dogpile::LeaseLock*>(&m);
  INFO("a lease mutex must be a dogpile::LeaseLock");
  REQUIRE(lease_lock != nullptr);
  const auto lease = lease_lock->options().lease;
  INFO("configure the conformance factory with a lease (lock_timeout) of 0.5 s to 10 s");
  REQUIRE(lease >= 500ms);
  REQUIRE(lease <= 10s);
  return lease;
}

/// A lease that its holder keeps renewing is not lost after the lease interval; once the
/// holder abandons it (drops the mutex without releasing: what a crashed process leaves), it
/// frees itself after the lease. Only for lease mutexes.
inline void lease_expiry(const Factory& factory) {
  const auto k = unique_key("lease");
  auto holder_backend = factory();
  auto other_backend = factory();
  auto held = holder_backend->get_mutex(k);
  auto other = other_backend->get_mutex(k);
  REQUIRE(held);
  REQUIRE(other);
  if (!held->is_lease()) {
    CHECK_FALSE(other->is_lease());
    return;  // a lock held until released: nothing expires
  }
  const auto lease = lease_of(*held);
  using SteadyClock = std::chrono::steady_clock;
  REQUIRE(held->acquire(false));
  // Renewed: still ours after 1.5 leases.
  std::this_thread::sleep_for(lease + lease / 2);
  CHECK_FALSE(other->acquire(false));
  CHECK(other->locked());
  // Abandoned: no release, no more renewals.
  held.reset();
  const auto dropped = SteadyClock::now();
  CHECK_FALSE(other->acquire(false));  // the lease has not run out yet
  REQUIRE(other->try_acquire_for(lease * 3));
  // Not released by the drop: it lived on after it. The last renewal was due lease/3 before
  // the drop, so ~2/3 lease is typical; the floor is lower because a renewal runs late on a
  // loaded machine (under the sanitizers, with the suite in parallel) and a server's expiry
  // clock may lag (memcached's clock ticks once a second): CI once saw 0.90 s of a 2 s lease.
  CHECK(SteadyClock::now() - dropped >= lease / 4);
  other->release();
  CHECK_FALSE(other->locked());
}

/// Maps one `T` into memory shared with forked children.
template <class T>
class SharedMemory {
 public:
  SharedMemory() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    ptr_ = new (p) T();
  }
  ~SharedMemory() {
    ptr_->~T();
    ::munmap(ptr_, sizeof(T));
  }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  T* operator->() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
};

/// Waits for `pid` and returns its exit code, or -1 if it did not exit normally.
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Runs `body(i)` in `n` forked children and returns how many exited 0 (`body` returned true);
/// a child never returns into Catch2 (an exception is printed and fails it). `started` runs in
/// this process once every child is forked, before waiting for them.
inline int run_children(int n, const std::function<bool(int)>& body,
                        const std::function<void()>& started = {}) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 1;
      try {
        code = body(i) ? 0 : 1;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", i, e.what());
      } catch (...) {
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  if (started) started();
  int ok = 0;
  for (const pid_t pid : pids) {
    if (wait_child(pid) == 0) ++ok;
  }
  return ok;
}

/// A forked child and this process call `get_or_create` on one missing key through their own
/// backend objects at the same moment; the creator is slow enough to overlap. Exactly one
/// creation; both get the value.
inline void cross_process_creation(const Factory& factory) {
  const auto k = unique_key("xproc");
  struct Shared {
    std::atomic<int> creations{0};
    std::atomic<int> ready{0};
  };
  SharedMemory<Shared> shared;
  auto create = [&] {
    shared->creations.fetch_add(1);
    std::this_thread::sleep_for(300ms);
    return std::string("made once");
  };
  std::array<int, 2> gate{};
  REQUIRE(::pipe(gate.data()) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // the child: no Catch2 here, only an exit code
    int code = 1;
    try {
      ::close(gate[1]);
      Region child(factory());
      shared->ready.fetch_add(1);
      char c = 0;
      if (::read(gate[0], &c, 1) < 0) ::_exit(2);
      code = child.region.get_or_create(k, create) == "made once" ? 0 : 3;
    } catch (...) {
      code = 4;
    }
    ::_exit(code);
  }
  ::close(gate[0]);
  Region parent(factory());
  while (shared->ready.load() == 0) std::this_thread::sleep_for(1ms);
  ::close(gate[1]);  // EOF: the child goes
  std::string got;
  CHECK_NOTHROW(got = parent.region.get_or_create(k, create));
  CHECK(got == "made once");
  CHECK(wait_child(pid) == 0);
  CHECK(shared->creations.load() == 1);
  CHECK_FALSE(parent.region.key_is_locked(k));
  parent.region.erase(k);
}

/// A forked child takes the lock of a key and is then stopped by `sig`: SIGKILL (it died) frees
/// the lock (after the lease, for a lease), SIGSTOP (it is paused, so are its renewals) frees a
/// lease after the lease. Another process's mutex then acquires it.
inline void holder_process_signalled(const Factory& factory, int sig) {
  const auto k = unique_key("holder");
  auto backend = factory();
  auto m = backend->get_mutex(k);
  REQUIRE(m);
  const bool lease = m->is_lease();
  if (sig == SIGSTOP) REQUIRE(lease);  // a paused holder keeps any other kind of lock
  const auto bound = lease ? lease_of(*m) * 3 : std::chrono::milliseconds(30s);
  std::array<int, 2> acquired{};
  REQUIRE(::pipe(acquired.data()) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(acquired[0]);
    try {
      auto b = factory();
      auto cm = b->get_mutex(k);
      if (cm && cm->acquire(true) && ::write(acquired[1], "1", 1) == 1) {
        for (;;) ::pause();  // hold it (and renew it) until killed
      }
    } catch (...) {
    }
    ::_exit(1);
  }
  ::close(acquired[1]);
  char c = 0;
  const auto n = ::read(acquired[0], &c, 1);
  ::close(acquired[0]);
  if (n != 1) {
    ::kill(pid, SIGKILL);
    wait_child(pid);
    FAIL("the child could not take the lock");
  }
  CHECK_FALSE(m->acquire(false));  // held by the child
  using SteadyClock = std::chrono::steady_clock;
  REQUIRE(::kill(pid, sig) == 0);
  const auto stopped = SteadyClock::now();
  const bool got = m->try_acquire_for(bound);
  const auto waited = SteadyClock::now() - stopped;
  if (sig != SIGKILL) ::kill(pid, SIGKILL);
  wait_child(pid);
  REQUIRE(got);
  // A lease was renewed at most lease/3 before the signal, so it outlived it by ≥ 2/3 lease.
  if (lease) CHECK(waited >= lease_of(*m) / 2);
  m->release();
  CHECK_FALSE(m->locked());
}

/// For a backend on a server the test can kill and restart (`DOGPILE_SERVER_OUTAGE_CONFORMANCE`):
/// while the server is down, raw calls and lock calls fail with `BackendError` within `bound`
/// (never hang); a region with `treat_as_miss` keeps serving (the creator's value, the lock
/// degraded to in-process) and reports the errors; a region with `propagate` throws. After a
/// restart on the same address, calls succeed again within 1 s (no stuck pool).
inline void server_outage(const Factory& factory, const std::function<void()>& kill,
                          const std::function<void()>& restart, std::chrono::milliseconds bound) {
  using SteadyClock = std::chrono::steady_clock;
  const auto k = unique_key("outage");
  auto backend = factory();
  std::atomic<int> reported{0};
  Region tolerant(backend, {},
                  {.on_backend_error = dogpile::treat_as_miss(
                       [&](const std::exception&) { reported.fetch_add(1); })});
  Region strict(backend);
  strict.region.set(k, std::string("before"));  // warm the pool: stale connections after kill
  REQUIRE(strict.region.get<std::string>(k) == std::optional<std::string>("before"));
  kill();
  auto t0 = SteadyClock::now();
  CHECK_THROWS_AS(backend->get(k), dogpile::BackendError);
  CHECK(SteadyClock::now() - t0 <= bound);
  t0 = SteadyClock::now();
  CHECK_THROWS_AS(backend->set(k, "x"), dogpile::BackendError);
  CHECK(SteadyClock::now() - t0 <= bound);
  t0 = SteadyClock::now();
  CHECK_THROWS_AS(strict.region.get_or_create(k, [] { return std::string("fresh"); }),
                  dogpile::BackendError);
  CHECK(SteadyClock::now() - t0 <= 3 * bound);
  int creations = 0;
  t0 = SteadyClock::now();
  CHECK(tolerant.region.get_or_create(k, [&] {
    ++creations;
    return std::string("served");
  }) == "served");
  CHECK(SteadyClock::now() - t0 <= 4 * bound);
  CHECK(creations == 1);
  CHECK(reported.load() >= 1);
  restart();
  // Back within 1 s: the pool re-dials instead of reusing dead connections.
  const auto up = SteadyClock::now();
  bool ok = false;
  while (!ok && SteadyClock::now() - up < 1s) {
    try {
      backend->set(k, "after");
      ok = backend->get(k) == std::optional<std::string>("after");
    } catch (const dogpile::BackendError&) {
      std::this_thread::sleep_for(10ms);
    }
  }
  CHECK(ok);
  CHECK(strict.region.get_or_create(k, [] { return std::string("recreated"); }) == "recreated");
  strict.region.erase(k);
}

}  // namespace dogpile_conformance

/// Instantiates the whole conformance suite for one backend: `name` is a string literal used in
/// test names and tags ("[conformance][<name>]"); the rest is an expression convertible to
/// `dogpile_conformance::Factory` (a callable returning `std::shared_ptr<dogpile::CacheBackend>`).
#define DOGPILE_BACKEND_CONFORMANCE(name, ...)                                                 \
  TEST_CASE(name " conformance: raw backend", "[conformance][" name "]") {                     \
    ::dogpile_conformance::raw_backend(::dogpile_conformance::Factory(__VA_ARGS__));           \
  }                                                                                            \
  TEST_CASE(name " conformance: key limits", "[conformance][keys][" name "]") {                \
    ::dogpile_conformance::key_limits(::dogpile_conformance::Factory(__VA_ARGS__));            \
  }                                                                                            \
  TEST_CASE(name " conformance: region", "[conformance][" name "]") {                          \
    const ::dogpile_conformance::Factory f(__VA_ARGS__);                                       \
    ::dogpile_conformance::region_basics(f);                                                   \
  }                                                                                            \
  TEST_CASE(name " conformance: expiry, decorator, invalidation", "[conformance][" name "]") { \
    const ::dogpile_conformance::Factory f(__VA_ARGS__);                                       \
    ::dogpile_conformance::region_expire(f);                                                   \
    ::dogpile_conformance::decorated_function(f);                                              \
    ::dogpile_conformance::invalidation(f);                                                    \
  }                                                                                            \
  TEST_CASE(name " conformance: serializer", "[conformance][" name "]") {                      \
    ::dogpile_conformance::serializer(::dogpile_conformance::Factory(__VA_ARGS__));            \
  }                                                                                            \
  TEST_CASE(name " conformance: mutex", "[conformance][mutex][" name "]") {                    \
    const ::dogpile_conformance::Factory f(__VA_ARGS__);                                       \
    ::dogpile_conformance::mutex_basics(f);                                                    \
    ::dogpile_conformance::mutex_across_keys(f);                                               \
    ::dogpile_conformance::reentrant_dogpile(f);                                               \
  }                                                                                            \
  TEST_CASE(name " conformance: threaded", "[conformance][threads][" name "]") {               \
    const ::dogpile_conformance::Factory f(__VA_ARGS__);                                       \
    ::dogpile_conformance::threaded_dogpile(f);                                                \
    ::dogpile_conformance::threaded_get_multi(f);                                              \
    ::dogpile_conformance::mutex_threaded(f);                                                  \
  }

/// The whole suite plus the cases for a backend whose storage and lock are shared by every
/// process (every backend but `memory`): a forked process creating at the same time as this one
/// (exactly one creation), a holder process that is killed, and, for lease mutexes
/// (`is_lease()`), renewal and expiry. A lease mutex must be a `LeaseLock` whose lease is
/// 0.5 s to 10 s (give the factory a short `lock_timeout`); the cases then take a few leases.
#define DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE(name, ...)                                       \
  DOGPILE_BACKEND_CONFORMANCE(name, __VA_ARGS__)                                                 \
  TEST_CASE(name " conformance: lease expiry", "[conformance][lease][" name "]") {               \
    ::dogpile_conformance::lease_expiry(::dogpile_conformance::Factory(__VA_ARGS__));            \
  }                                                                                              \
  TEST_CASE(name " conformance: cross-process creation", "[conformance][fork][" name "]") {      \
    ::dogpile_conformance::cross_process_creation(::dogpile_conformance::Factory(__VA_ARGS__));  \
  }                                                                                              \
  TEST_CASE(name " conformance: a killed holder frees the lock",                                 \
            "[conformance][fork][" name "]") {                                                   \
    ::dogpile_conformance::holder_process_signalled(::dogpile_conformance::Factory(__VA_ARGS__), \
                                                    SIGKILL);                                    \
  }

/// For a backend configured with a native time-to-live of `ttl` (a `std::chrono` duration):
/// values disappear once it has passed. The factory must configure that TTL.
#define DOGPILE_BACKEND_TTL_CONFORMANCE(name, ttl, ...)                                  \
  TEST_CASE(name " conformance: native TTL", "[conformance][ttl][" name "]") {           \
    ::dogpile_conformance::native_ttl(::dogpile_conformance::Factory(__VA_ARGS__), ttl); \
  }

/// For a backend on a server the test controls: `kill` and `restart` (callables) stop it
/// abruptly and start it again on the same address; `bound` (milliseconds) is the longest a
/// call may take to fail while it is down (the factory's timeouts). See `server_outage`.
#define DOGPILE_SERVER_OUTAGE_CONFORMANCE(name, factory, kill, restart, bound)                   \
  TEST_CASE(name " conformance: server outage", "[conformance][outage][" name "]") {             \
    ::dogpile_conformance::server_outage(::dogpile_conformance::Factory(factory), kill, restart, \
                                         bound);                                                 \
  }

/// For a lease lock: a holder process that is paused (SIGSTOP) past its lease loses the lock to
/// another process, and does not delete the new holder's lock when it resumes.
#define DOGPILE_PAUSED_HOLDER_CONFORMANCE(name, ...)                                             \
  TEST_CASE(name " conformance: a paused holder loses its lease",                                \
            "[conformance][fork][" name "]") {                                                   \
    ::dogpile_conformance::holder_process_signalled(::dogpile_conformance::Factory(__VA_ARGS__), \
                                                    SIGSTOP);                                    \
  }

/// For a byte backend with a `max_value_bytes` option: the callable takes the bound (a
/// `std::size_t`) and returns a backend on the same storage at every call. See
/// `max_value_bytes`.
#define DOGPILE_MAX_VALUE_BYTES_CONFORMANCE(name, ...)                                        \
  TEST_CASE(name " conformance: max_value_bytes bounds decoding",                             \
            "[conformance][limits][" name "]") {                                              \
    ::dogpile_conformance::max_value_bytes(::dogpile_conformance::SizedFactory(__VA_ARGS__)); \
  }
