// DiskCache access buffer: reads do not write. Access times and counts (LRU/LFU) and the
// hit/miss statistics are buffered in memory and written by the next write transaction or a
// flush (not waiting for the lock when it comes from a read).
#include "cache_impl.hpp"
#include "cache_sql.hpp"

namespace dogpile {

using namespace std::chrono_literals;

namespace detail {

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
    std::uint64_t fork = fork_generation();
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
    if (buf_.fork_gen != fork_generation()) {
      buf_ = AccessBuffer{};
      buf_.fork_gen = fork_generation();
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

}  // namespace detail

void DiskCache::flush() { impl_->flush(true); }

}  // namespace dogpile
