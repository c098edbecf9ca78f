// DiskCache queues: push / pull / peek / peekitem with diskcache's queue keys (integers from
// 500000000000000, or '<prefix>-<15 digits>').
#include "cache_impl.hpp"
#include "cache_sql.hpp"

#include <charconv>
#include <cstdio>

namespace dogpile {

using namespace std::chrono_literals;

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
    detail::bind_row(s, now, options.expire, options.tag, st, rel);
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
          if (!detail::step_value_row(c, s, "queue select")) {
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

}  // namespace dogpile
