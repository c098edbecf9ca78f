// DiskCache behaviour: the cases of python-diskcache's tests/test_core.py (reference §5.1) and the
// "beyond diskcache" guarantees.
#include <sqlite3.h>
#include <atomic>
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "disk_test_support.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/disk/cache.hpp"

using namespace std::chrono_literals;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::DiskCache;
using dogpile::DiskValue;
using dogpile::Key;

namespace {
Bytes bytes_of(std::size_t n, char c = 'x') { return Bytes{std::string(n, c)}; }
}  // namespace

TEST_CASE("round trip of the native value kinds and Codec values", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  CHECK(cache.check().empty());
  cache.set("int", 1234);
  cache.set("neg", std::int64_t{-5});
  cache.set("float", 56.78);
  cache.set("str", "hello");
  cache.set("big-str", std::string(1 << 16, 'h'));
  cache.set("bytes", Bytes{std::string("wor\0ld", 6)});
  cache.set("big-bytes", bytes_of(1 << 16));
  cache.set(7, std::map<std::string, int>{{"a", 1}, {"b", 2}});
  cache.set(2.5, std::vector<std::uint8_t>{1, 2, 3});
  cache.set(Bytes{"\x01\x02"}, true);

  CHECK(cache.get<int>("int") == 1234);
  CHECK(cache.get<std::int64_t>("neg") == -5);
  CHECK(cache.get<double>("float") == 56.78);
  CHECK(cache.get<double>("int") == 1234.0);
  CHECK(cache.get<std::string>("str") == "hello");
  CHECK(cache.get<std::string>("big-str") == std::string(1 << 16, 'h'));
  CHECK(cache.get<Bytes>("bytes") == Bytes{std::string("wor\0ld", 6)});
  CHECK(cache.get<Bytes>("big-bytes") == bytes_of(1 << 16));
  CHECK(cache.get<std::map<std::string, int>>(7) == std::map<std::string, int>{{"a", 1}, {"b", 2}});
  CHECK(cache.get<std::vector<std::uint8_t>>(2.5) == std::vector<std::uint8_t>{1, 2, 3});
  CHECK(cache.get<bool>(Bytes{"\x01\x02"}) == true);
  CHECK(std::get<std::string>(*cache.get<dogpile::DiskValue>("str")) == "hello");
  CHECK(disk_test::value_files(d.path) == 2);
  CHECK(cache.size() == 10);
  CHECK_FALSE(cache.get<int>("missing"));

  // 1 and 1.0 are the same key, as in diskcache.
  cache.set(1, "one");
  CHECK(cache.get<std::string>(1.0) == "one");

  CHECK_THROWS_AS(cache.get<int>("str"), dogpile::TypeMismatch);
  CHECK_THROWS_AS(cache.get<std::string>("int"), dogpile::TypeMismatch);
  CHECK(cache.erase("big-str"));
  CHECK_FALSE(cache.erase("big-str"));
  CHECK(cache.size() == 10);
  CHECK(disk_test::value_files(d.path) == 1);
  CHECK(cache.check().empty());
}

TEST_CASE("overwrite keeps position and cleans files", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  cache.set("a", 1);
  cache.set("b", 2);
  cache.set("a", bytes_of(100000));
  CHECK(disk_test::value_files(d.path) == 1);
  cache.set("a", 3);
  CHECK(disk_test::value_files(d.path) == 0);
  CHECK(cache.keys() == std::vector<Key>{"a", "b"});
  CHECK(cache.check().empty());
}

TEST_CASE("get_item returns expire time and tag", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.clock = clock});
  CHECK_FALSE(cache.get_item<int>(0));
  cache.set(0, 0, {.tag = "number"});
  auto it = cache.get_item<int>(0);
  REQUIRE(it);
  CHECK(it->value == 0);
  CHECK_FALSE(it->expire_time);
  CHECK(it->tag == Key("number"));
  for (Key tag : {Key(5), Key(1.5), Key("s"), Key(Bytes{"b"})}) {
    cache.set("t", 1, {.expire = 10s, .tag = tag});
    auto item = cache.get_item<int>("t");
    REQUIRE(item);
    CHECK(item->tag == tag);
    REQUIRE(item->expire_time);
    CHECK(std::chrono::abs(*item->expire_time - (clock() + 10s)) < 1ms);
  }
}

TEST_CASE("expiry with an injected clock", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.clock = clock});
  cache.set("a", 1, {.expire = 1ms});
  cache.set("f", bytes_of(40000), {.expire = 1ms});
  CHECK(cache.get<int>("a") == 1);
  clock.advance(10ms);
  CHECK_FALSE(cache.get<int>("a"));
  CHECK_FALSE(cache.contains("a"));
  CHECK_FALSE(cache.erase("a"));
  CHECK_FALSE(cache.pop<int>("a"));
  CHECK(cache.incr("a") == 1);  // restarts from the default
  cache.set("b", 5, {.expire = 1ms});
  clock.advance(10ms);
  CHECK_THROWS_AS(cache.incr("b", 1, std::nullopt), dogpile::KeyNotFound);
  CHECK(cache.add("b", 7));
  CHECK(cache.get<int>("b") == 7);
  CHECK_FALSE(cache.add("b", 8));
  CHECK(cache.add("f", 1));  // replaces an expired file value: its file goes
  CHECK(disk_test::value_files(d.path) == 0);

  cache.set("t", 1, {.expire = 60s});
  CHECK(cache.touch("t"));  // never expires now
  clock.advance(120s);
  CHECK(cache.get<int>("t") == 1);
  CHECK(cache.touch("t", 0ms));
  CHECK_FALSE(cache.touch("t"));
  CHECK_FALSE(cache.get<int>("t"));
  CHECK(cache.check().empty());
}

TEST_CASE("writes cull expired rows, cull_limit 0 disables it", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.cull_limit = 0, .clock = clock});
  for (int i = 0; i < 10; ++i) cache.set(i, i, {.expire = 1ms});
  clock.advance(1s);
  for (int i = 10; i < 15; ++i) cache.set(i, i);
  CHECK(cache.size() == 15);
  cache.reset("cull_limit", std::int64_t{10});
  cache.set(15, 15);
  CHECK(cache.size() == 6);
}

TEST_CASE("a write culls at most cull_limit expired rows, earliest expiry first", "[disk]") {
  // diskcache's _cull step 2 (reference §2.7): SELECT ... ORDER BY expire_time LIMIT n, then
  // delete those rows and their value files after the commit; n -= deleted for the size cull.
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.cull_limit = 3, .disk_min_file_size = 16, .clock = clock});
  for (int i = 0; i < 5; ++i) {
    cache.set(i, bytes_of(100), {.expire = std::chrono::milliseconds(100 - i)});  // 4 first
  }
  cache.set("live", bytes_of(100));
  CHECK(disk_test::value_files(d.path) == 6);
  clock.advance(1s);
  cache.set("x", 1);
  CHECK(cache.keys() == std::vector<Key>{0, 1, "live", "x"});
  CHECK(disk_test::value_files(d.path) == 3);
  cache.set("y", 2);
  CHECK(cache.keys() == std::vector<Key>{"live", "x", "y"});
  CHECK(disk_test::value_files(d.path) == 1);
  // Over the size limit: the expired row counts against cull_limit, then 2 by store time.
  cache.set(9, 9, {.expire = 1ms});
  clock.advance(1s);
  cache.reset("size_limit", std::int64_t{0});
  cache.set("z", 3);
  CHECK(cache.keys() == std::vector<Key>{"y", "z"});
  CHECK(disk_test::value_files(d.path) == 0);
  CHECK(cache.check().empty());
}

TEST_CASE("expire() removes exactly the expired rows", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.cull_limit = 0, .clock = clock});
  for (int i = 1; i <= 100; ++i) cache.set(i, i, {.expire = std::chrono::seconds(i)});
  CHECK(cache.expire(clock() + 11s) == 10);
  CHECK(cache.size() == 90);
  // Many rows with one identical expire time are all removed (diskcache's paging bug).
  for (int i = 0; i < 250; ++i) cache.set(1000 + i, i, {.expire = 200s});
  CHECK(cache.expire(clock() + 300s) == 340);
  CHECK(cache.size() == 0);
}

namespace {
/// Fills keys 0..9 with 100 KB files and sets size_limit just above the volume.
void fill_ten(DiskCache& cache, dogpile::ManualClock& clock) {
  for (int i = 0; i < 10; ++i) {
    cache.set(i, bytes_of(100000));
    clock.advance(1s);
  }
  cache.reset("size_limit", static_cast<std::int64_t>(cache.volume() + 50000));
}

std::vector<Key> sorted(std::vector<Key> v) {
  std::sort(v.begin(), v.end());
  return v;
}
}  // namespace

TEST_CASE("eviction: least-recently-stored", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.cull_limit = 2, .clock = clock});
  fill_ten(cache, clock);
  cache.set(10, bytes_of(100000));
  CHECK(sorted(cache.keys()) == std::vector<Key>{2, 3, 4, 5, 6, 7, 8, 9, 10});
  CHECK(cache.check().empty());
}

TEST_CASE("eviction: least-recently-used reads are buffered, not locked", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.eviction_policy = dogpile::EvictionPolicy::least_recently_used,
                           .cull_limit = 5,
                           .clock = clock});
  fill_ten(cache, clock);
  for (int k : {0, 1, 7, 8, 9}) {
    CHECK(cache.get<Bytes>(k));
    clock.advance(1s);
  }
  cache.set(10, bytes_of(100000));
  CHECK(sorted(cache.keys()) == std::vector<Key>{0, 1, 7, 8, 9, 10});
  CHECK(cache.incr("n") == 1);
  CHECK(cache.decr("n", 3) == -2);
}

TEST_CASE("eviction: least-frequently-used", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.eviction_policy = dogpile::EvictionPolicy::least_frequently_used,
                           .cull_limit = 5,
                           .clock = clock});
  fill_ten(cache, clock);
  int reads = 5;
  for (int k : {0, 1, 7, 8, 9}) {
    for (int r = 0; r < reads; ++r) CHECK(cache.get<Bytes>(k));
    --reads;
  }
  cache.set(10, bytes_of(100000));
  CHECK(sorted(cache.keys()) == std::vector<Key>{0, 1, 7, 8, 9, 10});
}

TEST_CASE("cull() brings the volume under the limit; policy none does not", "[disk]") {
  TempDir d;
  DiskCache cache(d / "a", {.cull_limit = 0, .disk_min_file_size = 1024});
  for (int i = 0; i < 40; ++i) cache.set(i, bytes_of(3 * 1024));
  std::uint64_t limit = cache.volume() - 30 * 3 * 1024;
  cache.reset("size_limit", static_cast<std::int64_t>(limit));
  CHECK(cache.cull() > 0);
  CHECK(cache.volume() <= limit);
  CHECK(cache.check().empty());

  DiskCache none(d / "b", {.eviction_policy = dogpile::EvictionPolicy::none, .cull_limit = 0});
  for (int i = 0; i < 40; ++i) none.set(i, bytes_of(40000));
  std::uint64_t before = none.volume();
  none.reset("size_limit", std::int64_t{0});
  CHECK(none.cull() == 0);
  CHECK(none.volume() == before);

  DiskCache zero(d / "c", {.size_limit = 0, .cull_limit = 0});
  for (int i = 0; i < 40; ++i) zero.set(i, i);
  zero.cull();
  CHECK(zero.size() == 0);
}

TEST_CASE("tags: evict and the tag index", "[disk]") {
  TempDir d;
  DiskCache cache(d.path, {.tag_index = true});
  CHECK(cache.settings().tag_index);
  const char* tags[] = {"red", "blue", "yellow"};
  for (int i = 0; i < 90; ++i) cache.set(i, i, {.tag = tags[i % 3]});
  CHECK(cache.evict("red") == 30);
  CHECK(cache.size() == 60);
  cache.drop_tag_index();
  CHECK_FALSE(cache.settings().tag_index);
  CHECK(cache.evict("blue") == 30);
}

TEST_CASE("statistics", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  auto [h0, m0] = cache.stats(true);
  CHECK(h0 == 0);
  CHECK(m0 == 0);
  for (int i = 0; i < 100; ++i) cache.set(i, i);
  for (int i = 0; i < 110; ++i) (void)cache.get<int>(i);
  auto st = cache.stats(true, true);
  CHECK(st.hits == 100);
  CHECK(st.misses == 10);
  auto off = cache.stats(false);
  CHECK(off.hits == 0);
  CHECK(off.misses == 0);
  for (int i = 0; i < 10; ++i) (void)cache.get<int>(i);
  CHECK(cache.stats(false).hits == 0);
  // Counters survive a reopen (flushed at close).
  cache.stats(true);
  (void)cache.get<int>(1);
  cache.close();
  DiskCache again(d.path);
  CHECK(again.stats().hits == 1);
}

TEST_CASE("check() finds and repairs damage", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  for (int i = 0; i < 5; ++i) cache.set(i, bytes_of(40000, static_cast<char>('a' + i)));
  auto p0 = cache.file_path(0);
  auto p1 = cache.file_path(1);
  REQUIRE(p0);
  REQUIRE(p1);
  std::filesystem::remove(*p0);
  std::filesystem::resize_file(*p1, 10);
  std::filesystem::create_directories(d.path / "ab");
  std::ofstream(d.path / "ab" / "stray.val") << "junk";
  std::filesystem::create_directories(d.path / "ff" / "ee");
  cache.reset("count", std::int64_t{99});
  auto warnings = cache.check(true);
  using K = dogpile::CheckWarning::Kind;
  auto has = [&](K k) {
    return std::any_of(warnings.begin(), warnings.end(),
                       [k](const auto& w) { return w.kind == k; });
  };
  CHECK(has(K::missing_file));
  CHECK(has(K::file_size));
  CHECK(has(K::unknown_file));
  CHECK(has(K::empty_dir));
  CHECK(has(K::count));
  CHECK(cache.check().empty());
  CHECK(cache.size() == 4);
  CHECK_FALSE(cache.get<Bytes>(0));
}

TEST_CASE("iteration: insertion order, reverse, snapshot, sorted order", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  CHECK(cache.keys().empty());
  CHECK(cache.sorted_keys().empty());
  for (int i : {4, 2, 0, 3, 1}) cache.set(i, i);
  cache.set("b", 1);
  cache.set(Bytes{"a"}, 1);
  cache.set("a", 1);
  cache.set(2.5, 1);
  CHECK(cache.keys() == std::vector<Key>{4, 2, 0, 3, 1, "b", Bytes{"a"}, "a", 2.5});
  CHECK(cache.keys(true) == std::vector<Key>{2.5, "a", Bytes{"a"}, "b", 1, 3, 0, 2, 4});
  CHECK(cache.sorted_keys() == std::vector<Key>{0, 1, 2, 2.5, 3, 4, "a", "b", Bytes{"a"}});
  CHECK(cache.sorted_keys(true).front() == Key(Bytes{"a"}));
  // A listing in progress does not see later inserts.
  std::vector<Key> seen;
  cache.for_each_key([&](const Key& k) {
    seen.push_back(k);
    cache.set(std::string("new-") + k.repr(), 1);
    return true;
  });
  CHECK(seen.size() == 9);
  // Many keys page correctly.
  TempDir d2;
  DiskCache many(d2.path);
  for (int i = 0; i < 1000; ++i) many.set(i, i);
  CHECK(many.keys().size() == 1000);
}

TEST_CASE("buffered hit/miss counts and access updates survive a write that rolls back",
          "[disk][stats]") {
  TempDir d;
  DiskCache cache(d.path, {.eviction_policy = dogpile::EvictionPolicy::least_frequently_used,
                           .statistics = true,
                           .access_flush_events = 1000000,
                           .access_flush_interval = std::chrono::hours(1)});
  cache.set("a", 1);
  for (int i = 0; i < 10; ++i) CHECK(cache.get<int>("a") == 1);
  for (int i = 0; i < 5; ++i) CHECK_FALSE(cache.get<int>("missing"));
  // A write transaction that flushes the buffer, then rolls back.
  {
    auto tx = cache.transact();
    cache.set("b", 2);
    tx.rollback();
  }
  CHECK_FALSE(cache.add("a", 3));  // a failed add: nothing written
  const auto st = cache.stats();
  CHECK(st.hits == 10);
  CHECK(st.misses == 5);
  // The LFU access count of "a" was kept too.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((d.path / "cache.db").c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT access_count FROM Cache WHERE key = 'a'", -1, &s,
                             nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(sqlite3_column_int(s, 0) == 10);
  sqlite3_finalize(s);
  sqlite3_close(db);
}

TEST_CASE("a value SQLite would turn into NULL is refused, and what was stored stays",
          "[disk][values]") {
  TempDir d;
  DiskCache cache(d.path);
  cache.set("x", 1.5);
  CHECK_THROWS_AS(cache.set("x", std::nan("")), dogpile::ValidationError);
  CHECK(cache.get<double>("x") == 1.5);
  CHECK_THROWS_AS(cache.set(std::nan(""), 1), dogpile::ValidationError);
  CHECK_THROWS_AS(cache.add("y", std::nan("")), dogpile::ValidationError);
  CHECK_FALSE(cache.contains("y"));
}

TEST_CASE(
    "reset validates type and range before storing; a bad stored setting does not stop "
    "an open",
    "[disk][settings]") {
  TempDir d;
  {
    DiskCache cache(d.path);
    cache.set("keep", 1);
    CHECK_THROWS_AS(cache.reset("size_limit", DiskValue{std::string("abc")}),
                    dogpile::ValidationError);
    CHECK_THROWS_AS(cache.reset("size_limit", DiskValue{std::string("1GB")}),
                    dogpile::ValidationError);
    CHECK_THROWS_AS(cache.reset("size_limit", DiskValue{std::int64_t{-5}}),
                    dogpile::ValidationError);
    CHECK_THROWS_AS(cache.reset("statistics", DiskValue{std::int64_t{7}}),
                    dogpile::ValidationError);
    CHECK_THROWS_AS(cache.reset("eviction_policy", DiskValue{std::string("lru")}),
                    dogpile::ValidationError);
    CHECK_THROWS_AS(cache.reset("sqlite_journal_mode", DiskValue{std::string("fast")}),
                    dogpile::ValidationError);
    // Nothing was stored: the setting reads as before, and nothing was evicted.
    CHECK(cache.reset("size_limit") == DiskValue{std::int64_t{1} << 30});
    CHECK(cache.get<int>("keep") == 1);
    CHECK(cache.reset("size_limit", DiskValue{std::string("2048")}) ==
          DiskValue{std::string("2048")});  // digits only: fine
    CHECK(cache.setting_problems().empty());
  }
  // A value written behind our back (another tool, an old version) is reported, not fatal.
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((d.path / "cache.db").c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "UPDATE Settings SET value = 'abc' WHERE key = 'size_limit'", nullptr,
                         nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  DiskCache again(d.path);
  REQUIRE(again.setting_problems().size() == 1);
  CHECK(again.setting_problems()[0].find("size_limit") != std::string::npos);
  CHECK(again.get<int>("keep") == 1);
  CHECK(again.reset("size_limit") == DiskValue{std::int64_t{1} << 30});
}

TEST_CASE("queues: push never overwrites, whatever else lies in the queue's key range",
          "[disk][queue]") {
  TempDir d;
  DiskCache cache(d.path);
  // A float key inside the integer range: diskcache continues from it (7.5 -> 8.5, 9.5).
  cache.set(7.5, std::string("float"));
  CHECK(cache.push(std::string("a")) == Key(8.5));
  CHECK(cache.push(std::string("b")) == Key(9.5));
  CHECK(cache.get<std::string>(7.5) == std::optional<std::string>("float"));
  CHECK(cache.get<std::string>(8.5) == std::optional<std::string>("a"));
  CHECK(cache.get<std::string>(9.5) == std::optional<std::string>("b"));
  // A text key in a prefixed range that is not <prefix>-<integer>: a clear error, no write.
  cache.set(std::string("q-5x"), 1);
  const auto before = cache.size();
  CHECK_THROWS_AS(cache.push(std::string("c"), {.prefix = "q"}), dogpile::ValidationError);
  CHECK(cache.size() == before);
  cache.erase(std::string("q-5x"));
  // Digits beyond int64: a clear error, not std::out_of_range.
  cache.set(std::string("r-1000000000000000000000000"), 1);
  CHECK_THROWS_AS(cache.push(std::string("d"), {.prefix = "r"}), dogpile::ValidationError);
  // A key that already exists where the next item would go is never replaced.
  cache.set(std::int64_t{999999999999998}, std::string("last"));
  CHECK(cache.push(std::string("e")) == Key(std::int64_t{999999999999999}));
  CHECK_THROWS_AS(cache.push(std::string("f")), dogpile::DatabaseError);
  CHECK(cache.get<std::string>(std::int64_t{999999999999999}) == std::optional<std::string>("e"));
}

TEST_CASE("queues: push, pull, peek", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.clock = clock});
  for (int i = 0; i < 10; ++i) {
    Key k = cache.push(i);
    CHECK(k == Key(std::int64_t{500000000000000} + i));
  }
  for (int i = 0; i < 10; ++i) {
    auto item = cache.pull<int>();
    REQUIRE(item);
    CHECK(item->second == i);
  }
  CHECK_FALSE(cache.pull<int>());

  CHECK(cache.push("x", {.prefix = "jobs"}) == Key("jobs-500000000000000"));
  CHECK(cache.push("y", {.prefix = "jobs"}) == Key("jobs-500000000000001"));
  CHECK(cache.push("w", {.prefix = "jobs", .side = dogpile::Side::front}) ==
        Key("jobs-499999999999999"));
  auto peeked = cache.peek<std::string>({.prefix = "jobs"});
  REQUIRE(peeked);
  CHECK(peeked->second == "w");
  CHECK(cache.pull<std::string>({.prefix = "jobs"})->second == "w");
  CHECK(cache.pull<std::string>({.prefix = "jobs", .side = dogpile::Side::back})->second == "y");
  CHECK(cache.pull<std::string>({.prefix = "jobs"})->first == Key("jobs-500000000000000"));

  cache.push(1, {.expire = 10s, .tag = "t"});
  auto extra = cache.pull_item<int>();
  REQUIRE(extra);
  CHECK(extra->tag == Key("t"));
  CHECK(extra->expire_time);

  // Expired items at the head are dropped.
  cache.clear();
  for (int i = 0; i < 3; ++i) cache.push(0, {.expire = 1ms});
  cache.push(1);
  clock.advance(1s);
  auto p = cache.peek<int>();
  REQUIRE(p);
  CHECK(p->first == Key(std::int64_t{500000000000003}));
  CHECK(cache.size() == 1);
  auto got = cache.pull<int>();
  REQUIRE(got);
  CHECK(got->second == 1);
  CHECK(cache.size() == 0);

  // File values survive the queue and their files go.
  cache.push(bytes_of(100000, 'q'));
  CHECK(cache.peek<Bytes>()->second == bytes_of(100000, 'q'));
  CHECK(cache.pull<Bytes>()->second == bytes_of(100000, 'q'));
  CHECK(disk_test::value_files(d.path) == 0);
  CHECK(cache.check().empty());
}

TEST_CASE("peekitem", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.clock = clock});
  CHECK_FALSE(cache.peekitem<std::string>());
  cache.set("a", "A");
  cache.set("b", "B");
  cache.set("c", "C");
  cache.set("d", "D", {.expire = 1ms});
  cache.set("e", "E", {.expire = 1ms});
  clock.advance(1s);
  auto last = cache.peekitem<std::string>();
  REQUIRE(last);
  CHECK(last->first == Key("c"));
  CHECK(cache.size() == 3);
  CHECK(cache.peekitem<std::string>(false)->second == "A");
}

TEST_CASE("incr and decr", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  CHECK(cache.incr("n") == 1);
  CHECK(cache.incr("n", 5) == 6);
  CHECK(cache.decr("n", 10) == -4);
  CHECK(cache.incr("m", 1, 100) == 101);
  CHECK_THROWS_AS(cache.incr("missing", 1, std::nullopt), dogpile::KeyNotFound);
  cache.set("s", "text");
  CHECK_THROWS_AS(cache.incr("s"), dogpile::TypeMismatch);
  cache.set("f", bytes_of(50000));
  CHECK_THROWS_AS(cache.incr("f"), dogpile::TypeMismatch);
  cache.set("max", INT64_MAX);
  CHECK_THROWS_AS(cache.incr("max"), dogpile::ValidationError);
  CHECK(cache.get<std::int64_t>("max") == INT64_MAX);
  CHECK(cache.check().empty());
}

TEST_CASE("bulk get_many / set_many / erase_many", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  std::vector<std::pair<Key, std::string>> items;
  for (int i = 0; i < 20; ++i) items.emplace_back(i, std::string(i == 3 ? 50000 : 3, 'v'));
  cache.set_many(items, {.tag = "bulk"});
  std::vector<Key> keys{0, 3, 99, 19};
  auto got = cache.get_many<std::string>(keys);
  REQUIRE(got.size() == 4);
  CHECK(got[0] == "vvv");
  CHECK(got[1]->size() == 50000);
  CHECK_FALSE(got[2]);
  CHECK(got[3] == "vvv");
  CHECK(cache.erase_many(keys) == 3);
  CHECK(cache.size() == 17);
  CHECK(cache.evict("bulk") == 17);
  CHECK(cache.check().empty());
}

TEST_CASE("streams and file paths", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  std::istringstream in(std::string("streamed bytes"));
  CHECK(cache.set_stream("s", in));
  auto path = cache.file_path("s");
  REQUIRE(path);
  CHECK(std::filesystem::file_size(*path) == 14);
  auto r = cache.read("s");
  REQUIRE(r);
  std::string content((std::istreambuf_iterator<char>(*r)), std::istreambuf_iterator<char>());
  CHECK(content == "streamed bytes");
  CHECK(cache.get<Bytes>("s") == Bytes{"streamed bytes"});
  cache.set("inline", "small");
  auto r2 = cache.read("inline");
  REQUIRE(r2);
  std::string c2((std::istreambuf_iterator<char>(*r2)), std::istreambuf_iterator<char>());
  CHECK(c2 == "small");
  CHECK_FALSE(cache.file_path("inline"));
  CHECK_FALSE(cache.read("nope"));
  cache.set("n", 1);
  CHECK_THROWS_AS(cache.read("n"), dogpile::TypeMismatch);
}

TEST_CASE("value files are removed with their empty directories", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  auto before = disk_test::listing(d.path);
  for (int i = 0; i < 10; ++i) cache.set(i, bytes_of(1 << 20));
  CHECK(disk_test::value_files(d.path) == 10);
  for (int i = 0; i < 10; ++i) CHECK(cache.erase(i));
  CHECK(disk_test::listing(d.path) == before);
}

TEST_CASE("transactions: commit, rollback, nesting, files", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  {
    auto tx = cache.transact();
    cache.set("a", 1);
    cache.set("b", bytes_of(50000));
  }
  CHECK(cache.get<int>("a") == 1);
  {
    auto tx = cache.transact();
    cache.set("c", 1);
    cache.set("big", bytes_of(50000));
    tx.rollback();
  }
  CHECK_FALSE(cache.contains("c"));
  CHECK_FALSE(cache.contains("big"));
  CHECK(disk_test::value_files(d.path) == 1);
  try {
    auto tx = cache.transact();
    cache.set("d", 1);
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(cache.contains("d"));
  {
    auto outer = cache.transact();
    cache.set("e", 1);
    {
      auto inner = cache.transact();
      cache.set("f", 1);
      cache.erase("b");  // its file may go only if everything commits
      inner.rollback();
    }
    CHECK(cache.contains("b"));
    cache.incr("e");
  }
  CHECK(cache.get<int>("e") == 2);
  CHECK_FALSE(cache.contains("f"));
  CHECK(cache.get<Bytes>("b") == bytes_of(50000));
  // A failing operation inside a transaction does not poison it.
  {
    auto tx = cache.transact();
    cache.set("s", "text");
    CHECK_THROWS_AS(cache.incr("s"), dogpile::TypeMismatch);
    cache.set("g", 1);
  }
  CHECK(cache.get<int>("g") == 1);
  CHECK(cache.check().empty());
}

TEST_CASE("a busy write lock times out; reads never wait for it", "[disk]") {
  TempDir d;
  DiskCache holder(d.path, {.eviction_policy = dogpile::EvictionPolicy::least_recently_used,
                            .statistics = true});
  holder.set("k", "v");
  DiskCache other(d.path, {.timeout = 50ms});
  auto tx = holder.transact();
  std::thread t([&] {
    CHECK_THROWS_AS(other.set("x", 1), dogpile::TimeoutError);
    CHECK_THROWS_AS(other.incr("n"), dogpile::TimeoutError);
    // LRU + statistics: the get would be a write transaction in python-diskcache.
    for (int i = 0; i < 2000; ++i) CHECK(other.get<std::string>("k") == "v");
    CHECK(other.contains("k"));
  });
  t.join();
  tx.commit();
  other.flush();
  CHECK(other.stats().hits == 2000);
}

TEST_CASE("threads share a cache safely", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 50; ++i) {
        cache.incr("counter", 1, 0, true);
        cache.add(i, t, {.retry = true});
        cache.set(std::to_string(t) + "-" + std::to_string(i), i, {.retry = true});
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(cache.get<int>("counter") == 400);
  CHECK(cache.size() == 1 + 50 + 400);
  CHECK(cache.check().empty());
}

TEST_CASE("memoize caches and is single-flight across threads", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  std::atomic<int> calls{0};
  auto square = cache.memoize("square",
                              [&](int x) {
                                ++calls;
                                return x * x;
                              },
                              {.expire = 1min, .tag = "sq"});
  CHECK(square(3) == 9);
  CHECK(square(3) == 9);
  CHECK(square(4) == 16);
  CHECK(calls == 2);
  CHECK(square.cache_key(3) == Key("[\"square\",3]"));
  CHECK(cache.get_item<int>(square.cache_key(3))->tag == Key("sq"));

  std::atomic<int> arrived{0};
  std::atomic<int> computed{0};
  constexpr int kThreads = 8;
  auto slow = cache.memoize("slow", [&](const std::string& s) {
    ++computed;
    // Wait until every thread has called in: they all miss at once.
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (arrived.load() < kThreads && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    return s + "!";
  });
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      ++arrived;
      if (slow(std::string("x")) == "x!") ++ok;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == kThreads);
  CHECK(computed == 1);

  // expire = 0: look up only, never store.
  auto lookup = cache.memoize("lookup", [](int x) { return x; }, {.expire = 0ms});
  CHECK(lookup(5) == 5);
  CHECK_FALSE(cache.contains(lookup.cache_key(5)));
}

TEST_CASE("memoized fib hits", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  std::function<std::int64_t(int)> fib;
  auto memo = cache.memoize(
      "fib", [&](int n) -> std::int64_t { return n < 2 ? n : fib(n - 1) + fib(n - 2); });
  fib = [&](int n) { return memo(n); };
  CHECK(fib(60) == 1548008755920);
  cache.stats(true, true);
  CHECK(fib(60) == 1548008755920);
  CHECK(cache.stats().hits == 1);
}

TEST_CASE("settings persist and reset", "[disk]") {
  TempDir d;
  { DiskCache cache(d.path, {.size_limit = 123456789, .cull_limit = 3}); }
  DiskCache cache(d.path);
  auto s = cache.settings();
  CHECK(s.size_limit == 123456789);
  CHECK(s.cull_limit == 3);
  CHECK(std::get<std::int64_t>(cache.reset("disk_min_file_size")) == 32768);
  cache.reset("disk_min_file_size", std::int64_t{10});
  cache.set("x", "eleven char");
  CHECK(cache.file_path("x"));
  cache.reset("sqlite_mmap_size", std::int64_t{1 << 20});
  CHECK(std::get<std::int64_t>(cache.reset("sqlite_mmap_size")) == (1 << 20));
  CHECK_THROWS_AS(cache.reset("no_such_setting"), dogpile::ValidationError);
  CHECK_THROWS_AS(cache.reset("eviction_policy", std::string("random")), dogpile::ValidationError);
  cache.reset("eviction_policy", std::string("least-frequently-used"));
  CHECK(cache.settings().eviction_policy == dogpile::EvictionPolicy::least_frequently_used);
}

TEST_CASE("bad input and damaged storage give clear errors", "[disk]") {
  TempDir d;
  // A file where the directory should be.
  std::ofstream(d.path / "file") << "x";
  CHECK_THROWS_AS(DiskCache(d.path / "file"), dogpile::DatabaseError);
  CHECK_THROWS_AS(DiskCache(d.path / "file" / "sub"), dogpile::DatabaseError);
  // A corrupt database file.
  std::filesystem::create_directories(d.path / "corrupt");
  std::ofstream(d.path / "corrupt" / "cache.db") << std::string(8192, 'G');
  CHECK_THROWS_AS(DiskCache(d.path / "corrupt"), dogpile::CorruptDatabaseError);
  CHECK(std::filesystem::file_size(d.path / "corrupt" / "cache.db") == 8192);  // untouched
  // Read-only opens.
  CHECK_THROWS_AS(DiskCache(d.path / "absent", {.read_only = true}), dogpile::DatabaseError);
  {
    DiskCache rw(d.path / "ro");
    rw.set("k", "v");
    rw.set("big", bytes_of(50000));
  }
  DiskCache ro(d.path / "ro", {.read_only = true});
  CHECK(ro.get<std::string>("k") == "v");
  CHECK(ro.get<Bytes>("big") == bytes_of(50000));
  CHECK_THROWS_AS(ro.set("k", "w"), dogpile::ReadOnlyError);
  CHECK_THROWS_AS(ro.erase("k"), dogpile::ReadOnlyError);
  CHECK(ro.get<std::string>("k") == "v");
  CHECK(disk_test::value_files(d.path / "ro") == 1);
  // Bad options name themselves.
  try {
    DiskCache bad(d.path / "bad", {.cull_limit = -1});
    FAIL("expected ValidationError");
  } catch (const dogpile::ValidationError& e) {
    CHECK(std::string(e.what()).find("cull_limit") != std::string::npos);
  }
  DiskCache c(d.path / "ok");
  CHECK_THROWS_AS(c.set("k", 1, {.expire = -1s}), dogpile::ValidationError);
  CHECK_THROWS_AS(Key(std::uint64_t{1} << 63), dogpile::ValidationError);
}

TEST_CASE("Key repr", "[disk]") {
  CHECK(Key(42).repr() == "42");
  CHECK(Key("a'b").repr() == "'a\\'b'");
  CHECK(Key(Bytes{std::string("\x00z", 2)}).repr() == "b'\\x00z'");
  CHECK(Key(1.5).repr() == "1.5");
}

TEST_CASE("connections of exited threads are closed", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  cache.set("k", 1);
  auto fds = [] {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  // A first read opens the hot cache's descriptors (one per cache, docs/disk.md "Hot-read
  // cache"); what is counted here is what each thread leaves behind.
  CHECK(cache.get<int>("k") == 1);
  std::size_t before = fds();
  for (int round = 0; round < 20; ++round) {
    std::thread t([&] { CHECK(cache.get<int>("k") == 1); });
    t.join();
  }
  CHECK(fds() <= before + 3);
}

TEST_CASE("the connection of the thread that constructed the cache is closed at its exit",
          "[disk]") {
  TempDir d;
  auto db_fds = [&] {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      auto target = std::filesystem::read_symlink(e.path(), ec);
      if (!ec && target.filename() == "cache.db") ++n;
    }
    return n;
  };
  std::unique_ptr<DiskCache> cache;
  std::thread t([&] { cache = std::make_unique<DiskCache>(d.path); });
  t.join();
  CHECK(db_fds() == 0);
  cache->set("k", 1);  // this thread's own connection
  CHECK(db_fds() == 1);
}

TEST_CASE("a damaged database header is reported and repaired by check(fix)", "[disk]") {
  // python-diskcache's test_check: corrupt byte 52 of cache.db, reopen, check(fix=True).
  TempDir d;
  {
    DiskCache cache(d.path);
    for (int i = 0; i < 100; ++i) cache.set(i, std::string(1000, 'x'));
  }
  {
    std::fstream f(d.path / "cache.db", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(52);
    f.put('\x01');
  }
  DiskCache cache(d.path);
  auto warnings = cache.check(true);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].kind == dogpile::CheckWarning::Kind::integrity);
  CHECK(cache.check().empty());
  CHECK(cache.size() == 100);
  CHECK(cache.get<std::string>(42) == std::string(1000, 'x'));
}
