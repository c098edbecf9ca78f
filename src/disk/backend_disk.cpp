// The `disk` / `fanout` region backends and their cross-process lease lock.
#include "dogpile/backends/disk.hpp"

#include "dogpile/detail/backend_arguments.hpp"
#include "dogpile/lease_lock.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <variant>

namespace dogpile {
namespace {

using std::chrono::milliseconds;

// ---- argument parsing -----------------------------------------------------------------------

using detail::bad_argument;
using detail::bool_arg;
using detail::int_arg;
using detail::seconds_arg;
using detail::string_arg;

EvictionPolicy policy_arg(const char* backend, const std::string& name, const nlohmann::json& v) {
  std::string s = string_arg(backend, name, v);
  std::replace(s.begin(), s.end(), '_', '-');
  try {
    return eviction_policy_from_string(s);
  } catch (const ValidationError&) {
    bad_argument(backend, name,
                 "must be one of least-recently-stored, least-recently-used, "
                 "least-frequently-used, none; got " +
                     v.dump());
  }
}

// Arguments only one of the two option structs has. False if `name` is not one of them.
bool set_specific(const char* backend, const std::string& name, const nlohmann::json& v,
                  DiskCacheOptions& c) {
  if (name == "sqlite_auto_vacuum") {
    c.sqlite_auto_vacuum = int_arg(backend, name, v, 0);
  } else if (name == "sqlite_journal_mode") {
    c.sqlite_journal_mode = string_arg(backend, name, v);
  } else if (name == "sqlite_synchronous") {
    c.sqlite_synchronous = int_arg(backend, name, v, 0);
  } else {
    return false;
  }
  return true;
}
bool set_specific(const char* backend, const std::string& name, const nlohmann::json& v,
                  FanoutCacheOptions& c) {
  if (name != "shards") return false;
  c.shards = static_cast<std::size_t>(int_arg(backend, name, v, 1));
  return true;
}

// The arguments both backends share; `apply` fills the cache options that exist in `Opts`.
struct CommonArgs {
  std::filesystem::path directory;
  std::optional<milliseconds> expire;
  DiskLockOptions lock;
  std::size_t max_value_bytes = default_max_value_bytes;
};

template <class CacheOpts>
CommonArgs parse_common(const char* backend, const nlohmann::json& a, CacheOpts& c) {
  constexpr bool fanout = requires { c.shards; };
  if (!a.is_object()) {
    detail::throw_error<ValidationError>(std::string(backend) +
                                         " backend: arguments must be a JSON object");
  }
  CommonArgs out;
  bool have_dir = false;
  bool zlib = false;
  for (const auto& item : a.items()) {
    const std::string& name = item.key();
    const nlohmann::json& v = item.value();
    if (name == "directory") {
      if (v.is_string() && !v.get_ref<const std::string&>().empty()) {
        out.directory = v.get<std::string>();
        have_dir = true;
      } else {
        bad_argument(backend, name, "must be a non-empty path string, got " + v.dump());
      }
    } else if (name == "size_limit") {
      c.size_limit = static_cast<std::uint64_t>(int_arg(backend, name, v, 0));
    } else if (name == "eviction_policy") {
      c.eviction_policy = policy_arg(backend, name, v);
    } else if (name == "cull_limit") {
      c.cull_limit = int_arg(backend, name, v, 0);
    } else if (name == "statistics") {
      c.statistics = bool_arg(backend, name, v);
    } else if (name == "tag_index") {
      c.tag_index = bool_arg(backend, name, v);
    } else if (name == "disk_min_file_size") {
      c.disk_min_file_size = int_arg(backend, name, v, 0);
    } else if (name == "sqlite_cache_size") {
      c.sqlite_cache_size = int_arg(backend, name, v, std::numeric_limits<std::int64_t>::min());
    } else if (name == "sqlite_mmap_size") {
      c.sqlite_mmap_size = int_arg(backend, name, v, 0);
    } else if (name == "timeout") {
      c.timeout = seconds_arg(backend, name, v);
    } else if (name == "read_only") {
      c.read_only = bool_arg(backend, name, v);
    } else if (name == "hot_cache_bytes") {
      c.hot_cache_bytes = static_cast<std::size_t>(int_arg(backend, name, v, 0));
    } else if (name == "private_cache") {
      c.private_cache = bool_arg(backend, name, v);
    } else if (name == "serializer") {
      // By name, as a config file can say it; a C++ caller can also set the options' pointer.
      const std::string s = string_arg(backend, name, v);
      if (s == "zlib") {
        zlib = true;  // built below, with max_value_bytes (which may come later)
      } else if (s == "none") {
        zlib = false;
        c.serializer = nullptr;
      } else {
        bad_argument(backend, name,
                     "must be \"zlib\" (compress large values) or \"none\", got " + v.dump() +
                         " (the region stores bytes: \"json\" does not apply)");
      }
    } else if (name == "expire") {
      out.expire = seconds_arg(backend, name, v);
    } else if (name == "lock_timeout") {
      out.lock.lock_timeout = seconds_arg(backend, name, v);
      if (out.lock.lock_timeout.count() <= 0) bad_argument(backend, name, "must be positive");
    } else if (name == "lock_sleep") {
      out.lock.lock_sleep = seconds_arg(backend, name, v);
    } else if (name == "lock_prefix") {
      out.lock.lock_prefix = string_arg(backend, name, v);
    } else if (name == "max_value_bytes") {
      out.max_value_bytes = static_cast<std::size_t>(int_arg(backend, name, v, 1));
    } else if (!set_specific(backend, name, v, c)) {
      bad_argument(backend, name,
                   fanout ? "is unknown (known: directory, shards, size_limit, eviction_policy, "
                            "cull_limit, statistics, tag_index, disk_min_file_size, "
                            "sqlite_cache_size, sqlite_mmap_size, timeout, read_only, "
                            "private_cache, hot_cache_bytes, serializer, expire, lock_timeout, "
                            "lock_sleep, lock_prefix, max_value_bytes)"
                          : "is unknown (known: directory, size_limit, eviction_policy, "
                            "cull_limit, statistics, tag_index, disk_min_file_size, "
                            "sqlite_auto_vacuum, sqlite_cache_size, sqlite_journal_mode, "
                            "sqlite_mmap_size, sqlite_synchronous, timeout, read_only, "
                            "private_cache, hot_cache_bytes, serializer, expire, lock_timeout, "
                            "lock_sleep, lock_prefix, max_value_bytes)");
    }
  }
  if (!have_dir) bad_argument(backend, "directory", "is required");
  // The serializer inflates at most what the backend returns.
  if (zlib) c.serializer = std::make_shared<ZlibSerializer>(1024, 6, out.max_value_bytes);
  return out;
}

// ---- values ---------------------------------------------------------------------------------

// Text and bytes are the region's envelope; anything else (a number, set by another program)
// is not ours to decode and reads as a miss.
std::optional<std::string> envelope_of(std::optional<DiskValue> v) {
  if (!v) return std::nullopt;
  if (auto* b = std::get_if<Bytes>(&*v)) return std::move(b->data);
  if (auto* s = std::get_if<std::string>(&*v)) return std::move(*s);
  return std::nullopt;
}

std::optional<std::string> read_one(DiskCache& cache, const Key& key) {
  try {
    auto rec = cache.get_record(key, false);
    if (!rec) return std::nullopt;
    return envelope_of(std::move(rec->value));
  } catch (const UnsupportedFormat&) {
    return std::nullopt;  // pickled by Python: not a region value
  } catch (const ValueTooLargeError&) {
    return std::nullopt;  // over max_value_bytes, refused unread: a miss the next set replaces
  }
}

// The envelopes of `keys` from one snapshot, appended to `out`; false if one value cannot be
// read in bulk (pickled, or over max_value_bytes): then read key by key, where it is a miss.
bool many_values(DiskCache& cache, std::span<const Key> keys,
                 std::vector<std::optional<std::string>>& out) {
  try {
    for (auto& v : cache.get_many_values(keys)) out.push_back(envelope_of(std::move(v)));
    return true;
  } catch (const UnsupportedFormat&) {
    return false;
  } catch (const ValueTooLargeError&) {
    return false;
  }
}

SetOptions value_options(const std::optional<milliseconds>& expire) {
  SetOptions o;
  o.expire = expire;
  return o;
}

// ---- the lease lock -------------------------------------------------------------------------

// The lock key `lock_prefix + key` in a DiskCache, holding the owner token (text) with an
// expiry of the lease. `add` is atomic across processes; renew and release check the owner
// inside one write transaction, so neither can touch another holder's lock.
class DiskLeaseStore final : public LeaseStore {
 public:
  DiskLeaseStore(DiskCache cache, Key lock_key)
      : cache_(std::move(cache)), key_(std::move(lock_key)) {}

  bool try_acquire(std::string_view token, milliseconds lease) override {
    SetOptions so;
    so.expire = lease;
    try {
      return cache_.add(key_, std::string(token), so);
    } catch (const TimeoutError&) {
      return false;  // the database is busy: same as a held lock, back off and try again
    }
  }

  bool renew(std::string_view token, milliseconds lease) override {
    // No retry: a busy database throws TimeoutError and the renewer tries again shortly.
    auto tx = cache_.transact(/*retry=*/false);
    const bool owned = owned_by(token);
    if (owned) cache_.touch(key_, lease);
    tx.commit();
    return owned;
  }

  bool release(std::string_view token) override {
    auto tx = cache_.transact(/*retry=*/true);
    const bool owned = owned_by(token);
    if (owned) cache_.erase(key_, /*retry=*/true);
    tx.commit();
    return owned;
  }

  [[nodiscard]] bool held() const override { return cache_.contains(key_); }

  [[nodiscard]] std::string describe() const override { return "disk lock " + key_.repr(); }

 private:
  // Inside the caller's transaction: the unexpired lock key holds `token`.
  bool owned_by(std::string_view token) {
    auto rec = cache_.get_record(key_, false);
    if (!rec) return false;
    const auto* s = std::get_if<std::string>(&rec->value);
    return s != nullptr && *s == token;
  }

  mutable DiskCache cache_;
  Key key_;
};

std::shared_ptr<CacheMutex> make_disk_lock(DiskCache cache, std::string_view key,
                                           const DiskLockOptions& o) {
  LeaseLockOptions lo;
  lo.lease = o.lock_timeout;
  lo.lock_sleep = o.lock_sleep;
  return std::make_shared<LeaseLock>(
      std::make_shared<DiskLeaseStore>(std::move(cache), Key(o.lock_prefix + std::string(key))),
      lo);
}

Key text_key(std::string_view k) { return Key(std::string(k)); }

const std::filesystem::path& required_dir(const char* backend, const std::filesystem::path& p) {
  if (p.empty()) bad_argument(backend, "directory", "is required");
  return p;
}

// The cache options with the backend's max_value_bytes (or the caller's own, if lower): the
// cache then refuses a larger stored value before reading it.
template <class CacheOpts>
CacheOpts bounded(const char* backend, CacheOpts o, std::size_t max_value_bytes) {
  if (max_value_bytes == 0) {
    detail::throw_error<ValidationError>(std::string(backend) +
                                         " backend: 'max_value_bytes' must be at least 1");
  }
  o.max_value_bytes = std::min(o.max_value_bytes.value_or(max_value_bytes), max_value_bytes);
  return o;
}

}  // namespace

// ---- DiskBackend ----------------------------------------------------------------------------

DiskBackend::DiskBackend(DiskBackendOptions options)
    : opts_(std::move(options)),
      cache_(required_dir("disk", opts_.directory),
             bounded("disk", opts_.cache, opts_.max_value_bytes)) {
  if (opts_.lock.lock_timeout.count() <= 0) {
    detail::throw_error<ValidationError>("disk backend: 'lock_timeout' must be positive");
  }
}

std::shared_ptr<CacheBackend> DiskBackend::from_arguments(const nlohmann::json& arguments) {
  DiskBackendOptions o;
  CommonArgs c = parse_common("disk", arguments, o.cache);
  o.directory = std::move(c.directory);
  o.expire = c.expire;
  o.lock = std::move(c.lock);
  o.max_value_bytes = c.max_value_bytes;
  return std::make_shared<DiskBackend>(std::move(o));
}

std::optional<std::string> DiskBackend::do_get(std::string_view key) {
  return read_one(cache_, text_key(key));
}

void DiskBackend::do_set(std::string_view key, std::string_view value) {
  cache_.set_value(text_key(key), Bytes{std::string(value)}, value_options(opts_.expire), false);
}

void DiskBackend::do_erase(std::string_view key) { cache_.erase(text_key(key)); }

std::vector<std::optional<std::string>> DiskBackend::do_get_multi(
    std::span<const std::string> keys) {
  std::vector<Key> ks(keys.begin(), keys.end());
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  if (!many_values(cache_, ks, out)) {
    // One value read key by key reads as a miss there (pickled, or over max_value_bytes).
    out.clear();
    for (const auto& k : ks) out.push_back(read_one(cache_, k));
  }
  return out;
}

void DiskBackend::do_set_multi(std::span<const BytesItem> items) {
  std::vector<std::pair<Key, DiskValue>> conv;
  conv.reserve(items.size());
  for (const auto& [k, v] : items) conv.emplace_back(text_key(k), Bytes{v});
  cache_.set_many_values(conv, value_options(opts_.expire));
}

void DiskBackend::do_erase_multi(std::span<const std::string> keys) {
  std::vector<Key> ks(keys.begin(), keys.end());
  cache_.erase_many(ks);
}

std::shared_ptr<CacheMutex> DiskBackend::do_get_mutex(std::string_view key) {
  return make_disk_lock(cache_, key, opts_.lock);
}

// ---- FanoutBackend --------------------------------------------------------------------------

FanoutBackend::FanoutBackend(FanoutBackendOptions options)
    : opts_(std::move(options)),
      cache_(required_dir("fanout", opts_.directory),
             bounded("fanout", opts_.cache, opts_.max_value_bytes)) {
  if (opts_.lock.lock_timeout.count() <= 0) {
    detail::throw_error<ValidationError>("fanout backend: 'lock_timeout' must be positive");
  }
}

std::shared_ptr<CacheBackend> FanoutBackend::from_arguments(const nlohmann::json& arguments) {
  FanoutBackendOptions o;
  o.cache.timeout = std::chrono::seconds(1);
  CommonArgs c = parse_common("fanout", arguments, o.cache);
  o.directory = std::move(c.directory);
  o.expire = c.expire;
  o.lock = std::move(c.lock);
  o.max_value_bytes = c.max_value_bytes;
  return std::make_shared<FanoutBackend>(std::move(o));
}

std::optional<std::string> FanoutBackend::do_get(std::string_view key) {
  const Key k = text_key(key);
  return read_one(cache_.shard_for(k), k);
}

void FanoutBackend::do_set(std::string_view key, std::string_view value) {
  const Key k = text_key(key);
  cache_.shard_for(k).set_value(k, Bytes{std::string(value)}, value_options(opts_.expire), false);
}

void FanoutBackend::do_erase(std::string_view key) {
  const Key k = text_key(key);
  cache_.shard_for(k).erase(k);
}

namespace {
// Key positions grouped by shard, so each shard gets one bulk call (and a timeout throws).
std::map<std::size_t, std::vector<std::size_t>> by_shard(FanoutCache& cache,
                                                         std::span<const Key> keys) {
  std::map<std::size_t, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < keys.size(); ++i) groups[cache.shard_index(keys[i])].push_back(i);
  return groups;
}
}  // namespace

std::vector<std::optional<std::string>> FanoutBackend::do_get_multi(
    std::span<const std::string> keys) {
  std::vector<Key> ks(keys.begin(), keys.end());
  std::vector<std::optional<std::string>> out(keys.size());
  for (const auto& [shard, idx] : by_shard(cache_, ks)) {
    std::vector<Key> sub;
    sub.reserve(idx.size());
    for (auto i : idx) sub.push_back(ks[i]);
    DiskCache& c = cache_.shard(shard);
    std::vector<std::optional<std::string>> vals;
    vals.reserve(idx.size());
    if (many_values(c, sub, vals)) {
      for (std::size_t j = 0; j < idx.size(); ++j) out[idx[j]] = std::move(vals[j]);
    } else {
      for (auto i : idx) out[i] = read_one(c, ks[i]);
    }
  }
  return out;
}

void FanoutBackend::do_set_multi(std::span<const BytesItem> items) {
  std::vector<Key> ks;
  ks.reserve(items.size());
  for (const auto& it : items) ks.push_back(text_key(it.first));
  for (const auto& [shard, idx] : by_shard(cache_, ks)) {
    std::vector<std::pair<Key, DiskValue>> conv;
    conv.reserve(idx.size());
    for (auto i : idx) conv.emplace_back(ks[i], Bytes{items[i].second});
    cache_.shard(shard).set_many_values(conv, value_options(opts_.expire));
  }
}

void FanoutBackend::do_erase_multi(std::span<const std::string> keys) {
  std::vector<Key> ks(keys.begin(), keys.end());
  for (const auto& [shard, idx] : by_shard(cache_, ks)) {
    std::vector<Key> sub;
    sub.reserve(idx.size());
    for (auto i : idx) sub.push_back(ks[i]);
    cache_.shard(shard).erase_many(sub);
  }
}

std::shared_ptr<CacheMutex> FanoutBackend::do_get_mutex(std::string_view key) {
  // The lock key lives in its own key's shard.
  return make_disk_lock(cache_.shard_for(text_key(opts_.lock.lock_prefix + std::string(key))), key,
                        opts_.lock);
}

// ---- registration ---------------------------------------------------------------------------

void register_disk_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_backend("disk",
                     [](const nlohmann::json& a) { return DiskBackend::from_arguments(a); });
    register_backend("fanout",
                     [](const nlohmann::json& a) { return FanoutBackend::from_arguments(a); });
  });
}

}  // namespace dogpile
