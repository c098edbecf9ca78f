// Redis Cluster routing: the slot map from CLUSTER SLOTS, one pool per node, MOVED (the slot has
// a new owner: update the map), ASK (one command goes to the importing node after ASKING),
// TRYAGAIN / CLUSTERDOWN (retried with backoff). Multi-key commands arrive here already split
// by slot (the backend does that), so no CROSSSLOT error can reach a user.
#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>

#include "client.hpp"
#include "dogpile/error.hpp"

namespace dogpile::redis_detail {
namespace {

constexpr int kSlots = 16384;
constexpr int kMaxRedirects = 8;  // docs/backends.md promises 8

}  // namespace

// std::stoi would let a hostile node's "MOVED 1 h:x" escape as std::invalid_argument.
Endpoint redirect_target(std::string_view s) {
  const auto sp = s.rfind(' ');
  const auto colon = s.rfind(':');
  int port = 0;
  bool ok = sp != std::string_view::npos && colon != std::string_view::npos && colon > sp;
  if (ok) {
    const char* end = s.data() + s.size();
    const auto [p, ec] = std::from_chars(s.data() + colon + 1, end, port);
    ok = ec == std::errc() && p == end && port >= 1 && port <= 65535;
  }
  if (!ok) {
    throw ConnectionFailure(Failure::closed,
                            "unreadable cluster redirection: " + std::string(s.substr(0, 200)));
  }
  Endpoint ep;
  ep.host = std::string(s.substr(sp + 1, colon - sp - 1));
  ep.port = port;
  return ep;
}

namespace {

class ClusterClient final : public Client {
 public:
  ClusterClient(std::vector<Endpoint> startup, ConnectSettings s, std::size_t pool_size)
      : startup_(std::move(startup)), settings_(std::move(s)), pool_size_(pool_size) {
    if (startup_.empty()) {
      detail::throw_error<ValidationError>(
          "redis_cluster backend: give 'url' or 'startup_nodes' (at least one node)");
    }
    slots_.fill(-1);
  }

  [[nodiscard]] int slot_of(std::string_view key) const override { return key_slot(key); }
  [[nodiscard]] bool sharded() const override { return true; }

  Reply run(std::string_view key, const Argv& argv) override { return run_at(key_slot(key), argv); }

  std::vector<Reply> run_many(const std::vector<Routed>& cmds) override {
    struct Batch {
      const std::vector<Routed>& cmds;
      [[nodiscard]] std::size_t size() const { return cmds.size(); }
      [[nodiscard]] int slot(std::size_t i) const { return key_slot(cmds[i].key); }
      [[nodiscard]] std::string_view key(std::size_t i) const { return cmds[i].key; }
      [[nodiscard]] std::size_t args(std::size_t i) const { return cmds[i].argv.size(); }
      void append(Connection& c, std::size_t i) const { c.append(cmds[i].argv); }
      [[nodiscard]] const Argv& argv(std::size_t i) const { return cmds[i].argv; }
    };
    return run_batch(Batch{cmds});
  }

  // The keys go from the caller's strings straight into each node's output buffer: no command
  // object per slot, no key copied (a get_multi of 100 keys is ~100 single-slot MGETs).
  std::vector<Reply> run_key_groups(std::string_view name, std::span<const std::string> keys,
                                    const KeyGroups& groups) override {
    struct Batch {
      std::string_view name;
      std::span<const std::string> keys;
      const KeyGroups& groups;
      [[nodiscard]] std::size_t size() const { return groups.size(); }
      [[nodiscard]] int slot(std::size_t g) const { return groups.slot[g]; }
      [[nodiscard]] std::string_view key(std::size_t g) const {
        return keys[groups.group(g).front()];
      }
      [[nodiscard]] std::size_t args(std::size_t g) const { return groups.group(g).size() + 1; }
      void append(Connection& c, std::size_t g) const {
        c.append_keys(name, keys, groups.group(g));
      }
      // Only for a command rerouted one by one (a redirection, a node gone).
      [[nodiscard]] Argv argv(std::size_t g) const {
        Argv a{std::string(name)};
        for (const auto i : groups.group(g)) a.push_back(keys[i]);
        return a;
      }
    };
    return run_batch(Batch{name, keys, groups});
  }

  Endpoint subscribe_endpoint() override { return pool_for_slot(0)->endpoint(); }
  Endpoint endpoint_of(std::string_view key) override {
    try {
      return pool_for_slot(key_slot(key))->endpoint();
    } catch (const ConnectionFailure& e) {
      throw_failure(e);
    }
  }
  std::size_t master_count() override {
    pool_for_slot(0);  // the map loaded
    std::shared_lock lk(m_);
    std::vector<bool> seen(nodes_.size());
    std::size_t n = 0;
    for (const int i : slots_) {
      if (i >= 0 && !seen[static_cast<std::size_t>(i)]) {
        seen[static_cast<std::size_t>(i)] = true;
        ++n;
      }
    }
    return std::max<std::size_t>(n, 1);
  }
  [[nodiscard]] std::uint64_t topology_generation() const override { return topo_gen_.load(); }
  [[nodiscard]] const std::atomic<std::uint64_t>* topology_counter() const override {
    return &topo_gen_;
  }
  // A master turned replica (a failover): the new owner's slots are learnt now, not at the
  // next MOVED.
  void not_a_master(const Endpoint& /*ep*/) override {
    try {
      refresh(false);
    } catch (const ConnectionFailure&) {  // the next call asks again
    }
  }
  [[nodiscard]] const ConnectSettings& settings() const override { return settings_; }
  [[nodiscard]] std::string describe() const override {
    return "redis cluster via " + startup_.front().str();
  }

 private:
  // One command on the node serving `slot`, following MOVED/ASK.
  Reply run_at(int slot, const Argv& argv) {
    try {
      return run_slot(slot, argv);
    } catch (const ConnectionFailure& e) {
      // A slot left without a node while CLUSTERDOWN was retried: a dogpile exception too
      // (ClusterDownError), not the internal failure that CacheBackend would wrap as a plain
      // BackendError.
      throw_failure(e);
    }
  }

  // Runs every command of `b` on the node serving its slot: one pipeline per node, every
  // node's share sent before any reply is read, under one deadline for the whole call (the
  // nodes work in parallel; a node that does not answer costs one socket_timeout, not one per
  // node). `Batch` is a list of commands: size(), slot(i), key(i), args(i), append(c, i) (queue
  // command i on c) and argv(i) (the command as an Argv, for one rerouted alone).
  template <class Batch>
  std::vector<Reply> run_batch(const Batch& b) {
    const std::size_t n = b.size();
    std::vector<Reply> out(n);
    struct Share {
      std::shared_ptr<Pool> pool;
      std::vector<std::size_t> idx;
      std::optional<Pool::Lease> lease{};
      std::vector<Reply> replies{};
      std::optional<ConnectionFailure> failure{};
    };
    std::vector<Share> shares;
    try {
      auto split = split_by_node(b);
      shares.reserve(split.size());
      for (auto& [pool, idx] : split) shares.push_back(Share{std::move(pool), std::move(idx)});
    } catch (const ConnectionFailure& e) {
      throw_failure(e);
    }
    const auto deadline = std::chrono::steady_clock::now() + settings_.socket_timeout;
    const auto read_share = [&](Connection& c, const Share& sh,
                                std::chrono::steady_clock::time_point by) {
      std::vector<Reply> rs;
      rs.reserve(sh.idx.size());
      for (const auto i : sh.idx) rs.push_back(c.read_reply(by, b.args(i)));
      return rs;
    };
    try {
      for (auto& sh : shares) {
        try {
          sh.lease.emplace(sh.pool->acquire());
          for (const auto i : sh.idx) b.append(**sh.lease, i);
          (*sh.lease)->flush(deadline);
        } catch (const ConnectionFailure& e) {
          sh.failure = e;
        }
      }
      for (auto& sh : shares) {
        if (sh.failure) continue;
        try {
          sh.replies = read_share(**sh.lease, sh, deadline);
        } catch (const ConnectionFailure& e) {
          sh.failure = e;
        }
      }
    } catch (...) {
      // (A pool exhausted: TimeoutError.) Connections that were sent commands and not read
      // must not go back to their pools owing replies.
      for (auto& sh : shares) {
        if (sh.lease && sh.replies.empty()) (*sh.lease)->abandon();
      }
      throw;
    }
    // Every connection is back in its pool (or dropped, if it failed) before anything below
    // can throw: none goes back owing replies.
    std::optional<ConnectionFailure> timeout;
    std::vector<Share*> stale;
    for (auto& sh : shares) {
      if (sh.failure && sh.failure->kind() == Failure::closed && sh.lease && (*sh.lease).reused()) {
        stale.push_back(&sh);
      }
      sh.lease.reset();
      if (sh.failure && sh.failure->kind() == Failure::closed) sh.pool->drop_idle();
      if (sh.failure && sh.failure->kind() == Failure::timeout && !timeout) timeout = sh.failure;
    }
    // An idle connection the server had closed (a restart): the commands never reached a live
    // server, so once more on a fresh connection, as Pool::run does (not when the call already
    // failed by a timeout).
    for (Share* sh : timeout ? std::vector<Share*>{} : stale) {
      try {
        sh->replies = sh->pool->run([&](Connection& c) {
          // A fresh call on a fresh connection: its own socket_timeout, as Pool::run gives one.
          const auto by = std::chrono::steady_clock::now() + settings_.socket_timeout;
          for (const auto i : sh->idx) b.append(c, i);
          c.flush(by);
          return read_share(c, *sh, by);
        });
        sh->failure.reset();
      } catch (const ConnectionFailure& e) {
        sh->failure = e;
        if (e.kind() == Failure::timeout && !timeout) timeout = e;
      }
    }
    // A timeout may have run the commands: never twice, the call fails.
    if (timeout) throw_failure(*timeout);
    for (auto& sh : shares) {
      if (sh.failure) {
        // The node went away: ask the cluster who serves the slots now, and run this node's
        // share one by one, rerouted.
        try {
          refresh(true);
        } catch (const ConnectionFailure&) {
          throw_failure(*sh.failure);
        }
        for (auto i : sh.idx) out[i] = run_at(b.slot(i), b.argv(i));
        continue;
      }
      for (std::size_t j = 0; j < sh.idx.size(); ++j) {
        const auto i = sh.idx[j];
        const auto code = sh.replies[j].error_code();
        if (code == "MOVED" || code == "ASK" || code == "TRYAGAIN" || code == "CLUSTERDOWN") {
          out[i] = run_at(b.slot(i), b.argv(i));
        } else {
          out[i] = std::move(sh.replies[j]);
        }
      }
    }
    return out;
  }

  // The commands of `b` split by the node serving each one's slot, read from the slot map
  // under one lock (one refresh when a slot has no node yet), in the order of the nodes' pools:
  // every call takes its nodes' connections in the same order, so two calls on small pools
  // cannot each hold one node's last connection and wait for the other.
  // @throws ConnectionFailure(no_master) when a slot has no node even after a refresh.
  template <class Batch>
  std::vector<std::pair<std::shared_ptr<Pool>, std::vector<std::size_t>>> split_by_node(
      const Batch& b) {
    using Share = std::pair<std::shared_ptr<Pool>, std::vector<std::size_t>>;
    const std::size_t n = b.size();
    std::vector<int> slot(n);
    for (std::size_t i = 0; i < n; ++i) slot[i] = b.slot(i);
    for (int attempt = 0;; ++attempt) {
      std::vector<Share> shares;
      std::vector<int> share_of;  // by node index
      int missing = -1;           // a slot without a node
      {
        std::shared_lock lk(m_);
        share_of.assign(nodes_.size(), -1);
        for (std::size_t i = 0; i < n; ++i) {
          const int node = slots_[static_cast<std::size_t>(slot[i])];
          if (node < 0) {
            missing = slot[i];
            break;
          }
          auto& pos = share_of[static_cast<std::size_t>(node)];
          if (pos < 0) {
            pos = static_cast<int>(shares.size());
            shares.emplace_back(nodes_[static_cast<std::size_t>(node)], std::vector<std::size_t>{});
          }
          shares[static_cast<std::size_t>(pos)].second.push_back(i);
        }
      }
      if (missing < 0) {
        std::sort(shares.begin(), shares.end(),
                  [](const Share& x, const Share& y) { return x.first.get() < y.first.get(); });
        return shares;
      }
      if (attempt > 0) {
        throw ConnectionFailure(Failure::no_master, "redis cluster: no node serves slot " +
                                                        std::to_string(missing) +
                                                        " (is the cluster complete?)");
      }
      refresh(true);
    }
  }

  Reply run_slot(int slot, const Argv& argv) {
    std::shared_ptr<Pool> pool;
    try {
      pool = pool_for_slot(slot);
    } catch (const ConnectionFailure& e) {
      throw_failure(e);
    }
    bool asking = false;
    int redirects = 0;
    const auto retry_deadline = std::chrono::steady_clock::now() + settings_.socket_timeout;
    int failures = 0;
    auto nap = std::chrono::milliseconds(5);
    for (;;) {
      Reply r;
      try {
        if (asking) {
          r = pool->run([&](Connection& c) { return c.pipeline({Argv{"ASKING"}, argv})[1]; });
        } else {
          r = pool->run([&](Connection& c) { return c.command(argv); });
        }
      } catch (const ConnectionFailure& e) {
        // A timeout may have run the command: never twice. A node that went away: ask the
        // cluster who serves the slot now, and try there.
        if (e.kind() == Failure::timeout || ++failures > 2) throw_failure(e);
        std::this_thread::sleep_for(nap);
        nap *= 2;
        try {
          refresh(true);
          pool = pool_for_slot(slot);
        } catch (const ConnectionFailure&) {
          throw_failure(e);
        }
        asking = false;
        continue;
      }
      const auto code = r.error_code();
      if (code == "MOVED" || code == "ASK") {
        if (++redirects > kMaxRedirects) {
          r.str += " (still redirected after " + std::to_string(kMaxRedirects) +
                   " redirections: the cluster's slot map is not settling)";
          return r;
        }
        if (code == "ASK" && asking) {  // the importing node sent us back: a migration bug
          r.str += " (a second redirection after ASKING: the slot's migration is inconsistent)";
          return r;
        }
        // A second redirection in one call: the nodes disagree for now (during the SETSLOT NODE
        // round at the end of a migration, the old owner points to the new one and the new one,
        // not told yet, back). Give them time, with backoff, within the call's deadline.
        if (redirects > 1) {
          if (std::chrono::steady_clock::now() + nap > retry_deadline) {
            r.str += " (still redirected after " + std::to_string(redirects) +
                     " redirections within socket_timeout: the cluster's slot map is not "
                     "settling)";
            return r;
          }
          std::this_thread::sleep_for(nap);
          nap = std::min(nap * 2, std::chrono::milliseconds(100));
        }
        const Endpoint target = redirect_target(r.str);
        if (code == "MOVED") {
          set_slot(slot, target);
          refresh(false);
          pool = pool_for_slot(slot);
          asking = false;
        } else {
          // The key is being migrated: a near-cache fill served by another node than the one
          // it registered with must not be installed (that node's invalidations go elsewhere).
          topo_gen_.fetch_add(1);
          pool = pool_for(target);
          asking = true;
        }
        continue;
      }
      if (code == "TRYAGAIN" || code == "CLUSTERDOWN") {
        // A multi-key command during a migration, or a failover in progress: retried with
        // backoff for at most one socket timeout, then the reply is the caller's error.
        if (std::chrono::steady_clock::now() + nap > retry_deadline) return r;
        std::this_thread::sleep_for(nap);
        nap = std::min(nap * 2, std::chrono::milliseconds(100));
        if (code == "CLUSTERDOWN") refresh(false);
        pool = pool_for_slot(slot);
        asking = false;
        continue;
      }
      return r;
    }
  }

  std::shared_ptr<Pool> pool_for_slot(int slot) {
    {
      std::shared_lock lk(m_);
      if (slots_[static_cast<std::size_t>(slot)] >= 0) {
        return nodes_[static_cast<std::size_t>(slots_[static_cast<std::size_t>(slot)])];
      }
    }
    refresh(true);
    std::shared_lock lk(m_);
    const int idx = slots_[static_cast<std::size_t>(slot)];
    if (idx < 0) {
      throw ConnectionFailure(Failure::no_master, "redis cluster: no node serves slot " +
                                                      std::to_string(slot) +
                                                      " (is the cluster complete?)");
    }
    return nodes_[static_cast<std::size_t>(idx)];
  }

  // m_ held exclusively.
  int node_index(const Endpoint& ep) {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i]->endpoint() == ep) return static_cast<int>(i);
    }
    nodes_.push_back(std::make_shared<Pool>(ep, settings_, pool_size_));
    return static_cast<int>(nodes_.size() - 1);
  }

  std::shared_ptr<Pool> pool_for(const Endpoint& ep) {
    std::unique_lock lk(m_);
    return nodes_[static_cast<std::size_t>(node_index(ep))];
  }

  void set_slot(int slot, const Endpoint& ep) {
    std::unique_lock lk(m_);
    const int idx = node_index(ep);
    if (slots_[static_cast<std::size_t>(slot)] != idx) topo_gen_.fetch_add(1);
    slots_[static_cast<std::size_t>(slot)] = idx;
  }

  // Reloads the slot map from the first node that answers CLUSTER SLOTS. Unless `force`, at
  // most once per 100 ms (a migration sends many MOVED at once).
  void refresh(bool force) {
    std::lock_guard rl(refresh_m_);
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_refresh_ < std::chrono::milliseconds(100)) return;
    last_refresh_ = now;
    std::vector<Endpoint> candidates;
    {
      std::shared_lock lk(m_);
      for (const auto& n : nodes_) candidates.push_back(n->endpoint());
    }
    candidates.insert(candidates.end(), startup_.begin(), startup_.end());
    std::string errors;
    for (const auto& ep : candidates) {
      Reply r;
      try {
        Connection c(ep, settings_);
        r = c.command({"CLUSTER", "SLOTS"});
      } catch (const ConnectionFailure& e) {
        errors += "; " + std::string(e.what());
        continue;
      }
      if (r.type != Reply::Type::array || r.elements.empty()) {
        errors += "; " + ep.str() + ": " + (r.is_error() ? r.str : "no slots");
        continue;
      }
      std::unique_lock lk(m_);
      std::array<int, kSlots> fresh{};
      fresh.fill(-1);
      for (const auto& range : r.elements) {
        if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) continue;
        Endpoint node;
        node.host = range.elements[2].elements[0].str;
        if (node.host.empty() || node.host == "?") node.host = ep.host;
        node.port = static_cast<int>(range.elements[2].elements[1].integer);
        const int idx = node_index(node);
        const auto lo = std::max<long long>(0, range.elements[0].integer);
        const auto hi = std::min<long long>(kSlots - 1, range.elements[1].integer);
        for (auto s = lo; s <= hi; ++s) fresh[static_cast<std::size_t>(s)] = idx;
      }
      if (fresh != slots_) topo_gen_.fetch_add(1);  // (the first load too: nothing cached yet)
      slots_ = fresh;
      return;
    }
    throw ConnectionFailure(Failure::connect,
                            "no redis cluster node answered CLUSTER SLOTS" + errors);
  }

  std::vector<Endpoint> startup_;
  ConnectSettings settings_;
  std::size_t pool_size_;
  std::shared_mutex m_;  // slots_, nodes_
  std::array<int, kSlots> slots_{};
  std::vector<std::shared_ptr<Pool>> nodes_;
  std::mutex refresh_m_;
  std::chrono::steady_clock::time_point last_refresh_{};
  std::atomic<std::uint64_t> topo_gen_{0};  // bumped when slots_ changes, and on ASK
};

}  // namespace

std::shared_ptr<Client> make_cluster_client(std::vector<Endpoint> startup_nodes, ConnectSettings s,
                                            std::size_t pool_size) {
  return std::make_shared<ClusterClient>(std::move(startup_nodes), std::move(s), pool_size);
}

}  // namespace dogpile::redis_detail
