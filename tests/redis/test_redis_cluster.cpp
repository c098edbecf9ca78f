// The `redis_cluster` backend against a three-master cluster the harness starts: conformance,
// multi-key calls across slots, key slots against CLUSTER KEYSLOT, no redirection on a settled
// slot map (the servers' errorstats), and MOVED / ASK during a live slot migration; and against
// a node played by the test, redirection loops that must end.
#include <catch2/catch.hpp>

#include "backends/conformance.hpp"
#include "dogpile/backends/redis.hpp"
#include "support/fake_server.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;
using dogpile::RedisClusterBackend;
using dogpile::RedisClusterOptions;
using dogpile::test::RedisCluster;
using dogpile_conformance::unique_key;

// The routing's slot function (src/redis/slot.cpp; not public API), checked against the server.
namespace dogpile::redis_detail {
int key_slot(std::string_view key) noexcept;
}

namespace {

RedisCluster& cluster() {
  static RedisCluster c(3);
  return c;
}
// Started before any test forks: a child that started it lazily would get its own cluster.
const bool cluster_started = (cluster(), true);

RedisClusterOptions options(bool lock) {
  RedisClusterOptions o;
  o.startup_nodes = cluster().startup_nodes();
  o.socket_timeout = 1s;
  o.socket_connect_timeout = 500ms;
  o.distributed_lock = lock;
  o.lock_timeout = 1s;
  o.lock_sleep = 50ms;
  return o;
}

std::shared_ptr<dogpile::CacheBackend> plain() {
  return std::make_shared<RedisClusterBackend>(options(false));
}
std::shared_ptr<dogpile::CacheBackend> locked() {
  return std::make_shared<RedisClusterBackend>(options(true));
}

// The CLUSTER SLOTS owner of `slot`, and another master.
std::pair<int, int> owner_and_other(int slot) {
  const int owner = cluster().port_for_slot(slot);
  for (int p : cluster().ports()) {
    if (p != owner) return {owner, p};
  }
  FAIL("one node only");
  return {0, 0};
}

std::string node_id(int port) {
  auto id = cluster().cli(port, {"cluster", "myid"});
  while (!id.empty() && (id.back() == '\n' || id.back() == '\r')) id.pop_back();
  return id;
}

int slot_of(const std::string& key) {
  return std::stoi(cluster().cli(cluster().ports()[0], {"cluster", "keyslot", key}));
}

// The sum over every master of one `INFO` field, e.g. `errorstat_MOVED:count=` in section
// `errorstats` or `cmdstat_get:calls=` in `commandstats` (0 where absent).
long long info_total(const std::string& section, const std::string& field) {
  long long total = 0;
  for (int p : cluster().ports()) {
    const auto info = cluster().cli(p, {"info", section});
    const auto at = info.find(field);
    if (at != std::string::npos) total += std::stoll(info.substr(at + field.size()));
  }
  return total;
}

void reset_stats() {
  for (int p : cluster().ports()) cluster().cli(p, {"config", "resetstat"});
}

// Keys whose hash tag is easy to get wrong, and plain keys.
const std::vector<std::string> kTrickyKeys = {
    "{user1000}.following", "{user1000}.followers", "a{b}c", "{}x", "{{a}}", "a{b}c{d}", "{a",
    "x{}{y}", "}a{b}", "a}", "{", "{}", "plain", "foo", "user:1000", "123456789"};

}  // namespace

DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE("redis_cluster", locked)
DOGPILE_BACKEND_CONFORMANCE("redis_cluster unlocked", plain)

TEST_CASE("redis_cluster: 100 keys over many slots in one get_multi / set_multi / erase_multi",
          "[redis][cluster]") {
  auto b = plain();
  std::vector<std::string> keys;
  std::vector<dogpile::BytesItem> items;
  for (int i = 0; i < 100; ++i) {
    keys.push_back(unique_key("multi") + std::to_string(i));
    items.emplace_back(keys.back(), "v" + std::to_string(i));
  }
  b->set_multi(items);
  auto got = b->get_multi(keys);
  for (int i = 0; i < 100; ++i) CHECK(got[static_cast<std::size_t>(i)] == "v" + std::to_string(i));
  // Every master holds some of them (no CROSSSLOT, no single-node shortcut).
  for (int p : cluster().ports()) {
    CHECK(std::stoi(cluster().cli(p, {"dbsize"})) > 0);
  }
  // With a TTL: a pipeline of SET PX.
  auto o = options(false);
  o.redis_expiration_time = 60s;
  RedisClusterBackend ttl(o);
  ttl.set_multi(items);
  CHECK(std::stoi(cluster().cli(cluster().port_for_slot(slot_of(keys[0])), {"pttl", keys[0]})) > 0);
  b->erase_multi(keys);
  for (const auto& v : b->get_multi(keys)) CHECK_FALSE(v);
}

TEST_CASE("redis_cluster: hash tags keep keys together", "[redis][cluster]") {
  CHECK(slot_of("{user1000}.following") == slot_of("{user1000}.followers"));
  auto b = plain();
  b->set("{tag}a", "1");
  b->set("{tag}b", "2");
  CHECK(b->get_multi(std::vector<std::string>{"{tag}a", "{tag}b"}) ==
        std::vector<std::optional<std::string>>{"1", "2"});
}

TEST_CASE("redis_cluster: key slots agree with the server's CLUSTER KEYSLOT for tricky hash tags",
          "[redis][cluster]") {
  for (const auto& k : kTrickyKeys) {
    INFO(k);
    CHECK(dogpile::redis_detail::key_slot(k) == slot_of(k));
  }
}

// A wrong slot is repaired by MOVED, so results stay right; only the servers' counters show
// the extra round trips.
TEST_CASE("redis_cluster: on a settled slot map every call goes straight to its node",
          "[redis][cluster]") {
  auto b = plain();
  const auto tag = unique_key("settled");
  std::vector<std::string> keys;
  for (const auto& k : kTrickyKeys) keys.push_back(k + tag);
  for (const auto& k : kTrickyKeys) keys.push_back(tag + k);
  (void)b->get(keys[0]);  // the slot map is loaded
  reset_stats();
  for (const auto& k : keys) {
    b->set(k, "v");
    CHECK(b->get(k) == std::optional<std::string>("v"));
  }
  CHECK(b->get_multi(keys) == std::vector<std::optional<std::string>>(keys.size(), "v"));
  b->erase_multi(keys);
  CHECK(info_total("commandstats", "cmdstat_set:calls=") == static_cast<long long>(keys.size()));
  CHECK(info_total("errorstats", "errorstat_MOVED:count=") == 0);
  CHECK(info_total("errorstats", "errorstat_ASK:count=") == 0);
}

TEST_CASE("redis_cluster: reads and writes follow a slot migration (ASK, then MOVED)",
          "[redis][cluster]") {
  auto b = plain();
  const auto k = unique_key("migrate");
  const int slot = slot_of(k);
  b->set(k, "before");  // warms the slot map
  const auto [from, to] = owner_and_other(slot);
  const auto from_id = node_id(from);
  const auto to_id = node_id(to);
  const auto s = std::to_string(slot);
  cluster().cli(to, {"cluster", "setslot", s, "importing", from_id});
  cluster().cli(from, {"cluster", "setslot", s, "migrating", to_id});
  // Move the key: the source now answers ASK for it.
  cluster().cli(from, {"migrate", "127.0.0.1", std::to_string(to), k, "0", "5000"});
  CHECK(b->get(k) == std::optional<std::string>("before"));  // via ASKING on the target
  b->set(k, "during");
  CHECK(cluster().cli(to, {"-c", "get", k}).find("during") != std::string::npos);
  // Finish: every node learns the new owner; the source answers MOVED.
  for (int p : cluster().ports()) cluster().cli(p, {"cluster", "setslot", s, "node", to_id});
  reset_stats();
  CHECK(b->get(k) == std::optional<std::string>("during"));  // one MOVED
  CHECK(info_total("errorstats", "errorstat_MOVED:count=") == 1);
  // The slot map learnt the new owner: no further redirection.
  CHECK(b->get(k) == std::optional<std::string>("during"));
  CHECK(info_total("errorstats", "errorstat_MOVED:count=") == 1);
  b->set(k, "after");
  CHECK(b->get_multi(std::vector<std::string>{k}) ==
        std::vector<std::optional<std::string>>{"after"});
  // Move it back so the other cases see the original layout.
  cluster().cli(from, {"cluster", "setslot", s, "importing", to_id});
  cluster().cli(to, {"cluster", "setslot", s, "migrating", from_id});
  cluster().cli(to, {"migrate", "127.0.0.1", std::to_string(from), k, "0", "5000"});
  for (int p : cluster().ports()) cluster().cli(p, {"cluster", "setslot", s, "node", from_id});
  CHECK(b->get(k) == std::optional<std::string>("after"));
  b->erase(k);
}

TEST_CASE(
    "redis_cluster: a multi-key read split by a migration is retried (TRYAGAIN) until the "
    "migration completes",
    "[redis][cluster]") {
  auto b = plain();
  const auto tag = "{" + unique_key("tryagain") + "}";
  const std::string ka = tag + "a";
  const std::string kb = tag + "b";
  b->set(ka, "A");
  b->set(kb, "B");
  const int slot = slot_of(ka);
  const auto [from, to] = owner_and_other(slot);
  const auto from_id = node_id(from);
  const auto to_id = node_id(to);
  const auto s = std::to_string(slot);
  cluster().cli(to, {"cluster", "setslot", s, "importing", from_id});
  cluster().cli(from, {"cluster", "setslot", s, "migrating", to_id});
  cluster().cli(from, {"migrate", "127.0.0.1", std::to_string(to), ka, "0", "5000"});
  // Now neither node has both keys: the source answers ASK, the target TRYAGAIN. The backend
  // retries with backoff while this thread finishes the migration.
  std::thread finish([&] {
    std::this_thread::sleep_for(100ms);
    cluster().cli(from, {"migrate", "127.0.0.1", std::to_string(to), kb, "0", "5000"});
    for (int p : cluster().ports()) cluster().cli(p, {"cluster", "setslot", s, "node", to_id});
  });
  std::vector<std::optional<std::string>> got;
  CHECK_NOTHROW(got = b->get_multi(std::vector<std::string>{ka, kb}));
  finish.join();
  CHECK(got == std::vector<std::optional<std::string>>{"A", "B"});
  // Restore the original owner.
  cluster().cli(from, {"cluster", "setslot", s, "importing", to_id});
  cluster().cli(to, {"cluster", "setslot", s, "migrating", from_id});
  cluster().cli(to, {"migrate", "127.0.0.1", std::to_string(from), "0", "5000", "keys", ka, kb});
  for (int p : cluster().ports()) cluster().cli(p, {"cluster", "setslot", s, "node", from_id});
  b->erase_multi(std::vector<std::string>{ka, kb});
}

// A node played by the test that serves every slot and redirects every command (to itself):
// the routing gives up after 8 MOVED redirections (9 tries), or at the second ASK (the
// importing node sent us back), with a BackendError that says so.
TEST_CASE("redis_cluster: redirection loops end in a BackendError", "[redis][cluster]") {
  namespace resp = dogpile::test::resp;
  const std::string code = GENERATE(std::string("MOVED"), std::string("ASK"));
  std::atomic<int> port{0};
  dogpile::test::FakeRedis node([&](const std::vector<std::string>& argv) {
    if (argv[0] == "CLUSTER") {
      return resp::array(
          {resp::array({resp::integer(0), resp::integer(16383),
                        resp::array({resp::bulk("127.0.0.1"), resp::integer(port.load())})})});
    }
    if (argv[0] == "ASKING") return std::string("+OK\r\n");
    return resp::error(code + " 1 127.0.0.1:" + std::to_string(port.load()));
  });
  port = node.port();
  RedisClusterOptions o;
  o.startup_nodes = {{"127.0.0.1", node.port()}};
  o.socket_timeout = 1s;
  RedisClusterBackend b(o);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    (void)b.get("k");
    FAIL("no error");
  } catch (const dogpile::BackendError& e) {
    CHECK_THAT(e.what(), Catch::Contains(code) && Catch::Contains("redirection"));
  }
  CHECK(node.count("GET") == (code == "MOVED" ? 9 : 2));
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
}
