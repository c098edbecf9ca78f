// The `redis_sentinel` backend against a master, a replica and three sentinels the harness
// starts: conformance; a SENTINEL FAILOVER under a writer every 2 ms that loses no acknowledged
// write; the failover hold's edges, driven by a sentinel played by the test (FakeSentinel, on
// support/fake_server.hpp); the near cache, and its staleness checker across a failover.
#include <strings.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backends/conformance.hpp"
#include "dogpile/backends/redis.hpp"
#include "support/captured_log.hpp"
#include "support/fake_server.hpp"
#include "support/near_cache.hpp"
#include "support/servers.hpp"
#include "support/tls_certs.hpp"

using namespace std::chrono_literals;
using dogpile::RedisSentinelBackend;
using dogpile::RedisSentinelOptions;
using dogpile::test::RedisSentinelSet;
using dogpile::test::tls_error;
using dogpile_conformance::unique_key;

namespace {

// Three sentinels: only the one leading a failover publishes its progress, the others learn
// the outcome from its hello messages up to 2 s later. Each serves TLS too, on another port.
RedisSentinelSet& sentinels() {
  static RedisSentinelSet s(3, 1000ms,
                            dogpile::test::RedisServerOptions::Tls{
                                dogpile::test::certs().server, dogpile::test::certs().server_key,
                                dogpile::test::certs().ca, false});
  return s;
}
// Started before any test forks: a child that started it lazily would get its own set.
const bool sentinels_started = (sentinels(), true);

RedisSentinelOptions options() {
  RedisSentinelOptions o;
  for (int port : sentinels().sentinel_ports()) o.sentinels.push_back({"127.0.0.1", port});
  o.service_name = sentinels().service_name();
  o.socket_timeout = 1s;
  o.socket_connect_timeout = 500ms;
  o.lock_timeout = 1s;
  o.lock_sleep = 50ms;
  return o;
}

std::shared_ptr<dogpile::CacheBackend> backend() {
  return std::make_shared<RedisSentinelBackend>(options());
}

// A sentinel played by the test, to drive the failover hold without a real failover: it names
// `master_port` as the master of "mymaster" and publishes whatever events the test tells it to.
class FakeSentinel {
 public:
  explicit FakeSentinel(int master_port)
      : master_port_(std::to_string(master_port)),
        server_([this](const std::vector<std::string>& argv) { return answer(argv); }) {}

  int port() const { return server_.port(); }
  /// Sends `payload` on `channel` to every subscribed connection; returns how many.
  int publish(const std::string& channel, const std::string& payload) {
    return server_.publish(channel, payload);
  }
  /// Cuts every subscribed connection.
  void drop_subscribers() { server_.drop_subscribers(); }
  /// Names another master from now on (without telling anyone).
  void set_master_port(int port) {
    std::lock_guard lk(m_);
    master_port_ = std::to_string(port);
  }
  /// The config-epoch SENTINEL MASTER reports from now on.
  void set_config_epoch(int epoch) {
    std::lock_guard lk(m_);
    config_epoch_ = std::to_string(epoch);
  }
  /// The failover-timeout SENTINEL MASTER reports from now on.
  void set_failover_timeout(std::chrono::milliseconds t) {
    std::lock_guard lk(m_);
    failover_timeout_ = std::to_string(t.count());
  }

 private:
  std::string answer(const std::vector<std::string>& argv) {
    namespace resp = dogpile::test::resp;
    std::lock_guard lk(m_);
    auto is = [&](std::size_t i, const char* w) {
      return argv.size() > i && ::strcasecmp(argv[i].c_str(), w) == 0;
    };
    if (is(0, "SENTINEL") && is(1, "get-master-addr-by-name") && is(2, "mymaster")) {
      return resp::bulks({"127.0.0.1", master_port_});
    }
    if (is(0, "SENTINEL") && is(1, "MASTER") && is(2, "mymaster")) {
      return resp::bulks({"name", "mymaster", "config-epoch", config_epoch_, "failover-timeout",
                          failover_timeout_});
    }
    return resp::error("ERR the fake sentinel does not know that");
  }

  std::mutex m_;
  std::string master_port_;
  std::string config_epoch_ = "0";
  std::string failover_timeout_ = "180000";
  dogpile::test::FakeRedis server_;  // last: its thread calls answer()
};

// Writes through `b` every 2 ms on its own thread, until stop(): new keys, and every third
// write an overwrite of one of 8 keys (a lost overwrite brings an old value back). Remembers
// every key's last acknowledged value, and the values of failed writes since (a failed write
// may or may not have run: either is right).
struct Writer {
  Writer(dogpile::CacheBackend& b, std::string p) : prefix(std::move(p)) {
    b.set(prefix + "warm", "1");  // connected, and subscribed to the sentinels' events
    thread = std::thread([this, &b] {
      for (int i = 0; !stopping.load(); ++i) {
        const std::string key =
            prefix + (i % 3 == 2 ? "ow" + std::to_string(i % 8) : "k" + std::to_string(i));
        const std::string value = "v" + std::to_string(i);
        try {
          b.set(key, value);
          acked[key] = value;
          unsure[key].clear();
          ++n_acked;
          last_acked = {key, value};
          if (switched.load()) ++n_acked_after;
        } catch (const dogpile::BackendError& e) {
          unsure[key].push_back(value);
          if (n_failed++ == 0) first_error = e.what();
        }
        std::this_thread::sleep_for(2ms);
      }
    });
  }
  ~Writer() { stop(); }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  void stop() {
    stopping = true;
    if (thread.joinable()) thread.join();
  }
  /// How many acknowledged keys `b` does not return with their last acknowledged value; prints
  /// the counts.
  int lost(dogpile::CacheBackend& b) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : acked) keys.push_back(k);
    const auto got = b.get_multi(keys);
    int n = 0;
    std::string example = "none";
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const auto& maybe = unsure[keys[i]];
      const bool ok = got[i] == acked[keys[i]] ||
                      (got[i] && std::find(maybe.begin(), maybe.end(), *got[i]) != maybe.end());
      if (!ok && n++ == 0) example = keys[i] + " = " + got[i].value_or("(missing)");
    }
    std::fprintf(stderr,
                 "writer every 2 ms: %d writes acknowledged (%d after the switch), %d failed "
                 "(first: %s), %d acknowledged keys lost (e.g. %s)\n",
                 n_acked, n_acked_after, n_failed, first_error.c_str(), n, example.c_str());
    return n;
  }

  std::string prefix;
  std::atomic<bool> switched{false};                       // set by the test: counts n_acked_after
  std::map<std::string, std::string> acked;                // key -> last acknowledged value
  std::map<std::string, std::vector<std::string>> unsure;  // failed writes since that ack
  int n_acked = 0;
  int n_acked_after = 0;
  int n_failed = 0;
  std::string first_error = "none";
  std::pair<std::string, std::string> last_acked;

 private:
  std::atomic<bool> stopping{false};
  std::thread thread;
};

}  // namespace

DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE("redis_sentinel", backend)

TEST_CASE("redis_sentinel by name: sentinels as dogpile lists them", "[redis][sentinel]") {
  dogpile::register_redis_backends();
  auto b = dogpile::make_backend(
      "dogpile.cache.redis_sentinel",
      {{"sentinels",
        nlohmann::json::array({nlohmann::json::array({"127.0.0.1", sentinels().sentinel_port()})})},
       {"service_name", "mymaster"}});
  b->set("by-name", "ok");
  CHECK(b->get("by-name") == std::optional<std::string>("ok"));
  auto wrong = dogpile::make_backend(
      "redis_sentinel",
      {{"sentinels",
        nlohmann::json::array({nlohmann::json::array({"127.0.0.1", sentinels().sentinel_port()})})},
       {"service_name", "nosuch"},
       {"socket_timeout", 0.3}});
  try {
    (void)wrong->get("k");
    FAIL("no error");
  } catch (const dogpile::BackendError& e) {
    CHECK(std::string(e.what()).find("nosuch") != std::string::npos);
  }
}

// One writer every 2 ms (new keys, and overwrites of a few keys: a lost overwrite brings an old
// value back), SENTINEL FAILOVER, then the old master rejoins as a replica and resyncs. Without
// the failover hold about half of the acknowledged writes are gone (those the old master
// acknowledged after the replica left it). A write may fail (honestly: an exception); one that
// succeeded must be there, with its last acknowledged value, and writes resume on the new
// master. One failover (~1.1 s, most of it the sentinel's 1 s INFO period) serves every check.
TEST_CASE("redis_sentinel: SENTINEL FAILOVER under a writer every 2 ms loses no acknowledged write",
          "[redis][sentinel][failover]") {
  REQUIRE(sentinels().rejoin_old_master());  // a replica in sync, whatever ran before
  auto o = options();
  o.socket_timeout = 1500ms;  // the hold lasts until +promoted-slave, ~0.9 s
  RedisSentinelBackend b(o);
  const auto before = sentinels().current_master();
  dogpile::test::CapturedLog log;
  Writer w(b, unique_key("fw"));
  // Led by the last sentinel listed: the first one still names the old master for a while.
  sentinels().failover(2);  // returns once the leader names the new master and its ROLE agrees
  w.switched = true;
  // A backend that starts now asks the sentinels while the first ones may still name the old
  // master (which still says it is one): it must take the leader's newer configuration epoch.
  const auto after = sentinels().current_master();
  RedisSentinelBackend fresh(o);
  fresh.set(w.prefix + "fresh", "new");
  CHECK(dogpile::test::redis_cli(after.second, {"get", w.prefix + "fresh"}) == "new\n");
  std::this_thread::sleep_for(50ms);  // some writes after the switch, on the new master
  w.stop();
  REQUIRE(after != before);
  REQUIRE(sentinels().rejoin_old_master());

  const int lost = w.lost(b);
  CHECK(w.n_acked_after > 5);  // writes resumed (the writer is held ~0.9 s of the ~1.1 s)
  // The last write is on the new master itself (not only visible through the backend).
  CHECK(dogpile::test::redis_cli(after.second, {"get", w.last_acked.first}) ==
        w.last_acked.second + "\n");
  CHECK(lost == 0);
  // The writer's backend logged the failover it followed (`fresh`'s first discovery is none).
  CHECK_FALSE(log.containing("failover followed, the master is now 127.0.0.1:" +
                             std::to_string(after.second))
                  .empty());
}

// Measurements for docs/backends.md (hidden: each takes ~3 s): an unplanned failover with the
// master SIGKILLed, or SIGSTOPped past down-after-milliseconds, under the same writer. What
// may be lost is what the master acknowledged and had not replicated.
TEST_CASE("redis_sentinel: unplanned failover under a writer every 2 ms (measurement)",
          "[.][measure]") {
  const bool kill = GENERATE(true, false);
  RedisSentinelSet set(1, 300ms);
  RedisSentinelOptions o;
  o.sentinels = {{"127.0.0.1", set.sentinel_port()}};
  o.service_name = set.service_name();
  o.socket_timeout = 500ms;
  o.socket_connect_timeout = 200ms;
  RedisSentinelBackend b(o);
  Writer w(b, unique_key("uf"));
  std::this_thread::sleep_for(200ms);
  const auto t0 = std::chrono::steady_clock::now();
  if (kill) {
    set.master().kill();
  } else {
    set.master().pause();
  }
  REQUIRE(set.wait_master(set.replica_port(), 20'000ms));
  const auto took = std::chrono::steady_clock::now() - t0;
  w.switched = true;
  std::this_thread::sleep_for(100ms);
  if (!kill) set.master().resume();
  std::this_thread::sleep_for(100ms);
  w.stop();
  const int lost = w.lost(b);
  std::fprintf(
      stderr, "unplanned (%s): failover in %lld ms, %d lost\n", kill ? "SIGKILL" : "SIGSTOP",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
      lost);
  CHECK(w.n_acked_after > 5);
}

// The hold's edges, driven by a fake sentinel against the real master (fast, and no real
// failover needed): a held write fails within socket_timeout without being sent, reads pass,
// and the hold ends at +promoted-slave (the held write then goes through), at an abort, when
// the leader's subscription is lost, and never starts for another service's events.
TEST_CASE("redis_sentinel: a failover hold is bounded by socket_timeout and ends with the failover",
          "[redis][sentinel][failover]") {
  const int port = sentinels().current_master().second;
  FakeSentinel fake(port);
  auto o = options();
  o.sentinels = {{"127.0.0.1", fake.port()}};
  o.socket_timeout = 300ms;
  RedisSentinelBackend b(o);
  const std::string key = unique_key("hold");
  b.set(key, "v1");  // the first call waits until the subscription is up
  const std::string master = "master mymaster 127.0.0.1 " + std::to_string(port);
  const std::string replica = "slave 127.0.0.1:" + std::to_string(port) + " 127.0.0.1 " +
                              std::to_string(port) + " @ mymaster 127.0.0.1 1";
  auto on_master = [&] { return dogpile::test::redis_cli(port, {"get", key}); };
  auto ms_since = [](auto t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0)
        .count();
  };
  auto publish = [&](const std::string& channel, const std::string& payload) {
    REQUIRE(fake.publish(channel, payload) >= 1);
    std::this_thread::sleep_for(20ms);  // the backend's reader thread takes it
  };

  publish("+elected-leader", master);
  auto t0 = std::chrono::steady_clock::now();
  try {
    b.set(key, "v2");
    FAIL("a write during the hold was acknowledged");
  } catch (const dogpile::BackendError& e) {
    CHECK_THAT(e.what(), Catch::Contains("failover is in progress") &&
                             Catch::Contains("+elected-leader") && Catch::Contains("not sent"));
  }
  CHECK(ms_since(t0) >= 250);
  CHECK(ms_since(t0) < 1000);
  CHECK(on_master() == "v1\n");  // not sent
  t0 = std::chrono::steady_clock::now();
  CHECK(b.get(key) == std::optional<std::string>("v1"));  // reads are not held
  CHECK(ms_since(t0) < 100);

  publish("-failover-abort-no-good-slave", master);
  b.set(key, "v3");
  CHECK(on_master() == "v3\n");

  publish("+selected-slave", replica);
  std::thread promote([&] {
    std::this_thread::sleep_for(100ms);
    fake.publish("+promoted-slave", replica);
  });
  t0 = std::chrono::steady_clock::now();
  b.set(key, "v4");  // held until the promotion, then sent
  CHECK(ms_since(t0) >= 80);
  promote.join();
  CHECK(on_master() == "v4\n");

  publish("+failover-state-send-slaveof-noone", replica);
  fake.drop_subscribers();
  std::this_thread::sleep_for(30ms);  // the reader sees the loss, re-subscribes
  b.set(key, "v5");                   // the hold ended with its leader's subscription
  CHECK(on_master() == "v5\n");

  publish("+elected-leader", "master othermaster 127.0.0.1 1");
  b.set(key, "v6");
  CHECK(on_master() == "v6\n");

  // The subscription was down while the master changed (no event heard): once it is back,
  // the next call asks the sentinels again and goes to the new master.
  {
    dogpile::test::RedisServer other;
    fake.set_master_port(other.port());
    b.set(key, "v6b");  // still the master this backend knows
    CHECK(on_master() == "v6b\n");
    fake.drop_subscribers();
    std::this_thread::sleep_for(30ms);  // the reader re-subscribes
    b.set(key, "v6c");
    CHECK(other.cli({"get", key}) == "v6c\n");
    fake.set_master_port(port);
    fake.drop_subscribers();
    std::this_thread::sleep_for(30ms);
  }

  // A write already in flight when a hold begins is acknowledged only once a replica confirms
  // it (WAIT 1): here the replica is paused, so it fails. CLIENT PAUSE WRITE on the master
  // postpones the write, so that it is sent before the hold and answered after it began.
  auto& replica_server =
      port == sentinels().master_port() ? sentinels().replica() : sentinels().master();
  o.socket_timeout = 1500ms;
  RedisSentinelBackend slow(o);
  slow.set(key, "v7");
  replica_server.pause();
  REQUIRE(dogpile::test::redis_cli(port, {"client", "pause", "250", "write"}) == "OK\n");
  std::string error = "(acknowledged)";
  std::thread writer([&] {
    try {
      slow.set(key, "v8");
    } catch (const dogpile::BackendError& e) {
      error = e.what();
    }
  });
  // The write is sent: the master postponed it (a blocked client whose command is SET).
  CHECK(dogpile::test::detail::poll_until(
      [&] {
        const auto clients = dogpile::test::redis_cli(port, {"client", "list"});
        std::stringstream lines(clients);
        for (std::string l; std::getline(lines, l);) {
          if (l.find(" flags=b ") != std::string::npos &&
              l.find(" cmd=set ") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      300ms));
  REQUIRE(fake.publish("+elected-leader", master) == 2);
  writer.join();

  replica_server.resume();
  publish("-failover-abort-not-elected", master);
  CHECK_THAT(error, Catch::Contains("no replica confirmed it"));
}

// A leader that falls silent in the middle of a failover (here: publishes +elected-leader and
// nothing else, its connection staying up) holds writes only for the service's
// failover-timeout, after which the sentinels themselves give the failover up.
TEST_CASE("redis_sentinel: a failover hold ends after the service's failover-timeout",
          "[redis][sentinel][failover]") {
  const int port = sentinels().current_master().second;
  FakeSentinel fake(port);
  fake.set_failover_timeout(150ms);
  auto o = options();
  o.sentinels = {{"127.0.0.1", fake.port()}};
  o.socket_timeout = 100ms;
  RedisSentinelBackend b(o);
  const std::string key = unique_key("stale-hold");
  b.set(key, "v1");
  REQUIRE(fake.publish("+elected-leader", "master mymaster 127.0.0.1 " + std::to_string(port)) ==
          1);
  std::this_thread::sleep_for(20ms);
  CHECK_THROWS_AS(b.set(key, "v2"), dogpile::BackendError);  // held, within failover-timeout
  std::this_thread::sleep_for(100ms);                        // past it
  b.set(key, "v3");
  CHECK(dogpile::test::redis_cli(port, {"get", key}) == "v3\n");
}

// After a failover, the sentinels that did not lead it name the old master (which still says
// it is one) until the leader's hello reaches them: discovery takes the answer under the
// highest config-epoch, not the first one. Two fake sentinels: the first names a stale master.
TEST_CASE("redis_sentinel: discovery trusts the sentinel with the newest config-epoch",
          "[redis][sentinel][failover]") {
  const int port = sentinels().current_master().second;
  dogpile::test::RedisServer stale;  // a master too, as the old master is until demoted
  FakeSentinel behind(stale.port());
  FakeSentinel ahead(port);
  ahead.set_config_epoch(5);
  behind.set_config_epoch(4);
  auto o = options();
  o.sentinels = {{"127.0.0.1", behind.port()}, {"127.0.0.1", ahead.port()}};
  RedisSentinelBackend b(o);
  const std::string key = unique_key("epoch");
  b.set(key, "v");
  CHECK(dogpile::test::redis_cli(port, {"get", key}) == "v\n");
  CHECK(stale.cli({"exists", key}) == "0\n");
}

TEST_CASE("redis_sentinel: the sentinels over TLS (sentinel_kwargs), apart from the master",
          "[redis][sentinel][tls]") {
  auto& set = sentinels();
  // Only the first sentinel is given: it must name the master the earlier failovers left.
  REQUIRE(set.wait_settled());
  const int master_port = set.current_master().second;
  const int tls_port = set.sentinel_tls_ports().at(0);
  auto args = [&](nlohmann::json sentinel_kwargs) {
    return nlohmann::json{{"sentinels", {"127.0.0.1:" + std::to_string(tls_port)}},
                          {"service_name", set.service_name()},
                          {"socket_timeout", 0.3},
                          {"socket_connect_timeout", 0.3},
                          {"sentinel_kwargs", std::move(sentinel_kwargs)}};
  };
  auto b = dogpile::RedisSentinelBackend::from_arguments(
      args({{"ssl", true}, {"ssl_ca_certs", dogpile::test::certs().ca}}));
  b->set("tls-sentinel", "found");
  CHECK(dogpile::test::redis_cli(master_port, {"get", "tls-sentinel"}) ==
        "found\n");  // the master, in plain text

  // The sentinels' TLS is verified like a server's...
  auto unverified =
      dogpile::RedisSentinelBackend::from_arguments(args({{"ssl", true}}));  // no ssl_ca_certs
  std::string e = tls_error([&] { (void)unverified->get("tls-sentinel"); });
  CHECK(e.find("certificate verify failed") != std::string::npos);
  // ... and the top-level ssl_* arguments are the master's, not the sentinels'.
  auto j = args(nlohmann::json::object());
  j["ssl"] = true;
  j["ssl_ca_certs"] = dogpile::test::certs().ca;
  auto plain_to_sentinel = dogpile::RedisSentinelBackend::from_arguments(j);
  e = tls_error([&] { (void)plain_to_sentinel->get("tls-sentinel"); });
  CAPTURE(e);
  CHECK(e.find("TLS") != std::string::npos);
}

TEST_CASE("redis_sentinel: a master over TLS, found and followed across a failover",
          "[redis][sentinel][tls]") {
  using dogpile::test::certs;
  // Master and replica serve TLS and replicate over it; the sentinel monitors their TLS ports,
  // so it names TLS ports, before and after the failover.
  const dogpile::test::RedisServerOptions::Tls tls{certs().server, certs().server_key, certs().ca,
                                                   false};
  RedisSentinelSet set(1, 1000ms, std::nullopt, tls);
  REQUIRE(set.current_master().second == set.named_port(set.master()));
  auto args = [&](bool ssl) {
    nlohmann::json j{{"sentinels", {"127.0.0.1:" + std::to_string(set.sentinel_port())}},
                     {"service_name", set.service_name()},
                     {"socket_timeout", 1.0},
                     {"socket_connect_timeout", 0.5}};
    if (ssl) {
      j["ssl"] = true;
      j["ssl_ca_certs"] = certs().ca;
    }
    return j;
  };
  auto b = RedisSentinelBackend::from_arguments(args(true));
  b->set("tls-master", "before");
  CHECK(set.master().cli({"get", "tls-master"}) == "before\n");
  // No ssl: the sentinel's answer is a TLS port, and the error says so.
  auto plain = RedisSentinelBackend::from_arguments(args(false));
  CHECK_THAT(tls_error([&] { (void)plain->get("tls-master"); }),
             Catch::Contains("use ssl=true or a rediss:// URL"));

  REQUIRE(set.wait_replication(5000ms));
  set.failover();
  REQUIRE(set.current_master().second == set.named_port(set.replica()));
  b->set("tls-master-2", "after");
  CHECK(set.replica().cli({"get", "tls-master-2"}) == "after\n");  // the new master
  CHECK(b->get("tls-master") == std::optional<std::string>("before"));
}

// ---- near cache -----------------------------------------------------------------------------

namespace {

// Reads `key` until one read is an L1 hit (tracking up on the master and a fence seen).
bool near_serves(RedisSentinelBackend& b, const std::string& key) {
  return dogpile::test::l1_serves(b, key);
}

}  // namespace

TEST_CASE("redis_sentinel near cache: L1 hits, another client's write, and a failover flushes it",
          "[redis][sentinel][near][failover]") {
  REQUIRE(sentinels().rejoin_old_master());
  auto o = options();
  o.near_cache = {.max_bytes = 1 << 20, .max_staleness = 1s};
  RedisSentinelBackend b(o);
  const auto k = unique_key("near");
  b.set(k, "v1");
  REQUIRE(near_serves(b, k));
  const auto hits = b.near_cache_stats().l1_hits;
  CHECK(b.get(k) == std::optional<std::string>("v1"));
  CHECK(b.near_cache_stats().l1_hits == hits + 1);
  // Another client writes on the master: the L1 copy is dropped within about a round trip.
  const auto before = sentinels().current_master();
  dogpile::test::redis_cli(before.second, {"set", k, "v2"});
  CHECK(dogpile::test::detail::poll_until([&] { return b.get(k) == "v2"; }, 500ms));
  REQUIRE(near_serves(b, k));

  // A failover: the old master stays a master (it is converted to a replica only seconds
  // later) and its tracking and fences go on, but they say nothing of the new master's writes.
  const auto flushes = b.near_cache_stats().flushes;
  sentinels().failover(2);
  const auto after = sentinels().current_master();
  REQUIRE(after != before);
  // The backend follows the failover's events: L1 emptied, tracking moved to the new master.
  CHECK(dogpile::test::detail::poll_until([&] { return b.near_cache_stats().flushes > flushes; },
                                          1000ms));
  CHECK(b.near_cache_stats().last_flush_reason.find("new master") != std::string::npos);
  // Another client writes on the new master: no read returns the old value.
  dogpile::test::redis_cli(after.second, {"set", k, "v3"});
  const auto end = std::chrono::steady_clock::now() + 100ms;
  while (std::chrono::steady_clock::now() < end) {
    REQUIRE(b.get(k) == std::optional<std::string>("v3"));
  }
  // L1 serves again, tracked against the new master: its writes invalidate.
  REQUIRE(near_serves(b, k));
  dogpile::test::redis_cli(after.second, {"set", k, "v4"});
  CHECK(dogpile::test::detail::poll_until([&] { return b.get(k) == "v4"; }, 500ms));
  CHECK(b.near_cache_stats().tracking);
  REQUIRE(sentinels().rejoin_old_master());
  b.erase(k);
}

TEST_CASE(
    "redis_sentinel near cache: staleness checker across a failover and the old master's "
    "demotion",
    "[redis][sentinel][near][failover][staleness]") {
  // One writer writes increasing versions through the backend (held during the failover, then
  // on the new master); readers in other processes read through L1 (support/near_cache.hpp)
  // while SENTINEL FAILOVER moves the master, then while the old master, which stays a master
  // with its tracking and fences going on, is demoted to the new one's replica (a full resync).
  // No read may return a version overwritten more than max_staleness before it began.
  REQUIRE(sentinels().rejoin_old_master());
  constexpr auto staleness = 200ms;
  dogpile::test::StalenessChecker checker(unique_key("nearstale"), staleness);
  checker.start_readers([&] {
    auto o = options();
    o.socket_timeout = 500ms;
    o.near_cache = {.max_bytes = 1 << 20, .max_staleness = staleness};
    return std::make_shared<RedisSentinelBackend>(o);
  });
  // The writer's backend starts its sentinel subscriber threads: built only after the readers
  // are forked (a child forked while one of them held ASan's allocator lock would deadlock).
  auto writer_options = options();
  writer_options.socket_timeout = 1500ms;  // the failover hold lasts until +promoted-slave
  RedisSentinelBackend writer(writer_options);
  checker.start_writer([&](const std::string& v) { writer.set(checker.key(), v); });
  const auto settle = [] { std::this_thread::sleep_for(250ms); };
  settle();
  const auto before = sentinels().current_master();
  sentinels().failover(2);
  REQUIRE(sentinels().current_master() != before);
  settle();
  REQUIRE(sentinels().rejoin_old_master());
  settle();

  const auto seen = checker.stop();
  INFO(seen.describe());
  CHECK(seen.reader_failures == 0);
  CHECK(seen.versions > 300);
  CHECK(seen.l1_hits > 1000);  // L1 really served reads before and after the failover
  CHECK(seen.violations == 0);
}
