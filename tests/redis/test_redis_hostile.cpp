// The `redis` backend against fake servers that misbehave on purpose (support/fake_server.hpp):
// every call ends within socket_timeout with a dogpile exception, and never hangs, spins or
// takes unbounded memory, whatever bytes come back.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "backends/conformance.hpp"
#include "dogpile/backends/redis.hpp"
#include "dogpile/dogpile.hpp"
#include "support/fake_server.hpp"

using namespace std::chrono_literals;
using dogpile::BackendError;
using dogpile::RedisBackend;
using dogpile::RedisOptions;
using dogpile::TimeoutError;
using dogpile::test::backend_error;
using dogpile::test::FakeConnection;
using dogpile::test::FakeServer;
using dogpile::test::ms_of;

namespace {

RedisOptions fake_options(const FakeServer& s) {
  return RedisOptions{.host = "127.0.0.1",
                      .port = s.port(),
                      .socket_timeout = 500ms,
                      .socket_connect_timeout = 500ms,
                      .pool_size = 1};
}

}  // namespace

TEST_CASE("redis hostile: a reply trickled a byte per 0.2 s ends at socket_timeout",
          "[redis][hostile]") {
  FakeServer fake([](FakeConnection& c) {
    while (!c.read_some().empty()) {
      if (!c.trickle("$10\r\n0123456789\r\n", 200ms)) return;
    }
  });
  RedisBackend b(fake_options(fake));
  // An idle timeout never fires here (a byte every 0.2 s < 0.5 s): the deadline does.
  const auto ms = ms_of([&] { CHECK_THROWS_AS(b.get("k"), TimeoutError); });
  CHECK(ms >= 450);
  CHECK(ms < 1500);

  // Under treat_as_miss the region reads a miss, within the deadline too.
  dogpile_conformance::Region r(std::make_shared<RedisBackend>(fake_options(fake)), {},
                                {.on_backend_error = dogpile::treat_as_miss()});
  const auto ms2 = ms_of([&] { CHECK_FALSE(r.region.get<std::string>("k").has_value()); });
  CHECK(ms2 < 1500);
}

TEST_CASE("redis hostile: an endless error line is refused after 64 KiB, not read forever",
          "[redis][hostile]") {
  FakeServer fake([](FakeConnection& c) {
    if (c.read_some().empty()) return;
    (void)c.send("-ERR ");
    c.stream_forever(std::string(64 * 1024, 'E'));  // 100 MB and more, no line end
  });
  RedisBackend b(fake_options(fake));
  std::string what;
  const auto ms = ms_of([&] { what = backend_error([&] { b.get("k"); }); });
  CHECK_THAT(what, Catch::Contains("reply line longer than 65536 bytes"));
  CHECK(ms < 1000);
}

TEST_CASE("redis hostile: a 2^62-byte bulk is refused at max_value_bytes, before the memory",
          "[redis][hostile]") {
  FakeServer fake([](FakeConnection& c) {
    if (c.read_some().empty()) return;
    (void)c.send("$4611686018427387904\r\n");
    c.stream_forever(std::string(64 * 1024, 'x'));
  });
  auto o = fake_options(fake);
  o.max_value_bytes = 1 << 20;
  RedisBackend b(o);
  std::string what;
  const auto ms = ms_of([&] { what = backend_error([&] { b.get("k"); }); });
  CHECK_THAT(what, Catch::Contains("larger than max_value_bytes (1048576"));
  CHECK(ms < 1000);
}

TEST_CASE("redis hostile: an array of 2^31-1 elements is refused before hiredis allocates it",
          "[redis][hostile]") {
  FakeServer fake([](FakeConnection& c) {
    if (c.read_some().empty()) return;
    (void)c.send("*2147483647\r\n");
    c.hold();
  });
  auto o = fake_options(fake);
  o.max_value_bytes = 1 << 20;
  RedisBackend b(o);
  CHECK_THAT(backend_error([&] { b.get("k"); }), Catch::Contains("larger than max_value_bytes"));
}

TEST_CASE("redis hostile: max_value_bytes allows a value up to it, per key of an MGET",
          "[redis][hostile]") {
  const std::string value(300 * 1024, 'v');
  FakeServer fake([&](FakeConnection& c) {
    for (std::string req; !(req = c.read_some()).empty();) {
      if (req.find("MGET") != std::string::npos) {
        std::string reply = "*3\r\n";
        for (int i = 0; i < 3; ++i)
          reply += "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
        if (!c.send(reply)) return;
      } else if (!c.send("$" + std::to_string(value.size()) + "\r\n" + value + "\r\n")) {
        return;
      }
    }
  });
  auto o = fake_options(fake);
  o.max_value_bytes = 400 * 1024;  // one value fits; three (900 KiB) fit an MGET of three keys
  RedisBackend b(o);
  CHECK(b.get("k") == value);
  const std::vector<std::string> keys{"a", "b", "c"};
  const auto got = b.get_multi(keys);
  REQUIRE(got.size() == 3);
  CHECK(got[2] == value);
  o.max_value_bytes = 200 * 1024;
  RedisBackend small(o);
  CHECK_THAT(backend_error([&] { small.get("k"); }), Catch::Contains("max_value_bytes"));
}

TEST_CASE("redis hostile: MGET answered with odd shapes: strings are values, the rest misses",
          "[redis][hostile]") {
  // Replies are built by hiredis's reader straight into dogpile's reply tree (nested arrays in
  // place): every shape a server may send is read, a reply broken half-way is an error (the
  // partial tree freed), and the next call works on a fresh connection.
  std::atomic<int> n{0};
  const std::string nested7 = "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n$1\r\nz\r\n";
  const std::vector<std::string> replies{
      // a, 7, [x, [nil]], nil, +OK, an array nested 7 deep
      "*6\r\n$1\r\na\r\n:7\r\n*2\r\n$1\r\nx\r\n*1\r\n$-1\r\n$-1\r\n+OK\r\n" + nested7,
      "*3\r\n$1\r\np\r\n$0\r\n\r\n$1\r\nr\r\n",  // more values than keys: the extra ignored
      "*1\r\n$1\r\nq\r\n",                       // fewer: the rest are misses
      "*3\r\n$1\r\na\r\n*2\r\n:1\r\n!bad\r\n",   // broken inside a nested array
      "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",  // deeper than hiredis reads
      "-ERR no such thing\r\n",
      "+OK\r\n",  // not an array: every key misses
  };
  FakeServer fake([&](FakeConnection& c) {
    while (!c.read_some().empty()) {
      const auto i = static_cast<std::size_t>(n.fetch_add(1));
      if (!c.send(i < replies.size() ? replies[i] : "*0\r\n")) return;
    }
  });
  RedisBackend b(fake_options(fake));
  const std::vector<std::string> six{"k1", "k2", "k3", "k4", "k5", "k6"};
  const std::vector<std::optional<std::string>> first{"a",          std::nullopt, std::nullopt,
                                                      std::nullopt, std::nullopt, std::nullopt};
  CHECK(b.get_multi(six) == first);
  const std::vector<std::string> two{"k1", "k2"};
  CHECK(b.get_multi(two) == std::vector<std::optional<std::string>>{"p", ""});
  CHECK(b.get_multi(two) == std::vector<std::optional<std::string>>{"q", std::nullopt});
  CHECK_THAT(backend_error([&] { b.get_multi(two); }), Catch::Contains("protocol error"));
  CHECK_THAT(backend_error([&] { b.get_multi(two); }), Catch::Contains("protocol error"));
  CHECK_THAT(backend_error([&] { b.get_multi(two); }), Catch::Contains("no such thing"));
  CHECK(b.get_multi(two) == std::vector<std::optional<std::string>>(2));
  CHECK(fake.connections() == 3);  // one per protocol error, never reused after one
}

TEST_CASE("redis hostile: a protocol error closes the connection; it is never reused",
          "[redis][hostile]") {
  // The first connection answers its second command with garbage; later ones answer well.
  std::atomic<int> accepted{0};
  FakeServer fake([&](FakeConnection& c) {
    const bool first = accepted.fetch_add(1) == 0;
    for (int n = 0; !c.read_some().empty(); ++n) {
      if (!c.send(first && n == 1 ? "!garbage\r\n" : "$2\r\nok\r\n")) return;
    }
  });
  RedisBackend b(fake_options(fake));
  CHECK(b.get("k") == "ok");
  // Not retried on a fresh connection (the command may have run): a BackendError.
  CHECK_THAT(backend_error([&] { b.get("k"); }), Catch::Contains("protocol error"));
  CHECK(b.get("k") == "ok");
  CHECK(fake.connections() == 2);
}

TEST_CASE("redis hostile: a lock SET NX answered :1 is a BackendError, not a wait forever",
          "[redis][hostile][lock]") {
  FakeServer fake([](FakeConnection& c) {
    for (std::string req; !(req = c.read_some()).empty();) {
      const bool lock_set = req.find("NX") != std::string::npos;
      if (!c.send(lock_set ? ":1\r\n" : "$-1\r\n")) return;
    }
  });
  auto o = fake_options(fake);
  o.distributed_lock = true;
  o.lock_blocking_timeout = 3s;  // without the fix: a TimeoutError after 3 s, not a hang
  dogpile_conformance::Region r(std::make_shared<RedisBackend>(o));
  std::string what;
  const auto ms = ms_of([&] {
    what = backend_error([&] { r.region.get_or_create("k", [] { return std::string("v"); }); });
  });
  CHECK_THAT(what, Catch::Contains("unexpected integer reply '1'"));
  CHECK(ms < 1000);
}

TEST_CASE("redis: max_value_bytes is an argument of every redis backend", "[redis][args]") {
  auto b = RedisBackend::from_arguments({{"host", "127.0.0.1"}, {"max_value_bytes", 1024}});
  CHECK(dynamic_cast<const RedisBackend&>(*b).options().max_value_bytes == 1024);
  CHECK(RedisOptions{}.max_value_bytes == std::size_t{64} << 20);
  CHECK_THROWS_AS(RedisBackend::from_arguments({{"max_value_bytes", 0}}), dogpile::ValidationError);
  CHECK(dogpile::RedisSentinelOptions{}.max_value_bytes == std::size_t{64} << 20);
  CHECK(dogpile::RedisClusterOptions{}.max_value_bytes == std::size_t{64} << 20);
}

TEST_CASE("redis hostile: a server that closed the connection is an error, not a SIGPIPE",
          "[redis][hostile]") {
  // The server answers one command, then closes the connection (a FIN: the pooled connection
  // is half-closed, as after a server restart or CLIENT KILL). The next command is 16 MiB: the
  // first write is taken, the server answers it with a reset, and in that state (CLOSE_WAIT) the
  // kernel reports EPIPE — with write() a SIGPIPE, which kills this process (nothing here
  // ignores it). The backend's send(MSG_NOSIGNAL) gets the error instead.
  FakeServer fake([](FakeConnection& c) {
    if (c.read_some().empty()) return;
    (void)c.send("$-1\r\n");
  });
  RedisBackend b(fake_options(fake));
  CHECK_FALSE(b.get("k").has_value());
  const auto until = std::chrono::steady_clock::now() + 2s;
  while (fake.closed() < 1 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  REQUIRE(fake.closed() == 1);
  const std::string big(std::size_t{16} << 20, 'v');
  CHECK_THROWS_AS(b.set("k", big), BackendError);
}
