// Pipelined set_multi / erase_multi (src/memcached/multi.cpp) against real memcached processes:
// every item lands on its server, a write a server refuses fails the call, and a server killed
// before a batch gives the documented BackendError while the live server's items are stored.
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dogpile/backends/memcached.hpp"

#include "support/servers.hpp"

namespace {

std::shared_ptr<dogpile::CacheBackend> multi_backend(nlohmann::json args) {
  if (!args.contains("socket_timeout")) args["socket_timeout"] = 1;
  return dogpile::make_backend("memcached", args);
}

// The message of the BackendError `set_multi` throws ("" if it stores everything).
std::string set_multi_error(dogpile::CacheBackend& b,
                            const std::vector<dogpile::BytesItem>& items) {
  try {
    b.set_multi(items);
  } catch (const dogpile::BackendError& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("memcached: set_multi / erase_multi store and delete every item across two servers",
          "[memcached][multi]") {
  dogpile::test::MemcachedServer a, b;
  auto both = multi_backend({{"url", {a.address(), b.address()}}});
  auto only_a = multi_backend({{"url", a.address()}});
  auto only_b = multi_backend({{"url", b.address()}});
  std::vector<dogpile::BytesItem> items;
  for (int i = 0; i < 300; ++i) {
    items.emplace_back("multi_" + std::to_string(i), "value " + std::to_string(i));
  }
  // Over libmemcached's 65 KiB io_bytes_watermark: the batch goes in several chunks.
  items.emplace_back("multi_big1", std::string(200'000, 'x'));
  items.emplace_back("multi_big2", std::string(70'000, 'y'));
  both->set_multi(items);
  int on_a = 0;
  int on_b = 0;
  for (const auto& [k, v] : items) {
    const auto got = both->get(k);
    CHECK(got == v);
    on_a += only_a->get(k) ? 1 : 0;
    on_b += only_b->get(k) ? 1 : 0;
  }
  CHECK(on_a + on_b == static_cast<int>(items.size()));
  CHECK(on_a > 50);
  CHECK(on_b > 50);
  std::vector<std::string> keys;
  for (const auto& [k, v] : items) keys.push_back(k);
  keys.emplace_back("multi_never_stored");  // a missing key is fine
  both->erase_multi(keys);
  for (const auto& k : keys) CHECK_FALSE(both->get(k));
  // The clients are back in step: single-key calls still work.
  both->set("after", "fine");
  CHECK(both->get("after") == std::string("fine"));
}

TEST_CASE("memcached: a write the server refuses in a pipelined set_multi fails the call",
          "[memcached][multi]") {
  // max_value_size over the server's -I 1m: the backend sends the 1.5 MB value and the server
  // answers "too large" in the middle of the batch.
  dogpile::test::MemcachedServer s({"-I", "1m"});
  auto b = multi_backend({{"url", s.address()}, {"max_value_size", 4 << 20}});
  std::vector<dogpile::BytesItem> items;
  for (int i = 0; i < 20; ++i) items.emplace_back("before_" + std::to_string(i), "v");
  items.emplace_back("huge", std::string(1'500'000, 'h'));
  for (int i = 0; i < 20; ++i) items.emplace_back("after_" + std::to_string(i), "v");
  const std::string m = set_multi_error(*b, items);
  INFO(m);
  CHECK(m.find("memcached backend: set") != std::string::npos);  // not reported as stored
  CHECK_FALSE(b->get("huge"));
  for (const auto& [k, v] : items) {
    if (k != "huge") CHECK(b->get(k) == v);  // the other writes were all sent and stored
  }
  b->set("after", "fine");
  CHECK(b->get("after") == std::string("fine"));
}

TEST_CASE(
    "memcached: set_multi with one of two servers dead fails naming it, stores the live "
    "server's items, and the next batch goes to the live server",
    "[memcached][multi][faults]") {
  dogpile::test::MemcachedServer a, b;
  auto both = multi_backend({{"url", {a.address(), b.address()}}, {"dead_retry", 30}});
  auto only_b = multi_backend({{"url", b.address()}});
  std::vector<dogpile::BytesItem> items;
  for (int i = 0; i < 100; ++i) items.emplace_back("dead_" + std::to_string(i), "zeroth");
  both->set_multi(items);  // learns the item size limit (asked of every server, once)
  for (auto& [k, v] : items) v = "first";
  a.kill();
  const std::string m = set_multi_error(*both, items);
  INFO(m);
  CHECK(m.find(a.address()) != std::string::npos);  // not reported as stored, names the server
  int stored = 0;
  for (const auto& [k, v] : items) stored += only_b->get(k) == std::string("first") ? 1 : 0;
  CHECK(stored >= 30);  // at least b's share (~half) was written despite a's failure
  // remove_failed (the default): once the writer has found a dead (a batch or two), a leaves
  // the ring and every key of the next batch goes to b.
  for (auto& [k, v] : items) v = "second";
  int failed_batches = 0;
  for (;;) {
    try {
      both->set_multi(items);
      break;
    } catch (const dogpile::BackendError&) {
      REQUIRE(++failed_batches < 3);
    }
  }
  for (const auto& [k, v] : items) CHECK(only_b->get(k) == std::string("second"));
}
