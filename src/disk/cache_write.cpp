// DiskCache write path: set / add (set_value), set_stream, touch, incr / decr, pop, erase,
// set_many, erase_many and memoize. Each is one write transaction (Txn): the value file is
// written before the lock, the row changed, the cull run (cache_cull.cpp), then COMMIT; files
// of replaced rows are removed after it.
#include "cache_impl.hpp"
#include "cache_sql.hpp"

#include <unistd.h>

#include <random>
#include <thread>

namespace dogpile {

using namespace std::chrono_literals;

namespace detail {

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
    detail::bind_row(s, now, options.expire, options.tag, st, rel);
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
    sqlite3_stmt* s = c.prepare(detail::kSelectOld);  // only the old file: no value loaded
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    if (detail::step(c, s, "select")) old_file = detail::column_opt_text(s, 2);
  }
  {
    sqlite3_stmt* s = c.prepare(detail::kUpsert);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    detail::Stored st;
    st.mode = detail::kModeBinary;
    st.size = size;
    detail::bind_row(s, now, options.expire, options.tag, st, rel);
    detail::step(c, s, "upsert");
  }
  tx.cleanup(std::move(old_file));
  impl.cull(c, now);
  tx.commit();
  return true;
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
    if (detail::step_value_row(c, s, "incr select")) {
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
      if (!detail::step_value_row(c, s, "pop")) {
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
      sqlite3_stmt* s = c.prepare(detail::kSelectOld);  // only the old file: no value loaded
      StmtGuard g(s);
      detail::bind_key(s, 1, key);
      if (detail::step(c, s, "select")) tx.cleanup(detail::column_opt_text(s, 2));
    }
    sqlite3_stmt* s = c.prepare(detail::kUpsert);
    StmtGuard g(s);
    detail::bind_key(s, 1, key);
    detail::bind_row(s, now, options.expire, options.tag, stored[i], rel);
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
