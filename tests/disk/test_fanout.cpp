// FanoutCache: python-diskcache's tests/test_fanout.py cases (reference §5.2) plus the persisted
// shard count and the "not done" timeout results.
#include <catch2/catch.hpp>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "disk_test_support.hpp"
#include "dogpile/disk/fanout.hpp"

using namespace std::chrono_literals;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::FanoutCache;
using dogpile::Key;

TEST_CASE("fanout: defaults and per-shard size limit", "[disk][fanout]") {
  TempDir d;
  FanoutCache fan(d.path);
  CHECK(fan.shard_count() == 8);
  CHECK(fan.shard(0).settings().size_limit == (1ull << 27));
  CHECK(std::filesystem::exists(d.path / "000" / "cache.db"));
  CHECK(std::filesystem::exists(d.path / "007" / "cache.db"));
  CHECK(fan.check().empty());
}

TEST_CASE("fanout: set, get, contains, erase, clear", "[disk][fanout]") {
  TempDir d;
  FanoutCache fan(d.path, {.shards = 4});
  for (int i = 0; i < 100; ++i) CHECK(fan.set(i, i));
  for (int i = 0; i < 100; ++i) {
    CHECK(fan.get<int>(i) == i);
    CHECK(fan.contains(i));
  }
  CHECK(fan.size() == 100);
  std::set<Key> keys;
  for (auto& k : fan.keys()) keys.insert(k);
  CHECK(keys.size() == 100);
  auto rev = fan.keys(true);
  auto fwd = fan.keys();
  std::reverse(rev.begin(), rev.end());
  CHECK(rev == fwd);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < fan.shard_count(); ++i) sum += fan.shard(i).volume();
  CHECK(fan.volume() == sum);
  for (int i = 0; i < 50; ++i) CHECK(fan.erase(i));
  CHECK_FALSE(fan.erase(100));
  CHECK(fan.add(200, 1));
  CHECK_FALSE(fan.add(200, 2));
  CHECK(fan.incr("n") == 1);
  CHECK(fan.pop<int>(200) == 1);
  CHECK(fan.clear() == 51);
  CHECK(fan.size() == 0);
}

TEST_CASE("fanout: a saved shard count beyond 999 is refused before creating anything",
          "[disk][fanout]") {
  TempDir d;
  {
    std::ofstream out(d.path / "dogpile-fanout.json");
    out << R"({"shards": 1000000, "hash": "diskcache-adler32"})"
        << "\n";
  }
  try {
    FanoutCache fan(d.path);
    FAIL("a corrupt shard count must be refused");
  } catch (const dogpile::DatabaseError& e) {
    CHECK(std::string(e.what()).find("1000000") != std::string::npos);
  }
  // Nothing was created next to the file.
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(d.path)) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("fanout: shard count is persisted and checked", "[disk][fanout]") {
  TempDir d;
  {
    FanoutCache fan(d.path, {.shards = 3});
    fan.set("a", 1);
  }
  CHECK(std::filesystem::exists(d.path / "dogpile-fanout.json"));
  FanoutCache again(d.path);
  CHECK(again.shard_count() == 3);
  CHECK(again.get<int>("a") == 1);
  try {
    FanoutCache wrong(d.path, {.shards = 5});
    FAIL("a mismatched shard count must be refused");
  } catch (const dogpile::ValidationError& e) {
    CHECK(std::string(e.what()).find("3 shards") != std::string::npos);
  }
  CHECK_THROWS_AS(FanoutCache(d / "zero", {.shards = 0}), dogpile::ValidationError);
}

TEST_CASE("fanout: routing matches diskcache's hash", "[disk][fanout]") {
  // Values computed with python-diskcache's Disk.hash (zlib.adler32 / int % 0xFFFFFFFF).
  CHECK(dogpile::fanout_hash(Key(5)) == 5);
  CHECK(dogpile::fanout_hash(Key(-1)) == 0xFFFFFFFEu);
  CHECK(dogpile::fanout_hash(Key("a")) == 0x00620062u);
  CHECK(dogpile::fanout_hash(Key(Bytes{"a"})) == 0x00620062u);
  CHECK(dogpile::fanout_hash(Key(std::int64_t{0xFFFFFFFF})) == 0);
}

TEST_CASE("fanout: a locked shard gives documented 'not done' results", "[disk][fanout]") {
  TempDir d;
  FanoutCache fan(d.path, {.shards = 2, .timeout = 10ms});
  REQUIRE(fan.set("k", 1));
  std::mutex m;
  std::condition_variable cv;
  bool locked = false;
  bool release = false;
  std::thread holder([&] {
    auto tx = fan.shard_for("k").transact();
    {
      std::lock_guard lk(m);
      locked = true;
    }
    cv.notify_all();
    std::unique_lock lk(m);
    cv.wait(lk, [&] { return release; });
  });
  {
    std::unique_lock lk(m);
    cv.wait(lk, [&] { return locked; });
  }
  CHECK_FALSE(fan.set("k", 2));
  CHECK_FALSE(fan.add("k", 1));
  CHECK_FALSE(fan.incr("k"));
  CHECK_FALSE(fan.erase("k"));
  CHECK_FALSE(fan.touch("k"));
  CHECK_FALSE(fan.pop<int>("k"));
  CHECK(fan.get<int>("k") == 1);  // reads do not need the lock
  {
    std::lock_guard lk(m);
    release = true;
  }
  cv.notify_all();
  holder.join();
  CHECK(fan.set("k", 3));
  CHECK(fan.get<int>("k") == 3);
}

TEST_CASE("fanout: stats, tags, memoize, transact, bulk", "[disk][fanout]") {
  TempDir d;
  FanoutCache fan(d.path, {.shards = 4});
  fan.stats(true, true);
  for (int i = 0; i < 20; ++i) fan.set(i, i, {.tag = i % 2 == 0 ? "even" : "odd"});
  for (int i = 0; i < 25; ++i) (void)fan.get<int>(i);
  auto st = fan.stats();
  CHECK(st.hits == 20);
  CHECK(st.misses == 5);
  CHECK(fan.evict("even") == 10);
  int calls = 0;
  auto twice = fan.memoize("twice", [&](int x) {
    ++calls;
    return 2 * x;
  });
  CHECK(twice(4) == 8);
  CHECK(twice(4) == 8);
  CHECK(calls == 1);
  {
    auto tx = fan.transact();
    fan.set("in-tx-a", 1);
    fan.set("in-tx-b", 2);
  }
  CHECK(fan.get<int>("in-tx-b") == 2);
  std::vector<std::pair<Key, int>> items{{"x", 1}, {"y", 2}, {"z", 3}};
  CHECK(fan.set_many(items));
  std::vector<Key> keys{"x", "y", "z", "w"};
  auto got = fan.get_many<int>(keys);
  CHECK(got[0] == 1);
  CHECK(got[2] == 3);
  CHECK_FALSE(got[3]);
  CHECK(fan.erase_many(keys) == 3);
  auto sub = fan.cache("named/sub");
  sub.set("s", 1);
  CHECK(std::filesystem::exists(d.path / "cache" / "named" / "sub" / "cache.db"));
  CHECK(fan.check().empty());
}
