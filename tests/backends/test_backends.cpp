// The conformance suite on the core backends (memory, memory_serialized, a bounded memory
// backend, and through a pass-through proxy), and the null backend's own cases
// (reference/dogpile.md §5.7 test_null_backend.py).
#include <catch2/catch.hpp>

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "conformance.hpp"
#include "dogpile/dogpile.hpp"

DOGPILE_BACKEND_CONFORMANCE("memory", [] { return dogpile::make_backend("memory"); })
DOGPILE_BACKEND_CONFORMANCE("memory_serialized",
                            [] { return dogpile::make_backend("memory_serialized"); })
DOGPILE_BACKEND_CONFORMANCE("memory bounded", [] {
  return dogpile::make_backend("memory", {{"max_entries", 10000}, {"eviction", "lru"}});
})
DOGPILE_BACKEND_CONFORMANCE("memory_serialized via proxy", [] {
  auto proxy = std::make_shared<dogpile::ProxyBackend>();
  proxy->wrap(dogpile::make_backend("memory_serialized"));
  return std::shared_ptr<dogpile::CacheBackend>(proxy);
})

TEST_CASE("memory backends: built by name, alias and arguments", "[conformance][memory]") {
  CHECK(dogpile::make_backend("memory", {{"shards", 4}, {"max_entries", 100}}));
  CHECK(dogpile::make_backend("memory_serialized", {{"max_bytes", 1 << 20}}));
  CHECK(dogpile::make_backend("dogpile.cache.memory", nlohmann::json::object()));
}

// ---- null backend -----------------------------------------------------------------------------

TEST_CASE("null backend: every operation misses", "[null]") {
  auto b = dogpile::make_backend("null");
  b->set("k", "v");
  CHECK_FALSE(b->get("k"));
  b->erase("k");
  b->set_multi(std::vector<dogpile::BytesItem>{{"a", "1"}, {"b", "2"}});
  CHECK(b->get_multi(std::vector<std::string>{"a", "b"}) ==
        std::vector<std::optional<std::string>>(2));
  b->erase_multi(std::vector<std::string>{"a", "b"});

  auto r = dogpile::make_region();
  r.configure("null");
  r.set("k", 1);
  CHECK_FALSE(r.get<int>("k"));
  r.set_multi<int>({{"a", 1}, {"b", 2}});
  CHECK(r.get_multi<int>({"a", "b"}) == std::vector<std::optional<int>>(2));
  r.erase("k");
  r.erase_multi({"a", "b"});
  CHECK_FALSE(r.get_value_metadata<int>("k"));
}

TEST_CASE("null backend: the decorator recomputes every time (1, 2, 3)", "[null]") {
  auto r = dogpile::make_region();
  r.configure("dogpile.cache.null");
  int n = 0;
  auto fn = r.cache_on_arguments("ns", [&n](int) { return ++n; });
  CHECK(fn(1) == 1);
  CHECK(fn(1) == 2);
  CHECK(fn(1) == 3);
  int m = 0;
  auto multi = r.cache_multi_on_arguments("m", [&m](const std::vector<int>& xs) {
    std::vector<int> out;
    for (std::size_t i = 0; i < xs.size(); ++i) out.push_back(++m);
    return out;
  });
  CHECK(multi(1, 2) == std::vector<int>{1, 2});
  CHECK(multi(1, 2) == std::vector<int>{3, 4});
}

TEST_CASE("null backend: its mutex always acquires, even twice", "[null]") {
  auto b = dogpile::make_backend("null");
  auto m = b->get_mutex("foo");
  REQUIRE(m);
  CHECK(m->acquire());
  CHECK(m->acquire());
  CHECK(m->acquire(false));
  CHECK_FALSE(m->locked());
  m->release();
  m->release();
  auto r = dogpile::make_region();
  r.configure(b);
  auto rm = r.mutex_for("foo");
  CHECK(rm->acquire(false));
  CHECK_FALSE(r.key_is_locked("foo"));
  // a held "lock" does not block get_or_create
  CHECK(r.get_or_create("foo", [] { return 5; }) == 5);
}
