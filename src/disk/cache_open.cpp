// DiskCache opening: the implementation object's construction (options, directory, private
// files), per-connection pragmas, and init(): stored settings merged with the options, pragmas,
// then the schema and settings in one write transaction. Map of the other cache_*.cpp files:
//   cache_txn.cpp       connections per thread, BEGIN IMMEDIATE / SAVEPOINT / COMMIT, fork safety
//   cache_settings.cpp  setting validation, settings(), stats(), reset(), the tag index
//   cache_values.cpp    a value in and out of a row: serializer, inline or in a value file
//   cache_read.cpp      the read path: get (with the hot cache), read, contains, get_many, keys
//   cache_write.cpp     the write path: set, add, incr, pop, erase, set_many, memoize
//   cache_queue.cpp     push / pull / peek (diskcache's queue keys)
//   cache_cull.cpp      culling after writes and eviction: cull, expire, evict, clear, volume
//   cache_access.cpp    the buffered access-time / access-count / statistics updates
//   cache_check.cpp     check(): integrity, value files, counters
// Shared declarations: cache_impl.hpp (DiskCacheImpl, Txn, Row) and cache_sql.hpp (statements).
#include "cache_impl.hpp"
#include "cache_sql.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace dogpile {

using namespace std::chrono_literals;

namespace detail {

DiskCacheImpl::DiskCacheImpl(const fs::path& directory, DiskCacheOptions options)
    : opts_(std::move(options)), serial_(next_cache_serial()) {
  install_fork_handler();
  conns_fork_gen_ = fork_generation();
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
  if (opts_.max_value_bytes && *opts_.max_value_bytes == 0) {
    throw_error<ValidationError>("max_value_bytes: must be at least 1");
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
    if (fork_generation() == conns_fork_gen_) flush(false);
  } catch (...) {  // NOLINT(bugprone-empty-catch): best effort at destruction
  }
  close_all();
}

void DiskCacheImpl::configure(Connection& c) {
  // The busy handler must be armed before the first statement: a fresh connection has no
  // deadline, so a lock held for a moment by another process (the schema read of the first
  // pragma needs a shared lock) would otherwise fail at once. Pragmas wait like diskcache's
  // _sql_retry: up to max(timeout, 60 s); a read-only handle (an inspection tool) waits only
  // its own timeout.
  c.arm(opts_.read_only ? opts_.timeout : std::max<std::chrono::milliseconds>(opts_.timeout, 60s),
        false);
  if (opts_.max_value_bytes) {
    c.value_limit = static_cast<int>(
        std::min<std::size_t>(*opts_.max_value_bytes, std::numeric_limits<int>::max()));
  }
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
  // The name comes from a Settings row, which anyone who can write cache.db controls: only a
  // bare pragma name reaches SQL ("sqlite_temp_store_directory='/x'--" would set another
  // pragma than the row names, with a value the value check below never saw).
  const bool bare = !pragma.empty() && std::all_of(pragma.begin(), pragma.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
  });
  if (!bare) throw_error<ValidationError>("Settings row '" + name + "' is not a pragma name");
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
  std::map<std::string, DiskValue> stored;
  {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(c.db(), kSettingsAll, -1, &s, nullptr);
    if (rc == SQLITE_OK) {
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        auto name = column_opt_text(s, 0);
        auto value = column_value(s, 1);
        if (name && value) stored[*name] = *value;
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
  OpenSettings merged = merge_settings(stored, given, opts_.read_only, db_path_);
  setting_problems_ = std::move(merged.problems);
  std::map<std::string, DiskValue>& settings = merged.settings;
  const std::vector<std::string>& bad_counters = merged.bad_counters;
  const EvictionPolicy pol = merged.policy;

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

}  // namespace detail

DiskCache::DiskCache(const fs::path& directory, DiskCacheOptions options)
    : impl_(std::make_shared<DiskCacheImpl>(directory, std::move(options))) {
  impl_->init();
}

DiskCache::~DiskCache() = default;

const fs::path& DiskCache::directory() const noexcept { return impl_->dir(); }

std::chrono::milliseconds DiskCache::timeout() const noexcept { return impl_->options().timeout; }

}  // namespace dogpile
