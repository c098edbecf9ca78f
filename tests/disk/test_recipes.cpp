// The recipes of <dogpile/disk/recipes.hpp>: python-diskcache's tests/test_recipes.py thread
// cases, cross-process cases with forked children (counted exactly), and the keys C++ and
// Python's diskcache recipes share (Lock, BoundedSemaphore) driven through /usr/bin/python3.
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "disk_test_support.hpp"
#include "dogpile/disk/recipes.hpp"

using namespace std::chrono_literals;
using disk_test::have_diskcache;
using disk_test::run_children;
using disk_test::TempDir;
using dogpile::DiskCache;
using dogpile::FanoutCache;
using dogpile::LockError;
using dogpile::ManualClock;
using dogpile::ValidationError;
namespace rc = dogpile::recipes;

namespace {

DiskCache open_cache(const TempDir& d, dogpile::Clock clock = dogpile::system_clock()) {
  return DiskCache(d.path, {.eviction_policy = dogpile::EvictionPolicy::none, .clock = clock});
}

/// Runs a Python script on the directory `<d>/c` (`sys.argv[1]`; with `open_cache`, as
/// `cache = dc.Cache(…)`) and returns a handle to read its output line by line.
FILE* python_script(const TempDir& d, const std::string& name, const std::string& body,
                    bool open_cache = true) {
  const auto path = d.path / (name + ".py");
  std::ofstream(path) << "import sys, time, diskcache as dc\n"
                      << (open_cache ? "cache = dc.Cache(sys.argv[1])\n" : "") << body;
  const std::string cmd =
      "/usr/bin/python3 '" + path.string() + "' '" + (d.path / "c").string() + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  return p;
}

std::string read_line(FILE* p) {
  std::string line;
  for (int c = std::fgetc(p); c != EOF && c != '\n'; c = std::fgetc(p)) line.push_back(char(c));
  return line;
}

int close_python(FILE* p) {
  const int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

// ---- Averager -------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("recipes: Averager as upstream", "[disk][recipes]", DiskCache, FanoutCache) {
  TempDir d;
  TestType cache(d.path);
  rc::Averager avg(cache, "avg");
  CHECK(avg.get() == std::nullopt);
  for (int i = 0; i < 10; ++i) avg.add(i);
  CHECK(avg.get() == 4.5);
  CHECK(avg.pop() == 4.5);
  CHECK(avg.get() == std::nullopt);
  CHECK(avg.pop() == std::nullopt);
  for (int i = 0; i < 20; ++i) avg.add(i);
  CHECK(avg.get() == 9.5);
  cache.set("bad", std::string("nope"));
  rc::Averager bad(cache, "bad");
  CHECK_THROWS_AS(bad.add(1), dogpile::CantDeserialize);
}

// ---- Lock -----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("recipes: Lock excludes other threads, locked() inside", "[disk][recipes]",
                   DiskCache, FanoutCache) {
  TempDir d;
  TestType cache(d.path);
  rc::Lock lock(cache, "demo");
  CHECK_FALSE(lock.locked());
  int counter = 0;  // deliberately not atomic: the lock is what protects it
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      rc::Lock mine(cache, "demo");  // a handle of its own, as another process would have
      for (int i = 0; i < 25; ++i) {
        std::lock_guard g(mine);
        if (!mine.locked()) ++bad;
        const int v = counter;
        std::this_thread::yield();
        counter = v + 1;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(counter == 100);
  CHECK(bad == 0);
  CHECK_FALSE(lock.locked());

  // Held: another handle cannot take it, not even with a bounded wait.
  std::unique_lock held(lock);
  rc::Lock other(cache, "demo");
  CHECK_FALSE(other.try_lock());
  CHECK_FALSE(other.try_lock_for(20ms));
  CHECK_THROWS_AS(other.release(), LockError);  // a non-holder cannot free it
  CHECK_NOTHROW(other.unlock());  // BasicLockable: unlock never throws, and frees nothing here
  CHECK(lock.locked());
  held.unlock();
  CHECK_FALSE(lock.locked());
  CHECK_THROWS_AS(lock.release(), LockError);  // released twice
  CHECK(other.try_lock_for(1s));
  other.unlock();
}

TEST_CASE("recipes: Lock lease expiry; a late unlock leaves the new holder's key",
          "[disk][recipes]") {
  TempDir d;
  ManualClock clock;
  DiskCache cache = open_cache(d, clock);
  rc::Lock first(cache, "lease", {.expire = 10s});
  rc::Lock second(cache, "lease", {.expire = 10s});
  REQUIRE(first.try_lock());
  CHECK_FALSE(second.try_lock());
  clock.advance(11s);  // the holder "died": its lease ran out
  CHECK_FALSE(first.locked());
  REQUIRE(second.try_lock());
  CHECK_FALSE(first.release());  // not its key any more: left alone
  CHECK(second.locked());
  CHECK(second.release());
  CHECK_FALSE(second.locked());
}

TEST_CASE("recipes: Lock counter across 4 processes is exact", "[disk][recipes][process]") {
  TempDir d;
  DiskCache cache = open_cache(d);
  cache.set("n", 0);
  constexpr int kPerChild = 40;
  auto codes = run_children(4, [&](int) {
    DiskCache c(d.path);
    rc::Lock lock(c, "counter-lock", {.expire = 60s});
    for (int i = 0; i < kPerChild; ++i) {
      std::lock_guard g(lock);
      const auto v = c.get<std::int64_t>("n").value();  // read-modify-write: racy unlocked
      c.set("n", v + 1);
    }
    return 0;
  });
  CHECK(codes == std::vector<int>(4, 0));
  CHECK(cache.get<std::int64_t>("n") == 4 * kPerChild);
}

TEST_CASE("recipes: a SIGKILLed Lock holder frees the lock after its lease",
          "[disk][recipes][process]") {
  // A clock both processes read: an atomic in shared memory, so the lease runs out when the
  // test says, not after a real wait.
  void* mem = ::mmap(nullptr, sizeof(std::atomic<std::int64_t>), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  auto* now_s = new (mem) std::atomic<std::int64_t>(1'700'000'000);
  const dogpile::Clock clock = [now_s] {
    return dogpile::TimePoint(std::chrono::seconds(now_s->load()));
  };
  TempDir d;
  DiskCache cache = open_cache(d, clock);
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    DiskCache c = open_cache(d, clock);
    rc::Lock lock(c, "crash", {.expire = 10s});
    lock.lock();
    (void)!::write(ready[1], "x", 1);
    for (;;) ::pause();  // killed while holding
  }
  char x = 0;
  REQUIRE(::read(ready[0], &x, 1) == 1);
  ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  REQUIRE(WIFSIGNALED(st));
  rc::Lock lock(cache, "crash");
  CHECK(lock.locked());
  {  // a child that inherited a held handle cannot unlock it for its parent
    rc::Lock parent(cache, "forked");
    REQUIRE(parent.try_lock());
    auto codes = run_children(1, [&](int) {
      parent.unlock();  // never throws, and must not free the parent's lock
      try {
        (void)parent.release();
      } catch (const LockError&) {
        return 0;
      }
      return 1;
    });
    CHECK(codes == std::vector<int>{0});
    CHECK(parent.locked());
    CHECK(parent.release());
  }
  CHECK_FALSE(lock.try_lock());  // the dead holder's lease still runs
  now_s->fetch_add(9);
  CHECK_FALSE(lock.try_lock());  // 9 s of 10
  now_s->fetch_add(2);
  CHECK_FALSE(lock.locked());
  REQUIRE(lock.try_lock());  // lease over: free
  lock.unlock();
  ::close(ready[0]);
  ::close(ready[1]);
  ::munmap(mem, sizeof(std::atomic<std::int64_t>));
}

// ---- RLock ----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("recipes: RLock re-enters in the owner, excludes others", "[disk][recipes]",
                   DiskCache, FanoutCache) {
  TempDir d;
  TestType cache(d.path);
  rc::RLock rlock(cache, "rl");
  CHECK_THROWS_AS(rlock.release(), LockError);
  rlock.lock();
  rlock.lock();
  CHECK(rlock.try_lock());
  bool other_got = true;
  bool other_threw = false;
  std::thread([&] {
    other_got = rlock.try_lock();
    rlock.unlock();  // never throws, and must not undo the owner's levels
    try {
      rlock.release();
    } catch (const LockError&) {
      other_threw = true;
    }
  }).join();
  CHECK_FALSE(other_got);
  CHECK(other_threw);
  rlock.unlock();
  rlock.unlock();
  std::thread([&] { other_got = rlock.try_lock(); }).join();
  CHECK_FALSE(other_got);  // one level still held
  rlock.unlock();
  CHECK_FALSE(cache.contains("rl"));  // count 0: the key is gone
  std::thread([&] {
    other_got = rlock.try_lock();
    rlock.unlock();
  }).join();
  CHECK(other_got);
  cache.set("rl", std::string("garbage"));
  CHECK_THROWS_AS(rlock.try_lock(), LockError);
}

// ---- BoundedSemaphore ----------------------------------------------------------------------

TEMPLATE_TEST_CASE("recipes: BoundedSemaphore(3) blocks a 4th", "[disk][recipes]", DiskCache,
                   FanoutCache) {
  TempDir d;
  TestType cache(d.path);
  CHECK_THROWS_AS(rc::BoundedSemaphore(cache, "bad", 0), ValidationError);
  rc::BoundedSemaphore sem(cache, "sem", 3);
  CHECK_THROWS_AS(sem.release(), LockError);
  for (int i = 0; i < 3; ++i) sem.lock();
  CHECK(sem.available() == 0);
  bool fourth = true;
  std::thread([&] { fourth = sem.try_lock_for(20ms); }).join();
  CHECK_FALSE(fourth);
  sem.unlock();
  std::thread([&] { fourth = sem.try_lock(); }).join();
  CHECK(fourth);
  for (int i = 0; i < 3; ++i) sem.unlock();
  CHECK(sem.available() == 3);
  CHECK_THROWS_AS(sem.release(), LockError);
}

TEST_CASE("recipes: BoundedSemaphore(2) never admits 3 processes", "[disk][recipes][process]") {
  TempDir d;
  DiskCache cache = open_cache(d);
  auto codes = run_children(4, [&](int) {
    DiskCache c(d.path);
    rc::BoundedSemaphore sem(c, "sem", 2);
    for (int i = 0; i < 15; ++i) {
      std::lock_guard g(sem);
      const auto inside = c.incr("inside");
      {  // the highest number of holders seen, kept in the cache
        auto tx = c.transact(true);
        if (inside > c.get<std::int64_t>("max").value_or(0)) c.set("max", inside);
      }
      c.incr("admitted");
      std::this_thread::yield();
      c.decr("inside");
    }
    return 0;
  });
  CHECK(codes == std::vector<int>(4, 0));
  CHECK(cache.get<std::int64_t>("admitted") == 60);
  CHECK(cache.get<std::int64_t>("inside") == 0);
  const auto max = cache.get<std::int64_t>("max");
  REQUIRE(max);
  CHECK(*max <= 2);
  CHECK(*max >= 1);
  CHECK(cache.get<std::int64_t>("sem") == 2);
}

// ---- throttle and barrier ------------------------------------------------------------------

TEMPLATE_TEST_CASE("recipes: throttle(2 per 1 s) over 2 s of a fake clock", "[disk][recipes]",
                   DiskCache, FanoutCache) {
  TempDir d;
  ManualClock clock;
  TestType cache(d.path);
  const auto start = clock();
  std::vector<double> at;
  int sleeps = 0;
  auto f = rc::throttle(cache, 2, 1, "throttled",
                        [&] { at.push_back(dogpile::recipes::Seconds(clock() - start).count()); },
                        {.tag = "t", .clock = clock, .sleep = [&](rc::Seconds s) {
                           ++sleeps;
                           clock.advance(s);
                         }});
  while (clock() - start < 2s) f();
  // Two tokens at once, then one every 0.5 s: as Python's doctest (6-7 calls in 2 s), exactly.
  CHECK(at == std::vector<double>{0, 0, 0.5, 1.0, 1.5, 2.0});
  CHECK(sleeps == 4);
  CHECK(cache.template get_item<std::string>("throttled")->tag == dogpile::Key("t"));
  CHECK_THROWS_AS(rc::throttle(cache, 0, 1, "x", [] {}), ValidationError);
}

TEMPLATE_TEST_CASE("recipes: barrier serializes calls", "[disk][recipes]", DiskCache, FanoutCache) {
  TempDir d;
  TestType cache(d.path);
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  // One plain counter per barrier: each is written only under its own barrier, so a barrier
  // that let two callers in would show up as a lost update (and as a race under TSan). The two
  // barriers may overlap each other, so they must not share a counter.
  int calls_f = 0;
  int calls_g = 0;
  auto body_of = [&](int& calls) {
    return [&inside, &most, &calls](int add) {
      const int now = ++inside;
      int m = most.load();
      while (now > m && !most.compare_exchange_weak(m, now)) {
      }
      std::this_thread::yield();
      calls += add;
      --inside;
      return calls;
    };
  };
  auto f = rc::barrier(cache, rc::LockFactory<rc::Lock>{}, "bar", body_of(calls_f));
  auto g = rc::barrier(cache, rc::LockFactory<rc::BoundedSemaphore>{}, "bar2", body_of(calls_g));
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        if (t % 2 == 0) {
          f(1);
        } else {
          g(1);
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(calls_f == 40);
  CHECK(calls_g == 40);
  CHECK(most <= 2);  // two barriers: one caller inside each at most
  inside = 0;
  most = 0;
  std::vector<std::thread> us;
  for (int t = 0; t < 4; ++t) {
    us.emplace_back([&] {
      for (int i = 0; i < 20; ++i) f(1);
    });
  }
  for (auto& t : us) t.join();
  CHECK(most == 1);
  CHECK(calls_f == 120);  // 40 before, then 4 threads x 20
}

// ---- memoize_stampede ----------------------------------------------------------------------

TEMPLATE_TEST_CASE("recipes: memoize_stampede recomputes early by XFetch", "[disk][recipes]",
                   DiskCache, FanoutCache) {
  TempDir d;
  ManualClock clock;
  TestType cache(d.path, {.clock = clock});
  std::atomic<int> computed{0};
  double u = 0.5;  // -delta * beta * ln(0.5) = 0.693 s with delta = 1 s, beta = 1
  auto f = rc::memoize_stampede(cache, 10s, "sq",
                                [&](int x) {
                                  ++computed;
                                  clock.advance(1s);  // the computation "takes" 1 s: delta
                                  return x * x + computed.load() * 1000;
                                },
                                {.clock = clock, .uniform = [&] { return u; }});
  CHECK(f(3) == 1009);  // cold miss
  CHECK(computed == 1);
  clock.advance(9s);  // ttl 1 s > 0.693: a plain hit
  CHECK(f(3) == 1009);
  CHECK(computed == 1);
  clock.advance(400ms);  // ttl 0.6 s <= 0.693: recompute now
  CHECK(f(3) == 2009);
  CHECK(computed == 2);
  CHECK(f(3) == 2009);  // fresh again
  u = 1.0;              // ln(1) = 0: recompute only once expired
  clock.advance(9900ms);
  CHECK(f(3) == 2009);
  clock.advance(200ms);  // expired: a miss
  CHECK(f(3) == 3009);
  CHECK(computed == 3);
  u = 0.0;
  clock.advance(9500ms);
  CHECK_THROWS_AS(f(3), ValidationError);  // U must be in (0, 1]
  CHECK(f.cache_key(3) == dogpile::Key(R"(["sq",3])"));

  CHECK_THROWS_AS(rc::memoize_stampede(cache, 0s, "z", [] { return 1; }), ValidationError);
  CHECK_THROWS_AS(rc::memoize_stampede(cache, 1s, "z", [] { return 1; }, {.beta = 0}),
                  ValidationError);
  CHECK_THROWS_AS(rc::memoize_stampede(cache, 1s, "z", [] { return 1; }, {.beta = -1}),
                  ValidationError);
}

TEST_CASE("recipes: memoize_stampede recomputes once while others get the current value",
          "[disk][recipes]") {
  TempDir d;
  ManualClock clock;
  DiskCache cache(d.path, {.clock = clock});
  std::atomic<int> computed{0};
  std::atomic<bool> entered{false};
  std::atomic<bool> go{false};
  auto f = rc::memoize_stampede(
      cache, 10s, "slow",
      [&] {
        const int n = ++computed;
        if (n == 2) {  // the early recomputation blocks until the others have been served
          entered = true;
          while (!go) std::this_thread::yield();
        }
        clock.advance(1s);
        return n;
      },
      {.clock = clock, .uniform = [] { return 0.5; }});
  CHECK(f() == 1);
  clock.advance(9500ms);  // inside the early window for every caller
  std::thread recomputer([&] { CHECK(f() == 2); });
  while (!entered) std::this_thread::yield();
  std::vector<int> others;
  for (int i = 0; i < 5; ++i) others.push_back(f());  // the lease is taken: the old value
  go = true;
  recomputer.join();
  CHECK(others == std::vector<int>(5, 1));
  CHECK(computed == 2);
  CHECK(f() == 2);
}

TEST_CASE("recipes: memoize_stampede called in a loop recomputes (upstream)", "[disk][recipes]") {
  TempDir d;
  ManualClock clock;
  DiskCache cache(d.path, {.clock = clock});
  int computed = 0;
  auto f = rc::memoize_stampede(cache, 100ms, "loop",
                                [&] {
                                  ++computed;
                                  clock.advance(1ms);
                                  return computed;
                                },
                                {.clock = clock});
  for (int i = 0; i < 100; ++i) {  // 1 s of fake time
    f();
    clock.advance(10ms);
  }
  CHECK(computed > 1);
}

// ---- Python interop ------------------------------------------------------------------------

TEST_CASE("recipes interop: C++ Lock and Python diskcache.Lock exclude each other",
          "[disk][recipes][interop]") {
  if (!have_diskcache())
    FAIL("python3-diskcache is not installed (/usr/bin/python3 -c 'import diskcache')");
  TempDir d;
  DiskCache cache(d.path / "c");
  rc::Lock lock(cache, "shared-lock");

  // C++ holds: Python sees it locked and cannot add the key (its acquire step).
  lock.lock();
  FILE* p = python_script(d, "held_by_cpp",
                          "lock = dc.Lock(cache, 'shared-lock')\n"
                          "print(lock.locked(), cache.add('shared-lock', None))\n");
  CHECK(read_line(p) == "True False");
  CHECK(close_python(p) == 0);
  lock.unlock();

  // Python holds until told to release: C++ cannot take it; then it can.
  p = python_script(d, "held_by_python",
                    "lock = dc.Lock(cache, 'shared-lock')\n"
                    "with lock:\n"
                    "    print('held', flush=True)\n"
                    "    while not cache.get('go'): time.sleep(0.01)\n"
                    "print('released', flush=True)\n");
  REQUIRE(read_line(p) == "held");
  CHECK(lock.locked());
  CHECK_FALSE(lock.try_lock());
  CHECK_FALSE(lock.try_lock_for(50ms));
  rc::Lock stranger(cache, "shared-lock");
  CHECK_THROWS_AS(stranger.release(), LockError);
  cache.set("go", 1);
  CHECK(read_line(p) == "released");
  CHECK(close_python(p) == 0);
  CHECK(lock.try_lock_for(5s));
  lock.unlock();
}

TEST_CASE("recipes interop: C++ and Python BoundedSemaphores share the count",
          "[disk][recipes][interop]") {
  if (!have_diskcache())
    FAIL("python3-diskcache is not installed (/usr/bin/python3 -c 'import diskcache')");
  TempDir d;
  DiskCache cache(d.path / "c");
  rc::BoundedSemaphore sem(cache, "shared-sem", 2);
  sem.lock();  // 1 slot left
  FILE* p = python_script(d, "sem",
                          "sem = dc.BoundedSemaphore(cache, 'shared-sem', 2)\n"
                          "sem.acquire()\n"
                          "print(cache['shared-sem'], flush=True)\n"
                          "while not cache.get('go'): time.sleep(0.01)\n"
                          "sem.release()\n"
                          "print(cache['shared-sem'], flush=True)\n");
  REQUIRE(read_line(p) == "0");  // Python took the C++ side's second slot
  CHECK(sem.available() == 0);
  CHECK_FALSE(sem.try_lock());  // full across languages
  cache.set("go", 1);
  CHECK(read_line(p) == "1");
  CHECK(close_python(p) == 0);
  CHECK(sem.try_lock());
  sem.unlock();
  sem.unlock();
  CHECK(sem.available() == 2);
  // Python reads the C++ count and refuses to over-release, as C++ does.
  p = python_script(d, "sem2",
                    "sem = dc.BoundedSemaphore(cache, 'shared-sem', 2)\n"
                    "try:\n"
                    "    sem.release()\n"
                    "    print('released')\n"
                    "except AssertionError:\n"
                    "    print('refused')\n");
  CHECK(read_line(p) == "refused");
  CHECK(close_python(p) == 0);
}

// ---- the docs/disk.md example, as written there ---------------------------------------------

TEST_CASE("recipes: the docs/disk.md example runs", "[disk][recipes]") {
  TempDir d;
  namespace rc = dogpile::recipes;
  dogpile::DiskCache cache(d.path, {.eviction_policy = dogpile::EvictionPolicy::none});
  int built = 0;
  int sent = 0;

  rc::Lock lock(cache, "report", {.expire = 30s});
  { std::lock_guard g(lock); }
  if (lock.try_lock_for(2s)) lock.unlock();
  CHECK_FALSE(lock.locked());

  rc::RLock rlock(cache, "tree");
  rlock.lock();
  rlock.lock();
  rlock.unlock();
  rlock.unlock();

  rc::BoundedSemaphore sem(cache, "workers", 4);
  { std::lock_guard g(sem); }

  rc::Averager avg(cache, "latency");
  avg.add(12.5);
  std::optional<double> mean = avg.get();
  CHECK(mean == 12.5);

  auto send = rc::throttle(cache, 10, 60, "mailer", [&](const std::string&) { ++sent; });
  send("mail");
  auto rebuild = rc::barrier(cache, rc::LockFactory<rc::Lock>{}, "rebuild", [&] { ++built; });
  rebuild();
  auto page = rc::memoize_stampede(cache, 60s, "page",
                                   [](int id) { return "<p>" + std::to_string(id) + "</p>"; },
                                   {.beta = 1.0});
  std::string html = page(42);
  CHECK(html == "<p>42</p>");
  CHECK(page(42) == "<p>42</p>");
  CHECK(sent == 1);
  CHECK(built == 1);
}

TEST_CASE("recipes interop: a Python RLock's key is refused by the C++ RLock",
          "[disk][recipes][interop]") {
  if (!have_diskcache()) {
    FAIL("python3-diskcache is not installed (/usr/bin/python3 -c 'import diskcache')");
  }
  TempDir d;
  DiskCache cache(d.path / "c");
  FILE* p = python_script(d, "rlock",
                          "rl = dc.RLock(cache, 'shared-rlock')\n"
                          "rl.acquire()\n"
                          "print('held', flush=True)\n");
  CHECK(read_line(p) == "held");
  CHECK(close_python(p) == 0);
  rc::RLock rlock(cache, "shared-rlock");
  CHECK_THROWS_AS(rlock.try_lock(), LockError);  // documented: the layouts differ
}

TEST_CASE("recipes interop: Lock on a FanoutCache and Python's FanoutCache Lock",
          "[disk][recipes][interop]") {
  if (!have_diskcache()) {
    FAIL("python3-diskcache is not installed (/usr/bin/python3 -c 'import diskcache')");
  }
  TempDir d;
  FanoutCache fan(d.path / "c", {.shards = 8});  // Python's default shard count
  rc::Lock lock(fan, "fan-lock");
  lock.lock();
  FILE* p = python_script(d, "fan",
                          "fan = dc.FanoutCache(sys.argv[1])\n"
                          "lock = dc.Lock(fan, 'fan-lock')\n"
                          "print(lock.locked(), fan.add('fan-lock', None, retry=True))\n",
                          /*open_cache=*/false);
  CHECK(read_line(p) == "True False");
  CHECK(close_python(p) == 0);
  lock.unlock();
  p = python_script(d, "fan2",
                    "fan = dc.FanoutCache(sys.argv[1])\n"
                    "print(dc.Lock(fan, 'fan-lock').locked(), fan.add('fan-lock', None))\n",
                    /*open_cache=*/false);
  CHECK_FALSE(std::filesystem::exists(d.path / "c" / "cache.db"));  // only shards
  CHECK(read_line(p) == "False True");  // released, then Python holds it
  CHECK(close_python(p) == 0);
  CHECK_FALSE(lock.try_lock());
}
