// `Client`: where a command for a key goes — one server, the master a sentinel names, or the
// cluster node that serves the key's slot. The backend, the lock and (later) the near cache
// speak only to this interface. Internal to dogpile::redis.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "connection.hpp"
#include "pool.hpp"

namespace dogpile::redis_detail {

/// A command and the key that routes it (the cluster slot owner; ignored elsewhere).
struct Routed {
  std::string key;
  Argv argv;
};

/// The keys of a multi-key call grouped by hash slot: group g is the key positions
/// `order[start[g] .. start[g + 1])`, in the caller's order, all in slot `slot[g]`. Outside a
/// cluster, one group of every key.
struct KeyGroups {
  std::vector<std::uint32_t> order;
  std::vector<std::uint32_t> start;  // size() + 1 offsets into order
  std::vector<int> slot;
  [[nodiscard]] std::size_t size() const noexcept { return slot.size(); }
  [[nodiscard]] std::span<const std::uint32_t> group(std::size_t g) const noexcept {
    return std::span<const std::uint32_t>(order).subspan(start[g], start[g + 1] - start[g]);
  }
};

/// Routes commands to the right master. Error replies that are about routing (MOVED, ASK,
/// TRYAGAIN, CLUSTERDOWN, READONLY, MASTERDOWN) are handled inside; other error replies are
/// returned to the caller. Connection failures become `ConnectionError`, reply timeouts
/// `TimeoutError`, both naming the server. Thread-safe.
class Client {
 public:
  virtual ~Client() = default;
  /// The cluster hash slot of `key`; 0 outside a cluster.
  [[nodiscard]] virtual int slot_of(std::string_view /*key*/) const { return 0; }
  /// Runs `argv` on the master serving `key`.
  virtual Reply run(std::string_view key, const Argv& argv) = 0;
  /// Runs every command on the master serving its key, pipelined per server; replies in order.
  virtual std::vector<Reply> run_many(const std::vector<Routed>& cmds) = 0;
  /// True where keys are spread over several masters (a cluster): a multi-key command must be
  /// split by hash slot. False: any set of keys can go in one command.
  [[nodiscard]] virtual bool sharded() const { return false; }
  /// Runs `name keys...` (MGET, DEL: keys that share one master) on the master serving
  /// `keys.front()`; `keys` must not be empty. A client with one master sends the caller's
  /// keys as they are (no copy); this default copies them into an `Argv` for `run`.
  virtual Reply run_keys(std::string_view name, std::span<const std::string> keys) {
    Argv argv;
    argv.reserve(keys.size() + 1);
    argv.emplace_back(name);
    argv.insert(argv.end(), keys.begin(), keys.end());
    return run(keys.front(), argv);
  }
  /// Runs `name k...` (MGET, DEL) once per group of `groups` (from `group_by_slot`: the keys of
  /// one hash slot), each on the master serving it, pipelined per server; replies in group
  /// order. Routing errors are handled as in `run_many`. This default copies every group into
  /// a command for `run_many`; a cluster sends the keys straight from `keys`.
  virtual std::vector<Reply> run_key_groups(std::string_view name,
                                            std::span<const std::string> keys,
                                            const KeyGroups& groups) {
    std::vector<Routed> cmds(groups.size());
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const auto pick = groups.group(g);
      cmds[g].key = keys[pick.front()];
      cmds[g].argv.reserve(pick.size() + 1);
      cmds[g].argv.emplace_back(name);
      for (const auto i : pick) cmds[g].argv.push_back(keys[i]);
    }
    return run_many(cmds);
  }
  /// Where a pub/sub subscriber connects: a master (a cluster forwards PUBLISH to every node).
  virtual Endpoint subscribe_endpoint() = 0;
  /// The master serving `key` now (the near cache's node for it).
  virtual Endpoint endpoint_of(std::string_view /*key*/) { return subscribe_endpoint(); }
  /// Masters serving slots now (1 outside a cluster): the near cache splits its budget.
  virtual std::size_t master_count() { return 1; }
  /// Bumped whenever the master serving some key may have changed (a failover followed, the
  /// master forgotten, a slot map change, an ASK redirection): the near cache empties L1 and
  /// refuses fills begun before. 0 for one server.
  [[nodiscard]] virtual std::uint64_t topology_generation() const { return 0; }
  /// The counter topology_generation() reads (the near cache reads it on every hit, without a
  /// virtual call). A constant 0 for one server.
  [[nodiscard]] virtual const std::atomic<std::uint64_t>* topology_counter() const {
    static const std::atomic<std::uint64_t> zero{0};
    return &zero;
  }
  /// The near cache found `ep` is no longer a master (ROLE): forget it, ask again.
  virtual void not_a_master(const Endpoint& /*ep*/) {}
  /// The settings new connections use.
  [[nodiscard]] virtual const ConnectSettings& settings() const = 0;
  /// "redis at 127.0.0.1:6379", "redis sentinel service 'mymaster'", "redis cluster …".
  [[nodiscard]] virtual std::string describe() const = 0;
};

/// One server.
std::shared_ptr<Client> make_standalone_client(Endpoint ep, ConnectSettings s,
                                               std::size_t pool_size);
/// The master of `service` as `sentinels` report it; re-discovered after failures.
std::shared_ptr<Client> make_sentinel_client(std::vector<Endpoint> sentinels, std::string service,
                                             ConnectSettings sentinel_settings,
                                             ConnectSettings master_settings,
                                             std::size_t pool_size);
/// A cluster reached through `startup_nodes`.
std::shared_ptr<Client> make_cluster_client(std::vector<Endpoint> startup_nodes, ConnectSettings s,
                                            std::size_t pool_size);

/// Throws the dogpile exception for a connection failure: TimeoutError, ConnectionError,
/// ReplyError (protocol) or ClusterDownError (no master).
[[noreturn]] void throw_failure(const ConnectionFailure& e);
/// Throws for an error reply to `what`: ClusterDownError for a topology reply (CLUSTERDOWN,
/// MASTERDOWN, TRYAGAIN, READONLY, LOADING, a redirection loop), ReplyError otherwise.
[[noreturn]] void throw_reply_error(const std::string& where, const char* what, const Reply& r);

/// The node a `MOVED`/`ASK` error reply (`MOVED 3999 127.0.0.1:6381`) redirects to. A reply
/// that does not end in `host:port` with a port in 1..65535 is a ConnectionFailure(closed)
/// quoting (the start of) it: a broken or hostile node, never a std::exception of another kind.
Endpoint redirect_target(std::string_view error_reply);

/// The cluster hash slot of `key` (CRC16-XMODEM of the key or its `{hash tag}`, mod 16384).
int key_slot(std::string_view key) noexcept;

/// `keys` grouped by `c.slot_of` (one group when `!c.sharded()`); groups in slot order.
/// @throws std::bad_alloc only.
KeyGroups group_by_slot(const Client& c, std::span<const std::string> keys);

}  // namespace dogpile::redis_detail
