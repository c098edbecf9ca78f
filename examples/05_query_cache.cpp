// Query caching (dogpile::query): the C++ spelling of dogpile.cache's SQLAlchemy example.
//   session.query(User).options(FromCache("default")).filter(User.id == id).one()
//   RelationshipCache(User.posts, "default")
// A users/posts SQLite database; get_user_with_cache(db, id) queries once, then serves the user
// from the region; get_user_with_posts(db, id) caches the posts relationship per user. The
// database prints each statement it really runs ("SQL: ..."), as SQLAlchemy's echo does.
#include <dogpile/dogpile.hpp>
#include <dogpile/query.hpp>
#include <dogpile/query/sqlite.hpp>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dq = dogpile::query;

struct User {
  std::int64_t id = 0;
  std::string name;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(User, id, name)  // rows are stored with the region's codec
};
struct Post {
  std::int64_t id = 0;
  std::int64_t user_id = 0;
  std::string title;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Post, id, user_id, title)
};

// The SQLite driver, echoing the statements that reach the database.
struct EchoDb {
  dq::SqliteDatabase db;
  int statements = 0;
  void execute(std::string_view sql, std::span<const dq::Value> params, const dq::RowSink& sink) {
    ++statements;
    std::cout << "  SQL: " << sql << "\n";
    db.execute(sql, params, sink);
  }
};

dogpile::CacheRegion region = dogpile::make_region();
dq::QueryCache cache(region);
dq::RelationshipCache<Post> user_posts(
    cache,
    {.ns = "user_posts",
     .sql = "SELECT id, user_id, title FROM posts WHERE user_id IN (:parents) ORDER BY id",
     .map =
         [](const dq::Row& r) {
           return Post{r.get<std::int64_t>(0), r.get<std::int64_t>(1), r.get<std::string>(2)};
         },
     .parent_of = [](const Post& p) { return dq::Param(p.user_id); },
     .tables = {"posts"}});

std::optional<User> get_user_with_cache(EchoDb& db, std::int64_t id) {
  return cache.one(db, "user", "SELECT id, name FROM users WHERE id = ?", {id},
                   [](const dq::Row& r) {
                     return User{r.get<std::int64_t>(0), r.get<std::string>(1)};
                   });
}

std::pair<User, std::vector<Post>> get_user_with_posts(EchoDb& db, std::int64_t id) {
  return {get_user_with_cache(db, id).value(), user_posts.load(db, id)};
}

int main() {
  const auto path = std::filesystem::temp_directory_path() / "dogpile-example-query.db";
  std::filesystem::remove(path);
  EchoDb db{dq::SqliteDatabase::open(path.string())};
  db.db.exec_script(
      "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);"
      "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users, title TEXT);"
      "INSERT INTO users VALUES (1, 'ed'), (2, 'wendy');"
      "INSERT INTO posts VALUES (1, 1, 'hello'), (2, 1, 'caching'), (3, 2, 'queries');");
  // "memory_serialized" keeps bytes, like Redis or memcached would: the codec path is used.
  region.configure("memory_serialized", {.expiration_time = std::chrono::minutes(10)});
  cache.depends_on("user", {"users"});

  std::cout << "first get_user_with_cache(1):\n";
  auto u = get_user_with_cache(db, 1);
  std::cout << "  -> " << u->name << "\nsecond get_user_with_cache(1) (from the cache):\n";
  u = get_user_with_cache(db, 1);
  std::cout << "  -> " << u->name << "\n";
  const int after_users = db.statements;

  std::cout << "get_user_with_posts(1), twice:\n";
  for (int i = 0; i < 2; ++i) {
    auto [user, posts] = get_user_with_posts(db, 1);
    std::cout << "  -> " << user.name << ": " << posts.size() << " posts\n";
  }
  const int after_posts = db.statements;

  std::cout << "rename ed, commit, tell the cache (tables_changed({\"users\"})):\n";
  db.db.execute("UPDATE users SET name = 'edward' WHERE id = 1");
  cache.tables_changed({"users"});
  u = get_user_with_cache(db, 1);
  std::cout << "  -> " << u->name << "\n";

  const bool ok = after_users == 1 && after_posts == 2 && db.statements == 3 && u->name == "edward";
  std::cout << (ok ? "query example ok\n" : "query example FAILED\n");
  std::filesystem::remove(path);
  return ok ? 0 : 1;
}
