// The Redis backends' arguments and options, checked without a server (construction never
// dials: the first call does).
#include <catch2/catch.hpp>

#include "dogpile/backends/redis.hpp"
#include "dogpile/dogpile.hpp"

using dogpile::RedisBackend;
using dogpile::RedisClusterBackend;
using dogpile::RedisOptions;
using dogpile::RedisSentinelBackend;
using dogpile::ValidationError;
using json = nlohmann::json;

namespace {

std::string validation_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const ValidationError& e) {
    return e.what();
  }
  return "(no ValidationError)";
}

RedisOptions redis_options(const std::shared_ptr<dogpile::CacheBackend>& b) {
  return dynamic_cast<const RedisBackend&>(*b).options();
}

}  // namespace

TEST_CASE("redis names and aliases are registered", "[redis][args]") {
  for (const char* n : {"redis", "redis_sentinel", "redis_cluster", "dogpile.cache.redis",
                        "dogpile.cache.redis_sentinel", "dogpile.cache.redis_cluster"}) {
    CHECK(dogpile::is_backend_registered(n));
  }
}

TEST_CASE("redis url sets host, port, db, user and password", "[redis][args]") {
  auto b = RedisBackend::from_arguments(json{{"url", "redis://al%40ice:p%3Ass@10.1.2.3:6380/4"}});
  const auto& o = redis_options(b);
  CHECK(o.host == "10.1.2.3");
  CHECK(o.port == 6380);
  CHECK(o.db == 4);
  CHECK(o.username == "al@ice");
  CHECK(o.password == "p:ss");

  const auto& p = redis_options(RedisBackend::from_arguments(json{{"url", "redis://:pw@h"}}));
  CHECK(p.host == "h");
  CHECK(p.port == 6379);
  CHECK(p.password == "pw");
  CHECK(p.username.empty());

  const auto& u =
      redis_options(RedisBackend::from_arguments(json{{"url", "unix:///run/redis.sock?db=2"}}));
  CHECK(u.host == "/run/redis.sock");
  CHECK(u.db == 2);

  const auto& v6 = redis_options(RedisBackend::from_arguments(json{{"url", "redis://[::1]:7000"}}));
  CHECK(v6.host == "::1");
  CHECK(v6.port == 7000);
}

TEST_CASE("malformed redis urls are ValidationErrors naming 'url'", "[redis][args]") {
  for (const char* url :
       {"http://h:1", "redis://", "redis://h:notaport", "redis://h:0", "redis://h:99999",
        "redis://h:1/x", "redis://[::1", "unix://relative", "redis://u:%zz@h", "rediss://h:x"}) {
    INFO(url);
    const auto msg = validation_message([&] { RedisBackend::from_arguments(json{{"url", url}}); });
    CHECK(msg.find("argument 'url'") != std::string::npos);
  }
  // rediss:// is redis:// over TLS (tested against a TLS server in test_redis_tls.cpp).
  auto tls = RedisBackend::from_arguments(json{{"url", "rediss://u:p@h:6390/2"}});
  const auto& to = dynamic_cast<const RedisBackend&>(*tls).options();
  CHECK(to.tls.ssl);
  CHECK(to.port == 6390);
  CHECK(to.db == 2);
  CHECK(to.tls.ssl_cert_reqs == "required");
  CHECK(to.tls.ssl_check_hostname);
}

TEST_CASE("redis arguments: dogpile's names, types checked", "[redis][args]") {
  auto b = RedisBackend::from_arguments(json{{"host", "example"},
                                             {"port", 7001},
                                             {"db", 3},
                                             {"socket_timeout", 0.25},
                                             {"socket_connect_timeout", 0.5},
                                             {"connection_pool", 4},
                                             {"redis_expiration_time", 60},
                                             {"distributed_lock", true},
                                             {"lock_timeout", 5},
                                             {"lock_sleep", 0.05},
                                             {"lock_blocking_timeout", 2.5},
                                             {"lock_prefix", "my:lk"},
                                             {"thread_local_lock", false},
                                             {"connection_kwargs", json::object()}});
  const auto& o = redis_options(b);
  CHECK(o.host == "example");
  CHECK(o.port == 7001);
  CHECK(o.db == 3);
  CHECK(o.socket_timeout == std::chrono::milliseconds(250));
  CHECK(o.socket_connect_timeout == std::chrono::milliseconds(500));
  CHECK(o.pool_size == 4);
  CHECK(o.redis_expiration_time == std::chrono::milliseconds(60000));
  CHECK(o.distributed_lock);
  CHECK(o.lock_timeout == std::chrono::milliseconds(5000));
  CHECK(o.lock_sleep == std::chrono::milliseconds(50));
  CHECK(o.lock_blocking_timeout == std::chrono::milliseconds(2500));
  CHECK(dynamic_cast<const RedisBackend&>(*b).lock_key("k") == "my:lkk");
  CHECK(dynamic_cast<const RedisBackend&>(*RedisBackend::from_arguments(json::object()))
            .lock_key("k") == "_lockk");

  struct Bad {
    const char* name;
    json value;
  };
  for (const auto& [name, value] : std::vector<Bad>{{"port", "6379"},
                                                    {"port", 0},
                                                    {"db", -1},
                                                    {"socket_timeout", "1"},
                                                    {"socket_timeout", -1},
                                                    {"socket_timeout", 0},
                                                    {"connection_pool", 0},
                                                    {"distributed_lock", "yes"},
                                                    {"lock_timeout", 0},
                                                    {"lock_prefix", "x"},
                                                    {"lock_prefix", "no spaces"},
                                                    {"lock_prefix", "elevenchars"},
                                                    {"host", 5},
                                                    {"password", 5},
                                                    {"thread_local_lock", "no"}}) {
    INFO(name << " = " << value.dump());
    const auto msg = validation_message([&] { RedisBackend::from_arguments(json{{name, value}}); });
    CHECK(msg.find(std::string("'") + name + "'") != std::string::npos);
  }
  CHECK_THROWS_AS(RedisBackend::from_arguments(json::array()), ValidationError);
}

TEST_CASE("redis backends refuse unknown arguments with a did-you-mean", "[redis][args]") {
  using Factory = std::shared_ptr<dogpile::CacheBackend> (*)(const json&);
  struct Case {
    const char* backend;
    Factory make;
    json base;  // the arguments the backend needs besides the misspelt one
  };
  const std::vector<Case> cases{
      {"redis", &RedisBackend::from_arguments, json::object()},
      {"redis_sentinel", &RedisSentinelBackend::from_arguments,
       json{{"sentinels", json::array({"10.0.0.1:26379"})}, {"service_name", "cache"}}},
      {"redis_cluster", &RedisClusterBackend::from_arguments,
       json{{"startup_nodes", json::array({"h1:7000"})}}}};
  for (const auto& c : cases) {
    INFO(c.backend);
    json a = c.base;
    a["distribued_lock"] = true;
    const auto msg = validation_message([&] { c.make(a); });
    CHECK(msg.find(std::string(c.backend) + " backend: argument 'distribued_lock' is unknown") !=
          std::string::npos);
    CHECK(msg.find("did you mean 'distributed_lock'?") != std::string::npos);
    CHECK(msg.find("known: ") != std::string::npos);
    CHECK(msg.find("lock_blocking_timeout") != std::string::npos);
    CHECK(msg.find("accepted and ignored: connection_kwargs") != std::string::npos);
    // Far from every name: no guess, still refused with the list.
    json b = c.base;
    b["foo"] = "barf";
    const auto far = validation_message([&] { c.make(b); });
    CHECK(far.find("argument 'foo' is unknown (known: ") != std::string::npos);

    // The Python dogpile.cache / redis-py names a configuration carries are accepted, and so
    // are redis-py's TLS names (with ssl off they do nothing, as in redis-py).
    json py = c.base;
    py.update(json{{"thread_local_lock", false},
                   {"lock_blocking", true},
                   {"socket_keepalive", true},
                   {"socket_keepalive_options", json::object()},
                   {"connection_kwargs", {{"health_check_interval", 30}}},
                   {"ssl", false},
                   {"ssl_cert_reqs", nullptr},
                   {"ssl_ca_certs", nullptr},
                   {"ssl_ca_path", "/etc/ssl/certs"},
                   {"ssl_certfile", "/c.pem"},
                   {"ssl_keyfile", "/k.pem"},
                   {"ssl_check_hostname", false},
                   {"ssl_server_hostname", "cache.example"}});
    CHECK_NOTHROW(c.make(py));
  }
  // A name of another Redis backend is not taken silently either.
  CHECK(validation_message([] {
          RedisClusterBackend::from_arguments(json{{"startup_nodes", {"h:1"}}, {"host", "h"}});
        }).find("argument 'host' is unknown") != std::string::npos);
  CHECK(validation_message([] {
          RedisSentinelBackend::from_arguments(
              json{{"sentinels", {"h:1"}}, {"service_name", "s"}, {"url", "redis://h"}});
        }).find("argument 'url' is unknown") != std::string::npos);
}

TEST_CASE("redis connection_kwargs supply the password and timeouts; top level wins",
          "[redis][args]") {
  auto c = RedisClusterBackend::from_arguments(json{{"startup_nodes", {"h:7000"}},
                                                    {"connection_kwargs",
                                                     {{"password", "kwpw"},
                                                      {"username", "kwu"},
                                                      {"socket_timeout", 0.5},
                                                      {"retry_on_timeout", true}}}});
  const auto& co = dynamic_cast<const RedisClusterBackend&>(*c).options();
  CHECK(co.password == "kwpw");
  CHECK(co.username == "kwu");
  CHECK(co.socket_timeout == std::chrono::milliseconds(500));
  const auto& o = redis_options(RedisBackend::from_arguments(
      json{{"connection_kwargs", {{"password", "kwpw"}}}, {"password", "top"}}));
  CHECK(o.password == "top");
  CHECK(validation_message([] {
          RedisBackend::from_arguments(json{{"connection_kwargs", 5}});
        }).find("'connection_kwargs'") != std::string::npos);
  CHECK(validation_message([] {
          RedisBackend::from_arguments(json{{"connection_kwargs", {{"socket_timeout", "x"}}}});
        }).find("'socket_timeout'") != std::string::npos);
}

TEST_CASE("redis_sentinel and redis_cluster arguments", "[redis][args]") {
  auto s = RedisSentinelBackend::from_arguments(
      json{{"sentinels", json::array({json::array({"10.0.0.1", 26379}), "10.0.0.2:26380"})},
           {"service_name", "cache"},
           {"sentinel_kwargs", {{"password", "spw"}}},
           {"db", 1}});
  const auto& so = dynamic_cast<const RedisSentinelBackend&>(*s).options();
  REQUIRE(so.sentinels.size() == 2);
  CHECK(so.sentinels[1] == dogpile::RedisNode{"10.0.0.2", 26380});
  CHECK(so.service_name == "cache");
  CHECK(so.sentinel_password == "spw");
  CHECK(so.distributed_lock);  // on by default, as dogpile
  CHECK(validation_message([] {
          RedisSentinelBackend::from_arguments(json::object());
        }).find("'sentinels'") != std::string::npos);
  CHECK(validation_message([] {
          RedisSentinelBackend::from_arguments(json{{"sentinels", json::array({"nohost"})}});
        }).find("'sentinels'") != std::string::npos);

  // {{"host", port}} written in C++ is the JSON object {"host": port}: accepted too.
  auto o = RedisSentinelBackend::from_arguments(json{{"sentinels", {{"10.0.0.3", 26381}}}});
  CHECK(dynamic_cast<const RedisSentinelBackend&>(*o).options().sentinels ==
        std::vector<dogpile::RedisNode>{{"10.0.0.3", 26381}});
  CHECK(dynamic_cast<const RedisBackend&>(*RedisBackend::from_arguments(json{{"ssl", true}}))
            .options()
            .tls.ssl);
  CHECK_FALSE(dynamic_cast<const RedisBackend&>(*RedisBackend::from_arguments(json{{"ssl", false}}))
                  .options()
                  .tls.ssl);
  // sentinel_kwargs' ssl_* are the sentinels' TLS, apart from the master's.
  auto st = RedisSentinelBackend::from_arguments(
      json{{"sentinels", {"127.0.0.1:26379"}},
           {"ssl", true},
           {"ssl_cert_reqs", "none"},
           {"sentinel_kwargs", {{"ssl", true}, {"ssl_server_hostname", "sentinel.example"}}}});
  const auto& sto = dynamic_cast<const RedisSentinelBackend&>(*st).options();
  CHECK(sto.tls.ssl);
  CHECK(sto.tls.ssl_cert_reqs == "none");
  CHECK(sto.sentinel_tls.ssl);
  CHECK(sto.sentinel_tls.ssl_cert_reqs == "required");
  CHECK(sto.sentinel_tls.ssl_server_hostname == "sentinel.example");

  auto c = RedisClusterBackend::from_arguments(
      json{{"startup_nodes", json::array({json::array({"h1", 7000}), "h2:7001"})}});
  CHECK(dynamic_cast<const RedisClusterBackend&>(*c).options().startup_nodes.size() == 2);
  CHECK_NOTHROW(RedisClusterBackend::from_arguments(json{{"url", "redis://h:7000"}}));
  CHECK(validation_message([] {
          RedisClusterBackend::from_arguments(json::object());
        }).find("'startup_nodes'") != std::string::npos);
  CHECK(validation_message([] {
          RedisClusterBackend::from_arguments(json{{"url", "redis://h:7000/3"}});
        }).find("'url'") != std::string::npos);
}

TEST_CASE("an unreachable redis is a BackendError within the connect timeout", "[redis][args]") {
  // A port nothing listens on (connection refused) and a non-routable address (timeout).
  RedisBackend refused(RedisOptions{.host = "127.0.0.1", .port = 1});
  CHECK_THROWS_AS(refused.get("k"), dogpile::BackendError);
  const auto t0 = std::chrono::steady_clock::now();
  RedisBackend blackhole(RedisOptions{.host = "10.255.255.1",
                                      .port = 6379,
                                      .socket_connect_timeout = std::chrono::milliseconds(200)});
  try {
    (void)blackhole.get("k");
    FAIL("no error");
  } catch (const dogpile::BackendError& e) {
    CHECK(std::string(e.what()).find("10.255.255.1:6379") != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
}
