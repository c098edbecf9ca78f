// The `redis` backend over TLS against real redis-server --tls-port processes, with
// certificates made here by the openssl CLI (a CA, a server certificate for 127.0.0.1 and
// localhost, an expired one, a client certificate, a second CA). Every refusal is a clear
// BackendError, never a plain-text fallback.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "dogpile/backends/redis.hpp"
#include "support/servers.hpp"
#include "support/tls_certs.hpp"

using namespace std::chrono_literals;
using dogpile::RedisBackend;
using dogpile::RedisOptions;
using dogpile::RedisTlsOptions;
using dogpile::test::RedisServer;
using dogpile::test::RedisServerOptions;
using dogpile::test::tls_error;
using json = nlohmann::json;
using dogpile::test::certs;

namespace {

RedisServer& tls_server() {
  static RedisServer s(RedisServerOptions{
      .tls = RedisServerOptions::Tls{certs().server, certs().server_key, certs().ca, false}});
  return s;
}
RedisServer& mtls_server() {
  static RedisServer s(RedisServerOptions{
      .tls = RedisServerOptions::Tls{certs().server, certs().server_key, certs().ca, true}});
  return s;
}
// Started before any test of test_redis forks.
const bool tls_servers_started = (tls_server(), mtls_server(), true);

RedisOptions tls_options(int port, RedisTlsOptions tls) {
  tls.ssl = true;
  RedisOptions o{
      .host = "127.0.0.1", .port = port, .socket_timeout = 1s, .socket_connect_timeout = 500ms};
  o.tls = std::move(tls);
  return o;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("redis over TLS: rediss:// and ssl_* arguments carry plain ops", "[redis][tls]") {
  const int port = tls_server().tls_port();
  auto b = RedisBackend::from_arguments(
      json{{"url", "rediss://127.0.0.1:" + std::to_string(port) + "/3"},
           {"ssl_ca_certs", certs().ca},
           {"socket_timeout", 1}});
  b->set("tls-k", "v1");
  CHECK(b->get("tls-k") == std::optional<std::string>("v1"));
  CHECK(tls_server().cli({"-n", "3", "get", "tls-k"}) == "v1\n");  // it really is that server
  // A value larger than one TLS record (16 KB) and one read chunk (64 KB), both ways.
  const std::string big(300'000, 'x');
  const std::vector<dogpile::BytesItem> items = {{"tls-a", big}, {"tls-b", "small"}};
  b->set_multi(items);
  const std::vector<std::string> keys = {"tls-a", "tls-b", "tls-missing"};
  const auto got = b->get_multi(keys);
  REQUIRE(got.size() == 3);
  CHECK(got[0] == std::optional<std::string>(big));
  CHECK(got[1] == std::optional<std::string>("small"));
  CHECK_FALSE(got[2].has_value());
  b->erase_multi(std::vector<std::string>{"tls-a", "tls-b"});
  CHECK_FALSE(b->get("tls-a").has_value());

  // By name: localhost is in the certificate too, checked as a DNS name (and sent as SNI).
  auto o = tls_options(port, {.ssl_ca_certs = certs().ca});
  o.host = "localhost";
  RedisBackend by_name(o);
  CHECK(by_name.get("tls-k") == std::optional<std::string>());  // db 0, not 3
}

TEST_CASE("redis over TLS: the distributed lock, its release notice included", "[redis][tls]") {
  auto o = tls_options(tls_server().tls_port(), {.ssl_ca_certs = certs().ca});
  o.distributed_lock = true;
  o.lock_timeout = 2s;
  o.lock_sleep = 1s;  // a waiter that wakes sooner was woken by the release notice
  auto a = std::make_shared<RedisBackend>(o);
  auto b = std::make_shared<RedisBackend>(o);
  auto ma = a->get_mutex("tls-lock");
  auto mb = b->get_mutex("tls-lock");
  REQUIRE(ma->acquire(true));
  CHECK(tls_server().cli({"exists", "_locktls-lock"}) == "1\n");
  CHECK_FALSE(mb->acquire(false));
  std::atomic<bool> got{false};
  std::thread waiter([&] { got = mb->acquire(true); });
  std::this_thread::sleep_for(100ms);  // the waiter subscribes (over TLS) and waits
  const auto released = std::chrono::steady_clock::now();
  ma->release();
  waiter.join();
  CHECK(got);
  CHECK(std::chrono::steady_clock::now() - released < 700ms);
  mb->release();
}

TEST_CASE("redis over TLS: a certificate this client cannot verify is a clear BackendError",
          "[redis][tls]") {
  const int port = tls_server().tls_port();
  SECTION("no ssl_ca_certs: the system store does not know the test CA") {
    RedisBackend b(tls_options(port, {}));
    const auto e = tls_error([&] { (void)b.get("k"); });
    CHECK(contains(e, "certificate verify failed"));
    CHECK(contains(e, "ssl_ca_certs"));
  }
  SECTION("another CA") {
    RedisBackend b(tls_options(port, {.ssl_ca_certs = certs().other_ca}));
    const auto e = tls_error([&] { (void)b.get("k"); });
    CHECK(contains(e, "certificate verify failed"));
    CHECK(contains(e, "not signed by a CA this client trusts"));
  }
  SECTION("ssl_cert_reqs=none is the explicit opt-out") {
    auto b = RedisBackend::from_arguments(
        json{{"host", "127.0.0.1"}, {"port", port}, {"ssl", true}, {"ssl_cert_reqs", "none"}});
    b->set("k", "v");
    CHECK(b->get("k") == std::optional<std::string>("v"));
  }
  SECTION("a wrong host name") {
    RedisBackend b(
        tls_options(port, {.ssl_ca_certs = certs().ca, .ssl_server_hostname = "redis.example"}));
    const auto e = tls_error([&] { (void)b.get("k"); });
    CHECK(contains(e, "hostname mismatch"));
    CHECK(contains(e, "does not name the host"));
    // ... accepted when the name check is turned off (the chain is still verified)
    RedisBackend unchecked(tls_options(port, {.ssl_ca_certs = certs().ca,
                                              .ssl_check_hostname = false,
                                              .ssl_server_hostname = "redis.example"}));
    CHECK_NOTHROW(unchecked.get("k"));
  }
  SECTION("an expired certificate") {
    RedisServer expired(RedisServerOptions{
        .tls = RedisServerOptions::Tls{certs().expired, certs().server_key, certs().ca, false}});
    RedisBackend b(tls_options(expired.tls_port(), {.ssl_ca_certs = certs().ca}));
    const auto e = tls_error([&] { (void)b.get("k"); });
    CHECK(contains(e, "certificate has expired"));
  }
}

TEST_CASE("redis TLS and plain text never mix: each way is a clear BackendError", "[redis][tls]") {
  SECTION("a plain-text client on the TLS port") {
    RedisBackend b(RedisOptions{.host = "127.0.0.1",
                                .port = tls_server().tls_port(),
                                .socket_timeout = 1s,
                                .socket_connect_timeout = 500ms});
    const auto t0 = std::chrono::steady_clock::now();
    const auto e = tls_error([&] { (void)b.get("k"); });
    CHECK(contains(e, "if this port serves TLS, use ssl=true or a rediss:// URL"));
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);  // not the timeout: the server hung up
  }
  SECTION("a TLS client on the plain port") {
    auto o = tls_options(tls_server().port(), {.ssl_ca_certs = certs().ca});
    o.socket_connect_timeout = 200ms;  // the plain port never answers the hello
    RedisBackend b(o);
    const auto e = tls_error([&] { (void)b.get("k"); });
    CAPTURE(e);
    CHECK(contains(e, "TLS handshake"));
    CHECK(contains(e, "does this port serve TLS?"));
  }
}

TEST_CASE("redis mutual TLS: a client certificate is sent, and its absence is a clear error",
          "[redis][tls]") {
  const int port = mtls_server().tls_port();
  RedisBackend with(tls_options(port, {.ssl_ca_certs = certs().ca,
                                       .ssl_certfile = certs().client,
                                       .ssl_keyfile = certs().client_key}));
  with.set("k", "mutual");
  CHECK(with.get("k") == std::optional<std::string>("mutual"));

  RedisBackend without(tls_options(port, {.ssl_ca_certs = certs().ca}));
  const auto e = tls_error([&] { (void)without.get("k"); });
  CAPTURE(e);
  // The server's alert ("certificate required") when it arrives before the first write, else a
  // reset: either way the error says what to pass.
  CHECK((contains(e, "certificate required") || contains(e, "requires a client certificate")));
  CHECK(contains(e, "ssl_certfile"));
}

TEST_CASE("redis TLS arguments: bad values and unusable files are ValidationErrors",
          "[redis][tls]") {
  auto refused = [](const json& a, const std::string& part) {
    try {
      (void)RedisBackend::from_arguments(a);
      FAIL("accepted " << a.dump());
    } catch (const dogpile::ValidationError& e) {
      CAPTURE(e.what());
      CHECK(contains(e.what(), part));
    }
  };
  refused(json{{"ssl", true}, {"ssl_cert_reqs", "sometimes"}}, "'ssl_cert_reqs'");
  refused(json{{"ssl", true}, {"ssl_cert_reqs", nullptr}}, "'ssl_cert_reqs'");
  refused(json{{"ssl", true}, {"ssl_ca_certs", "/nonexistent/ca.pem"}}, "/nonexistent/ca.pem");
  refused(
      json{{"ssl", true}, {"ssl_certfile", certs().client}, {"ssl_keyfile", certs().server_key}},
      "mismatch");
  refused(json{{"ssl", true}, {"ssl_keyfile", certs().client_key}}, "needs ssl_certfile");
  refused(json{{"ssl", true}, {"host", "/tmp/redis.sock"}}, "unix socket");
}
