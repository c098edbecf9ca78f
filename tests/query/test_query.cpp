// dogpile::query over real SQLite databases (files in temp dirs) and the memory backends:
// FromCache-style cached queries, typed keys (golden vectors recomputed by a Python script),
// invalidation by query / namespace / table, the error paths, relationships.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <semaphore>
#include <thread>

#include "query/query_test_support.hpp"
#include "support/servers.hpp"

using dogpile::query::Blob;
using dogpile::query::Param;
using dogpile::query::Params;
using dogpile::query::QueryCache;
using dogpile::query::QueryError;
using dogpile::query::Relationship;
using dogpile::query::RelationshipCache;
using qtest::CountingDb;
using qtest::kPostsSql;
using qtest::kUserSql;
using qtest::map_post;
using qtest::map_user;
using qtest::Post;
using qtest::User;

namespace {

std::string run_key_py(const std::vector<std::string>& args) {
  std::string cmd = "/usr/bin/python3 " DOGPILE_QUERY_TEST_DIR "/query_key.py";
  for (const auto& a : args) cmd += " '" + a + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  REQUIRE(::pclose(p) == 0);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

TEST_CASE("query: the second call is served from the cache; a table change refreshes it") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  CountingDb db{&sqlite};
  QueryCache cache(qtest::memory_region());
  cache.depends_on("user", {"users"});

  auto u = cache.one(db, "user", kUserSql, {1}, map_user);
  REQUIRE(u == User{1, "ed"});
  CHECK(db.count == 1);
  CHECK(cache.one(db, "user", kUserSql, {1}, map_user) == User{1, "ed"});
  CHECK(db.count == 1);  // served from the region
  CHECK(cache.one(db, "user", kUserSql, {2}, map_user) == User{2, "wendy"});
  CHECK(db.count == 2);  // another parameter, another key

  // A write the cache is not told about is not seen (that is what a cache is) ...
  sqlite.execute("UPDATE users SET name = 'edward' WHERE id = 1");
  CHECK(cache.one(db, "user", kUserSql, {1}, map_user)->name == "ed");
  // ... until the write path calls the hook after its commit.
  CHECK(cache.tables_changed({"users"}) == std::vector<std::string>{"user"});
  CHECK(cache.one(db, "user", kUserSql, {1}, map_user)->name == "edward");
  CHECK(db.count == 3);
  CHECK(cache.tables_changed({"posts"}).empty());  // no namespace reads posts
  CHECK(cache.one(db, "user", kUserSql, {1}, map_user)->name == "edward");
  CHECK(db.count == 3);
}

TEST_CASE("query: all() caches every row, an empty result and rows of NULLs") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  CountingDb db{&sqlite};
  QueryCache cache(qtest::memory_region("memory_serialized"));

  const auto everyone =
      cache.all(db, "users", "SELECT id, name FROM users ORDER BY id", {}, map_user);
  CHECK(everyone == std::vector<User>{{1, "ed"}, {2, "wendy"}, {3, "mary"}});
  CHECK(cache.all(db, "users", "SELECT id, name FROM users ORDER BY id", {}, map_user) == everyone);
  CHECK(db.count == 1);

  // An empty result is a cached empty result, not a miss.
  CHECK(cache.all(db, "user", kUserSql, {99}, map_user).empty());
  CHECK_FALSE(cache.one(db, "user", kUserSql, {99}, map_user).has_value());
  const int after_empty = db.count;
  CHECK(cache.all(db, "user", kUserSql, {99}, map_user).empty());
  CHECK_FALSE(cache.one(db, "user", kUserSql, {99}, map_user).has_value());
  CHECK(db.count == after_empty);

  // NULL in every column, through the byte codec.
  using Values = std::vector<dogpile::query::Value>;
  auto raw = [](const dogpile::query::Row& r) { return r.values(); };
  const std::string nulls_sql = "SELECT NULL, NULL UNION ALL SELECT 7, 'x'";
  CHECK(cache.all(db, "nulls", nulls_sql, {}, raw) ==
        std::vector<Values>{{nullptr, nullptr}, {std::int64_t{7}, std::string("x")}});
  CHECK(cache.all(db, "nulls", nulls_sql, {}, raw)[0] == Values{nullptr, nullptr});
  // Optional columns: NULL is nullopt.
  CHECK(cache.one(db, "nulls", nulls_sql, {}, [](const dogpile::query::Row& r) {
    return r.get<std::optional<std::int64_t>>(0).value_or(-1);
  }) == std::int64_t{-1});
}

TEST_CASE("query: keys are typed, stable and match the Python reference") {
  QueryCache cache(qtest::memory_region());
  const std::string gen = "0123456789abcdef0123456789abcdef";
  auto k = [&](const Param& p) {
    return QueryCache::make_key("user", gen, kUserSql, std::span<const Param>(&p, 1), "");
  };
  const std::vector<std::pair<Param, std::string>> golden = {
      {1, "5b69544f338a62483772903c47889ed91258164a"},
      {"1", "69ae2369c307b925694a3bb9483b3bb444cd6746"},
      {1.0, "9cbc0ec4aa6a6b8aea19c1c3a5dd8baafb6b7200"},
      {true, "1cc94f50366b20b2cb714f0b209c03128d0f42e7"},
      {nullptr, "2c491cf89f459a9970245022d24692475d8e3dd8"},
      {"", "f14398c87fabfbb451f058770302395c8208f346"},
      {Blob{"a"}, "409ad58ae51a79998686a1580dd2fbd70492b6d7"},
      {-0.0, "6839999b7b34710d74498cb9c630fe1420953ccd"},
      {0.0, "6adbe756be33fdca9e4c0e6f48f5170aea894f4d"},
      {std::numeric_limits<double>::quiet_NaN(), "6a687018bcc69e50cf193b233baf0b92fba8170e"},
  };
  std::set<std::string> distinct;
  for (const auto& [p, sha] : golden) {
    CHECK(k(p) == "dq:user:" + gen + ":" + sha);
    distinct.insert(k(p));
  }
  CHECK(distinct.size() == golden.size());
  // Every NaN is one key; std::optional is its value or NULL; any integer type is int64.
  CHECK(k(-std::numeric_limits<double>::quiet_NaN()) == k(std::nan("1")));
  CHECK(k(std::optional<int>{}) == k(nullptr));
  CHECK(k(std::optional<int>{1}) == k(std::int64_t{1}));
  CHECK(k(static_cast<unsigned char>(1)) == k(1));
  CHECK_THROWS_AS(Param(std::numeric_limits<std::uint64_t>::max()), dogpile::ValidationError);

  // The Python reference script computes the same keys from the documented encoding.
  const Params mixed = {1, "x", nullptr, 2.5, Blob{std::string("\0b", 2)}, false};
  CHECK(QueryCache::make_key("user", gen, kUserSql, mixed, "v2") ==
        run_key_py({"user", gen, "v2", kUserSql, "i1", "tx", "N", "d2.5", "x0062", "b0"}));
  // A cached query's key has no generation (its entry holds it): dq:<ns>:<sha1>.
  CHECK(cache.key("user", kUserSql, mixed, {.version = "v2"}) ==
        run_key_py({"user", "", "v2", kUserSql, "i1", "tx", "N", "d2.5", "x0062", "b0"}));
  CHECK(cache.key_one("user", kUserSql, {1}) == run_key_py({"user", "", "one:", kUserSql, "i1"}));

  // A 1 MB IN (...) statement still has a short key (memcached: <= 250 bytes).
  std::string big = "SELECT id FROM users WHERE id IN (";
  Params many;
  for (int i = 0; i < 100'000; ++i) {
    big += i ? ",?" : "?";
    many.emplace_back(i);
  }
  big += ")";
  const std::string long_key = cache.key("user", big, many);
  CHECK(long_key.size() < 120);
  CHECK(long_key == cache.key("user", big, many));
  CHECK_THROWS_AS(cache.key("bad ns", kUserSql, {}), dogpile::ValidationError);
  CHECK_THROWS_AS(cache.key("a:b", kUserSql, {}), dogpile::ValidationError);
}

TEST_CASE("query: invalidate one query, a namespace, or through an evicted generation") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  CountingDb db{&sqlite};
  QueryCache cache(qtest::memory_region());
  auto name_of = [&](int id) { return cache.one(db, "user", kUserSql, {id}, map_user)->name; };

  CHECK(name_of(1) == "ed");
  CHECK(name_of(2) == "wendy");
  sqlite.execute("UPDATE users SET name = upper(name)");
  CHECK(name_of(1) == "ed");

  cache.invalidate("user", kUserSql, {1});  // exactly the key the read used
  CHECK(name_of(1) == "ED");
  CHECK(name_of(2) == "wendy");  // another query of the namespace is untouched

  cache.invalidate_namespace("user");
  CHECK(name_of(2) == "WENDY");

  // The generation is gone (evicted, flushed, lost): a miss, never the older rows.
  sqlite.execute("UPDATE users SET name = 'x' || name");
  cache.region().erase(QueryCache::gen_key("user"));
  CHECK(name_of(1) == "xED");
  CHECK(name_of(2) == "xWENDY");
}

TEST_CASE("query: a failing statement, mapper or codec names the query and caches nothing") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  CountingDb db{&sqlite};
  QueryCache cache(qtest::memory_region("memory_serialized"));

  try {
    (void)cache.all(db, "user", "SELEKT id FROM users", {}, map_user);
    FAIL("no exception");
  } catch (const QueryError& e) {
    CHECK(e.ns() == "user");
    CHECK(e.statement() == "SELEKT id FROM users");
    CHECK_THAT(e.what(), Catch::Contains("namespace 'user'") &&
                             Catch::Contains("SELEKT id FROM users") &&
                             Catch::Contains("syntax error"));
  }
  CHECK_THROWS_WITH(cache.all(db, "user", kUserSql, {1, 2}, map_user),
                    Catch::Contains("1 placeholders, 2 parameters"));

  // A mapper that throws: nothing cached, the next call queries again.
  int calls = 0;
  auto flaky = [&](const dogpile::query::Row& r) {
    if (++calls == 1) throw std::runtime_error("bad row");
    return map_user(r);
  };
  CHECK_THROWS_WITH(
      cache.one(db, "user", kUserSql, {1}, flaky),
      Catch::Contains("row mapper threw: bad row") && Catch::Contains("namespace 'user'"));
  const int before = db.count;
  CHECK(cache.one(db, "user", kUserSql, {1}, flaky) == User{1, "ed"});
  CHECK(db.count == before + 1);
  // A column of another type is the mapper's error too.
  CHECK_THROWS_WITH(cache.one(db, "user", "SELECT name, id FROM users WHERE id = ?", {1}, map_user),
                    Catch::Contains("column 0 holds text"));

  // A row type without a codec on a byte backend.
  struct Opaque {
    std::int64_t id;
  };
  CHECK_THROWS_WITH(
      cache.one(db, "opaque", kUserSql, {1},
                [](const dogpile::query::Row& r) { return Opaque{r.get<std::int64_t>(0)}; }),
      Catch::Contains("namespace 'opaque'") && Catch::Contains("no codec"));
  // ... works on the memory backend, which keeps objects.
  QueryCache objects(qtest::memory_region());
  CHECK(objects
            .one(db, "opaque", kUserSql, {1},
                 [](const dogpile::query::Row& r) { return Opaque{r.get<std::int64_t>(0)}; })
            ->id == 1);
}

TEST_CASE("query: values round-trip through SQLite, the codec and back") {
  dogpile::test::TempDir dir;
  auto sqlite = dogpile::query::SqliteDatabase::open((dir.path() / "t.db").string());
  sqlite.exec_script("CREATE TABLE t(i INTEGER, d REAL, s TEXT, b BLOB)");
  const std::string nul_text("a\0\xc3\xa9", 4);
  const std::string big(100'000, '\x01');
  const std::vector<dogpile::query::Value> in = {std::numeric_limits<std::int64_t>::min(),
                                                 std::numeric_limits<std::int64_t>::max(),
                                                 std::numeric_limits<double>::denorm_min(),
                                                 -std::numeric_limits<double>::infinity(),
                                                 nul_text,
                                                 Blob{""},
                                                 Blob{big},
                                                 nullptr};
  for (const auto& v : in) {
    sqlite.execute("INSERT INTO t(i) VALUES (?)", std::span(&v, 1));
  }
  auto region = dogpile::make_region({.codec = {.format = dogpile::Format::msgpack}});
  region.configure("memory_serialized");
  QueryCache cache(region);
  auto read = [&] {
    return cache.all(sqlite, "t", "SELECT i FROM t ORDER BY rowid", {},
                     [](const dogpile::query::Row& r) { return r.get<dogpile::query::Value>(0); });
  };
  auto first = read();
  REQUIRE(first.size() == in.size());
  CHECK(first == in);
  CHECK(read() == in);  // decoded from the region's bytes
  // NaN and infinities survive JSON text too (as tagged objects).
  auto json_region = dogpile::make_region();
  json_region.configure("memory_serialized");
  QueryCache json_cache(json_region);
  const std::string special = "SELECT ?, ?, ?";
  const Params sp = {std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity(), Blob{std::string("\0z", 2)}};
  auto raw = [](const dogpile::query::Row& r) { return r.values(); };
  for (int pass = 0; pass < 2; ++pass) {
    auto row = json_cache.one(sqlite, "special", special, sp, raw).value();
    // SQLite itself turns a bound NaN into NULL.
    CHECK(row[0] == dogpile::query::Value(nullptr));
    CHECK(row[1] == dogpile::query::Value(std::numeric_limits<double>::infinity()));
    CHECK(row[2] == dogpile::query::Value(Blob{std::string("\0z", 2)}));
  }
  const dogpile::query::Value nan = std::numeric_limits<double>::quiet_NaN();
  const nlohmann::json j = nan;
  CHECK(std::isnan(std::get<double>(j.get<dogpile::query::Value>())));
}

TEST_CASE("query: concurrent misses on one query run one SELECT (the dogpile lock)") {
  dogpile::test::TempDir dir;
  qtest::make_db(dir.path() / "app.db");
  QueryCache cache(qtest::memory_region());
  std::atomic<int> selects{0};
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto sqlite = dogpile::query::SqliteDatabase::open((dir.path() / "app.db").string());
      auto slow = [&](const dogpile::query::Row& r) {
        ++selects;
        std::this_thread::sleep_for(std::chrono::milliseconds(30));  // widen the window
        return map_user(r);
      };
      if (cache.one(sqlite, "user", kUserSql, {1}, slow) == User{1, "ed"}) ++ok;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok == 8);
  CHECK(selects == 1);
}

// The query's dogpile lock reports to the region as get_or_create's does: a miss and its
// creation, then a hit, under the query's key (before, a cached query's lock reported nothing,
// and a lease lost under a slow SELECT vanished).
TEST_CASE("query: a cached query counts in the region's statistics and listener") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  std::mutex m;
  std::vector<std::pair<dogpile::RegionEvent::Kind, std::string>> events;
  auto region = dogpile::make_region({.listener = [&](const dogpile::RegionEvent& e) {
    const std::lock_guard lk(m);
    events.emplace_back(e.kind, std::string(e.key));
  }});
  region.configure("memory");
  QueryCache cache(region);
  const std::string key = cache.key_one("user", kUserSql, {1});
  const auto of_key = [&](dogpile::RegionEvent::Kind k) {
    const std::lock_guard lk(m);
    return std::count(events.begin(), events.end(), std::make_pair(k, key));
  };
  using Kind = dogpile::RegionEvent::Kind;
  REQUIRE(cache.one(sqlite, "user", kUserSql, {1}, map_user) == User{1, "ed"});
  CHECK(of_key(Kind::miss) == 1);
  CHECK(of_key(Kind::created) == 1);
  CHECK(of_key(Kind::hit) == 0);
  REQUIRE(cache.one(sqlite, "user", kUserSql, {1}, map_user) == User{1, "ed"});
  CHECK(of_key(Kind::hit) == 1);
  CHECK(of_key(Kind::created) == 1);
  // The namespace's generation, made once by get_or_create, counts once as well.
  const auto s = region.stats();
  CHECK(s.creations == 2);
  CHECK(s.hits == 1);
}

TEST_CASE("relationship: children per parent, one IN query for the misses only") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  CountingDb db{&sqlite};
  QueryCache cache(qtest::memory_region("memory_serialized"));
  RelationshipCache<Post> user_posts(
      cache, Relationship<Post>{.ns = "user_posts",
                                .sql = kPostsSql,
                                .map = map_post,
                                .parent_of = [](const Post& p) { return Param(p.user_id); },
                                .tables = {"posts"}});

  CHECK(user_posts.load(db, 1) == std::vector<Post>{{10, 1, "a"}, {11, 1, "b"}});
  CHECK(db.count == 1);
  CHECK(db.log.back() == "SELECT id, user_id, title FROM posts WHERE user_id IN (?) ORDER BY id");

  // 1 is cached: one query for 2 and 3 (3 has no posts: cached as empty).
  auto many = user_posts.load_many(db, {1, 2, 3});
  CHECK(many == std::vector<std::vector<Post>>{{{10, 1, "a"}, {11, 1, "b"}}, {{12, 2, "c"}}, {}});
  CHECK(db.count == 2);
  CHECK(db.log.back() ==
        "SELECT id, user_id, title FROM posts WHERE user_id IN (?, ?) ORDER BY id");
  CHECK(user_posts.load_many(db, {3, 2, 1, 2}).size() == 4);
  CHECK(db.count == 2);

  // Post 11 moves from user 1 to user 3: the write path invalidates both parents ...
  sqlite.execute("UPDATE posts SET user_id = 3 WHERE id = 11");
  user_posts.invalidate({1, 3});
  CHECK(user_posts.load_many(db, {1, 2, 3}) ==
        std::vector<std::vector<Post>>{{{10, 1, "a"}}, {{12, 2, "c"}}, {{11, 3, "b"}}});
  CHECK(db.count == 3);
  CHECK(db.log.back() ==
        "SELECT id, user_id, title FROM posts WHERE user_id IN (?, ?) ORDER BY id");

  // ... and a write to the child table through the table hook invalidates every parent.
  sqlite.execute("DELETE FROM posts");
  CHECK(cache.tables_changed({"posts"}) == std::vector<std::string>{"user_posts"});
  CHECK(user_posts.load_many(db, {1, 2, 3}) == std::vector<std::vector<Post>>(3));
  CHECK(db.count == 4);

  // A parent_of that does not give back a queried parent (typed: "1" is not 1).
  RelationshipCache<Post> wrong(
      cache, Relationship<Post>{
                 .ns = "wrong", .sql = kPostsSql, .map = map_post, .parent_of = [](const Post& p) {
                   return Param(std::to_string(p.user_id));
                 }});
  sqlite.execute("INSERT INTO posts VALUES (20, 1, 'z')");
  CHECK_THROWS_WITH(wrong.load(db, 1),
                    Catch::Contains("namespace 'wrong'") && Catch::Contains("not one of"));
  CHECK_THROWS_AS(
      RelationshipCache<Post>(
          cache,
          Relationship<Post>{.ns = "x", .sql = kUserSql, .map = map_post, .parent_of = nullptr}),
      dogpile::ValidationError);
}

TEST_CASE("query: no stale rows after tables_changed or a parents' invalidation returns") {
  // The stale-set race on the memory backend, with threads: a reader pauses after its SELECT
  // (inside the row mapper); the writer commits and invalidates; the reader then stores what it
  // read. The next read must see the write. (Across processes on Redis: test_query_redis.cpp.)
  dogpile::test::TempDir dir;
  const auto path = dir.path() / "app.db";
  auto sqlite = qtest::make_db(path);
  QueryCache cache(qtest::memory_region());
  cache.depends_on("user", {"users"});
  std::binary_semaphore paused(0);
  std::binary_semaphore go(0);
  std::atomic<bool> pause_next{false};
  auto pause_point = [&] {
    if (pause_next.exchange(false)) {
      paused.release();
      if (!go.try_acquire_for(std::chrono::seconds(5))) throw std::runtime_error("not resumed");
    }
  };
  auto race = [&](const std::function<void(dogpile::query::SqliteDatabase&)>& read,
                  const std::function<void()>& write) {
    pause_next = true;
    std::thread reader([&] {
      auto db = dogpile::query::SqliteDatabase::open(path.string());
      read(db);
    });
    REQUIRE(paused.try_acquire_for(std::chrono::seconds(5)));
    write();
    go.release();
    reader.join();
  };

  race(
      [&](dogpile::query::SqliteDatabase& db) {
        (void)cache.one(db, "user", kUserSql, {1}, [&](const dogpile::query::Row& r) {
          pause_point();
          return map_user(r);
        });
      },
      [&] {
        sqlite.execute("UPDATE users SET name = 'edward' WHERE id = 1");
        cache.tables_changed({"users"});
      });
  CHECK(cache.one(sqlite, "user", kUserSql, {1}, map_user)->name == "edward");

  RelationshipCache<Post> posts(
      cache, Relationship<Post>{.ns = "race_posts",
                                .sql = kPostsSql,
                                .map =
                                    [&](const dogpile::query::Row& r) {
                                      pause_point();
                                      return map_post(r);
                                    },
                                .parent_of = [](const Post& p) { return Param(p.user_id); }});
  race(
      [&](dogpile::query::SqliteDatabase& db) {
        (void)posts.load_many(db, {1, 2});
      },
      [&] {
        sqlite.execute("UPDATE posts SET user_id = 2 WHERE id = 11");
        posts.invalidate({1, 2});
      });
  CHECK(posts.load_many(sqlite, {1, 2}) ==
        std::vector<std::vector<Post>>{{{10, 1, "a"}}, {{11, 2, "b"}, {12, 2, "c"}}});
}

TEST_CASE("query sqlite: the tables a statement reads and writes, from SQLite's authorizer") {
  dogpile::test::TempDir dir;
  auto db = qtest::make_db(dir.path() / "app.db");
  db.exec_script(
      "PRAGMA foreign_keys=ON;"
      "CREATE TABLE authors(id INTEGER PRIMARY KEY);"
      "CREATE TABLE books(id INTEGER PRIMARY KEY, author INTEGER REFERENCES authors(id) "
      "  ON DELETE CASCADE);"
      "CREATE TABLE audit(what TEXT);"
      "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;"
      "CREATE TRIGGER users_audit AFTER UPDATE ON users BEGIN "
      "  INSERT INTO audit VALUES ('users'); END;"
      "CREATE VIEW user_posts AS SELECT u.name, p.title FROM users u JOIN posts p "
      "  ON p.user_id = u.id;");
  using V = std::vector<std::string>;
  CHECK(db.tables_read("SELECT * FROM user_posts") == V{"posts", "user_posts", "users"});
  CHECK(db.tables_read("WITH n AS (SELECT count(*) FROM posts) SELECT * FROM n") == V{"posts"});
  CHECK(db.tables_written("UPDATE users SET name = ?") == V{"audit", "users"});  // the trigger
  CHECK(db.tables_written("DELETE FROM authors WHERE id = 1") == V{"authors", "books"});
  CHECK(db.tables_written("DELETE FROM posts") == V{"posts"});  // no WHERE: still reported
  CHECK(db.tables_written("INSERT INTO kv VALUES ('a', 'b')") == V{"kv"});  // WITHOUT ROWID
  CHECK(db.tables_written("SELECT 1").empty());
  CHECK_THROWS_AS(db.tables_read("SELEKT"), dogpile::query::DatabaseError);

  // Wired to the cache: declared from the statement, invalidated from the write.
  QueryCache cache(qtest::memory_region());
  const std::string sql = "SELECT name, title FROM user_posts ORDER BY title";
  cache.depends_on("feed", db.tables_read(sql));
  auto feed = [&] {
    return cache.all(db, "feed", sql, {},
                     [](const dogpile::query::Row& r) { return r.get<std::string>(1); });
  };
  CHECK(feed().size() == 3);
  const std::string write = "DELETE FROM posts WHERE id = ?";
  db.execute(write, std::vector<dogpile::query::Value>{std::int64_t{12}});
  CHECK(cache.tables_changed(db.tables_written(write)) == V{"feed"});
  CHECK(feed().size() == 2);
  // The connection's statements still run (the authorizer is gone).
  CHECK(cache.one(db, "user", kUserSql, {1}, map_user)->name == "ed");
}

TEST_CASE("query: inside a transaction queries bypass the cache; a rollback leaves it right") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  QueryCache cache(qtest::memory_region());
  cache.depends_on("user", {"users"});
  RelationshipCache<Post> posts(
      cache, Relationship<Post>{.ns = "tx_posts",
                                .sql = kPostsSql,
                                .map = map_post,
                                .parent_of = [](const Post& p) { return Param(p.user_id); }});
  CHECK(cache.one(sqlite, "user", kUserSql, {1}, map_user)->name == "ed");
  CHECK(posts.load(sqlite, 1).size() == 2);

  sqlite.exec_script("BEGIN");
  CHECK(sqlite.in_transaction());
  sqlite.execute("UPDATE users SET name = 'uncommitted' WHERE id = 1");
  sqlite.execute("DELETE FROM posts WHERE user_id = 1");
  // The transaction sees its own writes, not the cached rows ...
  CHECK(cache.one(sqlite, "user", kUserSql, {1}, map_user)->name == "uncommitted");
  CHECK(posts.load(sqlite, 1).empty());
  CHECK(cache.one(sqlite, "user", kUserSql, {3}, map_user)->name == "mary");
  sqlite.exec_script("ROLLBACK");
  CHECK_FALSE(sqlite.in_transaction());
  // ... and stored nothing: after the rollback the cache still has the committed rows, and the
  // query made inside the transaction was not cached (it runs now).
  CountingDb db{&sqlite};
  CHECK(cache.one(db, "user", kUserSql, {1}, map_user)->name == "ed");
  CHECK(posts.load(db, 1).size() == 2);
  CHECK(db.count == 0);
  CHECK(cache.one(db, "user", kUserSql, {3}, map_user)->name == "mary");
  CHECK(db.count == 1);
}
