#include "near_cache.hpp"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <random>

namespace dogpile::redis_detail {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(50);
constexpr const char* kInvalidate = "__redis__:invalidate";
// Bookkeeping per L1 entry (map node, list hooks, the Entry itself), charged to max_bytes.
constexpr std::size_t kEntryOverhead = 96;
// The decoded copy of an entry may cost this much more than its bytes (a std::string's header
// and the shared_ptr control blocks of a short value).
constexpr std::size_t kDecodedSlack = 96;

std::string random_channel() {
  std::random_device rd;
  std::mt19937_64 g((std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(::getpid()));
  static const char* hex = "0123456789abcdef";
  std::string s = "dogpile:near-fence:";
  for (int i = 0; i < 16; ++i) s += hex[g() & 15];
  return s;
}

}  // namespace

NearCache::NearCache(std::function<Endpoint()> where, ConnectSettings settings,
                     std::size_t max_bytes, milliseconds max_staleness,
                     const std::atomic<std::uint64_t>* generation,
                     std::function<void(const Endpoint&)> not_master, bool cluster_node,
                     std::vector<std::string> prefixes)
    : where_(std::move(where)),
      settings_(std::move(settings)),
      max_staleness_ns_(
          std::chrono::duration_cast<std::chrono::nanoseconds>(max_staleness).count()),
      // A few fences per staleness window, so that a healthy link always has a recent proof.
      fence_interval_(
          std::clamp<milliseconds>(max_staleness / 5, milliseconds(5), milliseconds(200))),
      fence_channel_(random_channel()),
      generation_(generation),
      not_master_(std::move(not_master)),
      cluster_node_(cluster_node),
      prefixes_(std::move(prefixes)),
      pid_(::getpid()) {
  l1_.configure({detail::kUnbounded, max_bytes}, MemoryEviction::tiny_lfu);
  thread_ = std::make_unique<std::thread>([this] { loop(); });
}

NearCache::~NearCache() {
  if (pid_ != ::getpid()) {
    (void)thread_.release();  // the parent's thread does not exist in a forked child
    return;
  }
  {
    std::lock_guard lk(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_->join();
}

std::int64_t NearCache::now_upper_ns() noexcept {
  // CLOCK_MONOTONIC_COARSE is CLOCK_MONOTONIC (steady_clock's) as of the last tick: adding its
  // resolution bounds the exact time from above, so a check against it can only be stricter.
  static const std::int64_t tick = [] {
    timespec r{};
    if (::clock_getres(CLOCK_MONOTONIC_COARSE, &r) != 0) return std::int64_t{-1};
    return std::int64_t{r.tv_sec} * 1'000'000'000 + r.tv_nsec;
  }();
  timespec t{};
  if (tick < 0 || ::clock_gettime(CLOCK_MONOTONIC_COARSE, &t) != 0) return now_ns();
  return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec + tick;
}

std::shared_ptr<NearCache::Node> NearCache::lookup_node(std::string_view key) {
  if (!ready_.load(std::memory_order_acquire)) return nullptr;
  const std::int64_t proof = last_proof_ns_.load(std::memory_order_acquire);
  const std::int64_t now = now_upper_ns();
  // No recent proof that every earlier write has reached us: do not serve (bounded staleness).
  if (proof == 0 || now - proof > max_staleness_ns_) return nullptr;
  // The client follows a new master (failover, slot move): what we learnt is about the old one.
  if (generation() != connected_gen_.load(std::memory_order_acquire)) return nullptr;
  auto e = l1_.get({key, detail::hash_key(key)});
  if (!e) return nullptr;
  // Server-side expiry reaches us late (active expiry is sampled): honour the TTL locally.
  if ((*e)->expires_ns != 0 && now >= (*e)->expires_ns) {
    // Counted by l1_ as a hit: L1 served none (l1_hits = l1_.hits() - expired_).
    expired_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  return std::move(*e);
}

std::optional<std::string> NearCache::lookup(std::string_view key) {
  auto n = lookup_node(key);
  if (!n) return std::nullopt;
  return n->value;
}

std::uint64_t NearCache::begin_fill(std::string_view key) {
  std::lock_guard lk(mu_);
  if (!ready_.load()) return 0;
  const std::uint64_t gen = generation();
  if (gen != connected_gen_.load()) return 0;
  const std::uint64_t t = ++next_token_;
  pending_.emplace(t, Pending{std::string(key), epoch_.load(), false, now_ns(), gen});
  return t;
}

std::shared_ptr<NearCache::Node> NearCache::end_fill(std::string_view key, std::uint64_t token,
                                                     const std::optional<std::string>& value,
                                                     long long pttl_ms) {
  std::int64_t started_ns = 0;
  if (token == 0) return nullptr;
  std::function<void(std::string_view)> hook;
  {
    std::lock_guard lk(mu_);
    hook = hook_;
  }
  if (hook) hook(key);
  std::lock_guard lk(mu_);
  auto it = pending_.find(token);
  if (it == pending_.end()) return nullptr;
  started_ns = it->second.started_ns;
  // Same generation at both ends: no failover or slot move was noticed while the GET ran (a
  // MOVED/ASK followed by the fill itself bumps it), so the value came from the tracked node.
  const bool clean = !it->second.dirty && it->second.epoch == epoch_.load() && ready_.load() &&
                     it->second.generation == connected_gen_.load() &&
                     it->second.generation == generation();
  pending_.erase(it);
  if (!clean) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (!value) return nullptr;  // misses are not cached
  // -1: no TTL. 0 (under a millisecond left) or -2 (gone): not worth caching. Otherwise the
  // TTL counts from the fill's start, which is before the server measured it: L1 never
  // outlives the server's copy.
  if (pttl_ms == 0 || pttl_ms < -1) return nullptr;
  // Each entry is charged for its bytes and, as much again (plus a small object's worth), for
  // the decoded copy a region may attach (NearNode::set_decoded refuses a larger one, such as
  // a payload zlib inflates): max_bytes bounds both.
  const std::size_t budget = value->size() + kDecodedSlack;
  auto node =
      std::make_shared<Node>(*value, pttl_ms > 0 ? started_ns + pttl_ms * 1'000'000 : 0, budget);
  const std::size_t weight = key.size() + value->size() + budget + kEntryOverhead;
  l1_.set({key, detail::hash_key(key)}, node, weight);
  fills_.fetch_add(1, std::memory_order_relaxed);
  return node;
}

void NearCache::abandon_fill(std::uint64_t token) {
  if (token == 0) return;
  std::lock_guard lk(mu_);
  pending_.erase(token);
}

void NearCache::invalidate_local(std::string_view key) {
  std::lock_guard lk(mu_);
  invalidate_key(key);
}

void NearCache::invalidate_key(std::string_view key) {
  l1_.erase({key, detail::hash_key(key)});
  for (auto& [t, p] : pending_) {
    if (p.key == key) p.dirty = true;
  }
}

void NearCache::flush(const std::string& reason) {
  std::lock_guard lk(mu_);
  // Not ready until the reader re-establishes tracking; the new epoch refuses fills in flight.
  ready_.store(false, std::memory_order_release);
  last_proof_ns_.store(0, std::memory_order_release);
  epoch_.fetch_add(1);
  l1_.clear();
  flushes_.fetch_add(1, std::memory_order_relaxed);
  last_flush_ns_.store(now_ns());
  last_flush_reason_ = reason;
}

RedisNearCacheStats NearCache::stats() {
  RedisNearCacheStats s;
  s.enabled = true;
  s.tracking = ready_.load();
  const std::uint64_t expired = expired_.load();  // first: each counts after its l1_ hit
  const std::uint64_t found = l1_.hits();
  s.l1_hits = found > expired ? found - expired : 0;
  s.fills = fills_.load();
  s.refused_fills = refused_.load();
  s.invalidations = invalidations_.load();
  s.flushes = flushes_.load();
  const auto u = l1_.usage();
  s.entries = u.entries;
  s.bytes = u.bytes;
  std::lock_guard lk(mu_);
  s.last_flush_reason = last_flush_reason_;
  return s;
}

void NearCache::set_fill_hook(std::function<void(std::string_view)> hook) {
  std::lock_guard lk(mu_);
  hook_ = std::move(hook);
}

void NearCache::set_invalidation_listener(std::function<void(std::string_view)> listener) {
  std::lock_guard lk(mu_);
  listener_ = std::move(listener);
}

void NearCache::connect_once() {
  // 1. I: its id, then SUBSCRIBE, and wait for both confirmations: messages generated before
  //    the subscription would be dropped by the server.
  // The generation first: a change after it is noticed by the loop, and we connect again.
  const std::uint64_t gen = generation();
  endpoint_ = where_();
  sub_ = std::make_unique<Connection>(endpoint_, settings_);
  const Reply id = sub_->command({"CLIENT", "ID"});
  if (id.type != Reply::Type::integer) {
    throw ConnectionFailure(Failure::protocol, "CLIENT ID failed: " + id.str);
  }
  sub_->send({"SUBSCRIBE", kInvalidate, fence_channel_});
  const auto deadline = Clock::now() + settings_.socket_timeout;
  int confirmed = 0;
  while (confirmed < 2) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) throw ConnectionFailure(Failure::timeout, "SUBSCRIBE not confirmed");
    auto r = sub_->read_push(left);
    if (r && r->type == Reply::Type::array && !r->elements.empty() &&
        r->elements[0].str == "subscribe") {
      ++confirmed;
    }
  }
  // 2. A: BCAST tracking of every key (or of the prefixes), redirected to I (no per-key
  // server memory).
  anchor_ = std::make_unique<Connection>(endpoint_, settings_);
  Argv tracking{"CLIENT", "TRACKING", "on", "REDIRECT", std::to_string(id.integer), "BCAST"};
  for (const auto& p : prefixes_) {
    tracking.emplace_back("PREFIX");
    tracking.push_back(p);
  }
  const Reply t = anchor_->command(tracking);
  if (t.is_error()) {
    throw ConnectionFailure(Failure::protocol, "CLIENT TRACKING refused: " + t.str);
  }
  fence_inflight_ = false;
  next_fence_ = Clock::now();
  my_slots_.clear();
  {
    std::lock_guard lk(mu_);
    epoch_.fetch_add(1);
    l1_.clear();
    connected_gen_.store(gen, std::memory_order_release);
    ready_.store(true, std::memory_order_release);
  }
}

void NearCache::handle(const Reply& r) {
  if (r.type != Reply::Type::array || r.elements.size() < 3 || r.elements[0].str != "message") {
    return;
  }
  const std::string& channel = r.elements[1].str;
  const Reply& payload = r.elements[2];
  if (channel == kInvalidate) {
    if (payload.is_nil()) {
      flush("the server flushed its data (FLUSHALL/FLUSHDB: a nil invalidation)");
      // Tracking itself is intact: serve again after the next fence proves freshness.
      std::lock_guard lk(mu_);
      ready_.store(true, std::memory_order_release);
      return;
    }
    std::function<void(std::string_view)> listener;
    {
      std::lock_guard lk(mu_);
      if (payload.type == Reply::Type::array) {
        for (const auto& k : payload.elements) invalidate_key(k.str);
        invalidations_.fetch_add(payload.elements.size(), std::memory_order_relaxed);
      } else {
        invalidate_key(payload.str);
        invalidations_.fetch_add(1, std::memory_order_relaxed);
      }
      listener = listener_;
    }
    // After L1 dropped the keys: a waiter woken for a lock key's DEL reads past the old value.
    if (listener) {
      if (payload.type == Reply::Type::array) {
        for (const auto& k : payload.elements) listener(k.str);
      } else {
        listener(payload.str);
      }
    }
  } else if (channel == fence_channel_) {
    // A fence proves freshness only about the master the client still routes to.
    if (fence_inflight_ && payload.str == std::to_string(fence_seq_) &&
        generation() == connected_gen_.load()) {
      fence_inflight_ = false;
      // A cluster node that lost a slot without MIGRATE (a forced SETSLOT elsewhere, a higher
      // config epoch learnt by gossip) deletes the slot's keys without an invalidation on
      // Redis 7.0 (fixed in 7.2). The fence proves nothing then: the slots must be the ones
      // seen before it was sent.
      if (cluster_node_) {
        std::string now = own_slots();
        if (now != my_slots_) {
          slots_changed(std::move(now));
          return;
        }
      }
      // Every write executed before the fence was sent has been applied above.
      last_proof_ns_.store(fence_sent_ns_, std::memory_order_release);
    }
  }
}

std::string NearCache::own_slots() {
  const Reply r = anchor_->command({"CLUSTER", "NODES"});
  if (r.type != Reply::Type::string) {
    throw ConnectionFailure(Failure::protocol, "CLUSTER NODES: " + r.str);
  }
  // One line per node: <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link>
  // <slot> ...; ours has `myself` among its flags. Migration marks ([slot->-id]) are left out:
  // a MIGRATE invalidates what it moves.
  std::string_view text = r.str;
  while (!text.empty()) {
    const auto eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    std::string out;
    bool mine = false;
    int field = 0;
    while (!line.empty()) {
      const auto sp = line.find(' ');
      std::string_view f = line.substr(0, sp);
      line = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
      if (field == 2) mine = f.find("myself") != std::string_view::npos;
      if (field == 2 && !mine) break;
      if (field >= 8 && !f.empty() && f.front() != '[') {
        out.append(f);
        out.push_back(' ');
      }
      ++field;
    }
    if (mine) return out.empty() ? std::string("-") : out;  // "-": serves no slot
  }
  throw ConnectionFailure(Failure::protocol, "CLUSTER NODES names no `myself` node");
}

void NearCache::slots_changed(std::string now) {
  const std::string was = std::move(my_slots_);
  my_slots_ = std::move(now);
  flush(endpoint_.str() + " serves other hash slots now (" + was + "-> " + my_slots_ +
        "): a slot lost without MIGRATE loses its keys without an invalidation on Redis 7.0");
  {
    // Tracking itself is intact: serve again after the next fence proves freshness.
    std::lock_guard lk(mu_);
    ready_.store(true, std::memory_order_release);
  }
  if (not_master_) not_master_(endpoint_);  // the client reloads its slot map
}

void NearCache::loop() {
  auto backoff = std::chrono::milliseconds(10);
  const auto fence_timeout = std::chrono::nanoseconds(std::max<std::int64_t>(
      max_staleness_ns_,
      std::chrono::duration_cast<std::chrono::nanoseconds>(settings_.socket_timeout).count()));
  while (!stop_.load()) {
    try {
      if (!sub_) {
        connect_once();
        backoff = std::chrono::milliseconds(10);
      }
      if (generation() != connected_gen_.load()) {
        throw ConnectionFailure(Failure::closed,
                                "the client follows a new master (a failover or a slot map "
                                "change): tracking is re-established there");
      }
      auto now = Clock::now();
      if (fence_inflight_ && std::chrono::nanoseconds(now_ns() - fence_sent_ns_) > fence_timeout) {
        throw ConnectionFailure(Failure::timeout, "no heartbeat fence came back in time");
      }
      if (!fence_inflight_ && now >= next_fence_) {
        // An old master that still answers (demoted to a replica, the client not told yet)
        // must not keep proving freshness: its fences say nothing of the writes the new master
        // takes. ROLE before (not pipelined with) the fence, which must travel alone.
        const Reply role = anchor_->command({"ROLE"});
        if (role.type != Reply::Type::array || role.elements.empty() ||
            role.elements[0].str != "master") {
          if (not_master_) not_master_(endpoint_);
          throw ConnectionFailure(Failure::protocol,
                                  endpoint_.str() + " is no longer a master (ROLE: " +
                                      (role.elements.empty() ? role.str : role.elements[0].str) +
                                      ")");
        }
        if (cluster_node_) {
          std::string now_slots = own_slots();
          if (!my_slots_.empty() && now_slots != my_slots_) {
            slots_changed(std::move(now_slots));
          } else {
            my_slots_ = std::move(now_slots);
          }
        }
        const std::int64_t sent = now_ns();
        const Reply p = anchor_->command({"PUBLISH", fence_channel_, std::to_string(++fence_seq_)});
        if (p.is_error()) throw ConnectionFailure(Failure::protocol, "PUBLISH: " + p.str);
        fence_sent_ns_ = sent;
        fence_inflight_ = true;
        next_fence_ = now + fence_interval_;
        now = Clock::now();
      }
      auto wait = kPoll;
      if (!fence_inflight_) {
        wait = std::clamp(std::chrono::duration_cast<milliseconds>(next_fence_ - now),
                          milliseconds(1), kPoll);
      }
      if (auto r = sub_->read_push(wait)) handle(*r);
    } catch (const std::exception& e) {
      const bool was_ready = ready_.load();
      // Lost I or A (killed, output-buffer limit, restart, silent partition): messages may have
      // been lost, so nothing in L1 can be trusted any more.
      sub_.reset();
      anchor_.reset();
      // (Not ready: nothing was installed since the last flush; keep that reason.)
      if (was_ready) flush(std::string("lost the invalidation connection: ") + e.what());
      std::unique_lock lk(stop_mu_);
      stop_cv_.wait_for(lk, backoff, [&] { return stop_.load(); });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
  }
}

NearCaches::NearCaches(std::shared_ptr<Client> client, bool per_node, std::size_t max_bytes,
                       milliseconds max_staleness, std::vector<std::string> prefixes,
                       std::vector<std::string> tracked)
    : client_(std::move(client)),
      max_bytes_(max_bytes),
      max_staleness_(max_staleness),
      prefixes_(std::move(prefixes)),
      tracked_(std::move(tracked)) {
  if (!per_node) {
    single_ = make([c = client_] { return c->subscribe_endpoint(); }, max_bytes, false);
  }
}

std::unique_ptr<NearCache> NearCaches::make(std::function<Endpoint()> where, std::size_t max_bytes,
                                            bool cluster_node) {
  // The client outlives us (the backend holds both, and destroys us first).
  Client* c = client_.get();
  return std::make_unique<NearCache>(
      std::move(where), client_->settings(), max_bytes, max_staleness_, c->topology_counter(),
      [c](const Endpoint& ep) { c->not_a_master(ep); }, cluster_node, tracked_);
}

bool NearCaches::covers(std::string_view key) const noexcept {
  if (prefixes_.empty()) return true;
  return std::any_of(prefixes_.begin(), prefixes_.end(),
                     [key](const std::string& p) { return key.starts_with(p); });
}

NearCache& NearCaches::for_key(std::string_view key) {
  if (single_) return *single_;
  const Endpoint ep = client_->endpoint_of(key);
  const std::string node = ep.str();
  std::size_t budget = 0;
  {
    std::shared_lock lk(m_);
    if (auto it = nodes_.find(node); it != nodes_.end()) return *it->second;
    budget = node_bytes_;
  }
  // Split between the masters serving slots when the first is made (asked outside the lock:
  // it may load the slot map).
  if (budget == 0) budget = std::max<std::size_t>(max_bytes_ / client_->master_count(), 1);
  std::unique_lock lk(m_);
  if (auto it = nodes_.find(node); it != nodes_.end()) return *it->second;
  if (node_bytes_ == 0) node_bytes_ = budget;
  auto nc = make([ep] { return ep; }, node_bytes_, true);
  if (hook_) nc->set_fill_hook(hook_);
  if (listener_) nc->set_invalidation_listener(listener_);
  return *nodes_.emplace(node, std::move(nc)).first->second;
}

void NearCaches::invalidate_local(std::string_view key) {
  if (single_) return single_->invalidate_local(key);
  std::shared_lock lk(m_);
  for (auto& [n, nc] : nodes_) nc->invalidate_local(key);
}

RedisNearCacheStats NearCaches::stats() {
  if (single_) return single_->stats();
  RedisNearCacheStats out;
  out.enabled = true;
  out.tracking = true;
  std::int64_t latest = 0;
  std::shared_lock lk(m_);
  for (auto& [n, nc] : nodes_) {
    const auto s = nc->stats();
    out.tracking = out.tracking && s.tracking;
    out.l1_hits += s.l1_hits;
    out.fills += s.fills;
    out.refused_fills += s.refused_fills;
    out.invalidations += s.invalidations;
    out.flushes += s.flushes;
    out.entries += s.entries;
    out.bytes += s.bytes;
    if (!s.last_flush_reason.empty() && nc->last_flush_ns() >= latest) {
      latest = nc->last_flush_ns();
      out.last_flush_reason = n + ": " + s.last_flush_reason;
    }
  }
  return out;
}

void NearCaches::set_fill_hook(std::function<void(std::string_view)> hook) {
  if (single_) return single_->set_fill_hook(std::move(hook));
  std::unique_lock lk(m_);
  hook_ = hook;
  for (auto& [n, nc] : nodes_) nc->set_fill_hook(hook);
}

void NearCaches::set_invalidation_listener(std::function<void(std::string_view)> listener) {
  if (single_) return single_->set_invalidation_listener(std::move(listener));
  std::unique_lock lk(m_);
  listener_ = listener;
  for (auto& [n, nc] : nodes_) nc->set_invalidation_listener(listener);
}

}  // namespace dogpile::redis_detail
