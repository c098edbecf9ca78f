// Errors a program can branch on (docs/backends.md, "Errors"): each failure of the redis
// backends has its own BackendError subclass, and the region adds its name, the operation and
// the key. Real servers killed or paused (SIGSTOP); fake servers for error replies.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/conformance.hpp"
#include "dogpile/backends/redis.hpp"
#include "dogpile/dogpile.hpp"
#include "support/captured_log.hpp"
#include "support/fake_server.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;

namespace {

dogpile::RedisOptions errors_options(int port) {
  return dogpile::RedisOptions{.host = "127.0.0.1",
                               .port = port,
                               .socket_timeout = 300ms,
                               .socket_connect_timeout = 300ms,
                               .pool_size = 2};
}

// A fake server that answers every command with the error line `reply`.
dogpile::test::FakeServer error_server(std::string reply) {
  return dogpile::test::FakeServer([reply](dogpile::test::FakeConnection& c) {
    while (!c.read_some().empty()) {
      if (!c.send(reply)) return;
    }
  });
}

}  // namespace

TEST_CASE("redis errors: a killed server is a ConnectionError naming region, operation and key",
          "[redis][errors]") {
  dogpile::test::RedisServer server;
  std::vector<std::exception_ptr> seen;
  std::vector<std::string> keys;
  dogpile_conformance::Region r(
      std::make_shared<dogpile::RedisBackend>(errors_options(server.port())), {},
      {.name = "users", .listener = [&](const dogpile::RegionEvent& e) {
         if (e.kind != dogpile::RegionEvent::Kind::backend_error) return;
         seen.push_back(e.exception);
         keys.emplace_back(e.key);
       }});
  r.region.set("user:1", std::string("ann"));
  server.kill();
  try {
    (void)r.region.get<std::string>("user:1");
    FAIL("no exception");
  } catch (const dogpile::ConnectionError& e) {
    CHECK(e.region() == "users");
    CHECK(e.operation() == "get");
    CHECK(e.key() == "user:1");
    CHECK_THAT(e.what(), Catch::StartsWith("region 'users': get key 'user:1': "));
    CHECK_THAT(e.detail(), Catch::Contains("redis at 127.0.0.1:"));
  }
  CHECK_THROWS_WITH(r.region.get_multi<std::string>({"a", "b", "c"}),
                    Catch::StartsWith("region 'users': get_multi of 3 keys: "));
  CHECK_THROWS_AS(r.region.erase("user:1"), dogpile::ConnectionError);
  // The listener got the exception itself: a program can keep it and branch on its type.
  REQUIRE(seen.size() == 3);
  CHECK(keys[0] == "user:1");
  CHECK(keys[1].empty());
  REQUIRE(seen[0] != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(seen[0]), dogpile::ConnectionError);
  CHECK_THROWS_WITH(std::rethrow_exception(seen[2]),
                    Catch::StartsWith("region 'users': delete key 'user:1': "));
}

TEST_CASE("redis errors: a paused server (SIGSTOP) is a TimeoutError; an unnamed region says so",
          "[redis][errors]") {
  dogpile::test::RedisServer server;
  dogpile_conformance::Region r(
      std::make_shared<dogpile::RedisBackend>(errors_options(server.port())));
  r.region.set("k", std::string("v"));
  server.pause();
  std::string what;
  const auto ms = dogpile::test::ms_of([&] {
    try {
      r.region.set("k", std::string("w"));
    } catch (const dogpile::TimeoutError& e) {
      what = e.what();
    }
  });
  server.resume();
  CHECK_THAT(what, Catch::StartsWith("an unnamed region: set key 'k': "));
  CHECK(ms < 1500);
}

TEST_CASE("redis errors: an error reply is a ReplyError, CLUSTERDOWN a ClusterDownError",
          "[redis][errors]") {
  {
    auto fake =
        error_server("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    dogpile::RedisBackend b(errors_options(fake.port()));
    CHECK_THROWS_AS(b.get("k"), dogpile::ReplyError);
    dogpile_conformance::Region r(
        std::make_shared<dogpile::RedisBackend>(errors_options(fake.port())), {},
        {.name = "typed"});
    CHECK_THROWS_WITH(
        r.region.set("k", std::string("v")),
        Catch::StartsWith("region 'typed': set key 'k': ") && Catch::Contains("WRONGTYPE"));
  }
  {
    auto fake = error_server("-CLUSTERDOWN The cluster is down\r\n");
    dogpile::RedisBackend b(errors_options(fake.port()));
    CHECK_THROWS_AS(b.get("k"), dogpile::ClusterDownError);
    CHECK_THROWS_AS(b.set("k", "v"), dogpile::ClusterDownError);
  }
  {
    auto fake = error_server("-MASTERDOWN Link with MASTER is down\r\n");
    dogpile::RedisBackend b(errors_options(fake.port()));
    CHECK_THROWS_AS(b.get("k"), dogpile::ClusterDownError);
  }
  // Each is a BackendError: code that catches only that keeps working.
  auto fake = error_server("-ERR unknown command\r\n");
  dogpile::RedisBackend b(errors_options(fake.port()));
  CHECK_THROWS_AS(b.get("k"), dogpile::BackendError);
}

TEST_CASE("redis errors: ignored Python arguments are logged once, by name",
          "[redis][errors][log]") {
  dogpile::test::CapturedLog log;
  (void)dogpile::RedisBackend::from_arguments(
      {{"host", "127.0.0.1"},
       {"socket_keepalive", true},
       {"thread_local_lock", false},
       {"connection_kwargs", {{"password", "x"}, {"health_check_interval", 30}}}});
  const auto lines = log.containing("ignored");
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("socket_keepalive") &&
                           Catch::Contains("thread_local_lock") &&
                           Catch::Contains("connection_kwargs.health_check_interval") &&
                           !Catch::Contains("password"));
  // A configuration without them logs nothing.
  (void)dogpile::RedisBackend::from_arguments({{"host", "127.0.0.1"}});
  CHECK(log.containing("ignored").size() == 1);
}

TEST_CASE("redis errors: a reconnect after a lost connection is logged", "[redis][errors][log]") {
  dogpile::test::CapturedLog log;
  dogpile::test::RedisServer server;
  dogpile::RedisBackend b(errors_options(server.port()));
  b.set("k", "v");
  server.kill();
  CHECK_THROWS_AS(b.get("k"), dogpile::ConnectionError);
  CHECK(log.containing("reconnected").empty());
  server.restart();
  CHECK_FALSE(b.get("k").has_value());  // a fresh server: the value is gone, the call works
  CHECK(log.containing("reconnected").size() == 1);
}

TEST_CASE(
    "redis errors: treat_as_miss with the server stopped -> one creation per key, not one "
    "per waiting thread",
    "[redis][errors][stampede]") {
  dogpile::test::RedisServer server;
  dogpile_conformance::Region r(
      std::make_shared<dogpile::RedisBackend>(errors_options(server.port())), {},
      {.name = "failopen", .on_backend_error = dogpile::treat_as_miss()});
  server.kill();
  constexpr int kThreads = 8;
  std::atomic<int> creations{0};
  std::vector<std::string> got(kThreads);
  dogpile_conformance::run_threads(kThreads, [&](int i) {
    got[static_cast<std::size_t>(i)] = r.region.get_or_create("report", [&] {
      // Hold the creation until every thread has read (and failed to read) the backend, so the
      // others are waiting on the key's lock when it ends.
      const auto until = std::chrono::steady_clock::now() + 2s;
      while (r.region.stats().backend_errors < kThreads &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(1ms);
      }
      std::this_thread::sleep_for(50ms);
      return "made " + std::to_string(creations.fetch_add(1) + 1);
    });
  });
  CHECK(creations.load() == 1);
  for (const auto& g : got) CHECK(g == "made 1");
}
