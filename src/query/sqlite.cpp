// The SQLite driver of dogpile::query: prepared-statement cache, typed binding and reading.
#include "dogpile/query/sqlite.hpp"

#include <sqlite3.h>

#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dogpile::query {

namespace {

[[noreturn]] void fail(sqlite3* db, const std::string& what) {
  throw DatabaseError("SQLite " + what + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
}

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

constexpr std::size_t kMaxCachedStatements = 64;

}  // namespace

struct SqliteDatabase::Impl {
  sqlite3* db = nullptr;
  bool owned = false;
  struct Cached {
    StmtPtr stmt;
    bool in_use = false;
  };
  std::unordered_map<std::string, Cached> statements;

  ~Impl() {
    statements.clear();  // finalize before closing
    if (owned) sqlite3_close_v2(db);
  }
};

SqliteDatabase::SqliteDatabase(sqlite3* db) : impl_(std::make_unique<Impl>()) {
  if (db == nullptr) throw DatabaseError("SqliteDatabase: null sqlite3 handle");
  impl_->db = db;
}

SqliteDatabase SqliteDatabase::open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    const std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    throw DatabaseError("SQLite open '" + path + "': " + msg);
  }
  sqlite3_busy_timeout(db, 2000);
  SqliteDatabase out(db);
  out.impl_->owned = true;
  return out;
}

SqliteDatabase::SqliteDatabase(SqliteDatabase&&) noexcept = default;
SqliteDatabase& SqliteDatabase::operator=(SqliteDatabase&&) noexcept = default;
SqliteDatabase::~SqliteDatabase() = default;

sqlite3* SqliteDatabase::handle() const { return impl_->db; }

bool SqliteDatabase::in_transaction() const { return sqlite3_get_autocommit(impl_->db) == 0; }

void SqliteDatabase::exec_script(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(impl_->db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw DatabaseError("SQLite exec: " + msg);
  }
}

namespace {

struct TableSets {
  std::set<std::string> read;
  std::set<std::string> written;
};

int collect_tables(void* user, int action, const char* table, const char* /*column*/,
                   const char* /*db*/, const char* /*trigger_or_view*/) {
  auto* sets = static_cast<TableSets*>(user);
  if (table == nullptr || std::string_view(table).substr(0, 7) == "sqlite_") return SQLITE_OK;
  switch (action) {
    case SQLITE_READ:
      sets->read.insert(table);
      break;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
      sets->written.insert(table);
      break;
    default:
      break;
  }
  return SQLITE_OK;
}

// Prepares `sql` (not run) with an authorizer that records the tables it touches.
TableSets table_sets(sqlite3* db, std::string_view sql) {
  TableSets sets;
  sqlite3_set_authorizer(db, collect_tables, &sets);
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &raw, nullptr);
  sqlite3_set_authorizer(db, nullptr, nullptr);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) fail(db, "prepare");
  return sets;
}

}  // namespace

std::vector<std::string> SqliteDatabase::tables_read(std::string_view sql) {
  auto sets = table_sets(impl_->db, sql);
  return {sets.read.begin(), sets.read.end()};
}

std::vector<std::string> SqliteDatabase::tables_written(std::string_view sql) {
  auto sets = table_sets(impl_->db, sql);
  return {sets.written.begin(), sets.written.end()};
}

void SqliteDatabase::execute(std::string_view sql, std::span<const Value> params) {
  execute(sql, params, [](const Row&) {});
}

void SqliteDatabase::execute(std::string_view sql, std::span<const Value> params,
                             const RowSink& sink) {
  sqlite3* db = impl_->db;
  // A statement from the cache, or a private one when the cached one is busy (a sink that
  // runs the same SQL again) or the cache is full.
  StmtPtr own;
  Impl::Cached* cached = nullptr;
  auto it = impl_->statements.find(std::string(sql));
  if (it != impl_->statements.end() && !it->second.in_use) {
    cached = &it->second;
  } else {
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &raw, &tail) !=
        SQLITE_OK) {
      fail(db, "prepare");
    }
    if (raw == nullptr) throw DatabaseError("SQLite prepare: the SQL text has no statement");
    own.reset(raw);
    if (tail != nullptr && tail != sql.data() + sql.size()) {
      for (const char* p = tail; p < sql.data() + sql.size(); ++p) {
        if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r' && *p != ';') {
          throw DatabaseError("SQLite prepare: more than one statement in the SQL text");
        }
      }
    }
    if (it == impl_->statements.end() && impl_->statements.size() < kMaxCachedStatements) {
      cached = &impl_->statements[std::string(sql)];
      cached->stmt = std::move(own);
    }
  }
  sqlite3_stmt* stmt = cached ? cached->stmt.get() : own.get();
  if (cached) cached->in_use = true;
  // Reset and unbind whatever happens, so the connection and the cached statement stay usable.
  struct Resetter {
    sqlite3_stmt* s;
    Impl::Cached* c;
    ~Resetter() {
      sqlite3_reset(s);
      sqlite3_clear_bindings(s);
      if (c) c->in_use = false;
    }
  } resetter{stmt, cached};

  const int expected = sqlite3_bind_parameter_count(stmt);
  if (static_cast<std::size_t>(expected) != params.size()) {
    throw DatabaseError("SQLite bind: the statement has " + std::to_string(expected) +
                        " placeholders, " + std::to_string(params.size()) + " parameters given");
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    const int at = static_cast<int>(i) + 1;
    const Value& v = params[i];
    int rc = SQLITE_OK;
    switch (v.index()) {
      case 0:
        rc = sqlite3_bind_null(stmt, at);
        break;
      case 1:
        rc = sqlite3_bind_int(stmt, at, std::get<bool>(v) ? 1 : 0);
        break;
      case 2:
        rc = sqlite3_bind_int64(stmt, at, std::get<std::int64_t>(v));
        break;
      case 3:
        rc = sqlite3_bind_double(stmt, at, std::get<double>(v));
        break;
      case 4: {
        const auto& s = std::get<std::string>(v);
        rc = sqlite3_bind_text64(stmt, at, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
      }
      default: {
        const auto& b = std::get<Blob>(v).bytes;
        // A null pointer would bind NULL: an empty blob is a zero-length zeroblob.
        rc = b.empty() ? sqlite3_bind_zeroblob(stmt, at, 0)
                       : sqlite3_bind_blob64(stmt, at, b.data(), b.size(), SQLITE_TRANSIENT);
        break;
      }
    }
    if (rc != SQLITE_OK) fail(db, "bind parameter " + std::to_string(at));
  }

  const int ncols = sqlite3_column_count(stmt);
  std::vector<Value> row(static_cast<std::size_t>(ncols));
  while (true) {
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) fail(db, "step");
    for (int c = 0; c < ncols; ++c) {
      auto& out = row[static_cast<std::size_t>(c)];
      switch (sqlite3_column_type(stmt, c)) {
        case SQLITE_INTEGER:
          out = static_cast<std::int64_t>(sqlite3_column_int64(stmt, c));
          break;
        case SQLITE_FLOAT:
          out = sqlite3_column_double(stmt, c);
          break;
        case SQLITE_TEXT: {
          const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
          out = std::string(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(stmt, c)));
          break;
        }
        case SQLITE_BLOB: {
          const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, c));
          const auto n = static_cast<std::size_t>(sqlite3_column_bytes(stmt, c));
          out = Blob{p ? std::string(p, n) : std::string()};
          break;
        }
        default:
          out = nullptr;
          break;
      }
    }
    sink(Row(row));
  }
}

}  // namespace dogpile::query
