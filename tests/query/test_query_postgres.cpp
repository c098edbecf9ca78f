// dogpile::query's PostgreSQL driver (libpqxx) against a real server the test starts
// (postgres_server.hpp): cached queries, the table hook, relationships with $n placeholders,
// typed columns (int8, float8, bool, bytea, numeric as text, NULL) and the error paths.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "query/postgres_server.hpp"
#include "query/query_test_support.hpp"

namespace {

qtest::PostgresServer& pg_server() {
  static qtest::PostgresServer s;
  return s;
}

dogpile::query::PostgresDatabase pg_db() {
  dogpile::query::PostgresDatabase db(pg_server().conninfo());
  db.exec_script(
      "DROP TABLE IF EXISTS posts; DROP TABLE IF EXISTS users;"
      "CREATE TABLE users(id bigint PRIMARY KEY, name text);"
      "CREATE TABLE posts(id bigint PRIMARY KEY, user_id bigint, title text);"
      "INSERT INTO users VALUES (1, 'ed'), (2, 'wendy'), (3, 'mary');"
      "INSERT INTO posts VALUES (10, 1, 'a'), (11, 1, 'b'), (12, 2, 'c');");
  return db;
}

// CountingDb for the PostgreSQL driver (keeps its $n placeholders).
struct CountingPg {
  dogpile::query::PostgresDatabase* db;
  int count = 0;
  std::vector<std::string> log{};
  void execute(std::string_view sql, std::span<const dogpile::query::Value> params,
               const dogpile::query::RowSink& sink) {
    ++count;
    log.emplace_back(sql);
    db->execute(sql, params, sink);
  }
  static std::string placeholder(std::size_t i) {
    return dogpile::query::PostgresDatabase::placeholder(i);
  }
};

}  // namespace

TEST_CASE("query postgres: cached queries, the table hook and relationships") {
  auto pg = pg_db();
  CountingPg db{&pg};
  dogpile::query::QueryCache cache(qtest::memory_region("memory_serialized"));
  cache.depends_on("pg_user", {"users"});
  const char* sql = "SELECT id, name FROM users WHERE id = $1";
  CHECK(cache.one(db, "pg_user", sql, {1}, qtest::map_user) == qtest::User{1, "ed"});
  CHECK(cache.one(db, "pg_user", sql, {1}, qtest::map_user) == qtest::User{1, "ed"});
  CHECK(db.count == 1);
  pg.execute("UPDATE users SET name = 'edward' WHERE id = 1");
  cache.tables_changed({"users"});
  CHECK(cache.one(db, "pg_user", sql, {1}, qtest::map_user)->name == "edward");
  CHECK(db.count == 2);

  dogpile::query::RelationshipCache<qtest::Post> posts(
      cache, {.ns = "pg_user_posts",
              .sql = "SELECT id, user_id, title FROM posts WHERE user_id IN (:parents) ORDER BY id",
              .map = qtest::map_post,
              .parent_of = [](const qtest::Post& p) { return dogpile::query::Param(p.user_id); },
              .tables = {"posts"}});
  CHECK(posts.load_many(db, {1, 2, 3}) ==
        std::vector<std::vector<qtest::Post>>{{{10, 1, "a"}, {11, 1, "b"}}, {{12, 2, "c"}}, {}});
  CHECK(db.log.back() ==
        "SELECT id, user_id, title FROM posts WHERE user_id IN ($1, $2, $3) ORDER BY id");
  CHECK(posts.load(db, 2).size() == 1);
  CHECK(db.count == 3);
  pg.execute("UPDATE posts SET user_id = 2 WHERE id = 11");
  posts.invalidate({1, 2});
  CHECK(posts.load_many(db, {1, 2})[1].size() == 2);
  CHECK(db.count == 4);
}

TEST_CASE("query postgres: typed columns round-trip; errors name the query") {
  auto pg = pg_db();
  dogpile::query::QueryCache cache(qtest::memory_region("memory_serialized"));
  using dogpile::query::Blob;
  using dogpile::query::Value;
  const dogpile::query::Params params = {std::numeric_limits<std::int64_t>::min(),
                                         std::numeric_limits<std::int64_t>::max(),
                                         0.1,
                                         std::numeric_limits<double>::quiet_NaN(),
                                         true,
                                         Blob{std::string("\0\xff", 2)},
                                         nullptr,
                                         "caf\xc3\xa9"};
  const std::string sql =
      "SELECT $1::int8, $2::int8, $3::float8, $4::float8, $5::bool, $6::bytea, $7::text, "
      "$8::text, 12.50::numeric, 7::int2";
  auto raw = [](const dogpile::query::Row& r) { return r.values(); };
  for (int pass = 0; pass < 2; ++pass) {
    const auto row = cache.one(pg, "pg_types", sql, params, raw).value();
    REQUIRE(row.size() == 10);
    for (std::size_t i : {0u, 1u, 2u, 4u, 5u, 6u, 7u}) CHECK(row[i] == params[i].value());
    CHECK(std::isnan(std::get<double>(row[3])));
    CHECK(row[8] == Value(std::string("12.50")));  // numeric: its text
    CHECK(row[9] == Value(std::int64_t{7}));
  }

  try {
    (void)cache.all(pg, "pg_user", "SELEKT 1", {}, raw);
    FAIL("no exception");
  } catch (const dogpile::query::QueryError& e) {
    CHECK_THAT(e.what(), Catch::Contains("namespace 'pg_user'") && Catch::Contains("SELEKT 1") &&
                             Catch::Contains("syntax error"));
  }
  // The connection is still usable, and nothing was cached for the failing statement.
  CHECK_THROWS_AS(cache.all(pg, "pg_user", "SELEKT 1", {}, raw), dogpile::query::QueryError);
  CHECK_THROWS_WITH(cache.one(pg, "pg_nul", "SELECT $1::text", {std::string("a\0b", 3)}, raw),
                    Catch::Contains("NUL byte"));
  CHECK(cache.one(pg, "pg_ok", "SELECT 1::int8", {}, raw)->at(0) == Value(std::int64_t{1}));
}
