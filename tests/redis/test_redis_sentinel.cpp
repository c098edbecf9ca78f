// The `redis_sentinel` backend against a master, a replica and a sentinel the harness starts:
// conformance, and a failover that loses nothing and resumes writes on the new master.
#include <catch2/catch.hpp>

#include "backends/conformance.hpp"
#include "dogpile/backends/redis.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;
using dogpile::RedisSentinelBackend;
using dogpile::RedisSentinelOptions;
using dogpile::test::RedisSentinelSet;
using dogpile_conformance::unique_key;

namespace {

RedisSentinelSet& sentinels() {
  static RedisSentinelSet s;
  return s;
}
// Started before any test forks: a child that started it lazily would get its own set.
const bool sentinels_started = (sentinels(), true);

RedisSentinelOptions options() {
  RedisSentinelOptions o;
  o.sentinels = {{"127.0.0.1", sentinels().sentinel_port()}};
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

TEST_CASE(
    "redis_sentinel: after SENTINEL FAILOVER writes resume on the new master and nothing "
    "written before is lost",
    "[redis][sentinel][failover]") {
  auto b = backend();
  dogpile_conformance::Region r(b);
  std::vector<std::string> keys;
  for (int i = 0; i < 50; ++i) {
    keys.push_back(unique_key("fo") + std::to_string(i));
    r.region.set(keys.back(), std::string("v") + std::to_string(i));
  }
  // The replica has everything before the failover starts.
  sentinels().master().cli({"wait", "1", "2000"});
  const auto before = sentinels().current_master();
  sentinels().failover();
  const auto after = sentinels().current_master();
  CHECK(after != before);
  // Writes resume on the new master: the backend hears +switch-master (or a READONLY reply)
  // and re-discovers. A write may fail or land on the old master only in the moment between
  // the election and the event, so each attempt is checked on the new master itself.
  bool resumed = false;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; !resumed && std::chrono::steady_clock::now() - t0 < 5s; ++i) {
    try {
      b->set("after-failover", std::to_string(i));
      resumed = dogpile::test::redis_cli(after.second, {"get", "after-failover"}) ==
                std::to_string(i) + "\n";
    } catch (const dogpile::BackendError&) {
    }
    if (!resumed) std::this_thread::sleep_for(50ms);
  }
  CHECK(resumed);
  for (int i = 0; i < 50; ++i) {
    CHECK(r.region.get<std::string>(keys[static_cast<std::size_t>(i)]) ==
          std::optional<std::string>("v" + std::to_string(i)));
  }
}
