// DiskCache culling and eviction: the cull that follows every write (expired rows first, then
// eviction-policy victims over size_limit), the volume it compares, and the whole-cache removals
// (clear, expire, evict, cull) done in batches of short transactions.
#include "cache_impl.hpp"
#include "cache_sql.hpp"

namespace dogpile {

using namespace std::chrono_literals;

namespace detail {

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

}  // namespace detail

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

}  // namespace dogpile
