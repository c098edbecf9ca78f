#pragma once
/// @file query/sqlite.hpp
/// The SQLite driver of `dogpile::query` (the `sqlite3` C API): satisfies `Database`.
///
/// ```
/// auto db = dogpile::query::SqliteDatabase::open("app.db");
/// auto users = cache.all(db, "user", "SELECT id, name FROM users", {}, map_user);
/// ```

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/query.hpp"

struct sqlite3;

namespace dogpile::query {

/// A database statement failed (prepare, bind or step); the message is SQLite's.
class DatabaseError : public Error {
 public:
  using Error::Error;
};

/// A SQLite connection for cached queries. Keeps up to 64 prepared statements (by SQL text),
/// so a repeated query is not prepared again. Not thread-safe: one per thread (or a lock
/// around it), like a `sqlite3*`. Move-only.
class SqliteDatabase {
 public:
  /// Wraps a connection the caller owns (and closes after this object is gone).
  explicit SqliteDatabase(sqlite3* db);
  /// Opens (creating it if needed) the database file `path` (":memory:" works), with a 2 s
  /// busy timeout. @throws DatabaseError when it cannot be opened.
  static SqliteDatabase open(const std::string& path);
  /// Takes over `other`'s connection.
  SqliteDatabase(SqliteDatabase&& other) noexcept;
  /// Takes over `other`'s connection (closing this one's if it owns it).
  SqliteDatabase& operator=(SqliteDatabase&& other) noexcept;
  /// Finalizes the statements; closes the connection if this object opened it.
  ~SqliteDatabase();

  /// Prepares (or reuses) `sql`, binds `params` in order, calls `sink` for each row, resets.
  /// @throws DatabaseError (prepare, bind, step, or a parameter count that does not match the
  ///         placeholders); what `sink` throws. The connection stays usable.
  void execute(std::string_view sql, std::span<const Value> params, const RowSink& sink);
  /// `execute` for statements whose rows are not wanted (DDL, writes).
  void execute(std::string_view sql, std::span<const Value> params = {});
  /// Runs a script of `;`-separated statements without parameters (`sqlite3_exec`).
  /// @throws DatabaseError.
  void exec_script(const std::string& sql);
  /// The tables `sql` reads, as SQLite's authorizer names them when it prepares the statement:
  /// a view and the base tables behind it, and those behind CTEs (for `QueryCache::depends_on`).
  /// Sorted, unique, SQLite's own `sqlite_*` tables left out. Nothing is run. Replaces (and then
  /// clears) any authorizer set on the connection.
  /// @throws DatabaseError when `sql` does not prepare.
  [[nodiscard]] std::vector<std::string> tables_read(std::string_view sql);
  /// The tables `sql` writes (INSERT, UPDATE, DELETE), trigger targets and foreign-key cascades
  /// included (cascades with `PRAGMA foreign_keys=ON`): what to pass to
  /// `QueryCache::tables_changed` after it commits. As `tables_read`.
  [[nodiscard]] std::vector<std::string> tables_written(std::string_view sql);
  /// True inside an explicit transaction (`BEGIN` ... `COMMIT`/`ROLLBACK`; SQLite's
  /// autocommit is off): cached queries on this connection then bypass the cache.
  [[nodiscard]] bool in_transaction() const;
  /// The connection.
  [[nodiscard]] sqlite3* handle() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dogpile::query
