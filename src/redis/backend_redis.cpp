// RedisBackendBase: the storage commands and the lock, the same for one server, a sentinel
// master and a cluster (the Client routes).
#include <algorithm>
#include <cctype>

#include "client.hpp"
#include "dogpile/backends/redis.hpp"
#include "dogpile/detail/backend_arguments.hpp"
#include "dogpile/error.hpp"
#include "lock.hpp"
#include "near_cache.hpp"

namespace dogpile {
namespace {

using redis_detail::Argv;
using redis_detail::Reply;
using redis_detail::Routed;

// Redis refuses bulk strings over proto-max-bulk-len (512 MB by default): say so before
// sending half a gigabyte.
constexpr std::size_t kMaxBulk = std::size_t{512} * 1024 * 1024;

void check_size(const std::string& backend, std::string_view key, std::string_view value) {
  if (value.size() > kMaxBulk || key.size() > kMaxBulk) {
    detail::throw_error<ValidationError>(
        backend + " backend: a " + std::to_string(std::max(key.size(), value.size())) + "-byte " +
        (key.size() > kMaxBulk ? "key" : "value") +
        " exceeds Redis's 512 MB limit per string; nothing was stored");
  }
}

// Runs a write of values up to `largest` bytes. A server that refuses a value over its
// proto-max-bulk-len closes the connection, so the client may see only "connection reset"
// (its error reply unread): say what probably happened.
template <class F>
void large_write(std::size_t largest, F&& write) {
  try {
    write();
  } catch (const ConnectionError& e) {
    if (largest < (std::size_t{1} << 20)) throw;
    detail::throw_error<ConnectionError>(
        std::string(e.what()) + " (the write carried a " + std::to_string(largest) +
        "-byte value; a server refuses values over its proto-max-bulk-len, 512 MB by default, "
        "and closes the connection)");
  }
}

bool valid_lock_prefix(std::string_view p) {
  // dogpile: ^[\w\-\.\:]{2,10}$
  if (p.size() < 2 || p.size() > 10) return false;
  for (const char ch : p) {
    const auto c = static_cast<unsigned char>(ch);
    if (!(std::isalnum(c) != 0 || c == '_' || c == '-' || c == '.' || c == ':')) return false;
  }
  return true;
}

// The prefixes the server tracks for a near cache limited to `prefixes`: each of them, and the
// lock keys under them (`lock_prefix` + p: a lock key's DEL wakes this process's waiters).
// Empty for no limit. @throws ValidationError for an empty prefix or two that overlap (one
// starts the other: Redis refuses them).
std::vector<std::string> tracked_prefixes(const char* backend,
                                          const std::vector<std::string>& prefixes,
                                          const std::string& lock_prefix) {
  std::vector<std::string> tracked;
  for (const auto& p : prefixes) {
    if (p.empty()) {
      detail::bad_argument(backend, "near_cache.prefixes",
                           "has an empty prefix (it would cover every key: leave `prefixes` "
                           "empty to cover them all)");
    }
    tracked.push_back(p);
  }
  for (const auto& p : prefixes) tracked.push_back(lock_prefix + p);
  for (std::size_t i = 0; i < tracked.size(); ++i) {
    for (std::size_t j = i + 1; j < tracked.size(); ++j) {
      if (tracked[i].starts_with(tracked[j]) || tracked[j].starts_with(tracked[i])) {
        const auto named = [&](std::size_t k) {
          return k < prefixes.size() ? "'" + tracked[k] + "'"
                                     : "'" + tracked[k] + "' (the lock keys of '" +
                                           prefixes[k - prefixes.size()] + "')";
        };
        detail::bad_argument(backend, "near_cache.prefixes",
                             "has overlapping prefixes " + named(i) + " and " + named(j) +
                                 " (Redis refuses them: keep the shorter one)");
      }
    }
  }
  return tracked;
}

}  // namespace

RedisBackendBase::RedisBackendBase(std::string name, std::shared_ptr<redis_detail::Client> client,
                                   Common common)
    : CacheBackend(std::move(name)), client_(std::move(client)), common_(std::move(common)) {
  const char* n = this->name().c_str();
  if (!common_.lock_prefix.empty() && !valid_lock_prefix(common_.lock_prefix)) {
    detail::bad_argument(n, "lock_prefix",
                         "must be 2 to 10 letters, digits or _-.: (dogpile's rule), got '" +
                             common_.lock_prefix + "'");
  }
  if (common_.lock_prefix.empty()) common_.lock_prefix = "_lock";
  if (common_.lock_timeout.count() <= 0) {
    detail::bad_argument(n, "lock_timeout", "must be positive (the lease, renewed while held)");
  }
  if (common_.redis_expiration_time && common_.redis_expiration_time->count() <= 0) {
    detail::bad_argument(n, "redis_expiration_time", "must be positive when given");
  }
  if (common_.distributed_lock) {
    notifier_ = std::make_shared<redis_detail::ReleaseNotifier>(client_);
  }
  const auto& nc = common_.near_cache;
  if (nc.max_bytes > 0) {
    if (nc.max_staleness.count() <= 0) {
      detail::bad_argument(n, "near_cache", "max_staleness must be positive");
    }
    near_ = std::make_shared<redis_detail::NearCaches>(
        client_, this->name() == "redis_cluster", nc.max_bytes,
        std::chrono::duration_cast<std::chrono::milliseconds>(nc.max_staleness), nc.prefixes,
        tracked_prefixes(n, nc.prefixes, common_.lock_prefix));
    if (notifier_) {
      // Tracking covers the lock keys too: the DEL (or expiry) of a lock key by any holder,
      // Python's included (it publishes no release notice), wakes this process's waiters.
      near_->set_invalidation_listener([n = notifier_](std::string_view key) { n->released(key); });
    }
  }
}

RedisBackendBase::~RedisBackendBase() = default;

std::string RedisBackendBase::lock_key(std::string_view key) const {
  return common_.lock_prefix + std::string(key);
}

RedisNearCacheStats RedisBackendBase::near_cache_stats() const {
  return near_ ? near_->stats() : RedisNearCacheStats{};
}

void RedisBackendBase::set_near_cache_fill_hook_for_testing(
    std::function<void(std::string_view)> hook) {
  if (near_) near_->set_fill_hook(std::move(hook));
}

bool RedisBackendBase::near_covers(std::string_view key) const noexcept {
  return near_ && near_->covers(key);
}

std::optional<std::string> RedisBackendBase::do_get(std::string_view key) {
  return near_covers(key) ? near_get(key) : server_get(key);
}

std::optional<std::string> RedisBackendBase::server_get(std::string_view key) {
  Reply r = client_->run(key, {"GET", std::string(key)});
  if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "GET", r);
  if (r.type != Reply::Type::string) return std::nullopt;
  return std::move(r.str);
}

std::optional<std::string> RedisBackendBase::near_get(std::string_view key) {
  redis_detail::NearCache& nc = near_->for_key(key);
  if (auto v = nc.lookup(key)) return v;
  return near_fill(nc, key, nullptr);
}

DecodableBytes RedisBackendBase::do_get_decodable(std::string_view key, const DecodedKind& kind) {
  if (!near_covers(key)) return DecodableBytes{nullptr, server_get(key), nullptr};
  redis_detail::NearCache& nc = near_->for_key(key);
  if (auto n = nc.lookup_node(key)) {
    // The decoded copy goes with its node: served under the same checks as the bytes.
    if (const DecodedValue* d = n->decoded(); d != nullptr && d->kind == kind) {
      // Shares the node's ownership: the copy lives as long as its node.
      return DecodableBytes{std::shared_ptr<const DecodedValue>(std::move(n), d), std::nullopt,
                            nullptr};
    }
    return DecodableBytes{nullptr, n->value, std::move(n)};
  }
  std::shared_ptr<redis_detail::NearCache::Node> node;
  auto value = near_fill(nc, key, &node);
  return DecodableBytes{nullptr, std::move(value), std::move(node)};
}

void RedisBackendBase::do_keep_decoded(const std::shared_ptr<void>& slot,
                                       std::shared_ptr<const DecodedValue> value) noexcept {
  // Every slot this backend hands out is a NearCache::Node (do_get_decodable).
  static_cast<redis_detail::NearNode*>(slot.get())->set_decoded(std::move(value));
}

std::optional<std::string> RedisBackendBase::near_fill(
    redis_detail::NearCache& nc, std::string_view key,
    std::shared_ptr<redis_detail::NearNode>* installed) {
  // The token exists before the GET can execute: a write executed after it marks it dirty.
  const std::uint64_t token = nc.begin_fill(key);
  struct Abandon {
    redis_detail::NearCache* nc;
    std::uint64_t token;
    bool armed = true;
    ~Abandon() {
      if (armed) nc->abandon_fill(token);
    }
  } guard{&nc, token};
  // One round trip: the value and its server TTL (honoured locally, since expiry messages
  // come late), pipelined. Not a transaction, on purpose: in a cluster the client may rerun a
  // redirected or orphaned command on its own, which would split a MULTI from its EXEC (and
  // leave a pooled connection inside MULTI). None is needed: a write between the GET and the
  // PTTL executed after the token existed, so it dirties it or evicts the installed entry.
  const std::string k(key);
  auto replies = client_->run_many({{k, {"GET", k}}, {k, {"PTTL", k}}});
  if (replies[0].is_error()) {
    redis_detail::throw_reply_error(client_->describe(), "GET", replies[0]);
  }
  std::optional<std::string> value;
  if (replies[0].type == Reply::Type::string) value = std::move(replies[0].str);
  const long long pttl = replies[1].type == Reply::Type::integer ? replies[1].integer : -1;
  guard.armed = false;
  auto node = nc.end_fill(key, token, value, pttl);
  if (installed != nullptr) *installed = std::move(node);
  return value;
}

void RedisBackendBase::near_forget(std::string_view key) {
  if (near_) near_->invalidate_local(key);
}

void RedisBackendBase::do_set(std::string_view key, std::string_view value) {
  check_size(name(), key, value);
  Argv argv{"SET", std::string(key), std::string(value)};
  if (common_.redis_expiration_time) {
    argv.emplace_back("PX");
    argv.push_back(std::to_string(common_.redis_expiration_time->count()));
  }
  near_forget(key);  // also when the write fails after the server ran it
  large_write(value.size(), [&] {
    const Reply r = client_->run(key, argv);
    near_forget(key);
    if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "SET", r);
  });
}

void RedisBackendBase::do_erase(std::string_view key) {
  near_forget(key);
  const Reply r = client_->run(key, {"DEL", std::string(key)});
  near_forget(key);
  if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "DEL", r);
}

std::vector<std::optional<std::string>> RedisBackendBase::near_get_multi(
    std::span<const std::string> keys) {
  // Keys outside the near cache's prefixes are read as without one: all of them in one call,
  // or, in a batch of both kinds, in a call of their own (a second round trip).
  const auto outside = std::count_if(keys.begin(), keys.end(),
                                     [&](const std::string& k) { return !near_->covers(k); });
  if (outside == static_cast<std::ptrdiff_t>(keys.size())) return server_get_multi(keys);
  if (outside > 0) {
    std::vector<std::string> in_keys;
    std::vector<std::string> out_keys;
    for (const auto& k : keys) (near_->covers(k) ? in_keys : out_keys).push_back(k);
    auto in_values = near_get_multi(in_keys);
    auto out_values = server_get_multi(out_keys);
    std::vector<std::optional<std::string>> out(keys.size());
    std::size_t a = 0;
    std::size_t b = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      out[i] = near_->covers(keys[i]) ? std::move(in_values[a++]) : std::move(out_values[b++]);
    }
    return out;
  }
  std::vector<std::optional<std::string>> out(keys.size());
  std::vector<std::size_t> miss;
  std::vector<redis_detail::NearCache*> ncs;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto& nc = near_->for_key(keys[i]);
    if (auto v = nc.lookup(keys[i])) {
      out[i] = std::move(v);
    } else {
      miss.push_back(i);
      ncs.push_back(&nc);
    }
  }
  if (miss.empty()) return out;
  // As near_get, per key: every token exists before the reads are sent.
  struct Abandon {
    std::vector<redis_detail::NearCache*>& ncs;
    std::vector<std::uint64_t> tokens;
    bool armed = true;
    ~Abandon() {
      if (!armed) return;
      for (std::size_t j = 0; j < tokens.size(); ++j) ncs[j]->abandon_fill(tokens[j]);
    }
  } guard{ncs, {}};
  std::vector<std::string> mkeys;
  mkeys.reserve(miss.size());
  for (std::size_t j = 0; j < miss.size(); ++j) {
    mkeys.push_back(keys[miss[j]]);
    guard.tokens.push_back(ncs[j]->begin_fill(mkeys.back()));
  }
  // One round trip: an MGET per slot group and a PTTL per key, pipelined (per node). Not a
  // transaction: a write between a key's GET and its PTTL came after its token, so it refuses
  // the install.
  const auto groups = redis_detail::group_by_slot(*client_, mkeys);
  std::vector<Routed> cmds;
  cmds.reserve(groups.size() + mkeys.size());
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const auto g = groups.group(gi);
    Argv argv{"MGET"};
    argv.reserve(g.size() + 1);
    for (auto j : g) argv.push_back(mkeys[j]);
    cmds.push_back({mkeys[g.front()], std::move(argv)});
  }
  for (const auto& k : mkeys) cmds.push_back({k, Argv{"PTTL", k}});
  auto replies = client_->run_many(cmds);
  for (const auto& r : replies) {
    if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "MGET", r);
  }
  std::vector<std::optional<std::string>> values(mkeys.size());
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    Reply& r = replies[gi];
    const auto g = groups.group(gi);
    for (std::size_t j = 0; j < g.size() && j < r.elements.size(); ++j) {
      Reply& e = r.elements[j];
      if (e.type == Reply::Type::string) values[g[j]] = std::move(e.str);
    }
  }
  guard.armed = false;
  for (std::size_t j = 0; j < mkeys.size(); ++j) {
    const Reply& t = replies[groups.size() + j];
    const long long pttl = t.type == Reply::Type::integer ? t.integer : -1;
    ncs[j]->end_fill(mkeys[j], guard.tokens[j], values[j], pttl);
    out[miss[j]] = std::move(values[j]);
  }
  return out;
}

std::vector<std::optional<std::string>> RedisBackendBase::do_get_multi(
    std::span<const std::string> keys) {
  return near_ ? near_get_multi(keys) : server_get_multi(keys);
}

std::vector<std::optional<std::string>> RedisBackendBase::server_get_multi(
    std::span<const std::string> keys) {
  if (!client_->sharded()) {
    // One master: one MGET of the caller's keys as they are (no copy, no grouping), each
    // value moved out of the reply into its slot.
    Reply r = client_->run_keys("MGET", keys);
    if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "MGET", r);
    std::vector<std::optional<std::string>> out(keys.size());
    const std::size_t n = std::min(keys.size(), r.elements.size());
    for (std::size_t i = 0; i < n; ++i) {
      Reply& e = r.elements[i];
      if (e.type == Reply::Type::string) out[i].emplace(std::move(e.str));
    }
    return out;
  }
  // A cluster: one MGET per hash slot, every node's share sent before any reply is read.
  const auto groups = redis_detail::group_by_slot(*client_, keys);
  auto replies = client_->run_key_groups("MGET", keys, groups);
  std::vector<std::optional<std::string>> out(keys.size());
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    Reply& r = replies[gi];
    if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "MGET", r);
    const auto g = groups.group(gi);
    const std::size_t m = std::min(g.size(), r.elements.size());
    for (std::size_t j = 0; j < m; ++j) {
      Reply& e = r.elements[j];
      if (e.type == Reply::Type::string) out[g[j]].emplace(std::move(e.str));
    }
  }
  return out;
}

void RedisBackendBase::do_set_multi(std::span<const BytesItem> items) {
  for (const auto& [k, v] : items) check_size(name(), k, v);
  std::vector<Routed> cmds;
  if (common_.redis_expiration_time) {
    const std::string px = std::to_string(common_.redis_expiration_time->count());
    cmds.reserve(items.size());
    for (const auto& [k, v] : items) cmds.push_back({k, Argv{"SET", k, v, "PX", px}});
  } else {
    std::vector<std::string> keys;
    keys.reserve(items.size());
    for (const auto& it : items) keys.push_back(it.first);
    const auto groups = redis_detail::group_by_slot(*client_, keys);
    for (std::size_t gi = 0; gi < groups.size(); ++gi) {
      const auto g = groups.group(gi);
      Argv argv{"MSET"};
      argv.reserve(2 * g.size() + 1);
      for (auto i : g) {
        argv.push_back(items[i].first);
        argv.push_back(items[i].second);
      }
      cmds.push_back({items[g.front()].first, std::move(argv)});
    }
  }
  std::size_t largest = 0;
  for (const auto& it : items) largest = std::max(largest, it.second.size());
  large_write(largest, [&] {
    const auto replies = client_->run_many(cmds);
    for (const auto& it : items) near_forget(it.first);
    for (const auto& r : replies) {
      if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "MSET/SET", r);
    }
  });
}

void RedisBackendBase::do_erase_multi(std::span<const std::string> keys) {
  if (!client_->sharded()) {
    for (const auto& k : keys) near_forget(k);  // also when the DEL fails after the server ran it
    const Reply r = client_->run_keys("DEL", keys);
    for (const auto& k : keys) near_forget(k);
    if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "DEL", r);
    return;
  }
  const auto replies =
      client_->run_key_groups("DEL", keys, redis_detail::group_by_slot(*client_, keys));
  for (const auto& k : keys) near_forget(k);
  for (const auto& r : replies) {
    if (r.is_error()) redis_detail::throw_reply_error(client_->describe(), "DEL", r);
  }
}

std::shared_ptr<CacheMutex> RedisBackendBase::do_get_mutex(std::string_view key) {
  if (!common_.distributed_lock) return nullptr;
  LeaseLockOptions lo;
  lo.lease = common_.lock_timeout;
  lo.lock_sleep = common_.lock_sleep;
  lo.initial_backoff =
      std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1), common_.lock_sleep);
  lo.renew = true;
  if (common_.lock_blocking_timeout) lo.blocking_timeout = *common_.lock_blocking_timeout;
  std::function<void()> on_acquired;
  if (near_) {
    // The previous holder's value may have reached the server just before its release, its
    // invalidation not yet this process's L1: the read that follows an acquisition must come
    // from the server, or a waiter would create a second time.
    // Weak: a lock handle may outlive the backend.
    on_acquired = [w = std::weak_ptr<redis_detail::NearCaches>(near_), k = std::string(key)] {
      if (auto n = w.lock()) n->invalidate_local(k);
    };
  }
  return redis_detail::make_redis_lock(client_, notifier_, lock_key(key), lo,
                                       std::move(on_acquired));
}

}  // namespace dogpile
