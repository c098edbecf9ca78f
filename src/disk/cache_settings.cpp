// DiskCache settings: validation of a setting's type and range, reading them back, and the
// public settings operations (settings, stats, tag index, reset).
#include "cache_impl.hpp"
#include "cache_sql.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>

namespace dogpile {

using namespace std::chrono_literals;

namespace detail {

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

OpenSettings merge_settings(const std::map<std::string, DiskValue>& stored,
                            const std::map<std::string, DiskValue>& given, bool read_only,
                            const std::string& db_path) {
  static const std::map<std::string, DiskValue> defaults = {
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
  OpenSettings out;
  out.settings = defaults;
  for (const auto& [k, v] : stored) out.settings[k] = v;
  // A stored setting that cannot be read back (written by an older version, by hand, or by a
  // bad reset) does not make the cache unopenable: the default replaces it and the problem is
  // reported by `setting_problems()`. A bad option given now is the caller's error.
  // The counters (count, size, hits, misses) have no default: a bad one is recomputed from
  // the Cache table (hits/misses restart at 0) in the open's write transaction.
  for (auto& [k, v] : out.settings) {
    if (given.count(k) != 0) continue;
    if (auto why = setting_error(k, v)) {
      auto d = defaults.find(k);
      if (d == defaults.end()) {
        if (read_only) {
          throw DatabaseError("disk cache " + db_path + ": stored setting " + *why +
                              " (a corrupt or tampered Settings table; opening it writable "
                              "once recomputes it)");
        }
        out.problems.push_back("stored setting " + *why + "; recomputed");
        out.bad_counters.push_back(k);
        continue;
      }
      out.problems.push_back("stored setting " + *why + "; using the default " +
                             describe_setting(d->second));
      v = d->second;
    }
  }
  for (const auto& [k, v] : given) {
    if (auto why = setting_error(k, v)) throw_error<ValidationError>(*why);
    out.settings[k] = v;
  }
  out.policy =
      eviction_policy_from_string(as_text(out.settings["eviction_policy"], "eviction_policy"));
  return out;
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

}  // namespace detail

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

}  // namespace dogpile
