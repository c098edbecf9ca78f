// DiskCache: python-diskcache's Cache on SQLite. See include/dogpile/disk/cache.hpp for the
// contract; the comments here explain the "why" of the implementation.
#include "dogpile/disk/cache.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "hot_cache.hpp"
#include "sqlite_util.hpp"
#include "value_files.hpp"

namespace dogpile {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace detail {

namespace {

constexpr int kModeRaw = 1;
constexpr int kModeBinary = 2;
constexpr int kModeText = 3;
constexpr int kModePickle = 4;

// Bumped in the child after every fork(): connections opened by an older generation belong to
// the parent and are abandoned (never used, never closed).
std::atomic<std::uint64_t> g_fork_generation{1};
std::atomic<std::uint64_t> g_serial{0};

// Databases (by path) on which this process holds an open write transaction. A child forked
// meanwhile inherits SQLite's in-process lock bookkeeping for them (the parent's WAL write lock
// looks held forever), so the child must not use them: `g_poisoned` lists them in the child.
std::mutex g_txn_mu;
std::map<std::string, int>* g_open_txns = new std::map<std::string, int>();  // never freed
std::set<std::string>* g_poisoned = new std::set<std::string>();             // never freed

void install_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::pthread_atfork([] { g_txn_mu.lock(); }, [] { g_txn_mu.unlock(); },
                     [] {
                       for (const auto& [path, n] : *g_open_txns) {
                         if (n > 0) g_poisoned->insert(path);
                       }
                       g_open_txns->clear();
                       g_fork_generation.fetch_add(1);
                       g_txn_mu.unlock();
                     });
  });
}

void note_txn(const std::string& path, int delta) {
  std::lock_guard lk(g_txn_mu);
  // The entry stays at 0 when the last transaction ends (one per database path): no node
  // allocation and string copy per write transaction.
  auto it = g_open_txns->find(path);
  if (it == g_open_txns->end()) it = g_open_txns->emplace(path, 0).first;
  it->second = std::max(0, it->second + delta);
}

bool poisoned(const std::string& path) {
  std::lock_guard lk(g_txn_mu);
  return g_poisoned->count(path) != 0;
}

}  // namespace

std::uint64_t fork_generation() noexcept {
  return g_fork_generation.load(std::memory_order_relaxed);
}

namespace {

// ---- SQL ---------------------------------------------------------------------------------------

constexpr const char* kCreateSettings =
    "CREATE TABLE IF NOT EXISTS Settings ( key TEXT NOT NULL UNIQUE, value)";
constexpr const char* kCreateCache =
    "CREATE TABLE IF NOT EXISTS Cache ( rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER,"
    " store_time REAL, expire_time REAL, access_time REAL, access_count INTEGER DEFAULT 0,"
    " tag BLOB, size INTEGER DEFAULT 0, mode INTEGER DEFAULT 0, filename TEXT, value BLOB)";
// Single-quoted literals (diskcache's double quotes rely on SQLite's DQS misfeature); the
// trigger names are diskcache's, so an existing database keeps its own triggers.
constexpr const char* kSchema[] = {
    "CREATE UNIQUE INDEX IF NOT EXISTS Cache_key_raw ON Cache(key, raw)",
    "CREATE INDEX IF NOT EXISTS Cache_expire_time ON Cache (expire_time) WHERE expire_time IS NOT "
    "NULL",
    "CREATE TRIGGER IF NOT EXISTS Settings_count_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value + 1 WHERE key = 'count'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_count_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value - 1 WHERE key = 'count'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_size_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value + NEW.size WHERE key = 'size'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_size_update AFTER UPDATE ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value + NEW.size - OLD.size WHERE key = 'size'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_size_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value - OLD.size WHERE key = 'size'; END",
};
constexpr const char* kPolicyIndex[] = {
    "CREATE INDEX IF NOT EXISTS Cache_store_time ON Cache (store_time)",
    "CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)",
    "CREATE INDEX IF NOT EXISTS Cache_access_count ON Cache (access_count)",
    nullptr,
};
constexpr const char* kPolicyCull[] = {
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY store_time LIMIT ?)"
    " RETURNING filename",
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY access_time LIMIT ?)"
    " RETURNING filename",
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY access_count LIMIT ?)"
    " RETURNING filename",
    nullptr,
};
constexpr const char* kIncrUpdate[] = {
    "UPDATE Cache SET value = ?1, store_time = ?2 WHERE rowid = ?3",
    "UPDATE Cache SET value = ?1, store_time = ?2, access_time = ?2 WHERE rowid = ?3",
    "UPDATE Cache SET value = ?1, store_time = ?2, access_count = access_count + 1 WHERE rowid = "
    "?3",
    "UPDATE Cache SET value = ?1, store_time = ?2 WHERE rowid = ?3",
};
// diskcache's _cull step 2 (reference §2.7): the expired rows first, in expire_time order
// (index Cache_expire_time). A plain SELECT, and a DELETE only for the rows it found: most writes
// find none, and a DELETE ... IN (subquery) RETURNING builds temporary tables on every call.
constexpr const char* kCullExpired =
    "SELECT rowid, filename FROM Cache WHERE expire_time IS NOT NULL AND expire_time < ?"
    " ORDER BY expire_time LIMIT ?";
constexpr const char* kBeginImmediate = "BEGIN IMMEDIATE";
constexpr const char* kCommit = "COMMIT";
constexpr const char* kRollback = "ROLLBACK";
// The old row of a set: its rowid (the row set_value updates in place), its expiry (for add)
// and its file (to delete after the commit).
constexpr const char* kSelectOld =
    "SELECT rowid, expire_time, filename FROM Cache WHERE key = ? AND raw = 1";
// set_value's write once kSelectOld has told whether the row exists (inside BEGIN IMMEDIATE, so
// no other writer can change that in between): an UPDATE by rowid or a plain INSERT, the same
// row and triggers as kUpsert without its second key-index seek. Parameters as kUpsert's, except
// ?1 is the rowid in kUpdateRowid.
constexpr const char* kUpdateRowid =
    "UPDATE Cache SET store_time = ?2, expire_time = ?3, access_time = ?2, access_count = 0,"
    " tag = ?4, size = ?5, mode = ?6, filename = ?7, value = ?8 WHERE rowid = ?1";
constexpr const char* kInsert =
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    " mode, filename, value) VALUES (?1, 1, ?2, ?3, ?2, 0, ?4, ?5, ?6, ?7, ?8)";
constexpr const char* kSizeByRowid = "SELECT value FROM Settings WHERE rowid = ? AND key = 'size'";
constexpr const char* kSizeRow = "SELECT rowid, value FROM Settings WHERE key = 'size'";
constexpr const char* kSelectLive =
    "SELECT rowid, expire_time, tag, mode, filename, value FROM Cache"
    " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)";
constexpr const char* kSelectAny =
    "SELECT rowid, expire_time, mode, filename, value FROM Cache WHERE key = ? AND raw = 1";
constexpr const char* kUpsert =
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    " mode, filename, value) VALUES (?1, 1, ?2, ?3, ?2, 0, ?4, ?5, ?6, ?7, ?8)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = excluded.expire_time, access_time = excluded.access_time, access_count = 0,"
    " tag = excluded.tag, size = excluded.size, mode = excluded.mode,"
    " filename = excluded.filename, value = excluded.value";
constexpr const char* kDeleteLive =
    "DELETE FROM Cache WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
    " RETURNING filename";
constexpr const char* kDeleteRowid = "DELETE FROM Cache WHERE rowid = ?";
constexpr const char* kTouch =
    "UPDATE Cache SET expire_time = ? WHERE key = ? AND raw = 1"
    " AND (expire_time IS NULL OR expire_time > ?)";
constexpr const char* kContains =
    "SELECT 1 FROM Cache WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)";
constexpr const char* kSettingGet = "SELECT value FROM Settings WHERE key = ?";
constexpr const char* kSettingPut = "INSERT OR REPLACE INTO Settings VALUES (?, ?)";
constexpr const char* kSettingAdd = "INSERT OR IGNORE INTO Settings VALUES (?, ?)";
constexpr const char* kSettingsAll = "SELECT key, value FROM Settings";
constexpr const char* kPageCount = "PRAGMA page_count";
constexpr const char* kAccessTime =
    "UPDATE Cache SET access_time = ?1 WHERE rowid = ?2 AND (access_time IS NULL OR access_time < "
    "?1)";
constexpr const char* kAccessCount =
    "UPDATE Cache SET access_count = access_count + ? WHERE rowid = ?";
constexpr const char* kAddHits = "UPDATE Settings SET value = value + ? WHERE key = 'hits'";
constexpr const char* kAddMisses = "UPDATE Settings SET value = value + ? WHERE key = 'misses'";
constexpr const char* kQueueIntBack =
    "SELECT key FROM Cache WHERE ? < key AND key < ? AND raw = 1 ORDER BY key DESC LIMIT 1";
constexpr const char* kQueueIntFront =
    "SELECT key FROM Cache WHERE ? < key AND key < ? AND raw = 1 ORDER BY key LIMIT 1";
constexpr const char* kPullFront =
    "SELECT rowid, expire_time, tag, mode, filename, value, key FROM Cache"
    " WHERE ? < key AND key < ? AND raw = 1 ORDER BY key LIMIT 1";
constexpr const char* kPullBack =
    "SELECT rowid, expire_time, tag, mode, filename, value, key FROM Cache"
    " WHERE ? < key AND key < ? AND raw = 1 ORDER BY key DESC LIMIT 1";
constexpr const char* kPeekItemLast =
    "SELECT rowid, expire_time, tag, mode, filename, value, key, raw FROM Cache"
    " ORDER BY rowid DESC LIMIT 1";
constexpr const char* kPeekItemFirst =
    "SELECT rowid, expire_time, tag, mode, filename, value, key, raw FROM Cache"
    " ORDER BY rowid LIMIT 1";
constexpr const char* kKeysFwd =
    "SELECT rowid, key, raw FROM Cache WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT 100";
constexpr const char* kKeysRev =
    "SELECT rowid, key, raw FROM Cache WHERE rowid < ? AND rowid >= ? ORDER BY rowid DESC LIMIT "
    "100";
constexpr const char* kMaxRowid =
    "SELECT COALESCE(MAX(rowid), 0), COALESCE(MIN(rowid), 0) FROM Cache";
constexpr const char* kSortedFwd = "SELECT key, raw FROM Cache ORDER BY key, raw";
constexpr const char* kSortedRev = "SELECT key, raw FROM Cache ORDER BY key DESC, raw DESC";
constexpr const char* kClearBatch =
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY rowid LIMIT 100)"
    " RETURNING filename";
constexpr const char* kExpireBatch =
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache WHERE expire_time > 0"
    " AND expire_time < ? ORDER BY expire_time, rowid LIMIT 100) RETURNING filename";
constexpr const char* kEvictBatch =
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache WHERE tag = ?"
    " ORDER BY rowid LIMIT 100) RETURNING filename";

// ---- helpers -----------------------------------------------------------------------------------

std::optional<DiskValue> column_value(sqlite3_stmt* s, int i) {
  auto k = column_key(s, i);
  if (!k) return std::nullopt;
  return DiskValue(k->value());
}

std::optional<double> column_opt_double(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_double(s, i);
}

std::optional<std::string> column_opt_text(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
}

void bind_value(sqlite3_stmt* s, int i, const DiskValue& v) {
  // Values may be temporaries: SQLite copies them (SQLITE_TRANSIENT).
  bind_variant(s, i, v, SQLITE_TRANSIENT);
}

void bind_text(sqlite3_stmt* s, int i, std::string_view t) {
  sqlite3_bind_text64(s, i, t.data(), t.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
}

/// A setting value as an error message shows it: 'text', a number, or its kind.
std::string describe_setting(const DiskValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return "'" + s->substr(0, 40) + "'";
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return std::to_string(*d);
  return "a non-text value";
}

std::int64_t as_int(const DiskValue& v, std::string_view name) {
  if (auto* i = std::get_if<std::int64_t>(&v)) return *i;
  if (auto* d = std::get_if<double>(&v)) {
    if (std::isfinite(*d) && *d == std::floor(*d) && std::fabs(*d) < 9e18) {
      return static_cast<std::int64_t>(*d);
    }
  }
  if (auto* s = std::get_if<std::string>(&v)) {
    // The whole text must be the number: "1GB" is not 1.
    std::int64_t i = 0;
    const auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), i);
    if (!s->empty() && ec == std::errc() && p == s->data() + s->size()) return i;
  }
  throw_error<ValidationError>(std::string(name) + ": expected an integer setting, got " +
                               describe_setting(v));
}

std::string as_text(const DiskValue& v, std::string_view name) {
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  throw_error<ValidationError>(std::string(name) + ": expected a text setting");
}

/// Why `value` cannot be the setting `name` (type and range), or nullopt when it can.
std::optional<std::string> setting_error(const std::string& name, const DiskValue& value) {
  auto integer = [&](std::int64_t lo, std::int64_t hi) -> std::optional<std::string> {
    std::int64_t i = 0;
    try {
      i = as_int(value, name);
    } catch (const ValidationError&) {
      return name + " must be an integer, got " + describe_setting(value) +
             (name == "size_limit" ? " (a number of bytes: 1 GiB is 1073741824)" : "");
    }
    if (i < lo || i > hi) {
      return name + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
             ", got " + std::to_string(i);
    }
    return std::nullopt;
  };
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  if (name == "statistics" || name == "tag_index") return integer(0, 1);
  if (name == "sqlite_auto_vacuum") return integer(0, 2);
  if (name == "sqlite_synchronous") return integer(0, 3);
  if (name == "sqlite_cache_size") return integer(-kMax, kMax);
  if (name == "size_limit" || name == "cull_limit" || name == "disk_min_file_size" ||
      name == "sqlite_mmap_size" || name == "count" || name == "size" || name == "hits" ||
      name == "misses" || name == "disk_pickle_protocol") {
    return integer(0, kMax);
  }
  if (name == "eviction_policy") {
    try {
      (void)eviction_policy_from_string(as_text(value, name));
    } catch (const ValidationError&) {
      return "eviction_policy must be least-recently-stored, least-recently-used, "
             "least-frequently-used or none, got " +
             describe_setting(value);
    }
  }
  if (name == "sqlite_journal_mode") {
    const auto* t = std::get_if<std::string>(&value);
    std::string mode = t ? *t : std::string();
    std::transform(mode.begin(), mode.end(), mode.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    static const char* modes[] = {"delete", "truncate", "persist", "memory", "wal", "off"};
    if (std::find(std::begin(modes), std::end(modes), mode) == std::end(modes)) {
      return "sqlite_journal_mode must be delete, truncate, persist, memory, wal or off, got " +
             describe_setting(value);
    }
  }
  return std::nullopt;
}

/// Characters (code points) of UTF-8 text: diskcache compares `len(str)` to the threshold.
std::size_t utf8_length(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

std::optional<TimePoint> to_time(std::optional<double> t) {
  if (!t) return std::nullopt;
  return from_unix_seconds(*t);
}

double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

/// A row as read by the "live" selects: rowid, expire_time, tag, mode, filename, value.
struct Row {
  std::int64_t rowid = 0;
  std::optional<double> expire_time;
  std::optional<Key> tag;
  int mode = 0;
  std::optional<std::string> filename;
  std::optional<DiskValue> value;
};

Row read_row(sqlite3_stmt* s) {
  Row r;
  r.rowid = sqlite3_column_int64(s, 0);
  r.expire_time = column_opt_double(s, 1);
  r.tag = column_key(s, 2);
  r.mode = sqlite3_column_int(s, 3);
  r.filename = column_opt_text(s, 4);
  // Large inline blobs are copied once here; file values are read after the statement ends.
  r.value = column_value(s, 5);
  return r;
}

/// Prepared (serialized) value: inline or in a new file owned by `file`.
struct Stored {
  int mode = kModeRaw;
  std::int64_t size = 0;
  PendingFile file;
  std::optional<DiskValue> inline_value;
};

}  // namespace

// ---- the implementation object -----------------------------------------------------------------

class DiskCacheImpl : public std::enable_shared_from_this<DiskCacheImpl> {
 public:
  DiskCacheImpl(const fs::path& directory, DiskCacheOptions options);
  ~DiskCacheImpl();

  const fs::path& dir() const noexcept { return dir_; }
  FileModes file_modes() const noexcept { return modes_; }
  const DiskCacheOptions& options() const noexcept { return opts_; }
  double now() const { return to_unix_seconds(opts_.clock()); }
  EvictionPolicy policy() const noexcept {
    return static_cast<EvictionPolicy>(policy_.load(std::memory_order_relaxed));
  }
  int policy_index() const noexcept { return policy_.load(std::memory_order_relaxed); }

  Connection& conn();
  /// Opens the database and applies the settings; called once, after make_shared (see conn()).
  void init();
  void close_all();
  /// Closes the calling thread's connection (at thread exit).
  void drop_thread_conn(std::thread::id id) noexcept;

  // Transactions: BEGIN IMMEDIATE at the outermost level, SAVEPOINTs inside.
  void begin(Connection& c, bool retry, std::optional<std::chrono::milliseconds> wait = {});
  void commit(Connection& c);
  void rollback(Connection& c) noexcept;

  /// Stores `v` encoded by the serializer, if any (every value write goes through here).
  Stored store(const DiskValue& v) const;
  /// The row's value decoded by the serializer, if any (every value read goes through here).
  std::optional<DiskValue> materialize(Row& row, const Key& key) const;
  /// The row's value as stored (`read` streams it; the serializer is not applied).
  std::optional<DiskValue> materialize_stored(Row& row, const Key& key) const;
  /// Deletes expired rows, then policy victims over the size limit; returns the rows deleted.
  std::size_t cull(Connection& c, double now);
  std::uint64_t volume(Connection& c);
  std::size_t delete_batches(const char* sql, const std::function<void(sqlite3_stmt*)>& bind,
                             bool retry, std::string_view what);

  void note_access(std::int64_t rowid, bool hit);
  void flush_in_txn(Connection& c);
  /// Runs (and drops) the undo work written above transaction level `level`.
  static void run_undo(Connection& c, std::size_t level) noexcept;

  void flush(bool wait);

  std::optional<DiskValue> read_setting(Connection& c, std::string_view name);
  /// A stored setting checked by setting_error, or nullopt when absent.
  /// @throws DatabaseError naming the setting and the value when it is not valid (a tampered
  ///   or corrupt Settings table; check(fix=true) recomputes count and size).
  std::optional<DiskValue> read_valid_setting(Connection& c, const std::string& name);
  void apply_pragma(Connection& c, const std::string& name, const DiskValue& value, bool force);
  void apply_setting_locally(const std::string& name, const DiskValue& value);

  std::shared_ptr<std::mutex> memo_mutex(const std::string& key);

  std::atomic<std::uint64_t> size_limit_{1ull << 30};
  std::atomic<std::int64_t> cull_limit_{10};
  std::atomic<int> policy_{0};
  std::atomic<bool> statistics_{false};
  std::atomic<bool> tag_index_{false};
  std::atomic<std::int64_t> min_file_size_{1 << 15};
  std::int64_t page_size_ = 4096;
  std::vector<std::string> setting_problems_;  // stored settings replaced by defaults at open

 private:
  void configure(Connection& c);

  fs::path dir_;
  std::string db_path_;
  FileModes modes_;  // of new hex directories and value files (private_cache: 0700/0600)
  DiskCacheOptions opts_;
  std::uint64_t serial_;
  std::atomic<std::uint64_t> generation_{1};

  std::mutex conns_mu_;
  std::unordered_map<std::thread::id, std::unique_ptr<Connection>> conns_;
  std::uint64_t conns_fork_gen_;
  std::map<std::string, DiskValue> pragmas_;  // sqlite_* settings (guarded by conns_mu_)

  struct AccessBuffer {
    std::unordered_map<std::int64_t, double> times;
    std::unordered_map<std::int64_t, std::int64_t> counts;
    std::int64_t hits = 0;
    std::int64_t misses = 0;
    std::size_t events = 0;
    std::chrono::steady_clock::time_point first{};
    std::uint64_t fork_gen = 0;
  };
  /// Puts flushed access updates back into the buffer (their transaction rolled back).
  void rebuffer(const AccessBuffer& b) noexcept;
  std::mutex buf_mu_;
  AccessBuffer buf_;
  std::atomic<std::size_t> buffered_{0};
  // After a flush from a read found the lock busy, reads do not try again before this time.
  std::atomic<std::int64_t> next_flush_try_{0};

  std::mutex memo_mu_;
  std::unordered_map<std::string, std::weak_ptr<std::mutex>> memo_locks_;

 public:
  /// The hot-read cache, or null when DiskCacheOptions::hot_cache_bytes is 0 (or read-only).
  std::unique_ptr<HotCache> hot_;
};

namespace {
/// RAII write transaction on the calling thread's connection.
class Txn {
 public:
  Txn(DiskCacheImpl& impl, Connection& c, bool retry) : impl_(impl), c_(c) { impl.begin(c, retry); }
  ~Txn() {
    if (!done_) impl_.rollback(c_);
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  void commit() {
    done_ = true;
    impl_.commit(c_);
  }
  /// Hands a freshly written file to the transaction (deleted if it rolls back).
  void adopt(PendingFile& f) {
    if (!f.empty()) c_.new_files.push_back(f.release());
  }
  /// Schedules a replaced/deleted file for removal after the outermost commit.
  void cleanup(std::optional<std::string> rel) {
    if (rel && !rel->empty()) c_.cleanup.push_back(std::move(*rel));
  }
  Connection& conn() noexcept { return c_; }

 private:
  DiskCacheImpl& impl_;
  Connection& c_;
  bool done_ = false;
};
}  // namespace

DiskCacheImpl::DiskCacheImpl(const fs::path& directory, DiskCacheOptions options)
    : opts_(std::move(options)), serial_(g_serial.fetch_add(1) + 1) {
  install_fork_handler();
  conns_fork_gen_ = g_fork_generation.load();
  if (opts_.timeout < 0ms) throw_error<ValidationError>("timeout: must not be negative");
  if (!opts_.clock) throw_error<ValidationError>("clock: must be set");
  if (opts_.size_limit && *opts_.size_limit > static_cast<std::uint64_t>(INT64_MAX)) {
    throw_error<ValidationError>("size_limit: must fit int64");
  }
  if (opts_.cull_limit && *opts_.cull_limit < 0) {
    throw_error<ValidationError>("cull_limit: must not be negative");
  }
  if (opts_.disk_min_file_size && *opts_.disk_min_file_size < 0) {
    throw_error<ValidationError>("disk_min_file_size: must not be negative");
  }
  if (directory.empty()) throw_error<ValidationError>("directory: must not be empty");
  std::error_code ec;
  dir_ = fs::absolute(directory, ec);
  if (ec) dir_ = directory;
  if (!opts_.read_only) create_cache_dir(dir_, opts_.private_cache, "disk cache");
  if (!fs::is_directory(dir_)) {
    throw DatabaseError("disk cache: " + dir_.string() + " is not a directory");
  }
  if (opts_.private_cache) {
    check_private_dir(dir_, "disk cache");
    modes_ = FileModes{0700, 0600};
  }
  dir_ = fs::weakly_canonical(dir_, ec);
  if (ec) dir_ = fs::absolute(directory);
  db_path_ = (dir_ / "cache.db").string();
  if (opts_.private_cache && !opts_.read_only) {
    // Made here, 0600, before SQLite creates it 0644: SQLite gives the -wal and -shm files the
    // database's mode. An existing database of ours is narrowed to 0600 too.
    int fd = ::open(db_path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      throw DatabaseError("disk cache: cannot create " + db_path_ + ": " + std::strerror(errno));
    }
    ::fchmod(fd, 0600);
    ::close(fd);
  }
  if (opts_.read_only && !fs::exists(db_path_)) {
    throw DatabaseError("disk cache: read-only open of " + dir_.string() + ": no cache.db there");
  }
  if (opts_.hot_cache_bytes > 0 && !opts_.read_only) {
    hot_ = std::make_unique<HotCache>(db_path_, opts_.hot_cache_bytes);
  }
  // init() runs from DiskCache's constructor once the shared_ptr owns us: the connection it
  // opens registers itself for closing at thread exit with weak_from_this(), empty in here.
}

DiskCacheImpl::~DiskCacheImpl() {
  try {
    if (g_fork_generation.load() == conns_fork_gen_) flush(false);
  } catch (...) {  // NOLINT(bugprone-empty-catch): best effort at destruction
  }
  close_all();
}

Connection& DiskCacheImpl::conn() {
  struct Tl {
    std::uint64_t serial = 0;
    std::uint64_t gen = 0;
    std::uint64_t fork = 0;
    Connection* c = nullptr;
  };
  thread_local Tl tl;
  std::uint64_t fork = g_fork_generation.load(std::memory_order_relaxed);
  std::uint64_t gen = generation_.load(std::memory_order_acquire);
  if (tl.serial == serial_ && tl.gen == gen && tl.fork == fork) return *tl.c;
  std::lock_guard lk(conns_mu_);
  if (fork != conns_fork_gen_) {
    // We are a forked child: the parent's handles must not be used nor closed.
    for (auto& [id, c] : conns_) c->abandon();
    conns_.clear();
    conns_fork_gen_ = fork;
    generation_.fetch_add(1);
    gen = generation_.load();
  }
  if (poisoned(db_path_)) {
    throw DatabaseError("disk cache " + dir_.string() +
                        ": this process was forked while its parent held a write transaction on "
                        "this cache; SQLite's inherited lock state makes it unusable here (fork "
                        "outside transactions, or use the cache in a fresh process)");
  }
  auto& slot = conns_[std::this_thread::get_id()];
  if (!slot) {
    slot = std::make_unique<Connection>(db_path_, opts_.read_only);
    slot->fork_generation = fork;
    configure(*slot);
    // Close this thread's connection when the thread exits (no descriptor leak per thread).
    struct ThreadConns {
      std::vector<std::weak_ptr<DiskCacheImpl>> caches;
      ~ThreadConns() {
        for (auto& w : caches) {
          if (auto impl = w.lock()) impl->drop_thread_conn(std::this_thread::get_id());
        }
      }
    };
    thread_local ThreadConns thread_conns;
    std::erase_if(thread_conns.caches, [](const auto& w) { return w.expired(); });
    thread_conns.caches.push_back(weak_from_this());
  }
  tl = Tl{serial_, gen, fork, slot.get()};
  return *slot;
}

void DiskCacheImpl::close_all() {
  std::lock_guard lk(conns_mu_);
  if (g_fork_generation.load() != conns_fork_gen_) {
    for (auto& [id, c] : conns_) c->abandon();
  }
  conns_.clear();
  generation_.fetch_add(1, std::memory_order_release);
}

void DiskCacheImpl::drop_thread_conn(std::thread::id id) noexcept {
  std::unique_ptr<Connection> victim;
  {
    std::lock_guard lk(conns_mu_);
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    victim = std::move(it->second);
    conns_.erase(it);
    if (g_fork_generation.load() != conns_fork_gen_) victim->abandon();
    generation_.fetch_add(1, std::memory_order_release);  // no thread keeps a stale pointer
  }
}

void DiskCacheImpl::configure(Connection& c) {
  // The busy handler must be armed before the first statement: a fresh connection has no
  // deadline, so a lock held for a moment by another process (the schema read of the first
  // pragma needs a shared lock) would otherwise fail at once. Pragmas wait like diskcache's
  // _sql_retry: up to max(timeout, 60 s); a read-only handle (an inspection tool) waits only
  // its own timeout.
  c.arm(opts_.read_only ? opts_.timeout : std::max<std::chrono::milliseconds>(opts_.timeout, 60s),
        false);
  // Per-connection pragmas (diskcache re-applies every sqlite_* setting on each connection).
  for (const auto& [name, value] : pragmas_) {
    if (name == "sqlite_cache_size" || name == "sqlite_mmap_size" || name == "sqlite_synchronous") {
      apply_pragma(c, name, value, true);
    }
  }
}

void DiskCacheImpl::apply_pragma(Connection& c, const std::string& name, const DiskValue& value,
                                 bool force) {
  std::string pragma = name.substr(7);  // strip "sqlite_"
  std::string v;
  if (auto* s = std::get_if<std::string>(&value)) {
    for (char ch : *s) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') {
        throw_error<ValidationError>(name + ": bad value '" + *s + "'");
      }
    }
    v = *s;
  } else {
    v = std::to_string(as_int(value, name));
  }
  if (!force) {
    // Read first and set only on a difference: changing journal_mode or auto_vacuum needs locks.
    std::string q = "PRAGMA " + pragma;
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(c.db(), q.c_str(), -1, &s, nullptr) == SQLITE_OK) {
      std::string cur;
      if (sqlite3_step(s) == SQLITE_ROW) {
        const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
        if (t != nullptr) cur = t;
      }
      sqlite3_finalize(s);
      std::string lower = v;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      if (cur == lower) return;
    }
  }
  std::string q = "PRAGMA " + pragma + " = " + v;
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v2(c.db(), q.c_str(), -1, &s, nullptr);
  if (rc != SQLITE_OK) c.fail(rc, q);
  // SQLite does not call the busy handler for some pragmas (`journal_mode = wal` needs an
  // exclusive lock and fails at once with "database is locked" while another process opens the
  // same new cache): retry them with capped backoff up to the armed deadline, as diskcache's
  // 60 s _sql_retry does.
  for (int attempt = 0;; ++attempt) {
    do {
      rc = sqlite3_step(s);
    } while (rc == SQLITE_ROW);
    if ((rc & 0xFF) != SQLITE_BUSY && (rc & 0xFF) != SQLITE_LOCKED) break;
    sqlite3_reset(s);
    if (!c.backoff(attempt)) break;
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE) c.fail(rc, q);
}

void DiskCacheImpl::init() {
  Connection& c = conn();
  // Initialization waits up to 60 s for locks whatever `timeout` is, as diskcache's _sql_retry
  // (a read-only handle: its own timeout; it takes no write lock anyway).
  c.arm(opts_.read_only ? opts_.timeout : std::max<std::chrono::milliseconds>(opts_.timeout, 60s),
        false);

  // 1. Existing settings (the table may not exist yet).
  const std::map<std::string, DiskValue> defaults = {
      {"statistics", std::int64_t{0}},
      {"tag_index", std::int64_t{0}},
      {"eviction_policy", std::string("least-recently-stored")},
      {"size_limit", std::int64_t{1} << 30},
      {"cull_limit", std::int64_t{10}},
      {"sqlite_auto_vacuum", std::int64_t{1}},
      {"sqlite_cache_size", std::int64_t{1} << 13},
      {"sqlite_journal_mode", std::string("wal")},
      {"sqlite_mmap_size", std::int64_t{1} << 26},
      {"sqlite_synchronous", std::int64_t{1}},
      {"disk_min_file_size", std::int64_t{1} << 15},
      {"disk_pickle_protocol", std::int64_t{5}},
  };
  std::map<std::string, DiskValue> settings = defaults;
  {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(c.db(), kSettingsAll, -1, &s, nullptr);
    if (rc == SQLITE_OK) {
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        auto name = column_opt_text(s, 0);
        auto value = column_value(s, 1);
        if (name && value) settings[*name] = *value;
      }
      sqlite3_finalize(s);
      if (rc != SQLITE_DONE) c.fail(rc, "read Settings");
    } else {
      std::string msg = sqlite3_errmsg(c.db());
      sqlite3_finalize(s);
      if (msg.find("no such table") == std::string::npos) c.fail(rc, "read Settings");
    }
  }
  // 2. Options override what is stored (and get persisted).
  std::map<std::string, DiskValue> given;
  auto give = [&](const char* name, auto opt) {
    if (opt) given[name] = detail::to_disk_value(*opt);
  };
  give("size_limit", opts_.size_limit);
  if (opts_.eviction_policy) {
    given["eviction_policy"] = std::string(to_string(*opts_.eviction_policy));
  }
  give("cull_limit", opts_.cull_limit);
  if (opts_.statistics) given["statistics"] = std::int64_t{*opts_.statistics ? 1 : 0};
  if (opts_.tag_index) given["tag_index"] = std::int64_t{*opts_.tag_index ? 1 : 0};
  give("disk_min_file_size", opts_.disk_min_file_size);
  give("sqlite_auto_vacuum", opts_.sqlite_auto_vacuum);
  give("sqlite_cache_size", opts_.sqlite_cache_size);
  give("sqlite_journal_mode", opts_.sqlite_journal_mode);
  give("sqlite_mmap_size", opts_.sqlite_mmap_size);
  give("sqlite_synchronous", opts_.sqlite_synchronous);
  // A stored setting that cannot be read back (written by an older version, by hand, or by a
  // bad reset) does not make the cache unopenable: the default replaces it and the problem is
  // reported by `setting_problems()`. A bad option given now is the caller's error.
  // The counters (count, size, hits, misses) have no default: a bad one is recomputed from
  // the Cache table (hits/misses restart at 0) in the write transaction below.
  std::vector<std::string> bad_counters;
  for (auto& [k, v] : settings) {
    if (given.count(k) != 0) continue;
    if (auto why = setting_error(k, v)) {
      auto d = defaults.find(k);
      if (d == defaults.end()) {
        if (opts_.read_only) {
          throw DatabaseError("disk cache " + db_path_ + ": stored setting " + *why +
                              " (a corrupt or tampered Settings table; opening it writable "
                              "once recomputes it)");
        }
        setting_problems_.push_back("stored setting " + *why + "; recomputed");
        bad_counters.push_back(k);
        continue;
      }
      setting_problems_.push_back("stored setting " + *why + "; using the default " +
                                  describe_setting(d->second));
      v = d->second;
    }
  }
  for (auto& [k, v] : given) {
    if (auto why = setting_error(k, v)) throw_error<ValidationError>(*why);
    settings[k] = v;
  }

  // Validate before touching anything.
  EvictionPolicy pol =
      eviction_policy_from_string(as_text(settings["eviction_policy"], "eviction_policy"));

  // 3. Pragmas in sorted order before any table exists (auto_vacuum must come first).
  for (const auto& [name, value] : settings) {
    if (name.rfind("sqlite_", 0) != 0) continue;
    pragmas_[name] = value;
    bool persistent = name == "sqlite_auto_vacuum" || name == "sqlite_journal_mode";
    if (opts_.read_only && persistent) continue;
    apply_pragma(c, name, value, false);
  }

  // 4. Schema and settings in one write transaction.
  if (!opts_.read_only) {
    begin(c, false, std::max<std::chrono::milliseconds>(opts_.timeout, 60s));
    try {
      c.exec(kCreateSettings);
      for (const auto& [name, value] : settings) {
        if (name == "count" || name == "size" || name == "hits" || name == "misses") continue;
        sqlite3_stmt* s = c.prepare(kSettingPut);
        StmtGuard g(s);
        bind_text(s, 1, name);
        bind_value(s, 2, value);
        step(c, s, "write Settings");
      }
      for (const char* meta : {"count", "size", "hits", "misses"}) {
        sqlite3_stmt* s = c.prepare(kSettingAdd);
        StmtGuard g(s);
        bind_text(s, 1, meta);
        sqlite3_bind_int64(s, 2, 0);
        step(c, s, "write Settings");
      }
      c.exec(kCreateCache);
      for (const char* sql : kSchema) c.exec(sql);
      for (const auto& name : bad_counters) {
        const char* value = name == "count"  ? "(SELECT COUNT(key) FROM Cache)"
                            : name == "size" ? "(SELECT COALESCE(SUM(size), 0) FROM Cache)"
                                             : "0";
        const std::string sql =
            "UPDATE Settings SET value = " + std::string(value) + " WHERE key = '" + name + "'";
        c.exec(sql.c_str());
      }
      if (const char* idx = kPolicyIndex[static_cast<int>(pol)]) c.exec(idx);
      if (as_int(settings["tag_index"], "tag_index") != 0) {
        c.exec("CREATE INDEX IF NOT EXISTS Cache_tag_rowid ON Cache(tag, rowid)");
      } else {
        c.exec("DROP INDEX IF EXISTS Cache_tag_rowid");
      }
      commit(c);
    } catch (...) {
      rollback(c);
      throw;
    }
  } else {
    // A read-only open still needs a cache there.
    sqlite3_stmt* s = c.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'Cache'");
    StmtGuard g(s);
    if (!step(c, s, "read schema") || sqlite3_column_int(s, 0) == 0) {
      throw DatabaseError("disk cache: " + db_path_ + " holds no Cache table");
    }
  }
  {
    sqlite3_stmt* s = c.prepare("PRAGMA page_size");
    StmtGuard g(s);
    if (step(c, s, "PRAGMA page_size")) page_size_ = sqlite3_column_int64(s, 0);
  }
  for (const auto& [name, value] : settings) apply_setting_locally(name, value);
  policy_ = static_cast<int>(pol);
}

void DiskCacheImpl::apply_setting_locally(const std::string& name, const DiskValue& value) {
  if (name == "size_limit") {
    size_limit_ = static_cast<std::uint64_t>(std::max<std::int64_t>(0, as_int(value, name)));
  } else if (name == "cull_limit") {
    cull_limit_ = as_int(value, name);
  } else if (name == "statistics") {
    statistics_ = as_int(value, name) != 0;
  } else if (name == "tag_index") {
    tag_index_ = as_int(value, name) != 0;
  } else if (name == "disk_min_file_size") {
    min_file_size_ = as_int(value, name);
  } else if (name == "eviction_policy") {
    policy_ = static_cast<int>(eviction_policy_from_string(as_text(value, name)));
  }
}

// ---- transactions ------------------------------------------------------------------------------

void DiskCacheImpl::begin(Connection& c, bool retry,
                          std::optional<std::chrono::milliseconds> wait) {
  if (c.levels.empty()) {
    c.arm(wait.value_or(opts_.timeout), retry);
    int rc = c.try_run(kBeginImmediate);
    if (rc != SQLITE_OK) c.fail(rc, "BEGIN IMMEDIATE");
    note_txn(db_path_, +1);
    c.levels.push_back({0, 0});
    c.new_files.clear();
    c.cleanup.clear();
    if (buffered_.load(std::memory_order_relaxed) > 0) {
      try {
        flush_in_txn(c);
      } catch (...) {
        rollback(c);
        throw;
      }
    }
  } else {
    c.exec("SAVEPOINT dogpile");
    c.levels.push_back({c.new_files.size(), c.cleanup.size()});
  }
}

void DiskCacheImpl::commit(Connection& c) {
  if (c.levels.empty()) return;
  c.levels.pop_back();
  if (!c.levels.empty()) {
    c.exec("RELEASE dogpile");
    for (auto& [level, undo] : c.undo_on_rollback) level = std::min(level, c.levels.size());
    return;
  }
  int rc = c.try_run(kCommit);
  note_txn(db_path_, -1);
  if (rc == SQLITE_OK) c.undo_on_rollback.clear();
  if (rc != SQLITE_OK) {
    // SQLite may have rolled back already (a full disk): keep its message, not the ROLLBACK's.
    const std::string why = c.errmsg();
    c.try_run(kRollback);
    run_undo(c, 0);
    for (const auto& f : c.new_files) remove_value_file(dir_, f);
    c.new_files.clear();
    c.cleanup.clear();
    c.fail(rc, "COMMIT", why);
  }
  std::vector<std::string> cleanup = std::move(c.cleanup);
  c.cleanup.clear();
  c.new_files.clear();
  // Files of replaced or deleted rows go only after the commit made the rows invisible.
  for (const auto& f : cleanup) remove_value_file(dir_, f);
}

void DiskCacheImpl::rollback(Connection& c) noexcept {
  if (c.levels.empty()) return;
  Connection::Level level = c.levels.back();
  c.levels.pop_back();
  if (c.levels.empty()) {
    c.try_run(kRollback);
    note_txn(db_path_, -1);
    for (const auto& f : c.new_files) remove_value_file(dir_, f);
    c.new_files.clear();
    c.cleanup.clear();
    run_undo(c, 0);
  } else {
    c.try_exec("ROLLBACK TO dogpile");
    c.try_exec("RELEASE dogpile");
    run_undo(c, c.levels.size());
    for (std::size_t i = level.new_files_mark; i < c.new_files.size(); ++i) {
      remove_value_file(dir_, c.new_files[i]);
    }
    c.new_files.resize(level.new_files_mark);
    c.cleanup.resize(std::min(c.cleanup.size(), level.cleanup_mark));
  }
}

// ---- values ------------------------------------------------------------------------------------

Stored DiskCacheImpl::store(const DiskValue& value) const {
  // The serializer is applied here and in materialize() only, so that every path (set, add,
  // set_many, push, memoize) agrees with every read.
  std::optional<DiskValue> encoded;
  if (opts_.serializer) encoded = opts_.serializer->encode(value);
  const DiskValue& v = encoded ? *encoded : value;
  Stored out;
  auto min = static_cast<std::size_t>(min_file_size_.load(std::memory_order_relaxed));
  if (const auto* t = std::get_if<std::string>(&v)) {
    if (utf8_length(*t) >= min) {
      out.mode = kModeText;
      out.size = static_cast<std::int64_t>(t->size());
      out.file = PendingFile(dir_, write_value_file(dir_, *t, modes_));
      return out;
    }
  } else if (const auto* b = std::get_if<Bytes>(&v)) {
    if (b->data.size() >= min) {
      out.mode = kModeBinary;
      out.size = static_cast<std::int64_t>(b->data.size());
      out.file = PendingFile(dir_, write_value_file(dir_, b->data, modes_));
      return out;
    }
  }
  out.inline_value = v;
  return out;
}

std::optional<DiskValue> DiskCacheImpl::materialize(Row& row, const Key& key) const {
  auto v = materialize_stored(row, key);
  if (!v || !opts_.serializer) return v;
  try {
    return opts_.serializer->decode(std::move(*v));
  } catch (const CantDeserialize& e) {
    throw CantDeserialize("disk cache " + dir_.string() + ": the value of key " + key.repr() +
                          " cannot be decoded by the " + opts_.serializer->name() +
                          " serializer: " + e.what());
  }
}

std::optional<DiskValue> DiskCacheImpl::materialize_stored(Row& row, const Key& key) const {
  switch (row.mode) {
    case kModeRaw:
      if (!row.value) break;
      return std::move(row.value);  // each row is materialized once (checks throw before)
    case kModeBinary:
    case kModeText: {
      if (!row.filename) break;
      auto data = read_value_file(dir_, *row.filename);
      if (!data) return std::nullopt;  // removed by a concurrent writer: a miss
      if (row.mode == kModeText) return DiskValue(std::move(*data));
      return DiskValue(Bytes{std::move(*data)});
    }
    case kModePickle:
      throw UnsupportedFormat("disk cache " + dir_.string() + ": the value of key " + key.repr() +
                              " was pickled by Python (mode PICKLE); only int, float, str and "
                              "bytes values can be read from C++");
    default:
      break;
  }
  throw UnsupportedFormat("disk cache " + dir_.string() + ": the value of key " + key.repr() +
                          " has an unknown storage mode " + std::to_string(row.mode));
}

std::uint64_t DiskCacheImpl::volume(Connection& c) {
  std::int64_t pages = 0;
  {
    sqlite3_stmt* s = c.prepare(kPageCount);
    StmtGuard g(s);
    if (step(c, s, "PRAGMA page_count")) pages = sqlite3_column_int64(s, 0);
  }
  // Settings 'size' by its rowid (one b-tree seek, not the key index and the table); the rowid
  // is learnt once and checked by key, so a replaced row falls back to the lookup by key.
  std::int64_t files = 0;
  bool found = false;
  if (c.size_rowid != 0) {
    sqlite3_stmt* s = c.prepare(kSizeByRowid);
    StmtGuard g(s);
    sqlite3_bind_int64(s, 1, c.size_rowid);
    if (step(c, s, "read size")) {
      files = sqlite3_column_int64(s, 0);
      found = true;
    }
  }
  if (!found) {
    sqlite3_stmt* s = c.prepare(kSizeRow);
    StmtGuard g(s);
    if (step(c, s, "read size")) {
      c.size_rowid = sqlite3_column_int64(s, 0);
      files = sqlite3_column_int64(s, 1);
    }
  }
  return static_cast<std::uint64_t>(std::max<std::int64_t>(0, pages * page_size_ + files));
}

std::size_t DiskCacheImpl::cull(Connection& c, double now) {
  std::int64_t n = cull_limit_.load(std::memory_order_relaxed);
  if (n <= 0) return 0;
  std::size_t deleted = 0;
  {
    auto& rows = c.scratch_rowids;
    rows.clear();
    {
      sqlite3_stmt* s = c.prepare(kCullExpired);
      StmtGuard g(s);
      sqlite3_bind_double(s, 1, now);
      sqlite3_bind_int64(s, 2, n);
      while (step(c, s, "cull expired")) {
        rows.push_back(sqlite3_column_int64(s, 0));
        if (auto f = column_opt_text(s, 1)) c.cleanup.push_back(std::move(*f));
      }
    }
    for (std::int64_t rowid : rows) {
      sqlite3_stmt* s = c.prepare(kDeleteRowid);
      StmtGuard g(s);
      sqlite3_bind_int64(s, 1, rowid);
      step(c, s, "cull expired");
    }
    n -= static_cast<std::int64_t>(rows.size());
    deleted = rows.size();
    if (n <= 0) return deleted;
  }
  const char* sql = kPolicyCull[policy_index()];
  if (sql == nullptr) return deleted;
  if (volume(c) < size_limit_.load(std::memory_order_relaxed)) return deleted;
  sqlite3_stmt* s = c.prepare(sql);
  StmtGuard g(s);
  sqlite3_bind_int64(s, 1, n);
  while (step(c, s, "cull")) {
    ++deleted;
    if (auto f = column_opt_text(s, 0)) c.cleanup.push_back(std::move(*f));
  }
  return deleted;
}

// ---- buffered access updates -------------------------------------------------------------------

void DiskCacheImpl::note_access(std::int64_t rowid, bool hit) {
  EvictionPolicy p = policy();
  bool lru = hit && p == EvictionPolicy::least_recently_used;
  bool lfu = hit && p == EvictionPolicy::least_frequently_used;
  bool stats = statistics_.load(std::memory_order_relaxed);
  if (!lru && !lfu && !stats) return;
  bool due = false;
  {
    std::lock_guard lk(buf_mu_);
    std::uint64_t fork = g_fork_generation.load(std::memory_order_relaxed);
    if (buf_.fork_gen != fork) {
      buf_ = AccessBuffer{};  // the parent's pending updates are not ours to write
      buf_.fork_gen = fork;
    }
    if (lru) {
      double& t = buf_.times[rowid];
      t = std::max(t, now());
    }
    if (lfu) ++buf_.counts[rowid];
    if (stats) ++(hit ? buf_.hits : buf_.misses);
    auto steady = std::chrono::steady_clock::now();
    if (buf_.events++ == 0) buf_.first = steady;
    buffered_.store(buf_.events, std::memory_order_relaxed);
    due = buf_.events >= opts_.access_flush_events ||
          steady - buf_.first >= opts_.access_flush_interval;
  }
  if (due && !opts_.read_only) {
    auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    if (t >= next_flush_try_.load(std::memory_order_relaxed)) flush(false);
  }
}

void DiskCacheImpl::flush_in_txn(Connection& c) {
  AccessBuffer b;
  {
    std::lock_guard lk(buf_mu_);
    if (buf_.fork_gen != g_fork_generation.load(std::memory_order_relaxed)) {
      buf_ = AccessBuffer{};
      buf_.fork_gen = g_fork_generation.load();
    }
    std::swap(b, buf_);
    buf_.fork_gen = b.fork_gen;
    buffered_.store(0, std::memory_order_relaxed);
  }
  if (b.events == 0) return;
  try {
    for (const auto& [rowid, t] : b.times) {
      sqlite3_stmt* s = c.prepare(kAccessTime);
      StmtGuard g(s);
      sqlite3_bind_double(s, 1, t);
      sqlite3_bind_int64(s, 2, rowid);
      step(c, s, "flush access times");
    }
    for (const auto& [rowid, n] : b.counts) {
      sqlite3_stmt* s = c.prepare(kAccessCount);
      StmtGuard g(s);
      sqlite3_bind_int64(s, 1, n);
      sqlite3_bind_int64(s, 2, rowid);
      step(c, s, "flush access counts");
    }
    for (auto [sql, n] : {std::pair{kAddHits, b.hits}, std::pair{kAddMisses, b.misses}}) {
      if (n == 0) continue;
      sqlite3_stmt* s = c.prepare(sql);
      StmtGuard g(s);
      sqlite3_bind_int64(s, 1, n);
      step(c, s, "flush statistics");
    }
  } catch (...) {
    rebuffer(b);  // keep them for the next flush
    throw;
  }
  // Written into the open transaction: if it rolls back (a failed add, a rolled-back
  // transact), the updates go back into the buffer instead of being lost.
  auto kept = std::make_shared<AccessBuffer>(std::move(b));
  c.undo_on_rollback.emplace_back(c.levels.size(), [this, kept] { rebuffer(*kept); });
}

void DiskCacheImpl::run_undo(Connection& c, std::size_t level) noexcept {
  auto& undo = c.undo_on_rollback;
  // Newest first; a hook never throws.
  for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
    if (it->first > level) it->second();
  }
  undo.erase(
      std::remove_if(undo.begin(), undo.end(), [&](const auto& u) { return u.first > level; }),
      undo.end());
}

void DiskCacheImpl::rebuffer(const AccessBuffer& b) noexcept {
  try {
    std::lock_guard lk(buf_mu_);
    if (buf_.fork_gen != b.fork_gen) return;  // written before a fork: not ours
    for (const auto& [rowid, t] : b.times) {
      double& mine = buf_.times[rowid];
      mine = std::max(mine, t);
    }
    for (const auto& [rowid, n] : b.counts) buf_.counts[rowid] += n;
    buf_.hits += b.hits;
    buf_.misses += b.misses;
    if (buf_.events == 0) buf_.first = b.first;
    buf_.events += b.events;
    buffered_.store(buf_.events, std::memory_order_relaxed);
  } catch (...) {  // out of memory: the updates are advisory, the counters best effort
  }
}

void DiskCacheImpl::flush(bool wait) {
  if (buffered_.load(std::memory_order_relaxed) == 0 || opts_.read_only) return;
  Connection& c = conn();
  if (!c.levels.empty()) {
    flush_in_txn(c);  // we already hold the write lock
    return;
  }
  try {
    // From a read: never wait for the lock; if it is busy the buffer simply grows.
    begin(c, false, wait ? std::optional<std::chrono::milliseconds>{} : 0ms);
  } catch (const TimeoutError&) {
    if (wait) throw;
    auto retry_at = std::chrono::steady_clock::now() + 10ms;
    next_flush_try_.store(retry_at.time_since_epoch().count(), std::memory_order_relaxed);
    return;
  }
  commit(c);  // begin() flushed
}

std::optional<DiskValue> DiskCacheImpl::read_valid_setting(Connection& c, const std::string& name) {
  auto v = read_setting(c, name);
  if (v) {
    if (auto why = setting_error(name, *v)) {
      throw DatabaseError("disk cache " + db_path_ + ": stored setting " + *why +
                          " (a corrupt or tampered Settings table; check(fix=true) recomputes "
                          "count and size, reset() rewrites a setting)");
    }
  }
  return v;
}

std::optional<DiskValue> DiskCacheImpl::read_setting(Connection& c, std::string_view name) {
  sqlite3_stmt* s = c.prepare(kSettingGet);
  StmtGuard g(s);
  bind_text(s, 1, name);
  if (!step(c, s, "read setting")) return std::nullopt;
  return column_value(s, 0);
}

std::size_t DiskCacheImpl::delete_batches(const char* sql,
                                          const std::function<void(sqlite3_stmt*)>& bind,
                                          bool retry, std::string_view what) {
  std::size_t total = 0;
  for (;;) {
    Connection& c = conn();
    std::size_t n = 0;
    try {
      Txn tx(*this, c, retry);
      sqlite3_stmt* s = c.prepare(sql);
      StmtGuard g(s);
      bind(s);
      while (step(c, s, what)) {
        ++n;
        tx.cleanup(column_opt_text(s, 0));
      }
      sqlite3_reset(s);
      tx.commit();
    } catch (const TimeoutError& e) {
      throw TimeoutError(std::string(e.what()) + " (" + std::string(what) + " removed " +
                         std::to_string(total) + " rows before the timeout)");
    }
    total += n;
    if (n == 0) return total;
  }
}

std::shared_ptr<std::mutex> DiskCacheImpl::memo_mutex(const std::string& key) {
  std::lock_guard lk(memo_mu_);
  if (memo_locks_.size() > 1024) {
    std::erase_if(memo_locks_, [](const auto& kv) { return kv.second.expired(); });
  }
  auto& w = memo_locks_[key];
  auto m = w.lock();
  if (!m) {
    m = std::make_shared<std::mutex>();
    w = m;
  }
  return m;
}

}  // namespace detail

// ================================================================================================
// Transaction

Transaction::Transaction(std::shared_ptr<detail::DiskCacheImpl> impl, bool outermost, int uncaught)
    : impl_(std::move(impl)), outermost_(outermost), uncaught_(uncaught) {}

Transaction::Transaction(Transaction&& other) noexcept
    : impl_(std::move(other.impl_)),
      outermost_(other.outermost_),
      done_(other.done_),
      uncaught_(other.uncaught_) {
  other.done_ = true;
}

Transaction::~Transaction() {
  if (done_ || !impl_) return;
  if (std::uncaught_exceptions() > uncaught_) {
    rollback();
    return;
  }
  try {
    commit();
  } catch (...) {  // NOLINT(bugprone-empty-catch): commit failure already rolled back
  }
}

void Transaction::commit() {
  if (done_ || !impl_) return;
  done_ = true;
  impl_->commit(impl_->conn());
}

void Transaction::rollback() noexcept {
  if (done_ || !impl_) return;
  done_ = true;
  try {
    impl_->rollback(impl_->conn());
  } catch (...) {  // NOLINT(bugprone-empty-catch): conn() cannot fail for an open transaction
  }
}

// ================================================================================================
// DiskCache

using detail::Connection;
using detail::DiskCacheImpl;
using detail::Row;
using detail::StmtGuard;
using detail::Txn;

DiskCache::DiskCache(const fs::path& directory, DiskCacheOptions options)
    : impl_(std::make_shared<DiskCacheImpl>(directory, std::move(options))) {
  impl_->init();
}

DiskCache::~DiskCache() = default;

const fs::path& DiskCache::directory() const noexcept { return impl_->dir(); }

std::chrono::milliseconds DiskCache::timeout() const noexcept { return impl_->options().timeout; }

DiskCacheSettings DiskCache::settings() const {
  Connection& c = impl_->conn();
  DiskCacheSettings s;
  auto get = [&](const char* name) { return impl_->read_valid_setting(c, name); };
  if (auto v = get("size_limit")) {
    s.size_limit = static_cast<std::uint64_t>(detail::as_int(*v, "size_limit"));
  }
  if (auto v = get("eviction_policy")) {
    s.eviction_policy = eviction_policy_from_string(detail::as_text(*v, "eviction_policy"));
  }
  if (auto v = get("cull_limit")) s.cull_limit = detail::as_int(*v, "cull_limit");
  if (auto v = get("statistics")) s.statistics = detail::as_int(*v, "statistics") != 0;
  if (auto v = get("tag_index")) s.tag_index = detail::as_int(*v, "tag_index") != 0;
  if (auto v = get("disk_min_file_size")) {
    s.disk_min_file_size = detail::as_int(*v, "disk_min_file_size");
  }
  return s;
}

bool DiskCache::set_value(const Key& key, DiskValue value, const SetOptions& options,
                          bool add_only) {
  if (options.expire && options.expire->count() < 0) {
    detail::throw_error<ValidationError>("expire: must not be negative");
  }
  auto& impl = *impl_;
  detail::Stored st = impl.store(value);  // file I/O happens before the lock
  Connection& c = impl.conn();
  Txn tx(impl, c, options.retry);
  std::string rel = st.file.rel();
  tx.adopt(st.file);
  double now = impl.now();
  std::optional<std::string> old_file;
  std::optional<std::int64_t> old_rowid;
  {
    sqlite3_stmt* s = c.prepare(detail::kSelectOld);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    if (detail::step(c, s, "select")) {
      auto exp = detail::column_opt_double(s, 1);
      if (add_only && (!exp || *exp > now)) {
        return false;  // present: Txn rolls back and deletes the new file
      }
      old_rowid = sqlite3_column_int64(s, 0);
      old_file = detail::column_opt_text(s, 2);
    }
  }
  {
    sqlite3_stmt* s = c.prepare(old_rowid ? detail::kUpdateRowid : detail::kInsert);
    StmtGuard g(s);
    if (old_rowid) {
      sqlite3_bind_int64(s, 1, *old_rowid);
    } else {
      detail::bind_key(s, 1, key);
    }
    sqlite3_bind_double(s, 2, now);
    if (options.expire) {
      sqlite3_bind_double(s, 3, now + detail::seconds(*options.expire));
    } else {
      sqlite3_bind_null(s, 3);
    }
    detail::bind_opt_key(s, 4, options.tag);
    sqlite3_bind_int64(s, 5, st.size);
    sqlite3_bind_int(s, 6, st.mode);
    if (!rel.empty()) {
      detail::bind_text(s, 7, rel);
      sqlite3_bind_null(s, 8);
    } else {
      sqlite3_bind_null(s, 7);
      detail::bind_value(s, 8, *st.inline_value);
    }
    detail::step(c, s, "upsert");
  }
  tx.cleanup(std::move(old_file));
  std::size_t culled = impl.cull(c, now);
  // Our own commit: when this statement pair is the whole transaction (not inside a user
  // transaction) and the cull deleted nothing, only `key`'s row changed, and the hot cache can
  // keep its other entries (HotCache::after_own_commit checks that no other commit slipped in).
  std::optional<detail::HotCache::Token> pre;
  if (impl.hot_ && c.levels.size() == 1 && culled == 0) pre = impl.hot_->pre_commit_token();
  tx.commit();
  if (pre) impl.hot_->after_own_commit(*pre, key);
  return true;
}

bool DiskCache::set_stream(const Key& key, std::istream& in, const SetOptions& options) {
  if (options.expire && options.expire->count() < 0) {
    detail::throw_error<ValidationError>("expire: must not be negative");
  }
  auto& impl = *impl_;
  auto [rel, size] = detail::write_value_stream(impl.dir(), in, impl.file_modes());
  detail::PendingFile file(impl.dir(), rel);
  Connection& c = impl.conn();
  Txn tx(impl, c, options.retry);
  tx.adopt(file);
  double now = impl.now();
  std::optional<std::string> old_file;
  {
    sqlite3_stmt* s = c.prepare(detail::kSelectAny);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    if (detail::step(c, s, "select")) old_file = detail::column_opt_text(s, 3);
  }
  {
    sqlite3_stmt* s = c.prepare(detail::kUpsert);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    sqlite3_bind_double(s, 2, now);
    if (options.expire) {
      sqlite3_bind_double(s, 3, now + detail::seconds(*options.expire));
    } else {
      sqlite3_bind_null(s, 3);
    }
    detail::bind_opt_key(s, 4, options.tag);
    sqlite3_bind_int64(s, 5, size);
    sqlite3_bind_int(s, 6, detail::kModeBinary);
    detail::bind_text(s, 7, rel);
    sqlite3_bind_null(s, 8);
    detail::step(c, s, "upsert");
  }
  tx.cleanup(std::move(old_file));
  impl.cull(c, now);
  tx.commit();
  return true;
}

namespace {
/// Looks up the live row of `key` (no write lock).
std::optional<Row> lookup(DiskCacheImpl& impl, Connection& c, const Key& key) {
  sqlite3_stmt* s = c.prepare(detail::kSelectLive);
  StmtGuard g(s);
  c.arm(impl.options().timeout, false);
  detail::bind_key(s, 1, key);
  sqlite3_bind_double(s, 2, impl.now());
  if (!detail::step(c, s, "get")) return std::nullopt;
  return detail::read_row(s);
}
}  // namespace

std::optional<Item<DiskValue>> DiskCache::get_record(const Key& key, bool with_meta) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  // The hot cache only outside transactions: inside one, this connection's reads see its own
  // uncommitted writes (and a deferred BEGIN pins an older snapshot), which the shared header
  // knows nothing about. A hit is accounted exactly as the SQLite read below would be.
  detail::HotCache::Ticket ticket;
  bool hot = impl.hot_ && c.levels.empty() && sqlite3_get_autocommit(c.db()) != 0;
  if (hot) {
    if (auto h = impl.hot_->find(key, impl.now(), ticket)) {
      impl.note_access(h->rowid, true);
      Item<DiskValue> item{key, std::move(h->value), std::nullopt, std::nullopt};
      if (with_meta) {
        item.expire_time = detail::to_time(h->expire_time);
        item.tag = std::move(h->tag);
      }
      return item;
    }
    // A fill needs the lookup to start a fresh read transaction: no other statement of this
    // connection may still be stepping (it would pin an older snapshot).
    for (sqlite3_stmt* s = sqlite3_next_stmt(c.db(), nullptr); s != nullptr && hot;
         s = sqlite3_next_stmt(c.db(), s)) {
      hot = sqlite3_stmt_busy(s) == 0;
    }
  }
  auto row = lookup(impl, c, key);
  if (!row) {
    impl.note_access(0, false);
    return std::nullopt;
  }
  bool inline_value = row->mode == detail::kModeRaw && row->value && !row->filename;
  std::optional<Key> tag_copy;
  if (hot && inline_value && ticket.valid) tag_copy = row->tag;
  auto value = impl.materialize(*row, key);
  impl.note_access(row->rowid, value.has_value());
  if (!value) return std::nullopt;
  if (hot && inline_value && ticket.valid) {
    impl.hot_->insert(ticket, key, *value, row->rowid, row->expire_time, tag_copy);
  }
  Item<DiskValue> item{key, std::move(*value), std::nullopt, std::nullopt};
  if (with_meta) {
    item.expire_time = detail::to_time(row->expire_time);
    item.tag = std::move(row->tag);
  }
  return item;
}

std::unique_ptr<std::istream> DiskCache::read(const Key& key) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  auto row = lookup(impl, c, key);
  if (!row) {
    impl.note_access(0, false);
    return nullptr;
  }
  if ((row->mode == detail::kModeBinary || row->mode == detail::kModeText) && row->filename) {
    // Opened without following symlinks; a foreign name or a vanished file is a miss.
    auto f = detail::open_value_stream(impl.dir(), *row->filename);
    impl.note_access(row->rowid, f != nullptr);
    return f;
  }
  auto value = impl.materialize_stored(*row, key);  // the stored bytes, as a file streams them
  impl.note_access(row->rowid, true);
  if (auto* t = std::get_if<std::string>(&*value)) {
    return std::make_unique<std::istringstream>(std::move(*t));
  }
  if (auto* b = std::get_if<Bytes>(&*value)) {
    return std::make_unique<std::istringstream>(std::move(b->data));
  }
  detail::throw_kind_mismatch(key, *value, "text or bytes (a stream)");
}

std::optional<fs::path> DiskCache::file_path(const Key& key) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  auto row = lookup(impl, c, key);
  if (!row || !row->filename) return std::nullopt;
  // Only a path to this cache's own regular file (never a foreign name or a symlink).
  if (detail::stat_value_file(impl.dir(), *row->filename, nullptr) != detail::ValueFileState::ok) {
    return std::nullopt;
  }
  return impl.dir() / *row->filename;
}

bool DiskCache::contains(const Key& key) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  if (impl.hot_ && c.levels.empty() && sqlite3_get_autocommit(c.db()) != 0) {
    detail::HotCache::Ticket ticket;
    if (impl.hot_->find(key, impl.now(), ticket, false)) return true;  // as get: no accounting
  }
  sqlite3_stmt* s = c.prepare(detail::kContains);
  StmtGuard g(s);
  c.arm(impl.options().timeout, false);
  detail::bind_key(s, 1, key);
  sqlite3_bind_double(s, 2, impl.now());
  return detail::step(c, s, "contains");
}

bool DiskCache::touch(const Key& key, std::optional<Duration> expire, bool retry) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  Txn tx(impl, c, retry);
  double now = impl.now();
  sqlite3_stmt* s = c.prepare(detail::kTouch);
  {
    StmtGuard g(s);
    if (expire) {
      sqlite3_bind_double(s, 1, now + detail::seconds(*expire));
    } else {
      sqlite3_bind_null(s, 1);
    }
    detail::bind_key(s, 2, key);
    sqlite3_bind_double(s, 3, now);
    detail::step(c, s, "touch");
  }
  bool changed = sqlite3_changes(c.db()) > 0;
  tx.commit();
  return changed;
}

std::int64_t DiskCache::incr(const Key& key, std::int64_t delta,
                             std::optional<std::int64_t> default_value, bool retry) {
  auto& impl = *impl_;
  if (impl.options().serializer) {
    // A counter is a native INTEGER updated in place; a serialized value is not one.
    detail::throw_error<ValidationError>(
        "incr/decr: not available on a cache with a value serializer (" +
        impl.options().serializer->name() +
        "); keep counters in a cache without one, or get, add and set the value");
  }
  Connection& c = impl.conn();
  Txn tx(impl, c, retry);
  double now = impl.now();
  auto add = [&](std::int64_t a) {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a, delta, &r)) {
      detail::throw_error<ValidationError>("incr: key " + key.repr() + " would overflow int64");
    }
    return r;
  };
  std::optional<std::int64_t> rowid;
  bool expired = false;
  std::optional<std::string> old_file;
  int mode = 0;
  std::optional<DiskValue> current;
  {
    sqlite3_stmt* s = c.prepare(detail::kSelectAny);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    if (detail::step(c, s, "incr select")) {
      rowid = sqlite3_column_int64(s, 0);
      auto exp = detail::column_opt_double(s, 1);
      expired = exp && *exp < now;
      mode = sqlite3_column_int(s, 2);
      old_file = detail::column_opt_text(s, 3);
      current = detail::column_value(s, 4);
    }
  }
  if (!rowid || expired) {
    if (!default_value) {
      throw KeyNotFound("incr: key " + key.repr() +
                        " is not in the cache and no default was given");
    }
    std::int64_t value = add(*default_value);
    if (!rowid) {
      sqlite3_stmt* s = c.prepare(
          "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
          " size, mode, filename, value) VALUES (?1, 1, ?2, NULL, ?2, 0, NULL, 0, 1, NULL, ?3)");
      StmtGuard g(s);
      detail::bind_key(s, 1, key);
      sqlite3_bind_double(s, 2, now);
      sqlite3_bind_int64(s, 3, value);
      detail::step(c, s, "incr insert");
    } else {
      sqlite3_stmt* s = c.prepare(
          "UPDATE Cache SET store_time = ?1, expire_time = NULL, access_time = ?1,"
          " access_count = 0, tag = NULL, size = 0, mode = 1, filename = NULL, value = ?2"
          " WHERE rowid = ?3");
      StmtGuard g(s);
      sqlite3_bind_double(s, 1, now);
      sqlite3_bind_int64(s, 2, value);
      sqlite3_bind_int64(s, 3, *rowid);
      detail::step(c, s, "incr replace");
      tx.cleanup(std::move(old_file));
    }
    impl.cull(c, now);
    tx.commit();
    return value;
  }
  const std::int64_t* cur = current ? std::get_if<std::int64_t>(&*current) : nullptr;
  if (mode != detail::kModeRaw || cur == nullptr) {
    std::string what = mode == detail::kModePickle ? "a pickled value"
                       : mode != detail::kModeRaw  ? "a file-stored value"
                       : current                   ? detail::disk_value_kind(*current)
                                                   : "NULL";
    throw TypeMismatch("incr: key " + key.repr() + " holds " + what + ", not an integer");
  }
  std::int64_t value = add(*cur);
  {
    sqlite3_stmt* s = c.prepare(detail::kIncrUpdate[impl.policy_index()]);
    StmtGuard g(s);
    sqlite3_bind_int64(s, 1, value);
    sqlite3_bind_double(s, 2, now);
    sqlite3_bind_int64(s, 3, *rowid);
    detail::step(c, s, "incr update");
  }
  tx.commit();
  return value;
}

std::int64_t DiskCache::decr(const Key& key, std::int64_t delta,
                             std::optional<std::int64_t> default_value, bool retry) {
  if (delta == INT64_MIN) detail::throw_error<ValidationError>("decr: delta out of range");
  return incr(key, -delta, default_value, retry);
}

std::optional<Item<DiskValue>> DiskCache::pop_record(const Key& key, bool retry) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  Row row;
  {
    Txn tx(impl, c, retry);
    sqlite3_stmt* s = c.prepare(detail::kSelectLive);
    {
      StmtGuard g(s);
      detail::bind_key(s, 1, key);
      sqlite3_bind_double(s, 2, impl.now());
      if (!detail::step(c, s, "pop")) {
        tx.commit();
        return std::nullopt;
      }
      row = detail::read_row(s);
    }
    if (row.mode != detail::kModeRaw && row.mode != detail::kModeBinary &&
        row.mode != detail::kModeText) {
      impl.materialize(row, key);  // throws UnsupportedFormat; the row stays
    }
    sqlite3_stmt* d = c.prepare(detail::kDeleteRowid);
    StmtGuard g(d);
    sqlite3_bind_int64(d, 1, row.rowid);
    detail::step(c, d, "pop delete");
    tx.commit();
  }
  // The row is gone; read the file (nobody else removes it), then remove it.
  auto value = impl.materialize(row, key);
  if (row.filename) detail::remove_value_file(impl.dir(), *row.filename);
  if (!value) return std::nullopt;
  return Item<DiskValue>{key, std::move(*value), detail::to_time(row.expire_time),
                         std::move(row.tag)};
}

bool DiskCache::erase(const Key& key, bool retry) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  Txn tx(impl, c, retry);
  bool found = false;
  {
    sqlite3_stmt* s = c.prepare(detail::kDeleteLive);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    sqlite3_bind_double(s, 2, impl.now());
    while (detail::step(c, s, "delete")) {
      found = true;
      tx.cleanup(detail::column_opt_text(s, 0));
    }
  }
  std::optional<detail::HotCache::Token> pre;  // as in set_value: only `key`'s row changed
  if (found && impl.hot_ && c.levels.size() == 1) pre = impl.hot_->pre_commit_token();
  tx.commit();
  if (pre) impl.hot_->after_own_commit(*pre, key);
  return found;
}

std::vector<std::optional<DiskValue>> DiskCache::get_many_values(std::span<const Key> keys) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  std::vector<Row> rows;
  std::vector<bool> found(keys.size(), false);
  rows.resize(keys.size());
  {
    // One read snapshot (deferred BEGIN takes no write lock); inside a user transaction the
    // reads simply join it.
    bool own = c.levels.empty();
    if (own) {
      c.arm(impl.options().timeout, false);
      c.exec("BEGIN");
    }
    try {
      double now = impl.now();
      for (std::size_t i = 0; i < keys.size(); ++i) {
        sqlite3_stmt* s = c.prepare(detail::kSelectLive);
        StmtGuard g(s);
        detail::bind_key(s, 1, keys[i]);
        sqlite3_bind_double(s, 2, now);
        if (detail::step(c, s, "get_many")) {
          rows[i] = detail::read_row(s);
          found[i] = true;
        }
      }
    } catch (...) {
      if (own) c.try_exec("ROLLBACK");
      throw;
    }
    if (own) c.try_exec("COMMIT");
  }
  std::vector<std::optional<DiskValue>> out(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!found[i]) {
      impl.note_access(0, false);
      continue;
    }
    out[i] = impl.materialize(rows[i], keys[i]);
    impl.note_access(rows[i].rowid, out[i].has_value());
  }
  return out;
}

void DiskCache::set_many_values(std::span<const std::pair<Key, DiskValue>> items,
                                const SetOptions& options) {
  if (items.empty()) return;
  auto& impl = *impl_;
  std::vector<detail::Stored> stored;
  stored.reserve(items.size());
  for (const auto& [k, v] : items) stored.push_back(impl.store(v));
  Connection& c = impl.conn();
  Txn tx(impl, c, options.retry);
  double now = impl.now();
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Key& key = items[i].first;
    std::string rel = stored[i].file.rel();
    tx.adopt(stored[i].file);
    {
      sqlite3_stmt* s = c.prepare(detail::kSelectAny);
      StmtGuard g(s);
      detail::bind_key(s, 1, key);
      if (detail::step(c, s, "select")) tx.cleanup(detail::column_opt_text(s, 3));
    }
    sqlite3_stmt* s = c.prepare(detail::kUpsert);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    sqlite3_bind_double(s, 2, now);
    if (options.expire) {
      sqlite3_bind_double(s, 3, now + detail::seconds(*options.expire));
    } else {
      sqlite3_bind_null(s, 3);
    }
    detail::bind_opt_key(s, 4, options.tag);
    sqlite3_bind_int64(s, 5, stored[i].size);
    sqlite3_bind_int(s, 6, stored[i].mode);
    if (!rel.empty()) {
      detail::bind_text(s, 7, rel);
      sqlite3_bind_null(s, 8);
    } else {
      sqlite3_bind_null(s, 7);
      detail::bind_value(s, 8, *stored[i].inline_value);
    }
    detail::step(c, s, "upsert");
  }
  impl.cull(c, now);
  tx.commit();
}

std::size_t DiskCache::erase_many(std::span<const Key> keys, bool retry) {
  if (keys.empty()) return 0;
  auto& impl = *impl_;
  Connection& c = impl.conn();
  Txn tx(impl, c, retry);
  double now = impl.now();
  std::size_t n = 0;
  for (const auto& key : keys) {
    sqlite3_stmt* s = c.prepare(detail::kDeleteLive);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    sqlite3_bind_double(s, 2, now);
    while (detail::step(c, s, "delete")) {
      ++n;
      tx.cleanup(detail::column_opt_text(s, 0));
    }
  }
  tx.commit();
  return n;
}

// ---- queues ------------------------------------------------------------------------------------

namespace {
constexpr std::int64_t kQueueStart = 500000000000000;
constexpr std::int64_t kQueueMax = 999999999999999;

std::pair<Key, Key> queue_bounds(const std::optional<std::string>& prefix) {
  if (!prefix) return {Key(std::int64_t{0}), Key(kQueueMax)};
  return {Key(*prefix + "-000000000000000"), Key(*prefix + "-999999999999999")};
}

Key queue_key(const std::optional<std::string>& prefix, std::int64_t n) {
  if (!prefix) return Key(n);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%015lld", static_cast<long long>(n));
  return Key(*prefix + "-" + buf);
}
}  // namespace

Key DiskCache::push_value(DiskValue value, const PushOptions& options) {
  auto& impl = *impl_;
  detail::Stored st = impl.store(value);
  Connection& c = impl.conn();
  Txn tx(impl, c, options.retry);
  std::string rel = st.file.rel();
  tx.adopt(st.file);
  double now = impl.now();
  auto [lo, hi] = queue_bounds(options.prefix);
  std::int64_t num = kQueueStart;
  std::optional<Key> real_key;
  {
    sqlite3_stmt* s =
        c.prepare(options.side == Side::back ? detail::kQueueIntBack : detail::kQueueIntFront);
    StmtGuard g(s);
    detail::bind_key(s, 1, lo);
    detail::bind_key(s, 2, hi);
    if (detail::step(c, s, "push")) {
      // The end of the queue, as diskcache reads it: an integer (or, if someone stored one
      // there, a float: the next key is that float ± 1, as Python's `num += 1`), or with a
      // prefix the integer after the last '-' (anything else is not a queue key).
      auto k = detail::column_key(s, 0);
      const std::int64_t step = options.side == Side::back ? 1 : -1;
      if (k && k->is_real()) {
        real_key = Key(k->as_real() + static_cast<double>(step));
      } else if (k && k->is_int()) {
        num = k->as_int() + step;
      } else if (k && k->is_text() && options.prefix) {
        const std::string& text = k->as_text();
        const std::string_view digits = std::string_view(text).substr(text.rfind('-') + 1);
        std::int64_t last = 0;
        const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), last);
        if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size()) {
          detail::throw_error<ValidationError>(
              "push: the queue '" + *options.prefix + "' holds the key '" + text +
              "', which is not '<prefix>-<integer>'; remove it or use another prefix");
        }
        num = last + step;
      }
    }
  }
  Key key = real_key ? std::move(*real_key) : queue_key(options.prefix, num);
  {
    // A plain INSERT: a push never replaces an existing item (a conflict is an error).
    sqlite3_stmt* s = c.prepare(detail::kInsert);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    sqlite3_bind_double(s, 2, now);
    if (options.expire) {
      sqlite3_bind_double(s, 3, now + detail::seconds(*options.expire));
    } else {
      sqlite3_bind_null(s, 3);
    }
    detail::bind_opt_key(s, 4, options.tag);
    sqlite3_bind_int64(s, 5, st.size);
    sqlite3_bind_int(s, 6, st.mode);
    if (!rel.empty()) {
      detail::bind_text(s, 7, rel);
      sqlite3_bind_null(s, 8);
    } else {
      sqlite3_bind_null(s, 7);
      detail::bind_value(s, 8, *st.inline_value);
    }
    detail::step(c, s, "push insert");
  }
  impl.cull(c, now);
  tx.commit();
  return key;
}

namespace {
/// Shared loop of pull/peek/peekitem: select the head row, drop expired ones, optionally delete
/// the live one, then read its value (a vanished file restarts the loop).
std::optional<Item<DiskValue>> head_loop(DiskCacheImpl& impl, bool retry, bool remove,
                                         const std::function<sqlite3_stmt*(Connection&)>& select) {
  for (;;) {
    Connection& c = impl.conn();
    Row row;
    Key key(std::int64_t{0});
    {
      Txn tx(impl, c, retry);
      double now = impl.now();
      bool live = false;
      while (!live) {
        sqlite3_stmt* s = select(c);
        {
          StmtGuard g(s);
          if (!detail::step(c, s, "queue select")) {
            sqlite3_reset(s);
            tx.commit();
            return std::nullopt;
          }
          row = detail::read_row(s);
          auto k = detail::column_key(s, 6);
          if (sqlite3_column_count(s) > 7 && sqlite3_column_int(s, 7) == 0) {
            throw UnsupportedFormat("disk cache " + impl.dir().string() +
                                    ": the key at the head was pickled by Python");
          }
          key = k ? *k : Key(std::int64_t{0});
        }
        live = !(row.expire_time && *row.expire_time < now);
        if (live && row.mode != detail::kModeRaw && row.mode != detail::kModeBinary &&
            row.mode != detail::kModeText) {
          impl.materialize(row, key);  // throws UnsupportedFormat; nothing deleted
        }
        if (!live || remove) {
          sqlite3_stmt* d = c.prepare(detail::kDeleteRowid);
          StmtGuard g(d);
          sqlite3_bind_int64(d, 1, row.rowid);
          detail::step(c, d, "queue delete");
          if (!live) tx.cleanup(row.filename);
        }
      }
      if (remove) {
        tx.commit();
      } else {
        // peek: read the file while we still hold the lock, so it cannot vanish.
        auto value = impl.materialize(row, key);
        tx.commit();
        if (!value) continue;
        return Item<DiskValue>{std::move(key), std::move(*value), detail::to_time(row.expire_time),
                               std::move(row.tag)};
      }
    }
    auto value = impl.materialize(row, key);
    if (row.filename) detail::remove_value_file(impl.dir(), *row.filename);
    if (!value) continue;
    return Item<DiskValue>{std::move(key), std::move(*value), detail::to_time(row.expire_time),
                           std::move(row.tag)};
  }
}
}  // namespace

std::optional<Item<DiskValue>> DiskCache::pull_record(const PullOptions& options, bool peek) {
  auto [lo, hi] = queue_bounds(options.prefix);
  const char* sql = options.side == Side::front ? detail::kPullFront : detail::kPullBack;
  return head_loop(*impl_, options.retry, !peek, [&, lo = lo, hi = hi](Connection& c) {
    sqlite3_stmt* s = c.prepare(sql);
    detail::bind_key(s, 1, lo);
    detail::bind_key(s, 2, hi);
    return s;
  });
}

std::optional<Item<DiskValue>> DiskCache::peekitem_record(bool last, bool retry) {
  const char* sql = last ? detail::kPeekItemLast : detail::kPeekItemFirst;
  return head_loop(*impl_, retry, false, [sql](Connection& c) { return c.prepare(sql); });
}

// ---- whole cache -------------------------------------------------------------------------------

void DiskCache::for_each_key(const std::function<bool(const Key&)>& fn, bool reverse) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  c.arm(impl.options().timeout, false);
  std::int64_t max_rowid = 0;
  std::int64_t min_rowid = 0;
  {
    sqlite3_stmt* s = c.prepare(detail::kMaxRowid);
    StmtGuard g(s);
    if (detail::step(c, s, "keys")) {
      max_rowid = sqlite3_column_int64(s, 0);
      min_rowid = sqlite3_column_int64(s, 1);
    }
  }
  // Bounds snapshot at the start: rows inserted later are not listed (as diskcache).
  std::int64_t cursor = reverse ? max_rowid + 1 : min_rowid - 1;
  for (;;) {
    std::vector<Key> page;
    {
      sqlite3_stmt* s = c.prepare(reverse ? detail::kKeysRev : detail::kKeysFwd);
      StmtGuard g(s);
      sqlite3_bind_int64(s, 1, cursor);
      sqlite3_bind_int64(s, 2, reverse ? min_rowid : max_rowid);
      std::size_t rows = 0;
      while (detail::step(c, s, "keys")) {
        ++rows;
        cursor = sqlite3_column_int64(s, 0);
        if (sqlite3_column_int(s, 2) == 0) continue;  // pickled by Python: not nameable
        if (auto k = detail::column_key(s, 1)) page.push_back(std::move(*k));
      }
      if (rows == 0) return;
    }
    for (const auto& k : page) {
      if (!fn(k)) return;
    }
  }
}

std::vector<Key> DiskCache::keys(bool reverse) {
  std::vector<Key> out;
  for_each_key(
      [&](const Key& k) {
        out.push_back(k);
        return true;
      },
      reverse);
  return out;
}

std::vector<Key> DiskCache::sorted_keys(bool reverse) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  c.arm(impl.options().timeout, false);
  std::vector<Key> out;
  sqlite3_stmt* s = c.prepare(reverse ? detail::kSortedRev : detail::kSortedFwd);
  StmtGuard g(s);
  while (detail::step(c, s, "sorted keys")) {
    if (sqlite3_column_int(s, 1) == 0) continue;
    if (auto k = detail::column_key(s, 0)) out.push_back(std::move(*k));
  }
  return out;
}

std::int64_t DiskCache::size() {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  c.arm(impl.options().timeout, false);
  auto v = impl.read_valid_setting(c, "count");
  return v ? detail::as_int(*v, "count") : 0;
}

std::uint64_t DiskCache::volume() {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  c.arm(impl.options().timeout, false);
  return impl.volume(c);
}

std::size_t DiskCache::clear(bool retry) {
  return impl_->delete_batches(
      detail::kClearBatch, [](sqlite3_stmt*) {}, retry, "clear");
}

std::size_t DiskCache::expire(std::optional<TimePoint> now, bool retry) {
  double t = now ? to_unix_seconds(*now) : impl_->now();
  return impl_->delete_batches(
      detail::kExpireBatch, [t](sqlite3_stmt* s) { sqlite3_bind_double(s, 1, t); }, retry,
      "expire");
}

std::size_t DiskCache::evict(const Key& tag, bool retry) {
  return impl_->delete_batches(
      detail::kEvictBatch, [&tag](sqlite3_stmt* s) { detail::bind_key(s, 1, tag); }, retry,
      "evict");
}

std::size_t DiskCache::cull(bool retry) {
  auto& impl = *impl_;
  std::size_t total = expire(std::nullopt, retry);
  impl.flush(true);  // the LRU/LFU order must be current
  const char* sql = detail::kPolicyCull[impl.policy_index()];
  if (sql == nullptr) return total;
  for (;;) {
    Connection& c = impl.conn();
    c.arm(impl.options().timeout, false);
    if (impl.volume(c) <= impl.size_limit_.load()) return total;
    std::size_t n = 0;
    try {
      Txn tx(impl, c, retry);
      sqlite3_stmt* s = c.prepare(sql);
      StmtGuard g(s);
      sqlite3_bind_int64(s, 1, 10);
      while (detail::step(c, s, "cull")) {
        ++n;
        tx.cleanup(detail::column_opt_text(s, 0));
      }
      sqlite3_reset(s);
      tx.commit();
    } catch (const TimeoutError& e) {
      throw TimeoutError(std::string(e.what()) + " (cull removed " + std::to_string(total) +
                         " rows before the timeout)");
    }
    total += n;
    if (n == 0) return total;
  }
}

std::vector<CheckWarning> DiskCache::check(bool fix, bool retry) {
  auto& impl = *impl_;
  std::vector<CheckWarning> out;
  using K = CheckWarning::Kind;
  Connection& c = impl.conn();
  c.arm(impl.options().timeout, retry);
  {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(c.db(), "PRAGMA integrity_check", -1, &s, nullptr);
    if (rc != SQLITE_OK) c.fail(rc, "PRAGMA integrity_check");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      auto msg = detail::column_opt_text(s, 0).value_or("");
      if (msg != "ok") out.push_back({K::integrity, "integrity check: " + msg});
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) c.fail(rc, "PRAGMA integrity_check");
  }
  if (fix) {
    impl.flush(true);
    c.arm(impl.options().timeout, retry);
    c.exec("VACUUM");
  }
  Txn tx(impl, c, retry);
  const fs::path& dir = impl.dir();
  std::vector<std::string> known;
  {
    std::vector<std::tuple<std::int64_t, std::int64_t, std::string>> rows;
    sqlite3_stmt* s =
        c.prepare("SELECT rowid, size, filename FROM Cache WHERE filename IS NOT NULL");
    {
      StmtGuard g(s);
      while (detail::step(c, s, "check")) {
        rows.emplace_back(sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
                          detail::column_opt_text(s, 2).value_or(""));
      }
    }
    for (const auto& [rowid, size, rel] : rows) {
      auto delete_row = [&c, id = rowid] {
        sqlite3_stmt* d = c.prepare(detail::kDeleteRowid);
        StmtGuard g(d);
        sqlite3_bind_int64(d, 1, id);
        detail::step(c, d, "check fix");
      };
      std::int64_t real = 0;
      auto state = detail::stat_value_file(dir, rel, &real);
      if (state == detail::ValueFileState::unsafe) {
        // A tampered row (a foreign name or a symlink): the row goes, the file it names is
        // never touched (a symlink inside the directory is removed below as an unknown file).
        out.push_back({K::bad_filename, "row " + std::to_string(rowid) +
                                            " names a file that is not this cache's own value "
                                            "file (a foreign name or a symlink): '" +
                                            rel.substr(0, 200) + "'"});
        if (fix) delete_row();
        continue;
      }
      fs::path full = dir / rel;
      if (state == detail::ValueFileState::missing) {
        out.push_back({K::missing_file, "file not found: " + full.string()});
        if (fix) delete_row();
        continue;
      }
      known.push_back(full.lexically_normal().string());
      if (static_cast<std::int64_t>(real) != size) {
        out.push_back({K::file_size, "wrong file size: " + full.string() + ", " +
                                         std::to_string(size) + " != " + std::to_string(real)});
        if (fix) {
          sqlite3_stmt* u = c.prepare("UPDATE Cache SET size = ? WHERE rowid = ?");
          StmtGuard g(u);
          sqlite3_bind_int64(u, 1, static_cast<std::int64_t>(real));
          sqlite3_bind_int64(u, 2, rowid);
          detail::step(c, u, "check fix");
        }
      }
    }
  }
  std::sort(known.begin(), known.end());
  {
    std::error_code ec;
    std::vector<fs::path> unknown;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      // symlink_status: a symlink (to anywhere) is itself an unknown file of the directory;
      // what it points to is neither read nor removed.
      auto st = it->symlink_status(ec);
      if (ec || !(fs::is_regular_file(st) || fs::is_symlink(st))) continue;
      std::string p = it->path().lexically_normal().string();
      if (it->path().filename().string().find("cache.db") != std::string::npos) continue;
      if (!std::binary_search(known.begin(), known.end(), p)) unknown.push_back(it->path());
    }
    for (const auto& p : unknown) {
      out.push_back({K::unknown_file, "unknown file: " + p.string()});
      if (fix) detail::remove_inside(dir, p.lexically_relative(dir), false);
    }
  }
  {
    std::error_code ec;
    std::vector<fs::path> dirs;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (fs::is_directory(it->symlink_status(ec))) dirs.push_back(it->path());
    }
    // Deepest first, so parents emptied by the fix are seen too.
    std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
      return a.string().size() > b.string().size();
    });
    for (const auto& d : dirs) {
      if (fs::is_empty(d, ec) && !ec) {
        out.push_back({K::empty_dir, "empty directory: " + d.string()});
        if (fix) detail::remove_inside(dir, d.lexically_relative(dir), true);
      }
    }
  }
  auto scalar = [&](const char* sql) {
    sqlite3_stmt* s = c.prepare(sql);
    StmtGuard g(s);
    detail::step(c, s, "check");
    return sqlite3_column_int64(s, 0);
  };
  std::int64_t count = scalar("SELECT COUNT(key) FROM Cache");
  std::int64_t size = scalar("SELECT COALESCE(SUM(size), 0) FROM Cache");
  for (auto [name, actual, kind] :
       {std::tuple{"count", count, K::count}, std::tuple{"size", size, K::size}}) {
    auto stored = impl.read_setting(c, name);
    // A tampered counter (text, a blob, a negative number) is a wrong counter, fixed the same.
    std::optional<std::int64_t> v;
    if (stored && !detail::setting_error(name, *stored)) v = detail::as_int(*stored, name);
    if (v != actual) {
      out.push_back({kind, std::string("Settings.") + name + " = " +
                               (stored ? detail::describe_setting(*stored) : "(missing)") +
                               " != actual " + std::to_string(actual)});
      if (fix) {
        sqlite3_stmt* u = c.prepare(detail::kSettingPut);
        StmtGuard g(u);
        detail::bind_text(u, 1, name);
        sqlite3_bind_int64(u, 2, actual);
        detail::step(c, u, "check fix");
      }
    }
  }
  tx.commit();
  return out;
}

CacheStats DiskCache::stats(bool enable, bool reset) {
  auto& impl = *impl_;
  impl.flush(true);
  Connection& c = impl.conn();
  Txn tx(impl, c, false);
  CacheStats st;
  if (auto v = impl.read_valid_setting(c, "hits")) st.hits = detail::as_int(*v, "hits");
  if (auto v = impl.read_valid_setting(c, "misses")) st.misses = detail::as_int(*v, "misses");
  auto put = [&](const char* name, std::int64_t v) {
    sqlite3_stmt* s = c.prepare(detail::kSettingPut);
    StmtGuard g(s);
    detail::bind_text(s, 1, name);
    sqlite3_bind_int64(s, 2, v);
    detail::step(c, s, "stats");
  };
  if (reset) {
    put("hits", 0);
    put("misses", 0);
  }
  put("statistics", enable ? 1 : 0);
  tx.commit();
  impl.statistics_ = enable;
  return st;
}

void DiskCache::create_tag_index() {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  Txn tx(impl, c, false);
  c.exec("CREATE INDEX IF NOT EXISTS Cache_tag_rowid ON Cache(tag, rowid)");
  c.exec("INSERT OR REPLACE INTO Settings VALUES ('tag_index', 1)");
  tx.commit();
  impl.tag_index_ = true;
}

void DiskCache::drop_tag_index() {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  Txn tx(impl, c, false);
  c.exec("DROP INDEX IF EXISTS Cache_tag_rowid");
  c.exec("INSERT OR REPLACE INTO Settings VALUES ('tag_index', 0)");
  tx.commit();
  impl.tag_index_ = false;
}

DiskValue DiskCache::reset(std::string_view name, std::optional<DiskValue> value) {
  static const char* known[] = {"statistics",
                                "tag_index",
                                "eviction_policy",
                                "size_limit",
                                "cull_limit",
                                "sqlite_auto_vacuum",
                                "sqlite_cache_size",
                                "sqlite_journal_mode",
                                "sqlite_mmap_size",
                                "sqlite_synchronous",
                                "disk_min_file_size",
                                "disk_pickle_protocol",
                                "count",
                                "size",
                                "hits",
                                "misses"};
  std::string n(name);
  if (std::find(std::begin(known), std::end(known), n) == std::end(known) &&
      n.rfind("disk_", 0) != 0) {
    detail::throw_error<ValidationError>("reset: unknown setting '" + n + "'");
  }
  auto& impl = *impl_;
  Connection& c = impl.conn();
  if (!value) {
    c.arm(impl.options().timeout, false);
    auto v = impl.read_setting(c, n);
    if (!v) detail::throw_error<ValidationError>("reset: setting '" + n + "' is not stored");
    impl.apply_setting_locally(n, *v);
    return *v;
  }
  // Validate type and range before anything is applied or stored.
  if (auto why = detail::setting_error(n, *value)) {
    detail::throw_error<ValidationError>("reset: " + *why + "; nothing was changed");
  }
  if (n.rfind("sqlite_", 0) == 0) {
    // Pragmas cannot run inside a transaction; apply first, then persist.
    c.arm(std::max<std::chrono::milliseconds>(impl.options().timeout, 60s), false);
    // The hot cache validates against the WAL's header: drop it (with its anchor connection,
    // which would keep the database in WAL mode) before a journal-mode change; the next read
    // maps the header again if the mode is still WAL.
    if (n == "sqlite_journal_mode" && impl.hot_) impl.hot_->close();
    impl.apply_pragma(c, n, *value, false);
  }
  Txn tx(impl, c, false);
  {
    sqlite3_stmt* s = c.prepare(detail::kSettingPut);
    StmtGuard g(s);
    detail::bind_text(s, 1, n);
    detail::bind_value(s, 2, *value);
    detail::step(c, s, "reset");
  }
  if (n == "eviction_policy") {
    auto p = eviction_policy_from_string(detail::as_text(*value, n));
    if (const char* idx = detail::kPolicyIndex[static_cast<int>(p)]) c.exec(idx);
  } else if (n == "tag_index") {
    c.exec(detail::as_int(*value, n) != 0
               ? "CREATE INDEX IF NOT EXISTS Cache_tag_rowid ON Cache(tag, rowid)"
               : "DROP INDEX IF EXISTS Cache_tag_rowid");
  }
  tx.commit();
  impl.apply_setting_locally(n, *value);
  return *value;
}

std::vector<std::string> DiskCache::setting_problems() const { return impl_->setting_problems_; }

Transaction DiskCache::transact(bool retry) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  bool outermost = c.levels.empty();
  impl.begin(c, retry);
  return Transaction(impl_, outermost, std::uncaught_exceptions());
}

void DiskCache::flush() { impl_->flush(true); }

HotCacheStats DiskCache::hot_cache_stats() const noexcept {
  return impl_->hot_ ? impl_->hot_->stats() : HotCacheStats{};
}

void DiskCache::close() {
  impl_->flush(false);
  if (impl_->hot_) impl_->hot_->close();  // before the connections: it unmaps the -shm first
  impl_->close_all();
}

DiskValue DiskCache::memoize_value(const Key& key, const MemoizeOptions& options,
                                   const std::function<DiskValue()>& compute) {
  if (auto hit = get_record(key, false)) return std::move(hit->value);
  if (options.expire && options.expire->count() <= 0) return compute();  // look up only
  SetOptions set_opts{.expire = options.expire, .tag = options.tag, .retry = true};
  if (!options.single_flight) {
    DiskValue v = compute();
    set_value(key, v, set_opts, false);
    return v;
  }
  // Threads of this process queue on a per-key mutex; processes on an `add`ed lock key whose
  // expiry is the lease (a crashed holder frees it by expiring).
  auto m = impl_->memo_mutex(key.repr());
  std::lock_guard lk(*m);
  if (auto hit = get_record(key, false)) return std::move(hit->value);
  Key lock_key(Bytes{"dogpile-memoize-lock:" + key.repr()});
  thread_local std::minstd_rand rng(std::random_device{}());
  std::chrono::microseconds backoff(500);
  for (;;) {
    if (set_value(lock_key, std::int64_t{::getpid()},
                  SetOptions{.expire = options.lease, .tag = std::nullopt, .retry = true}, true)) {
      struct Release {
        DiskCache& cache;
        const Key& k;
        ~Release() {
          try {
            cache.erase(k, true);
          } catch (...) {  // NOLINT(bugprone-empty-catch): the lease expires anyway
          }
        }
      } release{*this, lock_key};
      if (auto hit = get_record(key, false)) return std::move(hit->value);
      DiskValue v = compute();
      set_value(key, v, set_opts, false);
      return v;
    }
    // Another process is computing: wait for its result or for its lock to go.
    std::uniform_int_distribution<std::int64_t> d(backoff.count() / 2, backoff.count());
    std::this_thread::sleep_for(std::chrono::microseconds(d(rng)));
    backoff = std::min<std::chrono::microseconds>(backoff * 2, 50ms);
    if (auto hit = get_record(key, false)) return std::move(hit->value);
  }
}

}  // namespace dogpile
