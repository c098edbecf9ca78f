// DiskCache read path: get (through the hot cache when it is on), read (a stream), file_path,
// contains, get_many (one snapshot), and listing keys. Reads take no write lock; their access
// updates go to the buffer (cache_access.cpp).
#include "cache_impl.hpp"
#include "cache_sql.hpp"

#include <sstream>

namespace dogpile {

using namespace std::chrono_literals;

namespace {
/// Looks up the live row of `key` (no write lock).
std::optional<Row> lookup(DiskCacheImpl& impl, Connection& c, const Key& key) {
  sqlite3_stmt* s = c.prepare(detail::kSelectLive);
  StmtGuard g(s);
  c.arm(impl.options().timeout, false);
  detail::bind_key(s, 1, key);
  sqlite3_bind_double(s, 2, impl.now());
  if (!detail::step_value_row(c, s, "get")) return std::nullopt;
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
    // connection may still be stepping (it would pin an older snapshot). No fill without a
    // ticket (not admitted, standing down): then no need to look.
    hot = ticket.valid;
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
        if (detail::step_value_row(c, s, "get_many")) {
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

// ---- listing keys ------------------------------------------------------------------------------

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

HotCacheStats DiskCache::hot_cache_stats() const noexcept {
  return impl_->hot_ ? impl_->hot_->stats() : HotCacheStats{};
}

}  // namespace dogpile
