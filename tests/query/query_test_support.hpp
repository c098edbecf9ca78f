#pragma once
// Shared by the test_query sources (one unity TU): the users/posts schema on a real SQLite file,
// row types with nlohmann mappings, and a Database that counts the statements it runs (it wraps
// the real driver; nothing is faked).
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "dogpile/query.hpp"
#include "dogpile/query/sqlite.hpp"

namespace qtest {

using dogpile::query::Row;
using dogpile::query::RowSink;
using dogpile::query::SqliteDatabase;
using dogpile::query::Value;

struct User {
  std::int64_t id = 0;
  std::string name;
  friend bool operator==(const User&, const User&) = default;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(User, id, name)
};

struct Post {
  std::int64_t id = 0;
  std::int64_t user_id = 0;
  std::string title;
  friend bool operator==(const Post&, const Post&) = default;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Post, id, user_id, title)
};

inline User map_user(const Row& r) { return User{r.get<std::int64_t>(0), r.get<std::string>(1)}; }
inline Post map_post(const Row& r) {
  return Post{r.get<std::int64_t>(0), r.get<std::int64_t>(1), r.get<std::string>(2)};
}

inline const char* const kUserSql = "SELECT id, name FROM users WHERE id = ?";
inline const char* const kPostsSql =
    "SELECT id, user_id, title FROM posts WHERE user_id IN (:parents) ORDER BY id";

/// A users/posts database in `path` (WAL: a reader mid-SELECT does not block a writer).
inline SqliteDatabase make_db(const std::filesystem::path& path) {
  auto db = SqliteDatabase::open(path.string());
  db.exec_script(
      "PRAGMA journal_mode=WAL;"
      "CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT);"
      "CREATE TABLE IF NOT EXISTS posts(id INTEGER PRIMARY KEY, user_id INTEGER, title TEXT);"
      "DELETE FROM users; DELETE FROM posts;"
      "INSERT INTO users VALUES (1, 'ed'), (2, 'wendy'), (3, 'mary');"
      "INSERT INTO posts VALUES (10, 1, 'a'), (11, 1, 'b'), (12, 2, 'c');");
  return db;
}

/// The real driver, counting and logging the statements it runs.
struct CountingDb {
  SqliteDatabase* db;
  int count = 0;
  std::vector<std::string> log{};
  void execute(std::string_view sql, std::span<const Value> params, const RowSink& sink) {
    ++count;
    log.emplace_back(sql);
    db->execute(sql, params, sink);
  }
};

inline dogpile::CacheRegion memory_region(const char* backend = "memory") {
  auto r = dogpile::make_region();
  r.configure(backend);
  return r;
}

inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Writes one byte to `fd`; reads one byte from `fd` with a 5 s timeout (false on timeout).
inline void signal_fd(int fd) {
  const char c = 'x';
  if (::write(fd, &c, 1) != 1) std::abort();
}
inline bool wait_fd(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) return false;
  char c = 0;
  return ::read(fd, &c, 1) == 1;
}

}  // namespace qtest
