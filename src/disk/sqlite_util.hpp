#pragma once
// SQLite helpers private to dogpile::disk: error mapping, a per-connection prepared-statement
// cache and a busy handler with a deadline and capped, jittered exponential backoff.

#include <sqlite3.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dogpile/disk/types.hpp"

namespace dogpile::detail {

/// Throws the dogpile exception matching an SQLite result code.
[[noreturn]] void throw_sqlite(int rc, sqlite3* db, const std::string& path, std::string_view what);
/// As throw_sqlite, with SQLite's message captured earlier (a ROLLBACK after a failed COMMIT
/// replaces the connection's message with "cannot rollback - no transaction is active").
[[noreturn]] void throw_sqlite_message(int rc, const std::string& errmsg, const std::string& path,
                                       std::string_view what);

/// One SQLite connection, owned by one thread (see DiskCacheImpl::conn()).
class Connection {
 public:
  Connection(const std::string& path, bool read_only);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Leaves the handle open and unused forever (after fork, in the child).
  void abandon() noexcept;

  [[nodiscard]] sqlite3* db() const noexcept { return db_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  /// A cached prepared statement for `sql` (keyed by the pointer: pass string literals or
  /// strings that outlive the connection).
  sqlite3_stmt* prepare(const char* sql);
  /// Runs a statement without results (not cached).
  void exec(const char* sql);
  /// Runs a statement without results; returns the SQLite code instead of throwing.
  int try_exec(const char* sql) noexcept;
  /// As try_exec, through the prepared-statement cache (for the hot BEGIN / COMMIT /
  /// ROLLBACK: no parse per call). `sql` as for prepare().
  int try_run(const char* sql) noexcept;

  /// Sets the deadline for lock waits of the following statements: `wait` from now, or no
  /// deadline when `forever`.
  void arm(std::chrono::milliseconds wait, bool forever) noexcept;

  /// For statements SQLite runs without calling the busy handler (`PRAGMA journal_mode = wal`):
  /// sleeps one capped, jittered backoff step (`attempt` counts from 0) and returns true, or
  /// returns false once the armed deadline has passed.
  bool backoff(int attempt) { return busy_handler(this, attempt) != 0; }

  [[noreturn]] void fail(int rc, std::string_view what) const {
    throw_sqlite(rc, db_, path_, what);
  }
  /// As fail, with a message captured before later statements replaced it.
  [[noreturn]] void fail(int rc, std::string_view what, const std::string& errmsg) const {
    throw_sqlite_message(rc, errmsg, path_, what);
  }
  /// SQLite's message for the last failed call on this connection.
  [[nodiscard]] std::string errmsg() const { return sqlite3_errmsg(db_); }

  // Transaction level bookkeeping (owned by DiskCacheImpl).
  struct Level {
    std::size_t new_files_mark;
    std::size_t cleanup_mark;
  };
  std::vector<Level> levels;                 ///< open transaction levels (BEGIN, then SAVEPOINTs)
  std::vector<std::string> new_files;        ///< value files written by the open transaction
  std::vector<std::string> cleanup;          ///< files to delete after the outermost COMMIT
  std::uint64_t fork_generation = 0;         ///< process "generation" that opened the handle
  std::vector<std::int64_t> scratch_rowids;  ///< reused by the cull (no allocation per write)
  /// Work written inside the open transaction that must be redone if it rolls back (buffered
  /// access updates flushed into it): each with the level it was written at; run with the
  /// rollback of that level, dropped by the outermost COMMIT.
  std::vector<std::pair<std::size_t, std::function<void()>>> undo_on_rollback;
  std::int64_t size_rowid = 0;  ///< rowid of Settings 'size' once seen (0: unknown)
  /// SQLITE_LIMIT_LENGTH for the selects that read values (step_value_row); -1 = SQLite's.
  int value_limit = -1;

 private:
  static int busy_handler(void* self, int count);
  sqlite3* db_ = nullptr;
  std::string path_;
  std::unordered_map<const char*, sqlite3_stmt*> stmts_;
  std::chrono::steady_clock::time_point deadline_{};
  bool forever_ = false;
  bool abandoned_ = false;
};

/// Resets a statement (and clears bindings) at scope exit.
class StmtGuard {
 public:
  explicit StmtGuard(sqlite3_stmt* s) noexcept : s_(s) {}
  ~StmtGuard() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StmtGuard(const StmtGuard&) = delete;
  StmtGuard& operator=(const StmtGuard&) = delete;
  [[nodiscard]] sqlite3_stmt* get() const noexcept { return s_; }

 private:
  sqlite3_stmt* s_;
};

/// Binds an INTEGER / REAL / TEXT / BLOB alternative to parameter `i`; `lifetime` is
/// SQLITE_STATIC (the caller keeps the bytes alive until the step) or SQLITE_TRANSIENT (copied).
void bind_variant(sqlite3_stmt* s, int i, const DiskValue& v, sqlite3_destructor_type lifetime);
/// Binds a key to parameter `i`.
void bind_key(sqlite3_stmt* s, int i, const Key& key);
/// Binds an optional key (NULL if empty).
void bind_opt_key(sqlite3_stmt* s, int i, const std::optional<Key>& key);
/// Reads a raw key column (INTEGER, REAL, TEXT, BLOB); nullopt for NULL.
std::optional<Key> column_key(sqlite3_stmt* s, int i);
/// Steps; returns true for a row, false when done; throws on errors.
bool step(Connection& c, sqlite3_stmt* s, std::string_view what);
/// As step, for a select of stored values: a string or blob longer than `c.value_limit` makes
/// SQLite fail the step (SQLITE_TOOBIG, `ValueTooLargeError`) before it loads the value. Only
/// these steps are bounded: a delete, a cull or `check` must still reach an oversized row.
bool step_value_row(Connection& c, sqlite3_stmt* s, std::string_view what);

}  // namespace dogpile::detail
