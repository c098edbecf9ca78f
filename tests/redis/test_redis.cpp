// The `redis` backend against real redis-server processes started by the harness: the
// conformance suite (with and without the distributed lock), the lock across processes,
// server faults, bad input and Python dogpile.cache interop.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>

#include "backends/conformance.hpp"
#include "dogpile/backends/redis.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;
using dogpile::RedisBackend;
using dogpile::RedisOptions;
using dogpile::test::RedisServer;
using dogpile_conformance::Region;
using dogpile_conformance::SharedMemory;
using dogpile_conformance::unique_key;
using dogpile_conformance::wait_child;

namespace {

RedisServer& server() {
  static RedisServer s;
  return s;
}
// Started before any test forks: a child that started it lazily would get its own server.
const bool server_started = (server(), true);

RedisOptions options(int port) {
  return RedisOptions{
      .host = "127.0.0.1", .port = port, .socket_timeout = 1s, .socket_connect_timeout = 500ms};
}

std::shared_ptr<dogpile::CacheBackend> plain() {
  return std::make_shared<RedisBackend>(options(server().port()));
}

std::shared_ptr<dogpile::CacheBackend> locked(std::chrono::milliseconds lease = 1s) {
  auto o = options(server().port());
  o.distributed_lock = true;
  o.lock_timeout = lease;
  o.lock_sleep = 50ms;
  return std::make_shared<RedisBackend>(o);
}

// Runs `body` in a forked child; returns its exit code (0 = body returned true).
template <class F>
pid_t fork_child(F body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = body() ? 0 : 3;
    } catch (...) {
      code = 4;
    }
    ::_exit(code);
  }
  return pid;
}

std::string run_python(const std::vector<std::string>& args) {
  std::string cmd = "/usr/bin/python3 " DOGPILE_REDIS_TEST_DIR "/interop.py";
  for (const auto& a : args) cmd += " '" + a + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  INFO(cmd);
  REQUIRE(::pclose(p) == 0);
  return out;
}

// A region on the real clock (Python compares creation times with its own clock).
dogpile::CacheRegion real_region(std::shared_ptr<dogpile::CacheBackend> b) {
  auto r = dogpile::make_region();
  r.configure(std::move(b));
  return r;
}

}  // namespace

DOGPILE_BACKEND_CONFORMANCE("redis", plain)
DOGPILE_MAX_VALUE_BYTES_CONFORMANCE("redis", [](std::size_t max) {
  auto o = options(server().port());
  o.max_value_bytes = max;
  return std::make_shared<RedisBackend>(o);
})
DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE("redis locked", [] { return locked(); })
DOGPILE_PAUSED_HOLDER_CONFORMANCE("redis locked", [] { return locked(); })
DOGPILE_BACKEND_TTL_CONFORMANCE("redis", 300ms, [] {
  auto o = options(server().port());
  o.redis_expiration_time = 300ms;
  return std::make_shared<RedisBackend>(o);
})

namespace {
RedisServer& outage_server() {
  static RedisServer s;
  return s;
}
}  // namespace
DOGPILE_SERVER_OUTAGE_CONFORMANCE(
    "redis", ([] {
      auto o = options(outage_server().port());
      o.distributed_lock = true;
      o.lock_timeout = 2s;
      return std::make_shared<RedisBackend>(o);
    }),
    [] { outage_server().kill(); }, [] { outage_server().restart(); }, 1500ms)

TEST_CASE("redis with requirepass: url credentials, and a wrong password is a clear error",
          "[redis]") {
  RedisServer secured({.password = "s3cret"});
  auto b = RedisBackend::from_arguments({{"url", secured.url(2)}});
  b->set("k", "v");
  CHECK(b->get("k") == std::optional<std::string>("v"));
  CHECK(secured.cli({"-n", "2", "get", "k"}) == "v\n");  // db 2 was selected
  auto wrong = RedisBackend::from_arguments(
      {{"port", secured.port()}, {"host", "127.0.0.1"}, {"password", "nope"}});
  try {
    (void)wrong->get("k");
    FAIL("no error");
  } catch (const dogpile::BackendError& e) {
    CHECK(std::string(e.what()).find("AUTH") != std::string::npos);
  }
}

TEST_CASE("redis keys are binary-safe: NUL, CR LF, spaces, 8-bit bytes", "[redis]") {
  auto b = plain();
  const std::string k = unique_key("bin") + std::string("\0a\r\nb c\xff", 8);
  const std::string v("\0\r\n\xfe", 4);
  b->set(k, v);
  CHECK(b->get(k) == std::optional<std::string>(v));
  CHECK(b->get_multi(std::vector<std::string>{k, k + "x"}) ==
        std::vector<std::optional<std::string>>{v, std::nullopt});
  b->erase(k);
  CHECK_FALSE(b->get(k));
}

TEST_CASE("a value over the server's bulk limit is a clear error and loses nothing", "[redis]") {
  RedisServer small({.extra_args = {"--proto-max-bulk-len", "1mb"}});
  auto b = std::make_shared<RedisBackend>(options(small.port()));
  b->set("keep", "old");
  try {
    b->set("keep", std::string(2 * 1024 * 1024, 'x'));
    FAIL("no error");
  } catch (const dogpile::BackendError& e) {
    CHECK(std::string(e.what()).find("bulk") != std::string::npos);
  }
  CHECK(b->get("keep") == std::optional<std::string>("old"));  // and the pool recovered
}

TEST_CASE("redis lock: 3 processes x 8 threads on one missing key create it once",
          "[redis][lock][fork]") {
  const auto k = unique_key("stampede");
  struct Shared {
    std::atomic<int> creations{0};
    std::atomic<int> wrong{0};
  };
  SharedMemory<Shared> shared;
  auto worker = [&] {
    Region r(locked(5s));
    dogpile_conformance::run_threads(8, [&](int) {
      const auto v = r.region.get_or_create(k, [&] {
        shared->creations.fetch_add(1);
        std::this_thread::sleep_for(300ms);
        return std::string("once");
      });
      if (v != "once") shared->wrong.fetch_add(1);
    });
    return true;
  };
  std::array<int, 2> gate{};
  REQUIRE(::pipe(gate.data()) == 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < 2; ++i) {
    kids.push_back(fork_child([&] {
      ::close(gate[1]);
      char c = 0;
      if (::read(gate[0], &c, 1) < 0) return false;
      return worker();
    }));
  }
  ::close(gate[0]);
  ::close(gate[1]);  // all go
  worker();
  for (auto pid : kids) CHECK(wait_child(pid) == 0);
  CHECK(shared->creations.load() == 1);
  CHECK(shared->wrong.load() == 0);
}

TEST_CASE(
    "redis lock: an expired value is regenerated once; other processes get it stale "
    "without waiting",
    "[redis][lock][fork]") {
  const auto k = unique_key("stale");
  {
    Region writer(locked(5s), {.expiration_time = 60s});
    writer.region.set(k, std::string("old"));
  }
  struct Shared {
    std::atomic<int> creations{0};
    std::atomic<int> stale{0};
    std::atomic<long long> slowest_stale_ms{0};
  };
  SharedMemory<Shared> shared;
  auto worker = [&] {
    Region r(locked(5s), {.expiration_time = 60s});
    r.clock.advance(1h);  // the value is an hour old for every reader
    dogpile_conformance::run_threads(8, [&](int) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto v = r.region.get_or_create(k, [&] {
        shared->creations.fetch_add(1);
        std::this_thread::sleep_for(3s);
        return std::string("new");
      });
      if (v == "old") {
        shared->stale.fetch_add(1);
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
        auto cur = shared->slowest_stale_ms.load();
        while (ms > cur && !shared->slowest_stale_ms.compare_exchange_weak(cur, ms)) {
        }
      }
    });
    return true;
  };
  std::vector<pid_t> kids;
  for (int i = 0; i < 2; ++i) kids.push_back(fork_child(worker));
  worker();
  for (auto pid : kids) CHECK(wait_child(pid) == 0);
  CHECK(shared->creations.load() == 1);
  CHECK(shared->stale.load() == 23);
  // Served stale without waiting for the 3 s creator (the bound leaves room for a loaded
  // sanitizer run; waiting would take the whole 3 s).
  CHECK(shared->slowest_stale_ms.load() < 2000);
}

TEST_CASE(
    "redis lock: a paused holder that resumes after losing its lease does not delete the "
    "new holder's lock",
    "[redis][lock][fork]") {
  const auto k = unique_key("paused");
  auto mine = locked(600ms)->get_mutex(k);
  std::array<int, 2> acquired{};
  std::array<int, 2> resumed{};
  REQUIRE(::pipe(acquired.data()) == 0);
  REQUIRE(::pipe(resumed.data()) == 0);
  const pid_t pid = fork_child([&] {
    auto b = locked(600ms);
    auto m = b->get_mutex(k);
    if (!m->acquire(true)) return false;
    if (::write(acquired[1], "1", 1) != 1) return false;
    char c = 0;
    if (::read(resumed[0], &c, 1) != 1) return false;  // the parent stopped and resumed us
    try {
      m->release();
      return false;  // must not succeed: the lease was lost
    } catch (const dogpile::LockError&) {
      return true;
    }
  });
  char c = 0;
  REQUIRE(::read(acquired[0], &c, 1) == 1);
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  REQUIRE(mine->try_acquire_for(5s));  // after the lease
  REQUIRE(::kill(pid, SIGCONT) == 0);
  REQUIRE(::write(resumed[1], "1", 1) == 1);
  CHECK(wait_child(pid) == 0);
  CHECK(mine->locked());  // still ours
  auto other = locked(600ms)->get_mutex(k);
  CHECK_FALSE(other->acquire(false));
  mine->release();
}

TEST_CASE("redis lock: a slow live creator keeps its lock past lock_timeout", "[redis][lock]") {
  const auto k = unique_key("slow");
  Region a(locked(1s));
  Region b(locked(1s));
  std::atomic<int> creations{0};
  std::thread slow([&] {
    a.region.get_or_create(k, [&] {
      creations.fetch_add(1);
      std::this_thread::sleep_for(3500ms);  // more than three leases
      return std::string("slow");
    });
  });
  while (!b.region.key_is_locked(k)) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(2500ms);  // two and a half leases
  CHECK(b.region.key_is_locked(k));
  CHECK(b.region.get_or_create(k, [&] {
    creations.fetch_add(1);
    return std::string("second");
  }) == "slow");
  slow.join();
  CHECK(creations.load() == 1);
}

TEST_CASE(
    "redis lock: released from another thread, and blocking acquire honours "
    "lock_blocking_timeout",
    "[redis][lock]") {
  const auto k = unique_key("xthread");
  auto b = locked(5s);
  auto m = b->get_mutex(k);
  REQUIRE(m->acquire(true));
  std::thread([&] { m->release(); }).join();
  CHECK_FALSE(m->locked());

  auto o = options(server().port());
  o.distributed_lock = true;
  o.lock_blocking_timeout = 300ms;
  auto bounded = std::make_shared<RedisBackend>(o);
  REQUIRE(m->acquire(true));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(bounded->get_mutex(k)->acquire(true));
  CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);
  Region r(bounded);
  CHECK_THROWS_AS(r.region.get_or_create(k, [] { return std::string("x"); }),
                  dogpile::TimeoutError);
  m->release();
}

TEST_CASE("redis lock: a waiter in another process is woken by the release notice",
          "[redis][lock][fork]") {
  // lock_sleep is 10 s: without the notice, the waiter would sleep for seconds.
  auto o = options(server().port());
  o.distributed_lock = true;
  o.lock_timeout = 30s;
  o.lock_sleep = 10s;
  const auto k = unique_key("wake");
  auto holder = std::make_shared<RedisBackend>(o)->get_mutex(k);
  REQUIRE(holder->acquire(true));
  struct Shared {
    std::atomic<long long> woke_ns{0};
    std::atomic<int> waiting{0};
  };
  SharedMemory<Shared> shared;
  const pid_t pid = fork_child([&] {
    auto m = std::make_shared<RedisBackend>(o)->get_mutex(k);
    shared->waiting.store(1);
    if (!m->acquire(true)) return false;
    shared->woke_ns.store(std::chrono::steady_clock::now().time_since_epoch().count());
    m->release();
    return true;
  });
  while (shared->waiting.load() == 0) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(1500ms);  // the waiter's backoff has grown past its first naps
  const auto released = std::chrono::steady_clock::now();
  holder->release();
  CHECK(wait_child(pid) == 0);
  const auto latency =
      std::chrono::nanoseconds(shared->woke_ns.load()) - released.time_since_epoch();
  INFO("wake-up latency " << std::chrono::duration_cast<std::chrono::milliseconds>(latency).count()
                          << " ms");
  CHECK(latency < 3s);  // far below the 10 s poll interval it would otherwise sleep
}

// A timed-out connection still owes the reply of the command that timed out: back in the pool
// unmarked, the next call on it would read that late reply as its own (or time out again).
// With a pool of one, the next call must open a fresh connection and get its own value at once.
TEST_CASE("redis: after a timeout on a pool of one, the next calls get their own replies",
          "[redis][faults]") {
  RedisServer s;
  auto o = options(s.port());
  o.pool_size = 1;
  o.socket_timeout = 200ms;
  RedisBackend b(o);
  b.set("k1", "one");
  b.set("k2", "two");
  s.pause();
  CHECK_THROWS_AS(b.get("k1"), dogpile::TimeoutError);
  s.resume();
  REQUIRE(s.ping());  // the server has answered the timed-out GET by now
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(b.get("k2") == std::optional<std::string>("two"));
  CHECK(b.get("k1") == std::optional<std::string>("one"));
  b.set("k3", "three");
  CHECK(b.get_multi(std::vector<std::string>{"k3", "k2"}) ==
        std::vector<std::optional<std::string>>{"three", "two"});
  CHECK(std::chrono::steady_clock::now() - t0 < o.socket_timeout);  // none waited out a timeout
}

TEST_CASE("redis interop: Python dogpile.cache reads what C++ writes and the other way",
          "[redis][python]") {
  const auto port = std::to_string(server().port());
  const auto k = unique_key("py");
  // C++ strings are stored as their raw bytes; a JSON value is what a Python JSON
  // serializer reads back (docs/backends.md, "Sharing values with Python").
  auto r = real_region(plain());
  r.set(k, nlohmann::json("from c++"));
  CHECK(run_python({port, "read", k}) == "\"from c++\"\n");
  run_python({port, "write", k + "2", R"({"id": 7, "tags": ["a", "b"]})"});
  const auto got = r.get<nlohmann::json>(k + "2");
  REQUIRE(got);
  CHECK((*got)["id"] == 7);
  CHECK((*got)["tags"][1] == "b");
}

// StringCodec::json (docs/envelope.md, "Strings"): a std::string reaches Python's JSON
// deserializer as a str, and a str Python stored reads back as the std::string, unquoted.
TEST_CASE("redis interop: with StringCodec::json Python and C++ share std::string values",
          "[redis][python]") {
  const auto port = std::to_string(server().port());
  const auto k = unique_key("pystr");
  auto r = dogpile::make_region({.codec = {.string_codec = dogpile::StringCodec::json}});
  r.configure(plain());
  r.set(k, std::string("caf\xC3\xA9 | \"q\""));
  CHECK(run_python({port, "read", k}) == "\"caf\\u00e9 | \\\"q\\\"\"\n");
  run_python({port, "write", k + "2", R"("from python \u2603")"});
  CHECK(r.get<std::string>(k + "2") == std::optional<std::string>("from python \xE2\x98\x83"));
  // The raw default hands Python bytes its JSON deserializer cannot read.
  real_region(plain()).set(k + "3", std::string("plain"));
  CHECK(run_python({port, "read_or_error", k + "3"}) == "JSONDecodeError\n");
}

// The envelope's "ct" is Unix seconds on both sides: Python dogpile.cache must find a value C++
// wrote now fresh and one C++ wrote a minute ago (its clock set back) expired; C++ must find a
// value Python wrote now fresh, and expired once its clock is a minute on. A "ct" in
// milliseconds on either side fails one of these (a far-future time is always fresh, a 1970
// one always expired).
TEST_CASE("redis interop: Python and C++ judge each other's values fresh and expired on time",
          "[redis][python]") {
  const auto port = std::to_string(server().port());
  const auto k = unique_key("pyct");
  real_region(plain()).set(k + "now", nlohmann::json("now"));
  auto back = dogpile::make_region(
      {.clock = [] { return std::chrono::system_clock::now() - std::chrono::seconds(60); }});
  back.configure(plain());
  back.set(k + "old", nlohmann::json("old"));
  CHECK(run_python({port, "fresh", k + "now", "30", k + "old", "30", k + "old", "90"}) ==
        "\"now\"\nexpired\n\"old\"\n");

  run_python({port, "write", k + "py", R"("from python")"});
  auto at = [&](std::chrono::seconds ahead) {
    auto r = dogpile::make_region(
        {.clock = [ahead] { return std::chrono::system_clock::now() + ahead; }});
    r.configure(plain(), {.expiration_time = 30s});
    return r.get<nlohmann::json>(k + "py");
  };
  CHECK(at(0s) == nlohmann::json("from python"));
  CHECK(at(20s) == nlohmann::json("from python"));
  CHECK_FALSE(at(60s));
}

TEST_CASE("redis interop: a Python creator holding _lock<key> makes C++ wait for its value",
          "[redis][python][lock]") {
  const auto port = std::to_string(server().port());
  const auto k = unique_key("pylock");
  const std::string cmd =
      "/usr/bin/python3 " DOGPILE_REDIS_TEST_DIR "/interop.py " + port + " hold '" + k + "' 1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char line[256] = {};
  REQUIRE(std::fgets(line, sizeof line, p) != nullptr);
  CHECK(std::string(line) == "creating\n");  // Python holds _lock<key> now
  auto r = real_region(locked(5s));
  int creations = 0;
  CHECK(r.get_or_create(k, [&] {
    ++creations;
    return nlohmann::json("from c++");
  }) == nlohmann::json("from python"));
  CHECK(creations == 0);
  REQUIRE(std::fgets(line, sizeof line, p) != nullptr);
  CHECK(std::string(line) == "\"from python\"\n");
  CHECK(::pclose(p) == 0);
}

TEST_CASE("redis interop: a C++ creator holding the lock makes Python wait for its value",
          "[redis][python][lock]") {
  const auto port = std::to_string(server().port());
  const auto k = unique_key("cpplock");
  auto r = real_region(locked(5s));
  std::atomic<bool> creating{false};
  std::thread creator([&] {
    r.get_or_create(k, [&] {
      creating = true;
      std::this_thread::sleep_for(1500ms);
      return nlohmann::json("from c++");
    });
  });
  while (!creating) std::this_thread::sleep_for(1ms);
  // Python's get_or_create waits on _lock<key>, then reads C++'s value (it never creates).
  CHECK(run_python({port, "hold", k, "0"}) == "\"from c++\"\n");
  creator.join();
}
