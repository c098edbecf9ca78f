// The hot-read cache (DiskCacheOptions::hot_cache_bytes): hits come from memory, and no read
// after another connection's or process's committed write returns is stale. Every test that
// checks freshness first checks that the value was being served from memory (hot_cache_stats),
// so it would fail if the header validation were skipped.
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "disk_test_support.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"

using namespace std::chrono_literals;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::DiskCache;
using dogpile::DiskCacheOptions;

namespace {

constexpr std::size_t kHot = 1 << 20;

DiskCacheOptions hot_opts(DiskCacheOptions o = {}) {
  o.hot_cache_bytes = kHot;
  return o;
}

/// Forks a child running `fn` (its exit code; 99 = exception) and waits for it.
int in_child(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 99;
    try {
      code = fn();
    } catch (...) {  // NOLINT(bugprone-empty-catch): reported through the exit code
    }
    ::_exit(code);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void put_byte(int fd) {
  char b = 1;
  REQUIRE(::write(fd, &b, 1) == 1);
}

bool get_byte(int fd) {
  char b = 0;
  return ::read(fd, &b, 1) == 1;
}

/// Runs Python's diskcache on `dir` with `code` (using `c`, the Cache); true on success.
bool python(const std::filesystem::path& dir, const std::string& code) {
  std::string cmd =
      "/usr/bin/python3 -c \"import diskcache, sys; c = diskcache.Cache(sys.argv[1]); " + code +
      "; c.close()\" '" + dir.string() + "'";
  return std::system(cmd.c_str()) == 0;
}

std::int64_t access_column(const std::filesystem::path& dir, const std::string& key,
                           const char* column) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((dir / "cache.db").c_str(), &db) == SQLITE_OK);
  std::string sql = std::string("SELECT ") + column + " FROM Cache WHERE key = ?";
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
  sqlite3_bind_text(s, 1, key.c_str(), -1, SQLITE_TRANSIENT);
  std::int64_t v = -1;
  if (sqlite3_step(s) == SQLITE_ROW) {
    // access_time is REAL seconds: compare in microseconds.
    v = sqlite3_column_type(s, 0) == SQLITE_FLOAT
            ? static_cast<std::int64_t>(sqlite3_column_double(s, 0) * 1e6)
            : sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

}  // namespace

TEST_CASE("hot cache: hits serve the stored value of every kind", "[disk][hot]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts());
  cache.set("i", 42);
  cache.set("f", 2.5);
  cache.set("s", std::string("text"));
  cache.set("b", Bytes{std::string("a\0b", 3)});
  cache.set(7, std::string("int key"));
  for (int round = 0; round < 3; ++round) {
    CHECK(cache.get<int>("i") == 42);
    CHECK(cache.get<double>("f") == 2.5);
    CHECK(cache.get<std::string>("s") == "text");
    CHECK(cache.get<Bytes>("b") == Bytes{std::string("a\0b", 3)});
    CHECK(cache.get<std::string>(7) == "int key");
    CHECK_FALSE(cache.get<int>("missing"));
    CHECK(cache.contains("s"));
    CHECK_FALSE(cache.contains("missing"));
  }
  auto st = cache.hot_cache_stats();
  CHECK(st.entries == 5);
  CHECK(st.hits >= 2 * 5 + 3);  // rounds 2 and 3 of the five gets, plus contains("s")
  CHECK(st.bytes > 0);
  CHECK(st.bytes <= kHot);

  // Off (hot_cache_bytes = 0): no counters.
  DiskCache cold(d.path, {.hot_cache_bytes = 0});
  CHECK(cold.get<int>("i") == 42);
  CHECK(cold.get<int>("i") == 42);
  CHECK(cold.hot_cache_stats().hits == 0);
  CHECK(cold.hot_cache_stats().misses == 0);
}

TEST_CASE("hot cache: another connection's write is seen at once", "[disk][hot]") {
  TempDir d;
  DiskCache reader(d.path, hot_opts());
  DiskCache writer(d.path);  // its own connections: a different SQLite handle
  writer.set("k", 0);
  int stale = 0;
  for (int i = 1; i <= 200; ++i) {
    CHECK(reader.get<int>("k") == i - 1);
    auto before = reader.hot_cache_stats().hits;
    CHECK(reader.get<int>("k") == i - 1);  // from memory
    CHECK(reader.hot_cache_stats().hits == before + 1);
    writer.set("k", i);
    if (reader.get<int>("k") != i) ++stale;
  }
  CHECK(stale == 0);
  writer.erase("k");
  CHECK_FALSE(reader.get<int>("k"));
  CHECK_FALSE(reader.contains("k"));
}

TEST_CASE("hot cache: another process's committed write is seen at once", "[disk][hot][process]") {
  TempDir d;
  DiskCache reader(d.path, hot_opts());
  reader.set("k", 0);
  constexpr int kRounds = 300;
  int to_child[2];
  int to_parent[2];
  REQUIRE(::pipe(to_child) == 0);
  REQUIRE(::pipe(to_parent) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      DiskCache writer(d.path);  // a fresh object: the child's own connections
      // Ready: opening commits too (settings), and a commit between the parent's fill and its
      // next read would rightly make that read miss the hot cache.
      char ready = 1;
      if (::write(to_parent[1], &ready, 1) != 1) ::_exit(98);
      for (int i = 1; i <= kRounds; ++i) {
        char b = 0;
        if (::read(to_child[0], &b, 1) != 1) break;
        writer.set("k", i);  // committed when set returns
        if (::write(to_parent[1], &b, 1) != 1) break;
      }
    } catch (...) {
      code = 99;
    }
    ::_exit(code);
  }
  // Our copies of the child's ends closed: if the child dies, a read sees EOF, not a hang.
  ::close(to_child[0]);
  ::close(to_parent[1]);
  REQUIRE(get_byte(to_parent[0]));  // the child has opened the cache
  int stale = 0;
  int served_from_memory = 0;
  for (int i = 1; i <= kRounds; ++i) {
    REQUIRE(reader.get<int>("k") == i - 1);  // fills
    auto before = reader.hot_cache_stats().hits;
    REQUIRE(reader.get<int>("k") == i - 1);
    if (reader.hot_cache_stats().hits == before + 1) ++served_from_memory;
    put_byte(to_child[1]);
    REQUIRE(get_byte(to_parent[0]));
    if (reader.get<int>("k") != i) ++stale;
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  CHECK(stale == 0);
  CHECK(served_from_memory == kRounds);
  for (int fd : {to_child[1], to_parent[0]}) ::close(fd);
}

TEST_CASE("hot cache: delete, clear, evict and cull by another process", "[disk][hot][process]") {
  TempDir d;
  DiskCache hot(d.path, hot_opts({.tag_index = true}));
  auto fill = [&] {
    for (int i = 0; i < 20; ++i) {
      hot.set(i, i * 10, {.tag = dogpile::Key(i % 2 == 0 ? "even" : "odd")});
    }
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < 20; ++i) REQUIRE(hot.get<int>(i) == i * 10);
    }
    REQUIRE(hot.hot_cache_stats().entries == 20);
  };
  // Every key's answer must equal a fresh SQLite read (a cache with the hot cache off).
  auto agree = [&] {
    DiskCache cold(d.path, {.hot_cache_bytes = 0});
    int wrong = 0;
    for (int i = 0; i < 20; ++i) {
      if (hot.get<int>(i) != cold.get<int>(i)) ++wrong;
      if (hot.contains(i) != cold.contains(i)) ++wrong;
    }
    return wrong;
  };
  fill();
  CHECK(in_child([&] { return DiskCache(d.path).erase(3) ? 0 : 1; }) == 0);
  CHECK_FALSE(hot.get<int>(3));
  CHECK(agree() == 0);

  fill();
  CHECK(in_child([&] { return DiskCache(d.path).evict("odd") == 10 ? 0 : 1; }) == 0);
  CHECK_FALSE(hot.get<int>(1));
  CHECK(hot.get<int>(2) == 20);
  CHECK(agree() == 0);

  fill();
  CHECK(in_child([&] {
          DiskCache w(d.path, {.size_limit = 0, .cull_limit = 5});
          w.set("trigger", 1);  // a write culls up to 5 rows (size over the limit)
          return 0;
        }) == 0);
  CHECK(agree() == 0);
  CHECK(DiskCache(d.path).size() < 21);

  fill();
  CHECK(in_child([&] { return DiskCache(d.path).clear() > 0 ? 0 : 1; }) == 0);
  CHECK_FALSE(hot.get<int>(0));
  CHECK(agree() == 0);
}

TEST_CASE("hot cache: Python diskcache's writes are seen at once", "[disk][hot][interop]") {
  if (std::system("/usr/bin/python3 -c 'import diskcache' >/dev/null 2>&1") != 0) {
    FAIL("python3-diskcache is not installed (/usr/bin/python3 -c 'import diskcache')");
  }
  TempDir d;
  DiskCache hot(d.path, hot_opts());
  hot.set("k", std::string("c++"));
  for (const char* v : {"py1", "py2", "py3"}) {
    REQUIRE(hot.get<std::string>("k").has_value());
    auto before = hot.hot_cache_stats().hits;
    REQUIRE(hot.get<std::string>("k").has_value());
    REQUIRE(hot.hot_cache_stats().hits == before + 1);
    REQUIRE(python(d.path, std::string("c.set('k', '") + v + "')"));
    CHECK(hot.get<std::string>("k") == v);
  }
  REQUIRE(python(d.path, "c.delete('k')"));
  CHECK_FALSE(hot.get<std::string>("k"));
}

TEST_CASE("hot cache: expiry is checked against the cache's clock on a hit", "[disk][hot]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, hot_opts({.clock = clock}));
  cache.set("t", 1, {.expire = 10s, .tag = dogpile::Key("red")});
  CHECK(cache.get<int>("t") == 1);  // fills
  auto item = cache.get_item<int>("t");
  REQUIRE(item);  // a hit: no write happened since
  CHECK(cache.hot_cache_stats().hits == 1);
  CHECK(item->tag == dogpile::Key("red"));
  REQUIRE(item->expire_time);
  CHECK(std::chrono::abs(*item->expire_time - (clock() + 10s)) < 1ms);
  clock.advance(9s);
  CHECK(cache.get<int>("t") == 1);
  CHECK(cache.hot_cache_stats().hits == 2);
  clock.advance(1s);  // expire_time == now: expired, as SQLite's `expire_time > now`
  CHECK_FALSE(cache.get<int>("t"));
  CHECK_FALSE(cache.contains("t"));
  CHECK(cache.hot_cache_stats().hits == 2);
}

TEST_CASE("hot cache: statistics and LRU/LFU updates are the same with it on and off",
          "[disk][hot]") {
  auto policy = GENERATE(dogpile::EvictionPolicy::least_frequently_used,
                         dogpile::EvictionPolicy::least_recently_used);
  TempDir d_on;
  TempDir d_off;
  dogpile::ManualClock clock;
  DiskCacheOptions o{.eviction_policy = policy, .statistics = true, .clock = clock};
  o.access_flush_interval = std::chrono::hours(1);
  DiskCacheOptions o_off = o;
  o_off.hot_cache_bytes = 0;
  DiskCache off(d_off.path, o_off);
  DiskCache on(d_on.path, hot_opts(o));
  for (int i = 0; i < 10; ++i) {
    off.set(std::to_string(i), i);
    on.set(std::to_string(i), i);
  }
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 15; ++i) {  // 10..14 miss
      clock.advance(1ms);
      if (i % 3 == round % 3) continue;  // unequal counts per key
      CHECK(off.get<int>(std::to_string(i)) == on.get<int>(std::to_string(i)));
    }
  }
  CHECK(on.hot_cache_stats().hits > 20);
  off.flush();
  on.flush();
  auto s_off = off.stats();
  auto s_on = on.stats();
  CHECK(s_on.hits == s_off.hits);
  CHECK(s_on.misses == s_off.misses);
  CHECK(s_off.hits > 0);
  const char* column =
      policy == dogpile::EvictionPolicy::least_frequently_used ? "access_count" : "access_time";
  for (int i = 0; i < 10; ++i) {
    CHECK(access_column(d_on.path, std::to_string(i), column) ==
          access_column(d_off.path, std::to_string(i), column));
  }
}

TEST_CASE("hot cache: the memory bound holds", "[disk][hot]") {
  TempDir d;
  constexpr std::size_t kBound = 8192;
  DiskCache cache(d.path, {.hot_cache_bytes = kBound});
  for (int i = 0; i < 100; ++i) cache.set(i, std::string(100, static_cast<char>('a' + i % 26)));
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 100; ++i) {
      REQUIRE(cache.get<std::string>(i) == std::string(100, static_cast<char>('a' + i % 26)));
      auto st = cache.hot_cache_stats();
      REQUIRE(st.bytes <= kBound);
    }
  }
  auto st = cache.hot_cache_stats();
  CHECK(st.entries > 0);
  CHECK(st.entries < 100);
  CHECK(st.hits > 0);
  // A value over a quarter of the bound is never kept.
  cache.set("big", std::string(kBound / 2, 'x'));
  for (int i = 0; i < 3; ++i) CHECK(cache.get<std::string>("big")->size() == kBound / 2);
  CHECK(cache.hot_cache_stats().bytes <= kBound);
}

TEST_CASE("hot cache: a transaction reads its own uncommitted writes", "[disk][hot]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts());
  cache.set("k", 1);
  CHECK(cache.get<int>("k") == 1);
  CHECK(cache.get<int>("k") == 1);
  REQUIRE(cache.hot_cache_stats().hits == 1);
  {
    auto tx = cache.transact();
    cache.set("k", 2);
    CHECK(cache.get<int>("k") == 2);
    CHECK(cache.contains("k"));
    tx.rollback();
  }
  CHECK(cache.get<int>("k") == 1);
}

TEST_CASE("hot cache: a forked child does not trust what it inherited", "[disk][hot][process]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts());
  cache.set("k", std::string("parent"));
  REQUIRE(cache.get<std::string>("k") == "parent");
  REQUIRE(cache.get<std::string>("k") == "parent");
  REQUIRE(cache.hot_cache_stats().hits == 1);
  int to_child[2];
  int to_parent[2];
  REQUIRE(::pipe(to_child) == 0);
  REQUIRE(::pipe(to_parent) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int bad = 0;
    try {
      // The inherited object: its hot cache, mapping and anchor belong to the parent.
      if (cache.get<std::string>("k") != "parent") ++bad;
      cache.set("k", std::string("child"));
      if (cache.get<std::string>("k") != "child") ++bad;
      if (cache.get<std::string>("k") != "child") ++bad;  // the child's own hot entry
      char b = 1;
      if (::write(to_parent[1], &b, 1) != 1) ++bad;
      if (::read(to_child[0], &b, 1) != 1) ++bad;  // the parent wrote "parent again"
      if (cache.get<std::string>("k") != "parent again") ++bad;
      cache.close();
    } catch (...) {
      bad = 99;
    }
    ::_exit(bad);
  }
  REQUIRE(get_byte(to_parent[0]));
  CHECK(cache.get<std::string>("k") == "child");
  cache.set("k", std::string("parent again"));
  put_byte(to_child[1]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  CHECK(cache.get<std::string>("k") == "parent again");
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) ::close(fd);
}

TEST_CASE("hot cache: many threads on one cache with a writer", "[disk][hot]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts());
  DiskCache writer(d.path);
  for (int i = 0; i < 10; ++i) cache.set(i, i);
  std::atomic<int> version{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      for (int n = 0; n < 2000; ++n) {
        int floor = version.load();  // committed before this read started
        auto v = cache.get<int>(n % 10);
        // Key 0 carries the writer's version: never older than what was committed before.
        if (n % 10 == 0 && (!v || *v < floor)) ++wrong;
        if (n % 10 != 0 && v != n % 10) ++wrong;
      }
    });
  }
  for (int i = 1; i <= 100; ++i) {
    writer.set(0, i);
    version.store(i);
  }
  for (auto& t : readers) t.join();
  CHECK(wrong.load() == 0);
  CHECK(cache.hot_cache_stats().hits > 0);
}

TEST_CASE("hot cache: close drops it and it comes back", "[disk][hot]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts());
  cache.set("k", 1);
  CHECK(cache.get<int>("k") == 1);
  CHECK(cache.hot_cache_stats().entries == 1);
  cache.close();
  CHECK(cache.hot_cache_stats().entries == 0);
  CHECK(cache.get<int>("k") == 1);
  CHECK(cache.get<int>("k") == 1);
  CHECK(cache.hot_cache_stats().entries == 1);
}

TEST_CASE("hot cache: off outside WAL journal mode", "[disk][hot]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts({.sqlite_journal_mode = std::string("delete")}));
  cache.set("k", 1);
  for (int i = 0; i < 3; ++i) CHECK(cache.get<int>("k") == 1);
  CHECK(cache.hot_cache_stats().hits == 0);
  DiskCache writer(d.path, {.sqlite_journal_mode = std::string("delete")});
  writer.set("k", 2);
  CHECK(cache.get<int>("k") == 2);
}

TEST_CASE("hot cache: an own set or erase keeps the other entries", "[disk][hot]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts());
  cache.set("a", 1);
  cache.set("b", 2);
  CHECK(cache.get<int>("a") == 1);
  CHECK(cache.get<int>("b") == 2);
  auto before = cache.hot_cache_stats();
  cache.set("a", 10);
  CHECK(cache.hot_cache_stats().own_commits_kept == before.own_commits_kept + 1);
  CHECK(cache.get<int>("b") == 2);  // still from memory
  CHECK(cache.hot_cache_stats().hits == before.hits + 1);
  CHECK(cache.get<int>("a") == 10);  // the written key was dropped and refilled
  CHECK(cache.hot_cache_stats().hits == before.hits + 1);
  CHECK(cache.erase("a"));
  CHECK_FALSE(cache.get<int>("a"));
  CHECK(cache.get<int>("b") == 2);
  CHECK(cache.hot_cache_stats().hits == before.hits + 2);
  // Inside a user transaction nothing is kept (several statements): all entries go.
  {
    auto tx = cache.transact();
    cache.set("c", 3);
  }
  auto kept = cache.hot_cache_stats().own_commits_kept;
  CHECK(cache.get<int>("b") == 2);
  CHECK(cache.hot_cache_stats().hits == before.hits + 2);
  CHECK(cache.hot_cache_stats().own_commits_kept == kept);
}

TEST_CASE("hot cache: own writes racing another process's writes never read stale",
          "[disk][hot][process]") {
  TempDir d;
  DiskCache cache(d.path, hot_opts());
  cache.set("theirs", 0);
  // The other process's last committed version, published after each of its commits.
  auto* published = static_cast<std::atomic<int>*>(::mmap(nullptr, sizeof(std::atomic<int>),
                                                          PROT_READ | PROT_WRITE,
                                                          MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  REQUIRE(published != MAP_FAILED);
  new (published) std::atomic<int>(0);
  constexpr int kWrites = 400;
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      DiskCache w(d.path);
      for (int i = 1; i <= kWrites; ++i) {
        w.set("theirs", i, {.retry = true});
        published->store(i);
      }
    } catch (...) {
      code = 99;
    }
    ::_exit(code);
  }
  int stale = 0;
  int rounds = 0;
  while (published->load() < kWrites) {
    cache.set("mine", rounds, {.retry = true});  // own commits, kept when nothing slipped in
    int floor = published->load();
    auto v = cache.get<int>("theirs");
    if (!v || *v < floor) ++stale;
    ++rounds;
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  CHECK(stale == 0);
  CHECK(cache.get<int>("theirs") == kWrites);
  CHECK(rounds > 0);
  ::munmap(published, sizeof(std::atomic<int>));
}

TEST_CASE("hot cache: FanoutCache passes it to its shards", "[disk][hot]") {
  TempDir d;
  dogpile::FanoutCache fan(d.path, {.shards = 4, .hot_cache_bytes = kHot});
  fan.set("k", 5);
  CHECK(fan.get<int>("k") == 5);
  CHECK(fan.get<int>("k") == 5);
  CHECK(fan.shard(fan.shard_index("k")).hot_cache_stats().hits == 1);
  dogpile::FanoutCache writer(d.path, {.shards = 4});
  writer.set("k", 6);
  CHECK(fan.get<int>("k") == 6);
}

TEST_CASE("hot cache: with a value serializer, hits return decoded values and see new writes",
          "[disk][hot][serializer]") {
  TempDir d;
  auto zlib = std::make_shared<dogpile::ZlibSerializer>(16);
  DiskCacheOptions o = hot_opts();
  o.serializer = zlib;
  DiskCache reader(d.path, o);
  DiskCacheOptions wo;
  wo.serializer = zlib;
  DiskCache writer(d.path, wo);
  const std::string big(200, 'z');  // over the threshold: stored compressed
  writer.set("k", big);
  CHECK(reader.get<std::string>("k") == big);
  auto before = reader.hot_cache_stats().hits;
  CHECK(reader.get<std::string>("k") == big);  // from memory, still the decoded text
  CHECK(reader.hot_cache_stats().hits == before + 1);
  writer.set("k", big + "!");
  CHECK(reader.get<std::string>("k") == big + "!");
  // Without the serializer the stored bytes are the compressed form, not the text.
  DiskCache raw(d.path);
  auto stored = raw.get<Bytes>("k");
  REQUIRE(stored);
  CHECK(stored->data.size() < big.size());
}

TEST_CASE("hot cache: on by default", "[disk][hot]") {
  TempDir d;
  DiskCache cache(d.path);
  cache.set("k", 1);
  CHECK(cache.get<int>("k") == 1);
  CHECK(cache.get<int>("k") == 1);
  CHECK(cache.hot_cache_stats().hits == 1);
}

TEST_CASE("hot cache: stands down where it does not pay, and comes back where it does",
          "[disk][hot]") {
  TempDir d;
  DiskCache reader(d.path);  // the default: adaptive
  DiskCache writer(d.path, {.hot_cache_bytes = 0});
  for (int i = 0; i < 600; ++i) writer.set(i, i);
  // Many keys, a commit between every two reads: every entry is dropped before its re-read.
  for (int i = 0; i < 1200; ++i) {
    REQUIRE(reader.get<int>(i % 600) == i % 600);
    writer.set("w", i);
  }
  auto st = reader.hot_cache_stats();
  CHECK(st.hits == 0);
  CHECK(st.stand_downs >= 1);
  CHECK(st.skipped > 0);
  // While standing down every read is still a fresh SQLite read.
  writer.set(1, -1);
  CHECK(reader.get<int>(1) == -1);
  // A hot key and no writer: after the stand-down (4,096 lookups at first) it fills and hits.
  for (int i = 0; i < 6000; ++i) REQUIRE(reader.get<int>(7) == 7);
  st = reader.hot_cache_stats();
  CHECK(st.hits > 1000);
  CHECK(reader.get<int>(7) == 7);
  writer.set(7, 70);
  CHECK(reader.get<int>(7) == 70);  // and never a stale hit
}
