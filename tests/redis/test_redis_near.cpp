// The `redis` backend's near cache (L1 kept coherent by CLIENT TRACKING … REDIRECT … BCAST)
// against a real redis-server: L1 serves repeated reads without a round trip, writes from
// another connection and FLUSHALL invalidate it, the fill race, a killed subscriber, and the
// max_staleness bound while the server is paused (SIGSTOP), and a staleness checker across
// processes under every single fault in turn. Each case was checked to fail with
// its mechanism planted out of src/redis/near_cache.cpp.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "dogpile/backends/redis.hpp"
#include "dogpile/error.hpp"
#include "dogpile/region.hpp"
#include "support/fake_server.hpp"
#include "support/near_cache.hpp"
#include "support/servers.hpp"

// A value whose decodings are counted: a region hit served from the decoded copy kept in L1
// does not decode.
struct NearDecodeCounted {
  int v = 0;
  static inline std::atomic<int> decodes{0};
};
template <>
struct dogpile::Codec<NearDecodeCounted> {
  static std::string encode(const NearDecodeCounted& x, Format /*format*/) {
    return std::to_string(x.v);
  }
  static NearDecodeCounted decode(std::string_view b, Format /*format*/) {
    NearDecodeCounted::decodes.fetch_add(1);
    return NearDecodeCounted{std::stoi(std::string(b))};
  }
};

using namespace std::chrono_literals;
using dogpile::RedisBackend;
using dogpile::RedisOptions;
using dogpile::test::RedisServer;

namespace {

using Clock = std::chrono::steady_clock;

// A server of its own: the pause and CLIENT KILL cases must not disturb the other tests.
RedisServer& near_server() {
  static RedisServer s;
  return s;
}

// The options of a near-cached backend. `port`: 0 = near_server()'s (another: a proxy in front
// of it, or a server of the test's own).
RedisOptions near_options(std::chrono::milliseconds staleness = 1000ms,
                          std::chrono::milliseconds socket_timeout = 1000ms, int port = 0) {
  RedisOptions o{.host = "127.0.0.1",
                 .port = port != 0 ? port : near_server().port(),
                 .socket_timeout = socket_timeout,
                 .socket_connect_timeout = 500ms};
  o.near_cache = {.max_bytes = 1 << 20, .max_staleness = staleness};
  return o;
}

std::shared_ptr<RedisBackend> near_backend(std::chrono::milliseconds staleness = 1000ms,
                                           std::chrono::milliseconds socket_timeout = 1000ms,
                                           int port = 0) {
  return std::make_shared<RedisBackend>(near_options(staleness, socket_timeout, port));
}

// Polls `pred` every millisecond for at most `limit`; true as soon as it holds.
template <class F>
bool poll_until(F pred, std::chrono::milliseconds limit = 2000ms) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return pred();
}

// Reads `key` until one read is an L1 hit (tracking up and a fence seen).
bool wait_serving(RedisBackend& b, const std::string& key) {
  return dogpile::test::l1_serves(b, key);
}

std::string cli(const std::vector<std::string>& args) { return near_server().cli(args); }

std::size_t commandstat_calls(const std::string& info, const std::string& cmd) {
  const std::string tag = "cmdstat_" + cmd + ":calls=";
  const auto p = info.find(tag);
  if (p == std::string::npos) return 0;
  return std::stoul(info.substr(p + tag.size()));
}

}  // namespace

TEST_CASE("redis near cache: a repeated get is served from L1 without a round trip",
          "[redis][near]") {
  auto b = near_backend();
  b->set("nc:hit", "v1");
  REQUIRE(wait_serving(*b, "nc:hit"));
  cli({"CONFIG", "RESETSTAT"});
  const auto hits = b->near_cache_stats().l1_hits;
  for (int i = 0; i < 100; ++i) REQUIRE(b->get("nc:hit") == "v1");
  const std::string info = cli({"INFO", "commandstats"});
  INFO(info);
  CHECK(commandstat_calls(info, "get") == 0);
  CHECK(commandstat_calls(info, "exec") == 0);
  CHECK(b->near_cache_stats().l1_hits >= hits + 100);
  // The process's own write is read back at once (no wait for the server's message).
  b->set("nc:hit", "v2");
  CHECK(b->get("nc:hit") == "v2");
}

TEST_CASE("redis near cache: a write from another connection drops the L1 copy promptly",
          "[redis][near]") {
  auto b = near_backend();
  b->set("nc:foreign", "old");
  REQUIRE(wait_serving(*b, "nc:foreign"));
  const auto inv = b->near_cache_stats().invalidations;
  cli({"SET", "nc:foreign", "new"});
  const auto t0 = Clock::now();
  REQUIRE(poll_until([&] { return b->get("nc:foreign") == "new"; }, 1000ms));
  CHECK(Clock::now() - t0 < 500ms);
  CHECK(b->near_cache_stats().invalidations > inv);
  // And L1 serves the new value afterwards.
  REQUIRE(wait_serving(*b, "nc:foreign"));
  CHECK(b->get("nc:foreign") == "new");
}

TEST_CASE("redis near cache: writes by another C++ process and by Python dogpile.cache invalidate",
          "[redis][near]") {
  auto b = near_backend();
  const int port = near_server().port();
  b->set("nc:proc", "old");
  REQUIRE(wait_serving(*b, "nc:proc"));
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      RedisBackend other(RedisOptions{.host = "127.0.0.1", .port = port, .socket_timeout = 1s});
      other.set("nc:proc", "from-child");
      code = 0;
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(poll_until([&] { return b->get("nc:proc") == "from-child"; }, 1000ms));
  REQUIRE(wait_serving(*b, "nc:proc"));
  // Python dogpile.cache stores its envelope (JSON serializer) under the same key.
  const std::string cmd = "/usr/bin/python3 " DOGPILE_REDIS_TEST_DIR "/interop.py " +
                          std::to_string(port) + " write nc:proc '\"from-python\"'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  CHECK(poll_until(
      [&] {
        const auto v = b->get("nc:proc");
        return v && v->find("from-python") != std::string::npos;
      },
      1000ms));
}

TEST_CASE("redis near cache: a write between a fill's GET and its install leaves no stale copy",
          "[redis][near]") {
  auto b = near_backend();
  cli({"SET", "nc:race", "v1"});
  REQUIRE(poll_until([&] { return b->near_cache_stats().tracking; }));
  std::atomic<bool> armed{true};
  b->set_near_cache_fill_hook_for_testing([&](std::string_view key) {
    if (key != "nc:race" || !armed.exchange(false)) return;
    // The fill already holds v1; another client writes v2 and its invalidation is handled
    // before the install decision: the E6 race, made deterministic.
    const auto inv = b->near_cache_stats().invalidations;
    cli({"SET", "nc:race", "v2"});
    REQUIRE(poll_until([&] { return b->near_cache_stats().invalidations > inv; }, 1000ms));
  });
  const auto refused = b->near_cache_stats().refused_fills;
  CHECK(b->get("nc:race") == "v1");  // the read was concurrent with the write: either is right
  CHECK(b->near_cache_stats().refused_fills == refused + 1);
  // Not "v1" from L1 from now on.
  for (int i = 0; i < 20; ++i) REQUIRE(b->get("nc:race") == "v2");
  b->set_near_cache_fill_hook_for_testing(nullptr);
}

TEST_CASE("redis near cache: get_multi takes hits from L1 and reads the misses in one round trip",
          "[redis][near]") {
  auto b = near_backend();
  const std::vector<std::string> keys{"nc:m1", "nc:m2", "nc:m3", "nc:m-missing"};
  REQUIRE(poll_until([&] { return b->near_cache_stats().tracking; }));
  // Written by another client, and their invalidations seen before the fills begin (a late
  // one would refuse a fill).
  const auto inv0 = b->near_cache_stats().invalidations;
  cli({"SET", "nc:m1", "a"});
  cli({"SET", "nc:m2", "b"});
  cli({"SET", "nc:m3", "c", "PX", "60000"});
  REQUIRE(poll_until([&] { return b->near_cache_stats().invalidations >= inv0 + 3; }));
  REQUIRE(wait_serving(*b, "nc:m1"));
  const std::vector<std::optional<std::string>> want{"a", "b", "c", std::nullopt};
  cli({"CONFIG", "RESETSTAT"});
  auto hits = b->near_cache_stats().l1_hits;
  CHECK(b->get_multi(keys) == want);  // nc:m1 from L1, the rest filled
  std::string info = cli({"INFO", "commandstats"});
  CHECK(commandstat_calls(info, "mget") == 1);
  CHECK(commandstat_calls(info, "pttl") == 3);
  CHECK(b->near_cache_stats().l1_hits == hits + 1);
  // Now every present key comes from L1: only the missing one goes to Redis.
  hits = b->near_cache_stats().l1_hits;
  CHECK(b->get_multi(keys) == want);
  CHECK(b->near_cache_stats().l1_hits == hits + 3);
  info = cli({"INFO", "commandstats"});
  CHECK(commandstat_calls(info, "mget") == 2);
  CHECK(commandstat_calls(info, "get") == 0);
  // Another client's write invalidates a get_multi fill like a get's.
  cli({"SET", "nc:m2", "b2"});
  REQUIRE(poll_until([&] { return b->get_multi(keys)[1] == "b2"; }, 1000ms));
  // The fill race, as for get: a write between the read and the install refuses it.
  std::atomic<bool> armed{true};
  b->set_near_cache_fill_hook_for_testing([&](std::string_view key) {
    if (key != "nc:m3" || !armed.exchange(false)) return;
    const auto inv = b->near_cache_stats().invalidations;
    cli({"SET", "nc:m3", "c2"});
    REQUIRE(poll_until([&] { return b->near_cache_stats().invalidations > inv; }, 1000ms));
  });
  b->set("nc:m3", "c1");  // our own write drops the L1 copy; the next get_multi fills it
  const auto refused = b->near_cache_stats().refused_fills;
  CHECK(b->get_multi(keys)[2] == "c1");
  CHECK(b->near_cache_stats().refused_fills >= refused + 1);
  for (int i = 0; i < 20; ++i) REQUIRE(b->get_multi(keys)[2] == "c2");
  b->set_near_cache_fill_hook_for_testing(nullptr);
}

TEST_CASE("redis near cache: prefixes limit L1 and the server's messages to the keys under them",
          "[redis][near]") {
  RedisOptions o = near_options();
  o.near_cache.prefixes = {"ncp:a:", "ncp:b:"};
  auto b = std::make_shared<RedisBackend>(o);
  auto other = std::make_shared<RedisBackend>(
      RedisOptions{.host = "127.0.0.1", .port = near_server().port()});
  b->set("ncp:a:1", "a1");
  b->set("ncp:z:1", "z1");
  REQUIRE(wait_serving(*b, "ncp:a:1"));

  // A key outside the prefixes is never kept: each read is a GET on the server.
  cli({"CONFIG", "RESETSTAT"});
  const auto before = b->near_cache_stats();
  for (int i = 0; i < 20; ++i) REQUIRE(b->get("ncp:z:1") == "z1");
  CHECK(commandstat_calls(cli({"INFO", "commandstats"}), "get") == 20);
  CHECK(b->near_cache_stats().l1_hits == before.l1_hits);
  CHECK(b->near_cache_stats().fills == before.fills);
  // So another client's write to it is read at once, with no message needed.
  other->set("ncp:z:1", "z2");
  CHECK(b->get("ncp:z:1") == "z2");
  // A batch of both kinds: the covered key from L1, the others from the server, in order.
  const auto hits = b->near_cache_stats().l1_hits;
  const std::vector<std::optional<std::string>> want{"z2", "a1", std::nullopt};
  const std::vector<std::string> mixed{"ncp:z:1", "ncp:a:1", "ncp:z:missing"};
  CHECK(b->get_multi(mixed) == want);
  CHECK(b->near_cache_stats().l1_hits == hits + 1);

  // Writes outside the prefixes send this process nothing: 50 of them, then one under a
  // prefix, whose message is the only one that arrives (tracked without PREFIX, all 51 do).
  const auto inv0 = b->near_cache_stats().invalidations;
  other->set("ncp:b:marker", "1");
  REQUIRE(poll_until([&] { return b->near_cache_stats().invalidations >= inv0 + 1; }));
  const auto inv1 = b->near_cache_stats().invalidations;
  for (int i = 0; i < 50; ++i) other->set("ncp:z:w" + std::to_string(i), "x");
  other->set("ncp:b:marker", "2");
  REQUIRE(poll_until([&] { return b->near_cache_stats().invalidations >= inv1 + 1; }));
  std::this_thread::sleep_for(20ms);  // a later message would be counted by now
  CHECK(b->near_cache_stats().invalidations == inv1 + 1);
  // And a foreign write under a prefix still drops the L1 copy.
  other->set("ncp:a:1", "a2");
  CHECK(poll_until([&] { return b->get("ncp:a:1") == "a2"; }, 1000ms));
}

TEST_CASE("redis near cache: a killed subscriber empties L1 and later reads are right",
          "[redis][near]") {
  auto b = near_backend();
  b->set("nc:kill", "old");
  REQUIRE(wait_serving(*b, "nc:kill"));
  const auto flushes = b->near_cache_stats().flushes;
  cli({"CLIENT", "KILL", "TYPE", "pubsub"});
  // The write is made while no subscriber listens: its invalidation is lost for good.
  cli({"SET", "nc:kill", "new"});
  CHECK(poll_until([&] { return b->near_cache_stats().flushes > flushes; }, 1000ms));
  CHECK_THAT(b->near_cache_stats().last_flush_reason,
             Catch::Matchers::Contains("lost the invalidation connection"));
  REQUIRE(poll_until([&] { return b->near_cache_stats().tracking; }));
  for (int i = 0; i < 20; ++i) REQUIRE(b->get("nc:kill") == "new");
  REQUIRE(wait_serving(*b, "nc:kill"));
  CHECK(b->get("nc:kill") == "new");
}

TEST_CASE("redis near cache: a killed anchor (the tracking connection) empties L1",
          "[redis][near]") {
  auto b = near_backend();
  b->set("nc:anchor", "old");
  REQUIRE(wait_serving(*b, "nc:anchor"));
  // The anchor is the one client with the tracking flag `t`.
  const std::string list = cli({"CLIENT", "LIST"});
  std::string id;
  std::istringstream lines(list);
  for (std::string line; std::getline(lines, line);) {
    const auto f = line.find(" flags=");
    if (f == std::string::npos) continue;
    const std::string flags = line.substr(f + 7, line.find(' ', f + 7) - f - 7);
    if (flags.find('t') != std::string::npos) id = line.substr(3, line.find(' ') - 3);
  }
  INFO(list);
  REQUIRE_FALSE(id.empty());
  const auto flushes = b->near_cache_stats().flushes;
  cli({"CLIENT", "KILL", "ID", id});
  cli({"SET", "nc:anchor", "new"});  // no tracking any more: no message for this write
  CHECK(poll_until([&] { return b->near_cache_stats().flushes > flushes; }, 1000ms));
  REQUIRE(poll_until([&] { return b->near_cache_stats().tracking; }));
  for (int i = 0; i < 20; ++i) REQUIRE(b->get("nc:anchor") == "new");
}

TEST_CASE("redis near cache: a paused server stops L1 within max_staleness of the last fence",
          "[redis][near]") {
  constexpr auto staleness = 150ms;
  auto b = near_backend(staleness, 500ms);
  b->set("nc:pause", "v");
  REQUIRE(wait_serving(*b, "nc:pause"));
  near_server().pause();
  // Every fence seen from now on was sent before the pause: the last proof is before t0.
  const auto t0 = Clock::now();
  int late_hits = 0;
  int early_hits = 0;
  while (Clock::now() - t0 < 400ms) {
    const auto start = Clock::now();
    const auto before = b->near_cache_stats().l1_hits;
    try {
      (void)b->get("nc:pause");
    } catch (const dogpile::BackendError&) {
      // A read past L1 times out against the paused server.
    }
    if (b->near_cache_stats().l1_hits > before) (start - t0 > staleness ? late_hits : early_hits)++;
  }
  near_server().resume();
  CHECK(early_hits > 0);  // L1 did serve while the proof was recent
  CHECK(late_hits == 0);
  REQUIRE(wait_serving(*b, "nc:pause"));
  CHECK(b->get("nc:pause") == "v");
}

TEST_CASE("redis near cache: FLUSHALL empties L1", "[redis][near]") {
  auto b = near_backend();
  b->set("nc:flush", "v");
  REQUIRE(wait_serving(*b, "nc:flush"));
  cli({"FLUSHALL"});
  REQUIRE(poll_until([&] { return !b->get("nc:flush").has_value(); }, 1000ms));
  CHECK_THAT(b->near_cache_stats().last_flush_reason, Catch::Matchers::Contains("FLUSHALL"));
}

TEST_CASE("redis near cache: a server demoted to a replica stops L1 (ROLE before each fence)",
          "[redis][near]") {
  // A replica's fences prove nothing of the writes its master takes (replication lags): an old
  // master that still answers after a failover must not keep L1 serving.
  RedisServer tracked;
  RedisServer other;
  const RedisOptions o = near_options(1000ms, 1000ms, tracked.port());
  RedisBackend b(o);
  other.cli({"SET", "nc:demoted", "v"});
  b.set("nc:demoted", "v");
  REQUIRE(wait_serving(b, "nc:demoted"));
  tracked.cli({"REPLICAOF", "127.0.0.1", std::to_string(other.port())});
  REQUIRE(poll_until([&] { return tracked.cli({"ROLE"}).rfind("slave", 0) == 0; }));
  // At the next fence (within 200 ms) L1 is emptied, and it does not serve again (the full
  // sync's nil invalidation empties it too; the reader's reconnections keep meeting ROLE).
  CHECK(poll_until(
      [&] {
        return b.near_cache_stats().last_flush_reason.find("no longer a master") !=
               std::string::npos;
      },
      1500ms));
  const auto hits = b.near_cache_stats().l1_hits;
  const auto end = Clock::now() + 300ms;
  while (Clock::now() < end) {
    REQUIRE(b.get("nc:demoted") == "v");
    std::this_thread::sleep_for(5ms);
  }
  CHECK(b.near_cache_stats().l1_hits == hits);
}

TEST_CASE("redis near cache: L1 stays within max_bytes", "[redis][near]") {
  RedisOptions o{.host = "127.0.0.1", .port = near_server().port(), .socket_timeout = 1000ms};
  o.near_cache = {.max_bytes = 4096, .max_staleness = 1000ms};
  RedisBackend b(o);
  REQUIRE(poll_until([&] { return b.near_cache_stats().tracking; }));
  const std::string value(200, 'x');
  std::vector<dogpile::BytesItem> items;
  for (int i = 0; i < 100; ++i) items.emplace_back("nc:bound:" + std::to_string(i), value);
  const auto inv = b.near_cache_stats().invalidations;
  b.set_multi(items);
  // Our own write's invalidations come back too; a fill that meets one is (rightly) refused.
  REQUIRE(poll_until([&] { return b.near_cache_stats().invalidations >= inv + 100; }));
  for (const auto& [k, v] : items) REQUIRE(b.get(k) == value);
  const auto st = b.near_cache_stats();
  CHECK(st.fills == 100);
  CHECK(st.bytes <= 4096);
  CHECK(st.entries > 0);
  CHECK(st.entries < 100);
}

TEST_CASE("redis near cache: the server's TTL is honoured locally", "[redis][near]") {
  // Redis announces an expiry only when its (sampled) active expiry deletes the key, tens of
  // milliseconds late: L1 must not serve the value past the TTL it read with the value.
  auto b = near_backend();
  b->set("nc:ttl:warm", "w");
  REQUIRE(wait_serving(*b, "nc:ttl:warm"));
  cli({"SET", "nc:ttl", "v", "PX", "150"});
  const auto expiry = Clock::now() + 150ms;  // the server's expiry is before this
  REQUIRE(b->get("nc:ttl") == "v");
  REQUIRE(wait_serving(*b, "nc:ttl"));
  int late = 0;
  int late_l1 = 0;
  double worst_ms = 0;
  while (Clock::now() < expiry + 150ms) {
    const auto start = Clock::now();
    const auto hits = b->near_cache_stats().l1_hits;
    if (b->get("nc:ttl").has_value() && start > expiry + 2ms) {
      ++late;
      if (b->near_cache_stats().l1_hits > hits) ++late_l1;
      worst_ms = std::chrono::duration<double, std::milli>(start - expiry).count();
    }
  }
  INFO("late reads from L1: " << late_l1 << ", latest " << worst_ms << " ms past the expiry");
  CHECK(late == 0);
}

TEST_CASE("redis near cache: a server restart empties L1 and reads are right after it",
          "[redis][near]") {
  auto b = near_backend();
  b->set("nc:restart", "old");
  REQUIRE(wait_serving(*b, "nc:restart"));
  near_server().restart();  // no persistence: the key is gone
  REQUIRE(poll_until([&] { return b->near_cache_stats().tracking; }));
  CHECK_THAT(b->near_cache_stats().last_flush_reason,
             Catch::Matchers::Contains("lost the invalidation connection"));
  REQUIRE(poll_until([&] {
    try {
      return !b->get("nc:restart").has_value();
    } catch (const dogpile::BackendError&) {
      return false;  // the pool's first call after a restart may meet a dead connection
    }
  }));
  b->set("nc:restart", "new");
  REQUIRE(wait_serving(*b, "nc:restart"));
  CHECK(b->get("nc:restart") == "new");
}

TEST_CASE("redis near cache: arguments", "[redis][near]") {
  auto b =
      RedisBackend::from_arguments({{"host", "127.0.0.1"},
                                    {"port", near_server().port()},
                                    {"near_cache", {{"max_bytes", 4096}, {"max_staleness", 0.5}}}});
  auto& rb = dynamic_cast<RedisBackend&>(*b);
  CHECK(rb.options().near_cache.max_bytes == 4096);
  CHECK(rb.options().near_cache.max_staleness == 500ms);
  CHECK(rb.near_cache_stats().enabled);
  CHECK_FALSE(near_backend(1000ms)->near_cache_stats().l1_hits);
  auto off = RedisBackend::from_arguments({{"host", "127.0.0.1"}, {"port", near_server().port()}});
  CHECK_FALSE(dynamic_cast<RedisBackend&>(*off).near_cache_stats().enabled);
  CHECK_THROWS_AS(RedisBackend::from_arguments({{"near_cache", {{"max_bytes", -1}}}}),
                  dogpile::ValidationError);
  CHECK_THROWS_AS(RedisBackend::from_arguments({{"near_cache", {{"size", 10}}}}),
                  dogpile::ValidationError);
  CHECK_THROWS_AS(RedisBackend::from_arguments({{"near_cache", 5}}), dogpile::ValidationError);
  // prefixes: a list of strings, none empty, none starting another (nor the lock keys' of
  // another: lock_prefix + p is tracked too).
  auto pb = RedisBackend::from_arguments(
      {{"host", "127.0.0.1"},
       {"port", near_server().port()},
       {"near_cache", {{"max_bytes", 4096}, {"prefixes", {"app:", "web:"}}}}});
  CHECK(dynamic_cast<RedisBackend&>(*pb).options().near_cache.prefixes ==
        std::vector<std::string>{"app:", "web:"});
  const auto refused = [](const nlohmann::json& prefixes) {
    try {
      (void)RedisBackend::from_arguments(
          {{"near_cache", {{"max_bytes", 4096}, {"prefixes", prefixes}}}});
    } catch (const dogpile::ValidationError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(refused("app:"), Catch::Contains("must be a list of key prefixes"));
  CHECK_THAT(refused({"app:", 3}), Catch::Contains("must be a list of key prefixes"));
  CHECK_THAT(refused({""}), Catch::Contains("empty prefix"));
  CHECK_THAT(refused({"app:", "app:user:"}),
             Catch::Contains("overlapping prefixes 'app:' and 'app:user:'"));
  CHECK_THAT(refused({"x:", "_lockx:"}), Catch::Contains("the lock keys of 'x:'"));
  // The sentinel and cluster backends take it too (their tests: test_redis_sentinel and
  // test_redis_cluster [near]); nothing listens on port 1, the reader just retries.
  auto sb = dogpile::RedisSentinelBackend::from_arguments({{"sentinels", {{"127.0.0.1", 1}}},
                                                           {"socket_connect_timeout", 0.05},
                                                           {"near_cache", {{"max_bytes", 10}}}});
  CHECK(dynamic_cast<dogpile::RedisSentinelBackend&>(*sb).options().near_cache.max_bytes == 10);
  auto cb = dogpile::RedisClusterBackend::from_arguments(
      {{"startup_nodes", {{"127.0.0.1", 1}}},
       {"near_cache", {{"max_bytes", 10}, {"max_staleness", 0.5}}}});
  CHECK(dynamic_cast<dogpile::RedisClusterBackend&>(*cb).options().near_cache.max_staleness ==
        500ms);
  CHECK_THROWS_AS(dogpile::RedisClusterBackend::from_arguments(
                      {{"startup_nodes", {{"127.0.0.1", 1}}}, {"near_cache", 5}}),
                  dogpile::ValidationError);
}

TEST_CASE("redis near cache: staleness checker, 2 reader processes x 2 threads under faults",
          "[redis][near][staleness]") {
  // One writer writes increasing versions; readers in other processes read through L1 while
  // the faults of the design are injected one after another (subscriber killed, anchor killed,
  // server paused, partition, FLUSHALL, pub/sub output-buffer kill): no read may return a
  // version overwritten more than max_staleness before it began (support/near_cache.hpp).
  constexpr auto staleness = 200ms;
  auto writer = std::make_shared<RedisBackend>(RedisOptions{.host = "127.0.0.1",
                                                            .port = near_server().port(),
                                                            .socket_timeout = 1000ms,
                                                            .socket_connect_timeout = 500ms});
  // The readers reach the server through a proxy the test can freeze (a partition the writer,
  // connected directly, does not see).
  // The reader processes are forked before the proxy's thread starts: a child forked while
  // another thread holds the allocator's lock (ASan's is not fork-safe) deadlocks in its first
  // malloc (seen as readers still running 10 s after stop). They learn the proxy's port
  // through shared memory.
  void* shared = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(shared != MAP_FAILED);
  auto* proxy_port = new (shared) std::atomic<int>(0);
  dogpile::test::StalenessChecker checker("nc:staleness", staleness);
  checker.start_readers([&] {
    const auto until = Clock::now() + 10s;
    while (proxy_port->load() == 0 && Clock::now() < until) std::this_thread::sleep_for(1ms);
    return near_backend(staleness, 500ms, proxy_port->load());
  });
  dogpile::test::FreezableProxy proxy(near_server().port());
  proxy_port->store(proxy.port());
  checker.start_writer([&](const std::string& v) { writer->set(checker.key(), v); });

  // The faults, one after another, each given time to heal.
  auto settle = [] { std::this_thread::sleep_for(300ms); };
  settle();
  cli({"CLIENT", "KILL", "TYPE", "pubsub"});  // every reader's invalidation subscriber
  settle();
  {  // every reader's anchor (the clients with the tracking flag)
    std::istringstream lines(cli({"CLIENT", "LIST"}));
    for (std::string line; std::getline(lines, line);) {
      const auto f = line.find(" flags=");
      if (f == std::string::npos) continue;
      const std::string flags = line.substr(f + 7, line.find(' ', f + 7) - f - 7);
      if (flags.find('t') != std::string::npos) {
        cli({"CLIENT", "KILL", "ID", line.substr(3, line.find(' ') - 3)});
      }
    }
  }
  settle();
  near_server().pause();  // longer than max_staleness
  std::this_thread::sleep_for(2 * staleness);
  near_server().resume();
  settle();
  // A partition between the readers and the server while the writer goes on: no invalidation
  // and no fence reaches the readers, so L1 must stop serving within max_staleness.
  proxy.freeze();
  std::this_thread::sleep_for(2 * staleness);
  proxy.thaw();
  settle();
  cli({"FLUSHALL"});
  settle();
  // A subscriber whose output buffer overflows is disconnected by the server: with a 1-byte
  // limit, the invalidation of a key with a 40 KB name (more than a client's static buffer)
  // overflows every reader's subscriber.
  cli({"CONFIG", "SET", "client-output-buffer-limit", "pubsub 1 1 0"});
  cli({"SET", std::string(40'000, 'k'), "x"});
  std::this_thread::sleep_for(50ms);
  cli({"CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60"});
  CHECK_THAT(near_server().process().log_tail(50), Catch::Contains("output buffer limits"));
  settle();

  const auto seen = checker.stop();
  INFO(seen.describe());
  CHECK(seen.reader_failures == 0);
  CHECK(seen.versions > 500);
  CHECK(seen.l1_hits > 1000);  // L1 really served reads between the faults
  CHECK(seen.violations == 0);
  ::munmap(shared, sizeof(std::atomic<int>));
}

// ---- decoded values kept in L1 (a region's hit is not decoded again) ----------------------

namespace {

dogpile::CacheRegion near_region(std::shared_ptr<dogpile::CacheBackend> b,
                                 dogpile::CodecOptions codec = {}) {
  auto r = dogpile::make_region({.codec = codec});
  r.configure(std::move(b));
  return r;
}

// Reads `key` through `r` until the backend's L1 served one read.
template <class T>
bool region_l1_serves(const dogpile::CacheRegion& r, RedisBackend& b, const std::string& key) {
  return poll_until([&] {
    const auto before = b.near_cache_stats().l1_hits;
    (void)r.get<T>(key);
    return b.near_cache_stats().l1_hits > before;
  });
}

}  // namespace

TEST_CASE("redis near cache: a region hit returns the kept decoded value, and a write drops it",
          "[redis][near]") {
  auto b = near_backend();
  auto region = near_region(b);
  // Another client, as another process would be (no near cache).
  auto other = near_region(std::make_shared<RedisBackend>(
      RedisOptions{.host = "127.0.0.1", .port = near_server().port()}));
  region.set("nc:decoded", NearDecodeCounted{1});
  REQUIRE(region_l1_serves<NearDecodeCounted>(region, *b, "nc:decoded"));
  const int decodes = NearDecodeCounted::decodes.load();
  const auto hits = b->near_cache_stats().l1_hits;
  for (int i = 0; i < 100; ++i) REQUIRE(region.get<NearDecodeCounted>("nc:decoded")->v == 1);
  CHECK(b->near_cache_stats().l1_hits >= hits + 100);
  CHECK(NearDecodeCounted::decodes.load() - decodes <= 1);  // at most the first hit decodes
  // A write elsewhere drops the decoded copy with its bytes.
  other.set("nc:decoded", NearDecodeCounted{2});
  REQUIRE(poll_until([&] { return region.get<NearDecodeCounted>("nc:decoded")->v == 2; }));
  REQUIRE(region_l1_serves<NearDecodeCounted>(region, *b, "nc:decoded"));
  for (int i = 0; i < 20; ++i) REQUIRE(region.get<NearDecodeCounted>("nc:decoded")->v == 2);
  // This process's own write is read back at once, decoded copy or not.
  region.set("nc:decoded", NearDecodeCounted{3});
  CHECK(region.get<NearDecodeCounted>("nc:decoded")->v == 3);
  // So is an erase.
  region.erase("nc:decoded");
  CHECK_FALSE(region.get<NearDecodeCounted>("nc:decoded").has_value());
}

TEST_CASE("redis near cache: regions of other types or codecs never get each other's decoded copy",
          "[redis][near]") {
  auto b = near_backend();
  auto ints = near_region(b);
  auto doubles = near_region(b);
  auto json_strings = near_region(b, {.string_codec = dogpile::StringCodec::json});
  auto raw_strings = near_region(b);
  ints.set("nc:typed", 42);
  REQUIRE(region_l1_serves<int>(ints, *b, "nc:typed"));
  for (int round = 0; round < 3; ++round) {
    // The same bytes, decoded by each region as its own type: an int kept by one is never
    // handed to the other as a double (nor the other way round).
    CHECK(ints.get<int>("nc:typed") == 42);
    CHECK(ints.get<int>("nc:typed") == 42);
    CHECK(doubles.get<double>("nc:typed") == 42.0);
    CHECK(doubles.get<double>("nc:typed") == 42.0);
  }
  json_strings.set("nc:typed-s", std::string("abc"));
  REQUIRE(region_l1_serves<std::string>(json_strings, *b, "nc:typed-s"));
  for (int round = 0; round < 3; ++round) {
    // One type, two string codecs: the JSON region reads the text, the raw region the bytes.
    CHECK(json_strings.get<std::string>("nc:typed-s") == "abc");
    CHECK(json_strings.get<std::string>("nc:typed-s") == "abc");
    CHECK(raw_strings.get<std::string>("nc:typed-s") == "\"abc\"");
    CHECK(raw_strings.get<std::string>("nc:typed-s") == "\"abc\"");
  }
}

TEST_CASE("redis near cache: a lost subscriber drops the decoded copies too", "[redis][near]") {
  auto b = near_backend();
  auto region = near_region(b);
  region.set("nc:decoded-kill", NearDecodeCounted{1});
  REQUIRE(region_l1_serves<NearDecodeCounted>(region, *b, "nc:decoded-kill"));
  REQUIRE(region.get<NearDecodeCounted>("nc:decoded-kill")->v == 1);  // decoded copy kept
  const auto flushes = b->near_cache_stats().flushes;
  cli({"CLIENT", "KILL", "TYPE", "pubsub"});
  // No subscriber listens: this write's invalidation is lost; only the flush can drop the copy.
  near_region(std::make_shared<RedisBackend>(
                  RedisOptions{.host = "127.0.0.1", .port = near_server().port()}))
      .set("nc:decoded-kill", NearDecodeCounted{2});
  REQUIRE(poll_until([&] { return b->near_cache_stats().flushes > flushes; }, 1000ms));
  for (int i = 0; i < 20; ++i) REQUIRE(region.get<NearDecodeCounted>("nc:decoded-kill")->v == 2);
  REQUIRE(region_l1_serves<NearDecodeCounted>(region, *b, "nc:decoded-kill"));
  CHECK(region.get<NearDecodeCounted>("nc:decoded-kill")->v == 2);
}

TEST_CASE("redis near cache: a lock waiter is woken by the lock key's invalidation, not its poll",
          "[redis][near]") {
  RedisOptions o = near_options();
  // Limited to prefixes, the lock keys under them are tracked too.
  const bool limited = GENERATE(false, true);
  if (limited) o.near_cache.prefixes = {"nc:"};
  o.distributed_lock = true;
  o.lock_sleep = 10s;  // the naps grow to 10 s: only a wake-up ends one early
  auto b = std::make_shared<RedisBackend>(o);
  auto region = near_region(b);
  // The other process: it writes the value; the lock is held and released by redis-cli, as a
  // Python dogpile.cache holder does it (a DEL, no release notice published).
  auto writer = near_region(std::make_shared<RedisBackend>(
      RedisOptions{.host = "127.0.0.1", .port = near_server().port()}));
  const std::string key = limited ? "nc:lock-wake-limited" : "nc:lock-wake";
  b->set("nc:lock-wake-warm", "x");
  REQUIRE(wait_serving(*b, "nc:lock-wake-warm"));  // tracking is up
  cli({"SET", b->lock_key(key), "python-holder", "PX", "30000"});
  cli({"CONFIG", "RESETSTAT"});
  std::atomic<int> creations{0};
  std::atomic<bool> done{false};
  std::string got;
  std::thread waiter([&] {
    got = region.get_or_create(key, [&] {
      ++creations;
      return std::string("mine");
    });
    done = true;
  });
  // Eleven failed SET NX attempts: the waiter's next nap is at least 512 ms (the backoff
  // doubles from 1 ms, each nap jittered to 0.5..1 of it), of which redis-cli's polling here
  // may take a few tens.
  const bool waiting = poll_until(
      [&] {
        return commandstat_calls(cli({"INFO", "commandstats"}), "set") >= 11;
      },
      3000ms);
  writer.set(key, std::string("theirs"));
  cli({"DEL", b->lock_key(key)});
  const auto released = Clock::now();
  const bool returned = poll_until([&] { return done.load(); }, 3000ms);
  const auto took = Clock::now() - released;
  waiter.join();
  REQUIRE(waiting);
  REQUIRE(returned);
  CHECK(got == "theirs");
  CHECK(creations.load() == 0);
  CHECK(took < 150ms);
}

TEST_CASE("redis near cache: the read after a lock acquisition comes from the server, not L1",
          "[redis][near]") {
  RedisOptions o = near_options();
  o.distributed_lock = true;
  auto b = std::make_shared<RedisBackend>(o);
  auto reader = dogpile::make_region({.stale_policy = dogpile::block});
  reader.configure(b, {.expiration_time = 1s});
  const auto plain = [](int db) {
    return std::make_shared<RedisBackend>(
        RedisOptions{.host = "127.0.0.1", .port = near_server().port(), .db = db});
  };
  auto old_writer =
      dogpile::make_region({.clock = [] { return std::chrono::system_clock::now() - 10s; }});
  old_writer.configure(plain(0));
  auto new_writer = near_region(plain(1));
  const std::string key = "nc:lock-read";
  const std::string lock = b->lock_key(key);
  old_writer.set(key, std::string("old"));  // expired for `reader` (made 10 s ago)
  REQUIRE(wait_serving(*b, key));           // and held in L1
  // The previous holder's value reaches the server with no invalidation this process hears
  // before it acquires the lock (here never: SWAPDB sends none; in the field, the message is
  // merely late), so L1 still holds the old value when the waiter gets the lock.
  new_writer.set(key, std::string("new"));
  cli({"SET", lock, "other-holder", "PX", "30000"});
  cli({"-n", "1", "SET", lock, "other-holder", "PX", "30000"});
  cli({"CONFIG", "RESETSTAT"});
  std::atomic<int> creations{0};
  std::string got;
  std::thread waiter([&] {
    got = reader.get_or_create(key, [&] {
      ++creations;
      return std::string("mine");
    });
  });
  // The waiter read the expired value and found the lock held.
  const bool waiting = poll_until(
      [&] {
        return commandstat_calls(cli({"INFO", "commandstats"}), "set") >= 1;
      },
      3000ms);
  cli({"SWAPDB", "0", "1"});  // "new" and the held lock now in database 0
  cli({"DEL", lock});
  waiter.join();
  cli({"SWAPDB", "0", "1"});
  cli({"-n", "1", "DEL", key, lock});
  REQUIRE(waiting);
  CHECK(got == "new");
  CHECK(creations.load() == 0);
}
