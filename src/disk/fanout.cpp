// FanoutCache: N DiskCache shards with diskcache's portable routing hash.
#include "dogpile/disk/fanout.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <system_error>
#include <thread>

#include "value_files.hpp"

namespace dogpile {

namespace fs = std::filesystem;

namespace {
constexpr const char* kMetaFile = "dogpile-fanout.json";
constexpr const char* kHashName = "diskcache-adler32";

std::uint32_t adler(const void* p, std::size_t n) {
  uLong a = ::adler32(0L, Z_NULL, 0);
  a = ::adler32_z(a, static_cast<const Bytef*>(p), n);
  return static_cast<std::uint32_t>(a & 0xFFFFFFFFu);
}

std::string shard_name(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%03zu", i);
  return buf;
}

/// Shard directories `000`, `001`, … present (contiguous from 000) holding a cache.db.
std::size_t existing_shards(const fs::path& dir) {
  std::size_t n = 0;
  std::error_code ec;
  while (fs::exists(dir / shard_name(n) / "cache.db", ec)) ++n;
  return n;
}

/// The shard count of a directory another process (Python's FanoutCache, which leaves no
/// marker) may still be filling: the count once it has stopped growing for 300 ms, or has
/// reached `expected`; gives up after 5 s with what is there.
std::size_t settled_shards(const fs::path& dir, std::optional<std::size_t> expected) {
  using SteadyClock = std::chrono::steady_clock;
  const auto give_up = SteadyClock::now() + std::chrono::seconds(5);
  std::size_t n = existing_shards(dir);
  auto changed = SteadyClock::now();
  while (SteadyClock::now() < give_up) {
    if (expected && n >= *expected) break;
    if (!expected && SteadyClock::now() - changed >= std::chrono::milliseconds(300)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::size_t now = existing_shards(dir);
    if (now != n) {
      n = now;
      changed = SteadyClock::now();
    }
  }
  return n;
}

/// An exclusive flock on `<dir>/dogpile-fanout.lock` while the shard set is counted, created
/// and recorded, so concurrent first opens from C++ processes see all of it or none; released
/// by the kernel if the holder dies. No lock for a read-only open (it creates nothing).
class CreationLock {
 public:
  CreationLock(const fs::path& dir, bool read_only, bool private_cache) {
    if (read_only) return;
    const auto path = dir / "dogpile-fanout.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, private_cache ? 0600 : 0666);
    if (fd_ < 0) {
      throw DatabaseError("fanout cache: cannot open " + path.string() + ": " +
                          std::strerror(errno));
    }
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        const int err = errno;
        ::close(fd_);
        throw DatabaseError("fanout cache: cannot lock " + path.string() + ": " +
                            std::strerror(err));
      }
    }
  }
  ~CreationLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
  }
  CreationLock(const CreationLock&) = delete;
  CreationLock& operator=(const CreationLock&) = delete;

 private:
  int fd_ = -1;
};
}  // namespace

std::uint32_t fanout_hash(const Key& key) {
  const auto& v = key.value();
  switch (v.index()) {
    case 0: {
      // Python: db_key % 0xFFFFFFFF, a floor modulo (non-negative for negative ints).
      constexpr std::int64_t m = 0xFFFFFFFFll;
      std::int64_t r = std::get<0>(v) % m;
      if (r < 0) r += m;
      return static_cast<std::uint32_t>(r);
    }
    case 1: {
      // struct.pack('!d', x): big-endian IEEE-754.
      double d = std::get<1>(v);
      std::uint64_t bits = 0;
      std::memcpy(&bits, &d, sizeof bits);
      unsigned char be[8];
      for (int i = 0; i < 8; ++i) be[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
      return adler(be, sizeof be);
    }
    case 2: {
      const auto& s = std::get<2>(v);
      return adler(s.data(), s.size());
    }
    default: {
      const auto& b = std::get<3>(v).data;
      return adler(b.data(), b.size());
    }
  }
}

struct FanoutCache::State {
  fs::path dir;
  std::vector<DiskCache> shards;
  FanoutCacheOptions options;
  std::mutex subs_mu;
  std::map<std::string, DiskCache> subs;
};

FanoutCache::FanoutCache(const fs::path& directory, FanoutCacheOptions options)
    : state_(std::make_shared<State>()) {
  auto& st = *state_;
  if (options.shards && *options.shards == 0) {
    detail::throw_error<ValidationError>("shards: must be at least 1");
  }
  if (options.shards && *options.shards > 999) {
    detail::throw_error<ValidationError>("shards: at most 999 (directories are named %03d)");
  }
  std::error_code ec;
  st.dir = fs::absolute(directory, ec);
  if (ec) st.dir = directory;
  if (!options.read_only) {
    detail::create_cache_dir(st.dir, options.private_cache, "fanout cache");
  }
  if (!fs::is_directory(st.dir)) {
    throw DatabaseError("fanout cache: " + st.dir.string() + " is not a directory");
  }
  if (options.private_cache) detail::check_private_dir(st.dir, "fanout cache");
  // The shard count: persisted by us, else inferred from a directory Python created. Counted,
  // created and recorded under one lock: a concurrent first open never sees a partial set.
  CreationLock creating(st.dir, options.read_only, options.private_cache);
  std::size_t count = 0;
  fs::path meta = st.dir / kMetaFile;
  bool have_meta = false;
  if (std::ifstream in(meta); in) {
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("shards") || !j["shards"].is_number_unsigned() ||
        j["shards"].get<std::size_t>() == 0) {
      throw DatabaseError("fanout cache: " + meta.string() + " is corrupt");
    }
    if (j.value("hash", std::string(kHashName)) != kHashName) {
      detail::throw_error<ValidationError>("fanout cache: " + st.dir.string() +
                                           " uses an unknown hash '" +
                                           j.value("hash", std::string()) + "'");
    }
    count = j["shards"].get<std::size_t>();
    if (count > 999) {
      // Never trust it: a bad count would create that many shard directories.
      throw DatabaseError("fanout cache: " + meta.string() + " claims " + std::to_string(count) +
                          " shards, more than the 999 a fanout cache can have; the file is "
                          "corrupt (restore it, or delete it to infer the count from the shard "
                          "directories)");
    }
    have_meta = true;
    if (options.shards && *options.shards != count) {
      detail::throw_error<ValidationError>(
          "shards: " + st.dir.string() + " was created with " + std::to_string(count) +
          " shards, not " + std::to_string(*options.shards) + " (keys would be routed elsewhere)");
    }
  } else if (std::size_t found =
                 existing_shards(st.dir) > 0 ? settled_shards(st.dir, options.shards) : 0;
             found > 0) {
    if (options.shards && *options.shards != found) {
      detail::throw_error<ValidationError>(
          "shards: " + st.dir.string() + " holds " + std::to_string(found) + " shards, not " +
          std::to_string(*options.shards) + " (keys would be routed elsewhere)");
    }
    count = found;
  } else {
    count = options.shards.value_or(8);
  }
  options.shards = count;
  st.options = options;

  std::uint64_t total = options.size_limit.value_or(1ull << 30);
  for (std::size_t i = 0; i < count; ++i) {
    DiskCacheOptions o;
    o.size_limit = total / count;  // diskcache: every open sets the per-shard limit
    o.eviction_policy = options.eviction_policy;
    o.cull_limit = options.cull_limit;
    o.statistics = options.statistics;
    o.tag_index = options.tag_index;
    o.disk_min_file_size = options.disk_min_file_size;
    o.sqlite_mmap_size = options.sqlite_mmap_size;
    o.sqlite_cache_size = options.sqlite_cache_size;
    o.timeout = options.timeout;
    o.clock = options.clock;
    o.read_only = options.read_only;
    o.serializer = options.serializer;
    o.hot_cache_bytes = options.hot_cache_bytes;
    o.max_value_bytes = options.max_value_bytes;
    o.private_cache = options.private_cache;
    if (o.read_only) o.size_limit.reset();
    st.shards.emplace_back(st.dir / shard_name(i), std::move(o));
  }
  if (!have_meta && !options.read_only) {
    fs::path tmp = meta;
    tmp += ".tmp." + std::to_string(::getpid());
    {
      std::ofstream out(tmp);
      if (options.private_cache) {
        fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write, ec);
      }
      out << nlohmann::json{{"shards", count}, {"hash", kHashName}}.dump() << "\n";
      if (!out) throw DatabaseError("fanout cache: cannot write " + tmp.string());
    }
    fs::rename(tmp, meta, ec);
    if (ec)
      throw DatabaseError("fanout cache: cannot write " + meta.string() + ": " + ec.message());
  }
}

const fs::path& FanoutCache::directory() const noexcept { return state_->dir; }
std::size_t FanoutCache::shard_count() const noexcept { return state_->shards.size(); }

DiskCache& FanoutCache::shard(std::size_t i) {
  if (i >= state_->shards.size()) {
    detail::throw_error<ValidationError>("shard: index " + std::to_string(i) + " out of range");
  }
  return state_->shards[i];
}

std::size_t FanoutCache::shard_index(const Key& key) const {
  return fanout_hash(key) % state_->shards.size();
}

DiskCache& FanoutCache::shard_for(const Key& key) { return state_->shards[shard_index(key)]; }

bool FanoutCache::set_stream(const Key& key, std::istream& in, const SetOptions& options) {
  try {
    return shard_for(key).set_stream(key, in, options);
  } catch (const TimeoutError&) {
    return false;
  }
}

std::unique_ptr<std::istream> FanoutCache::read(const Key& key) { return shard_for(key).read(key); }

bool FanoutCache::contains(const Key& key) {
  try {
    return shard_for(key).contains(key);
  } catch (const TimeoutError&) {
    return false;
  }
}

bool FanoutCache::touch(const Key& key, std::optional<Duration> expire, bool retry) {
  try {
    return shard_for(key).touch(key, expire, retry);
  } catch (const TimeoutError&) {
    return false;
  }
}

std::optional<std::int64_t> FanoutCache::incr(const Key& key, std::int64_t delta,
                                              std::optional<std::int64_t> default_value,
                                              bool retry) {
  try {
    return shard_for(key).incr(key, delta, default_value, retry);
  } catch (const TimeoutError&) {
    return std::nullopt;
  }
}

std::optional<std::int64_t> FanoutCache::decr(const Key& key, std::int64_t delta,
                                              std::optional<std::int64_t> default_value,
                                              bool retry) {
  try {
    return shard_for(key).decr(key, delta, default_value, retry);
  } catch (const TimeoutError&) {
    return std::nullopt;
  }
}

bool FanoutCache::erase(const Key& key, bool retry) {
  try {
    return shard_for(key).erase(key, retry);
  } catch (const TimeoutError&) {
    return false;
  }
}

std::vector<std::optional<DiskValue>> FanoutCache::get_many_values(std::span<const Key> keys) {
  std::vector<std::optional<DiskValue>> out(keys.size());
  std::map<std::size_t, std::vector<std::size_t>> by_shard;
  for (std::size_t i = 0; i < keys.size(); ++i) by_shard[shard_index(keys[i])].push_back(i);
  for (const auto& [shard_i, idx] : by_shard) {
    std::vector<Key> ks;
    ks.reserve(idx.size());
    for (auto i : idx) ks.push_back(keys[i]);
    try {
      auto vals = state_->shards[shard_i].get_many_values(ks);
      for (std::size_t j = 0; j < idx.size(); ++j) out[idx[j]] = std::move(vals[j]);
    } catch (const TimeoutError&) {  // NOLINT(bugprone-empty-catch): documented as misses
    }
  }
  return out;
}

bool FanoutCache::set_many_values(std::span<const std::pair<Key, DiskValue>> items,
                                  const SetOptions& options) {
  std::map<std::size_t, std::vector<std::pair<Key, DiskValue>>> by_shard;
  for (const auto& item : items) by_shard[shard_index(item.first)].push_back(item);
  bool ok = true;
  for (auto& [shard_i, part] : by_shard) {
    try {
      state_->shards[shard_i].set_many_values(part, options);
    } catch (const TimeoutError&) {
      ok = false;
    }
  }
  return ok;
}

std::size_t FanoutCache::erase_many(std::span<const Key> keys, bool retry) {
  std::map<std::size_t, std::vector<Key>> by_shard;
  for (const auto& k : keys) by_shard[shard_index(k)].push_back(k);
  std::size_t n = 0;
  for (auto& [shard_i, part] : by_shard) {
    try {
      n += state_->shards[shard_i].erase_many(part, retry);
    } catch (const TimeoutError&) {  // NOLINT(bugprone-empty-catch): documented
    }
  }
  return n;
}

std::vector<Key> FanoutCache::keys(bool reverse) {
  std::vector<Key> out;
  auto n = state_->shards.size();
  for (std::size_t j = 0; j < n; ++j) {
    auto ks = state_->shards[reverse ? n - 1 - j : j].keys(reverse);
    out.insert(out.end(), std::make_move_iterator(ks.begin()), std::make_move_iterator(ks.end()));
  }
  return out;
}

std::int64_t FanoutCache::size() {
  std::int64_t n = 0;
  for (auto& s : state_->shards) n += s.size();
  return n;
}

std::uint64_t FanoutCache::volume() {
  std::uint64_t n = 0;
  for (auto& s : state_->shards) n += s.volume();
  return n;
}

namespace {
/// Runs `op` on a shard until it completes (a timeout mid-way keeps what was removed).
template <class Op>
std::size_t until_done(DiskCache& shard, Op op) {
  for (;;) {
    try {
      return op(shard);
    } catch (const TimeoutError&) {  // NOLINT(bugprone-empty-catch): retried
    }
  }
}
}  // namespace

std::size_t FanoutCache::clear() {
  std::size_t n = 0;
  for (auto& s : state_->shards) n += until_done(s, [](DiskCache& c) { return c.clear(); });
  return n;
}

std::size_t FanoutCache::expire(std::optional<TimePoint> now) {
  std::size_t n = 0;
  for (auto& s : state_->shards) n += until_done(s, [&](DiskCache& c) { return c.expire(now); });
  return n;
}

std::size_t FanoutCache::evict(const Key& tag) {
  std::size_t n = 0;
  for (auto& s : state_->shards) n += until_done(s, [&](DiskCache& c) { return c.evict(tag); });
  return n;
}

std::size_t FanoutCache::cull() {
  std::size_t n = 0;
  for (auto& s : state_->shards) n += until_done(s, [](DiskCache& c) { return c.cull(); });
  return n;
}

std::vector<CheckWarning> FanoutCache::check(bool fix) {
  std::vector<CheckWarning> out;
  for (auto& s : state_->shards) {
    auto w = s.check(fix, true);
    out.insert(out.end(), w.begin(), w.end());
  }
  return out;
}

CacheStats FanoutCache::stats(bool enable, bool reset) {
  CacheStats total;
  for (auto& s : state_->shards) {
    auto st = s.stats(enable, reset);
    total.hits += st.hits;
    total.misses += st.misses;
  }
  return total;
}

void FanoutCache::create_tag_index() {
  for (auto& s : state_->shards) s.create_tag_index();
}

void FanoutCache::drop_tag_index() {
  for (auto& s : state_->shards) s.drop_tag_index();
}

DiskValue FanoutCache::reset(std::string_view name, std::optional<DiskValue> value) {
  std::optional<DiskValue> first;
  for (auto& s : state_->shards) {
    auto v = until_done(s, [&](DiskCache& c) {
      c.reset(name, value);
      return std::size_t{0};
    });
    (void)v;
    if (!first) first = s.reset(name);
  }
  return *first;
}

std::vector<Transaction> FanoutCache::transact() {
  std::vector<Transaction> out;
  out.reserve(state_->shards.size());
  for (auto& s : state_->shards) out.push_back(s.transact(/*retry=*/true));
  return out;
}

void FanoutCache::flush() {
  for (auto& s : state_->shards) s.flush();
}

void FanoutCache::close() {
  for (auto& s : state_->shards) s.close();
  std::lock_guard lk(state_->subs_mu);
  state_->subs.clear();
}

DiskCache FanoutCache::cache(const std::string& name, DiskCacheOptions options) {
  if (name.empty() || name.find("..") != std::string::npos || name.front() == '/') {
    detail::throw_error<ValidationError>("cache: bad sub-cache name '" + name + "'");
  }
  std::lock_guard lk(state_->subs_mu);
  auto it = state_->subs.find(name);
  if (it != state_->subs.end()) return it->second;
  if (options.timeout == std::chrono::seconds(60)) options.clock = state_->options.clock;
  DiskCache c(state_->dir / "cache" / name, std::move(options));
  state_->subs.emplace(name, c);
  return c;
}

DiskValue FanoutCache::memoize_value(const Key& key, const MemoizeOptions& options,
                                     const std::function<DiskValue()>& compute) {
  return shard_for(key).memoize_value(key, options, compute);
}

}  // namespace dogpile
