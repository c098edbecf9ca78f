// The snippets of docs/query.md. Every region between `// [guide:<name>]` and
// `// [/guide:<name>]` is copied (leading indentation aside) into the guide after
// `<!-- snippet: <name> -->`; the CTest query_guide_in_sync checks that the two agree, and the
// test case below runs them. Assertions come after the marked regions.
#include <catch2/catch.hpp>

#include <dogpile/dogpile.hpp>
#include <dogpile/query.hpp>
#include <dogpile/query/sqlite.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "support/servers.hpp"

namespace qguide {

// [guide:query_types]
struct User {
  std::int64_t id = 0;
  std::string name;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(User, id, name)  // the region's codec stores the rows

struct Post {
  std::int64_t id = 0;
  std::int64_t user_id = 0;
  std::string title;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Post, id, user_id, title)

// A row mapper: one line.
User to_user(const dogpile::query::Row& r) {
  return {r.get<std::int64_t>(0), r.get<std::string>(1)};
}
// [/guide:query_types]

// [guide:query_driver]
// Any type with execute(sql, params, sink) is a driver; this one logs, then delegates.
struct LoggingDb {
  dogpile::query::SqliteDatabase& db;
  std::vector<std::string> log{};
  void execute(std::string_view sql, std::span<const dogpile::query::Value> params,
               const dogpile::query::RowSink& sink) {
    log.emplace_back(sql);
    db.execute(sql, params, sink);
  }
};
static_assert(dogpile::query::Database<LoggingDb>);
// [/guide:query_driver]

}  // namespace qguide

TEST_CASE("guide: docs/query.md snippets") {
  using qguide::LoggingDb;
  using qguide::Post;
  using qguide::to_user;
  using qguide::User;
  dogpile::test::TempDir dir;
  const std::string path = (dir.path() / "app.db").string();
  {
    auto setup = dogpile::query::SqliteDatabase::open(path);
    setup.exec_script(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER, title TEXT);"
        "INSERT INTO users VALUES (1, 'ed'), (2, 'wendy');"
        "INSERT INTO posts VALUES (1, 1, 'hello'), (2, 1, 'caching'), (3, 2, 'queries');");
  }

  // [guide:query_setup]
  auto region = dogpile::make_region();
  region.configure("memory_serialized", {.expiration_time = std::chrono::minutes(10)});
  dogpile::query::QueryCache cache(region);
  cache.depends_on("user", {"users"});  // queries of namespace "user" read table users

  auto db = dogpile::query::SqliteDatabase::open(path);
  // [/guide:query_setup]

  // [guide:query_from_cache]
  std::optional<User> user =
      cache.one(db, "user", "SELECT id, name FROM users WHERE id = ?", {1}, to_user);
  std::vector<User> everyone =
      cache.all(db, "user", "SELECT id, name FROM users ORDER BY id", {}, to_user);
  // [/guide:query_from_cache]
  CHECK(user->name == "ed");
  CHECK(everyone.size() == 2);

  // [guide:query_invalidate]
  db.execute("UPDATE users SET name = 'edward' WHERE id = 1");  // committed
  cache.tables_changed({"users"});  // every namespace that depends on users

  cache.invalidate_namespace("user");  // the same, by namespace
  cache.invalidate("user", "SELECT id, name FROM users WHERE id = ?", {1});  // one query
  // [/guide:query_invalidate]
  CHECK(cache.one(db, "user", "SELECT id, name FROM users WHERE id = ?", {1}, to_user)->name ==
        "edward");

  // [guide:query_write_scope]
  {
    dogpile::query::WriteScope scope(cache, {"users"});  // bumps "user" (before the write)
    db.execute("BEGIN");
    db.execute("UPDATE users SET name = 'ted' WHERE id = 1");
    db.execute("COMMIT");
    scope.finish();  // bumps again, after the commit (the destructor does it if you do not)
  }
  // [/guide:query_write_scope]
  CHECK(cache.one(db, "user", "SELECT id, name FROM users WHERE id = ?", {1}, to_user)->name ==
        "ted");

  // [guide:query_limits]
  // Returned either way; cached only if at most 1000 rows and 64 KiB encoded.
  std::vector<User> page =
      cache.all(db, "user", "SELECT id, name FROM users ORDER BY id", {}, to_user,
                {.version = "page", .max_rows = 1000, .max_bytes = 64 * 1024});
  // [/guide:query_limits]
  CHECK(page.size() == 2);

  // [guide:query_relationship]
  dogpile::query::RelationshipCache<Post> user_posts(
      cache,
      {.ns = "user_posts",
       .sql = "SELECT id, user_id, title FROM posts WHERE user_id IN (:parents) ORDER BY id",
       .map =
           [](const dogpile::query::Row& r) {
             return Post{r.get<std::int64_t>(0), r.get<std::int64_t>(1), r.get<std::string>(2)};
           },
       .parent_of = [](const Post& p) { return dogpile::query::Param(p.user_id); },
       .tables = {"posts"}});

  std::vector<Post> eds_posts = user_posts.load(db, 1);
  std::vector<std::vector<Post>> posts = user_posts.load_many(db, {1, 2});  // one IN (...)

  // Post 2 moves from user 1 to user 2: both parents change.
  db.execute("UPDATE posts SET user_id = 2 WHERE id = 2");
  user_posts.invalidate({1, 2});
  // [/guide:query_relationship]
  CHECK(eds_posts.size() == 2);
  CHECK(posts[1].size() == 1);
  CHECK(user_posts.load(db, 2).size() == 2);

  LoggingDb logged{db};
  CHECK(cache.one(logged, "user", "SELECT id, name FROM users WHERE id = ?", {2}, to_user)->name ==
        "wendy");
  CHECK(logged.log.size() == 1);
}
