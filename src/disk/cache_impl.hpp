// DiskCache's private parts, shared by the cache_*.cpp files that implement it (the map of which
// file holds what is at the top of cache_open.cpp and in docs/design.md).
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dogpile/disk/cache.hpp"
#include "hot_cache.hpp"
#include "sqlite_util.hpp"
#include "value_files.hpp"

namespace dogpile {

namespace fs = std::filesystem;

namespace detail {

// python-diskcache's storage modes (the Cache.mode column).
inline constexpr int kModeRaw = 1;
inline constexpr int kModeBinary = 2;
inline constexpr int kModeText = 3;
inline constexpr int kModePickle = 4;

// ---- fork handling and open write transactions (cache_txn.cpp) ---------------------------------

/// Installs (once per process) the pthread_atfork handler that bumps the fork generation and
/// poisons, in the child, the databases the parent held a write transaction on.
void install_fork_handler();
/// Counts an open (+1) or ended (-1) write transaction on the database at `path`.
void note_txn(const std::string& path, int delta);
/// Whether this process was forked while its parent held a write transaction on `path`.
bool poisoned(const std::string& path);
/// A number unique to each DiskCacheImpl of the process (tags the thread-local connection).
std::uint64_t next_cache_serial() noexcept;

// ---- settings (cache_settings.cpp) -------------------------------------------------------------

/// A setting value as an error message shows it: 'text', a number, or its kind.
std::string describe_setting(const DiskValue& v);
/// @throws ValidationError unless `v` is an integer (or integral text / float).
std::int64_t as_int(const DiskValue& v, std::string_view name);
/// @throws ValidationError unless `v` is text.
std::string as_text(const DiskValue& v, std::string_view name);
/// Why `value` cannot be the setting `name` (type and range), or nullopt when it can.
std::optional<std::string> setting_error(const std::string& name, const DiskValue& value);

/// The settings a cache opens with, from the Settings table's rows and the options given.
struct OpenSettings {
  /// Every setting: the defaults, overridden by valid stored rows, overridden by `given`. Each
  /// named setting of the defaults is valid here (setting_error is nullopt).
  std::map<std::string, DiskValue> settings;
  std::vector<std::string> problems;      ///< stored settings replaced or recomputed (why)
  std::vector<std::string> bad_counters;  ///< count/size/hits/misses to recompute
  EvictionPolicy policy = EvictionPolicy::least_recently_stored;
};
/// Merges the Settings table's (key, value) rows (`stored`; any SQLite type) with the options
/// given now (`given`): a stored setting of a wrong type or range is replaced by its default
/// (reported in `problems`), a bad counter is recomputed (`bad_counters`). Pure.
/// @throws DatabaseError for a bad counter of a `read_only` cache (it cannot be recomputed),
/// ValidationError for a bad `given` option (the caller's error).
OpenSettings merge_settings(const std::map<std::string, DiskValue>& stored,
                            const std::map<std::string, DiskValue>& given, bool read_only,
                            const std::string& db_path);

// ---- row helpers -------------------------------------------------------------------------------

inline std::optional<DiskValue> column_value(sqlite3_stmt* s, int i) {
  auto k = column_key(s, i);
  if (!k) return std::nullopt;
  return DiskValue(k->value());
}

inline std::optional<double> column_opt_double(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_double(s, i);
}

inline std::optional<std::string> column_opt_text(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
}

inline void bind_value(sqlite3_stmt* s, int i, const DiskValue& v) {
  // Values may be temporaries: SQLite copies them (SQLITE_TRANSIENT).
  bind_variant(s, i, v, SQLITE_TRANSIENT);
}

inline void bind_text(sqlite3_stmt* s, int i, std::string_view t) {
  sqlite3_bind_text64(s, i, t.data(), t.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
}

/// Characters (code points) of UTF-8 text: diskcache compares `len(str)` to the threshold.
inline std::size_t utf8_length(const std::string& s) {
  std::size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

inline std::optional<TimePoint> to_time(std::optional<double> t) {
  if (!t) return std::nullopt;
  return from_unix_seconds(*t);
}

inline double seconds(std::chrono::milliseconds d) {
  return static_cast<double>(d.count()) / 1000.0;
}

/// A row as read by the "live" selects: rowid, expire_time, tag, mode, filename, value.
struct Row {
  std::int64_t rowid = 0;
  std::optional<double> expire_time;
  std::optional<Key> tag;
  int mode = 0;
  std::optional<std::string> filename;
  std::optional<DiskValue> value;
};

inline Row read_row(sqlite3_stmt* s) {
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

/// Binds ?2..?8 of kInsert, kUpsert and kUpdateRowid (every statement that writes a whole row):
/// the store and access time `now`, the expiry, the tag, size and mode, and the value inline
/// (?8) or, when `rel` is not empty, the name of its value file (?7).
void bind_row(sqlite3_stmt* s, double now, const std::optional<Duration>& expire,
              const std::optional<Key>& tag, const Stored& st, const std::string& rel);

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

}  // namespace detail

using detail::Connection;
using detail::DiskCacheImpl;
using detail::Row;
using detail::StmtGuard;
using detail::Txn;

}  // namespace dogpile
