#include "sqlite_util.hpp"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <thread>

#include "dogpile/error.hpp"

namespace dogpile::detail {

void throw_sqlite(int rc, sqlite3* db, const std::string& path, std::string_view what) {
  throw_sqlite_message(rc, (db != nullptr) ? sqlite3_errmsg(db) : sqlite3_errstr(rc), path, what);
}

void throw_sqlite_message(int rc, const std::string& errmsg, const std::string& path,
                          std::string_view what) {
  std::string msg = "disk cache ";
  msg += path;
  msg += ": ";
  msg += what;
  msg += ": ";
  msg += errmsg;
  switch (rc & 0xFF) {
    case SQLITE_FULL:
      throw DatabaseError(msg +
                          " (the disk is full: free space, lower size_limit, or move the cache; "
                          "the failed write was rolled back and nothing stored before was lost)");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      throw TimeoutError(msg + " (database locked past the timeout)");
    case SQLITE_TOOBIG:
      // Only reads of values under max_value_bytes have a limit this low (SQLite's is 1 GB).
      throw ValueTooLargeError(msg +
                               " (a stored value is larger than max_value_bytes; it was refused "
                               "before it was read: raise max_value_bytes, or delete the entry)");
    case SQLITE_READONLY:
      throw ReadOnlyError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      throw CorruptDatabaseError(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      throw DatabaseError(msg + " (cannot open; check the path and permissions)");
    default:
      throw DatabaseError(msg);
  }
}

namespace {

// `file:` URI of a path (RFC 3986 escapes for the characters SQLite's URI parser treats
// specially).
std::string file_uri(const std::string& path) {
  std::string out = "file:";
  for (const char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '%' || c == '?' || c == '#' || c < 0x20 || c >= 0x7f) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += '%';
      out += kHex[c >> 4U];
      out += kHex[c & 0xFU];
    } else {
      out += ch;
    }
  }
  return out;
}

// True when this process cannot create the -shm file next to the database: a read-only file
// system, or a directory it may not write to.
bool cannot_create_beside(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  const char* dir = parent.empty() ? "." : parent.c_str();
  struct statvfs st {};
  if (::statvfs(dir, &st) == 0 && (st.f_flag & ST_RDONLY) != 0) return true;
  return ::access(dir, W_OK) != 0;
}

}  // namespace

Connection::Connection(const std::string& path, bool read_only) : path_(path) {
  int flags = SQLITE_OPEN_NOMUTEX |
              (read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc == SQLITE_OK && read_only && cannot_create_beside(path) &&
      sqlite3_exec(db_, "PRAGMA schema_version", nullptr, nullptr, nullptr) != SQLITE_OK) {
    // A WAL database SQLite cannot read through its -shm file: a read-only file system, or no
    // write permission while no writer has the -shm open (with one, the probe succeeds).
    // Then the database file is complete (the last writer checkpointed it at close), so it is
    // read as immutable: no locks, no -shm. Such a handle sees the database as of its open;
    // docs/disk.md says so.
    sqlite3_close_v2(db_);
    db_ = nullptr;
    rc = sqlite3_open_v2((file_uri(path) + "?immutable=1").c_str(), &db_, flags | SQLITE_OPEN_URI,
                         nullptr);
  }
  if (rc != SQLITE_OK) {
    std::string err = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw_sqlite(rc, nullptr, path, "open (" + err + ")");
  }
  sqlite3_extended_result_codes(db_, 0);
  sqlite3_busy_handler(db_, &Connection::busy_handler, this);
}

Connection::~Connection() {
  if (abandoned_ || db_ == nullptr) return;
  for (auto& [sql, s] : stmts_) sqlite3_finalize(s);
  // A transaction left open by a dying thread is rolled back by close.
  sqlite3_close_v2(db_);
}

void Connection::abandon() noexcept { abandoned_ = true; }

sqlite3_stmt* Connection::prepare(const char* sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  if (rc != SQLITE_OK) fail(rc, std::string("prepare ") + sql);
  stmts_.emplace(sql, s);
  return s;
}

void Connection::exec(const char* sql) {
  int rc = try_exec(sql);
  if (rc != SQLITE_OK) fail(rc, sql);
}

int Connection::try_exec(const char* sql) noexcept {
  return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
}

int Connection::try_run(const char* sql) noexcept {
  sqlite3_stmt* s = nullptr;
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) {
    s = it->second;
  } else {
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) return rc;
    try {
      stmts_.emplace(sql, s);
    } catch (...) {
      sqlite3_finalize(s);
      return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    }
  }
  int rc = sqlite3_step(s);
  sqlite3_reset(s);  // keeps the error message of a failed step for fail()
  return (rc == SQLITE_DONE || rc == SQLITE_ROW) ? SQLITE_OK : rc;
}

void Connection::arm(std::chrono::milliseconds wait, bool forever) noexcept {
  forever_ = forever;
  deadline_ = std::chrono::steady_clock::now() + wait;
}

int Connection::busy_handler(void* self, int count) {
  auto* c = static_cast<Connection*>(self);
  auto now = std::chrono::steady_clock::now();
  if (!c->forever_ && now >= c->deadline_) return 0;
  // Capped exponential backoff with full jitter: 50us * 2^n, at most 5 ms, random in [1/2, 1].
  thread_local std::minstd_rand rng(std::random_device{}());
  double cap = std::min(5000.0, 50.0 * static_cast<double>(1u << std::min(count, 10)));
  std::uniform_real_distribution<double> dist(cap / 2, cap);
  auto sleep = std::chrono::microseconds(static_cast<std::int64_t>(dist(rng)));
  if (!c->forever_) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(c->deadline_ - now);
    sleep = std::min(sleep, left + std::chrono::microseconds(1));
  }
  std::this_thread::sleep_for(sleep);
  return 1;
}

void bind_variant(sqlite3_stmt* s, int i, const DiskValue& v, sqlite3_destructor_type lifetime) {
  int rc = SQLITE_OK;
  std::size_t bytes = 0;
  switch (v.index()) {
    case 0:
      rc = sqlite3_bind_int64(s, i, std::get<0>(v));
      break;
    case 1: {
      const double d = std::get<1>(v);
      // SQLite turns a NaN into NULL: the row would read back as no value at all.
      if (std::isnan(d)) {
        throw_error<ValidationError>(
            "cannot store NaN: SQLite keeps it as NULL, so it could not be read back");
      }
      rc = sqlite3_bind_double(s, i, d);
      break;
    }
    case 2: {
      const auto& t = std::get<2>(v);
      bytes = t.size();
      rc = sqlite3_bind_text64(s, i, t.data(), t.size(), lifetime, SQLITE_UTF8);
      break;
    }
    default: {
      const auto& b = std::get<3>(v).data;
      bytes = b.size();
      rc = b.empty() ? sqlite3_bind_zeroblob(s, i, 0)
                     : sqlite3_bind_blob64(s, i, b.data(), b.size(), lifetime);
      break;
    }
  }
  // A failed bind leaves the parameter NULL: never step with it.
  if (rc == SQLITE_TOOBIG) {
    throw_error<ValidationError>(
        "cannot store " + std::to_string(bytes) +
        " bytes inline: more than SQLite's maximum length per value; lower disk_min_file_size "
        "so a value this large is kept in a file");
  }
  if (rc != SQLITE_OK) {
    throw DatabaseError(std::string("binding a value failed: ") + sqlite3_errstr(rc));
  }
}

void bind_key(sqlite3_stmt* s, int i, const Key& key) {
  // Keys outlive the statement's step: SQLite may point at them (SQLITE_STATIC).
  bind_variant(s, i, key.value(), SQLITE_STATIC);
}

void bind_opt_key(sqlite3_stmt* s, int i, const std::optional<Key>& key) {
  if (key) {
    bind_key(s, i, *key);
  } else {
    sqlite3_bind_null(s, i);
  }
}

std::optional<Key> column_key(sqlite3_stmt* s, int i) {
  switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER:
      return Key(static_cast<std::int64_t>(sqlite3_column_int64(s, i)));
    case SQLITE_FLOAT:
      return Key(sqlite3_column_double(s, i));
    case SQLITE_TEXT: {
      const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
      return Key(std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s, i))));
    }
    case SQLITE_BLOB: {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(s, i));
      auto n = static_cast<std::size_t>(sqlite3_column_bytes(s, i));
      return Key(Bytes{p == nullptr ? std::string() : std::string(p, n)});
    }
    default:
      return std::nullopt;
  }
}

bool step(Connection& c, sqlite3_stmt* s, std::string_view what) {
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  c.fail(rc, what);
}

bool step_value_row(Connection& c, sqlite3_stmt* s, std::string_view what) {
  if (c.value_limit < 0) return step(c, s, what);
  // The limit is checked where a column is loaded (OP_Column), per column: the values this
  // step returns are loaded by the time it returns, so the limit is lifted again at once.
  const int prior = sqlite3_limit(c.db(), SQLITE_LIMIT_LENGTH, c.value_limit);
  const int rc = sqlite3_step(s);
  sqlite3_limit(c.db(), SQLITE_LIMIT_LENGTH, prior);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  c.fail(rc, what);
}

}  // namespace dogpile::detail
