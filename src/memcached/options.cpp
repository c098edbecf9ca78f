// The memcached backend's arguments (dogpile's and pylibmc's names) and how they become
// libmemcached settings.
#include "options.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "dogpile/detail/backend_arguments.hpp"
#include "dogpile/detail/did_you_mean.hpp"
#include "dogpile/log.hpp"
#include "pool.hpp"

namespace dogpile::memcached_detail {
namespace {

constexpr const char* kBackend = "memcached";

std::size_t size_arg(const std::string& name, const nlohmann::json& v) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0) {
    bad_argument(name, "must be a non-negative integer, got " + v.dump());
  }
  return static_cast<std::size_t>(v.get<std::int64_t>());
}

// The behaviors `behaviors` may name (pylibmc's names), and their libmemcached switch.
struct BehaviorName {
  const char* name;
  memcached_behavior_t behavior;
};
constexpr BehaviorName kBehaviors[] = {
    {"tcp_nodelay", MEMCACHED_BEHAVIOR_TCP_NODELAY},
    {"ketama", MEMCACHED_BEHAVIOR_KETAMA},
    {"ketama_weighted", MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED},
    {"no_block", MEMCACHED_BEHAVIOR_NO_BLOCK},
    {"binary_protocol", MEMCACHED_BEHAVIOR_BINARY_PROTOCOL},
    {"cas", MEMCACHED_BEHAVIOR_SUPPORT_CAS},
    {"connect_timeout", MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT},  // ms
    {"send_timeout", MEMCACHED_BEHAVIOR_SND_TIMEOUT},         // µs
    {"receive_timeout", MEMCACHED_BEHAVIOR_RCV_TIMEOUT},      // µs
    {"_poll_timeout", MEMCACHED_BEHAVIOR_POLL_TIMEOUT},       // ms
    {"poll_timeout", MEMCACHED_BEHAVIOR_POLL_TIMEOUT},        // ms
    {"retry_timeout", MEMCACHED_BEHAVIOR_RETRY_TIMEOUT},      // s
    {"dead_timeout", MEMCACHED_BEHAVIOR_DEAD_TIMEOUT},        // s
    {"failure_limit", MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT},
    {"server_failure_limit", MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT},
    {"remove_failed", MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS},
    {"auto_eject", MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS},
    {"tcp_keepalive", MEMCACHED_BEHAVIOR_TCP_KEEPALIVE},
    {"tcp_keepidle", MEMCACHED_BEHAVIOR_TCP_KEEPIDLE},
    {"verify_keys", MEMCACHED_BEHAVIOR_VERIFY_KEY},
    {"hash_with_prefix_key", MEMCACHED_BEHAVIOR_HASH_WITH_PREFIX_KEY},
    {"num_replicas", MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS},
    {"sort_hosts", MEMCACHED_BEHAVIOR_SORT_HOSTS},
    {"io_msg_watermark", MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK},
    {"io_bytes_watermark", MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK},
    // pylibmc's spellings of the same libmemcached behaviors (pylibmc.all_behaviors).
    {"_hash_with_prefix_key", MEMCACHED_BEHAVIOR_HASH_WITH_PREFIX_KEY},
    {"_sort_hosts", MEMCACHED_BEHAVIOR_SORT_HOSTS},
    {"_io_msg_watermark", MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK},
    {"_io_bytes_watermark", MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK},
    {"_io_key_prefetch", MEMCACHED_BEHAVIOR_IO_KEY_PREFETCH},
    {"_socket_send_size", MEMCACHED_BEHAVIOR_SOCKET_SEND_SIZE},
    {"_socket_recv_size", MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE},
};

// pylibmc behaviors accepted and ignored (docs/backends.md says why): `pickle_protocol` is
// Python's serializer (the region's codec does that here); `buffer_requests` and `_noreply`
// would send writes without waiting for the server's answer, losing errors and breaking the
// lock's add/CAS, so every request keeps waiting for its reply.
constexpr std::string_view kIgnoredBehaviors[] = {"pickle_protocol", "buffer_requests", "_noreply"};

// The top-level arguments, dogpile's and pylibmc's names.
constexpr std::string_view kArguments[] = {"url",
                                           "distributed_lock",
                                           "lock_timeout",
                                           "lock_sleep",
                                           "memcached_expire_time",
                                           "min_compress_len",
                                           "behaviors",
                                           "binary",
                                           "socket_timeout",
                                           "dead_retry",
                                           "remove_failed",
                                           "username",
                                           "password",
                                           "pool_size",
                                           "mangle_bad_keys",
                                           "max_value_size",
                                           "max_value_bytes"};

// Names a dogpile.cache configuration for the pymemcache or bmemcached backends carries that
// have no effect here: accepted and ignored (docs/backends.md says why, per name), reported in
// one log line. `serde` is Python's serializer; the retry and hashclient settings are
// pymemcache's client-side retries (here: dead_retry, remove_failed and the behaviors);
// `default_noreply` is ignored as `_noreply` is; `socket_keepalive` is pymemcache's
// KeepaliveOpts (here: behaviors.tcp_keepalive). `tls_context` is accepted only as null (a
// configuration that asks for TLS is refused: libmemcached has no TLS).
constexpr std::string_view kIgnoredArguments[] = {"serde",
                                                  "default_noreply",
                                                  "socket_keepalive",
                                                  "enable_retry_client",
                                                  "retry_attempts",
                                                  "retry_delay",
                                                  "retry_for",
                                                  "do_not_retry_for",
                                                  "hashclient_retry_attempts",
                                                  "hashclient_retry_timeout",
                                                  "hashclient_dead_timeout",
                                                  "tls_context"};

bool listed(std::span<const std::string_view> names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// Behaviors whose value is a name (pylibmc's strings).
std::optional<std::uint64_t> named_behavior_value(const std::string& behavior,
                                                  const std::string& value) {
  static const std::map<std::string, std::uint64_t, std::less<>> hashes = {
      {"default", MEMCACHED_HASH_DEFAULT},   {"md5", MEMCACHED_HASH_MD5},
      {"crc", MEMCACHED_HASH_CRC},           {"fnv1_64", MEMCACHED_HASH_FNV1_64},
      {"fnv1a_64", MEMCACHED_HASH_FNV1A_64}, {"fnv1_32", MEMCACHED_HASH_FNV1_32},
      {"fnv1a_32", MEMCACHED_HASH_FNV1A_32}, {"murmur", MEMCACHED_HASH_MURMUR},
      {"hsieh", MEMCACHED_HASH_HSIEH},       {"jenkins", MEMCACHED_HASH_JENKINS}};
  static const std::map<std::string, std::uint64_t, std::less<>> distributions = {
      {"modula", MEMCACHED_DISTRIBUTION_MODULA},
      {"consistent", MEMCACHED_DISTRIBUTION_CONSISTENT},
      {"consistent_ketama", MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA},
      {"consistent ketama", MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA},
      {"random", MEMCACHED_DISTRIBUTION_RANDOM}};
  const auto& table = behavior == "distribution" ? distributions : hashes;
  auto it = table.find(value);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

void set_behavior(memcached_st* master, memcached_behavior_t b, std::uint64_t v,
                  const std::string& name) {
  const memcached_return_t rc = memcached_behavior_set(master, b, v);
  if (rc != MEMCACHED_SUCCESS) {
    bad_argument(name, "cannot be set to " + std::to_string(v) + ": " + rc_text(master, rc));
  }
}

void add_servers(memcached_st* master, const MemcachedOptions& opts) {
  for (const auto& server : opts.url) {
    std::string host = server;
    unsigned long port = 11211;
    if (auto colon = server.rfind(':');
        colon != std::string::npos && server.find(']') == std::string::npos) {
      host = server.substr(0, colon);
      const std::string p = server.substr(colon + 1);
      char* end = nullptr;
      port = std::strtoul(p.c_str(), &end, 10);
      if (p.empty() || *end != '\0' || port == 0 || port > 65535) {
        bad_argument("url", "has a bad port in '" + server + "'");
      }
    }
    if (host.empty()) bad_argument("url", "has an empty host in '" + server + "'");
    const memcached_return_t rc =
        host.front() == '/'
            ? memcached_server_add_unix_socket(master, host.c_str())
            : memcached_server_add(master, host.c_str(), static_cast<in_port_t>(port));
    if (rc != MEMCACHED_SUCCESS) {
      bad_argument("url", "'" + server + "' is not a server address: " + rc_text(master, rc));
    }
  }
}

void set_user_behaviors(memcached_st* master, const nlohmann::json& behaviors) {
  for (const auto& item : behaviors.items()) {
    const std::string name = "behaviors." + item.key();
    const auto& v = item.value();
    if (item.key() == "hash" || item.key() == "distribution" || item.key() == "ketama_hash") {
      const auto value = v.is_string() ? named_behavior_value(
                                             item.key() == "distribution" ? "distribution" : "hash",
                                             v.get<std::string>())
                                       : std::nullopt;
      if (!value) bad_argument(name, "is not a known name: " + v.dump());
      set_behavior(master,
                   item.key() == "distribution" ? MEMCACHED_BEHAVIOR_DISTRIBUTION
                   : item.key() == "hash"       ? MEMCACHED_BEHAVIOR_HASH
                                                : MEMCACHED_BEHAVIOR_KETAMA_HASH,
                   *value, name);
      continue;
    }
    if (listed(kIgnoredBehaviors, item.key())) continue;  // reported by parse_arguments
    const auto* found = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                                     [&](const BehaviorName& b) { return item.key() == b.name; });
    if (found == std::end(kBehaviors)) {
      std::vector<std::string_view> known = {"ketama_hash", "hash", "distribution"};
      for (const auto& b : kBehaviors) known.emplace_back(b.name);
      std::vector<std::string_view> all = known;
      all.insert(all.end(), std::begin(kIgnoredBehaviors), std::end(kIgnoredBehaviors));
      bad_argument(name, "is unknown" + detail::did_you_mean(item.key(), all) +
                             " (known: " + detail::join_names(known) + "; accepted and ignored: " +
                             detail::join_names(kIgnoredBehaviors) + ")");
    }
    std::uint64_t value = 0;
    if (v.is_boolean()) {
      value = v.get<bool>() ? 1 : 0;
    } else if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
      value = v.get<std::uint64_t>();
    } else {
      bad_argument(name, "must be a boolean or a non-negative integer, got " + v.dump());
    }
    set_behavior(master, found->behavior, value, name);
  }
}

}  // namespace

void bad_argument(const std::string& name, const std::string& what) {
  detail::bad_argument(kBackend, name, what);
}

MemcachedOptions parse_arguments(const nlohmann::json& arguments) {
  if (!arguments.is_object()) {
    detail::throw_error<ValidationError>("memcached backend: arguments must be a JSON object");
  }
  MemcachedOptions o;
  bool have_url = false;
  std::vector<std::string> ignored;  // Python-only names, reported in one log line
  for (const auto& item : arguments.items()) {
    const std::string& name = item.key();
    const nlohmann::json& v = item.value();
    if (name == "url") {
      if (v.is_string()) {
        o.url = {v.get<std::string>()};
      } else if (v.is_array() && !v.empty() &&
                 std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_string(); })) {
        o.url = v.get<std::vector<std::string>>();
      } else {
        bad_argument(name,
                     "must be a \"host:port\" string or a non-empty list of them, got " + v.dump());
      }
      have_url = true;
    } else if (name == "distributed_lock") {
      o.distributed_lock = detail::bool_arg(kBackend, name, v);
    } else if (name == "lock_timeout") {
      o.lock_timeout = detail::seconds_arg(kBackend, name, v);
    } else if (name == "lock_sleep") {
      o.lock_sleep = detail::seconds_arg(kBackend, name, v);
    } else if (name == "memcached_expire_time") {
      o.memcached_expire_time = detail::seconds_arg(kBackend, name, v);
    } else if (name == "socket_timeout") {
      o.socket_timeout = detail::seconds_arg(kBackend, name, v);
      if (o.socket_timeout.count() <= 0) bad_argument(name, "must be positive");
    } else if (name == "dead_retry") {
      o.dead_retry = detail::seconds_arg(kBackend, name, v);
    } else if (name == "min_compress_len") {
      o.min_compress_len = size_arg(name, v);
    } else if (name == "pool_size") {
      o.pool_size = size_arg(name, v);
    } else if (name == "max_value_size") {
      o.max_value_size = size_arg(name, v);
    } else if (name == "max_value_bytes") {
      o.max_value_bytes = size_arg(name, v);
    } else if (name == "behaviors") {
      if (!v.is_object()) bad_argument(name, "must be a JSON object, got " + v.dump());
      o.behaviors = v;
    } else if (name == "binary") {
      o.behaviors["binary_protocol"] = detail::bool_arg(kBackend, name, v);
    } else if (name == "username") {
      o.username = detail::string_arg(kBackend, name, v);
    } else if (name == "password") {
      o.password = detail::string_arg(kBackend, name, v);
    } else if (name == "mangle_bad_keys") {
      o.mangle_bad_keys = detail::bool_arg(kBackend, name, v);
    } else if (name == "remove_failed") {
      o.remove_failed = detail::bool_arg(kBackend, name, v);
    } else if (name == "tls_context") {
      if (!v.is_null()) {
        bad_argument(name,
                     "asks for TLS, which the memcached backend does not support "
                     "(libmemcached has no TLS); remove it, or use a TLS proxy such as "
                     "stunnel in front of the servers");
      }
      ignored.push_back(name);
    } else if (listed(kIgnoredArguments, name)) {
      ignored.push_back(name);
    } else {
      std::vector<std::string_view> all(std::begin(kArguments), std::end(kArguments));
      all.insert(all.end(), std::begin(kIgnoredArguments), std::end(kIgnoredArguments));
      bad_argument(name, "is unknown" + detail::did_you_mean(name, all) +
                             " (known: " + detail::join_names(kArguments) +
                             "; accepted and ignored: " + detail::join_names(kIgnoredArguments) +
                             ")");
    }
  }
  if (!have_url) bad_argument("url", "is required (\"host:port\" or a list of them)");
  if (o.behaviors.is_object()) {
    for (const auto& item : o.behaviors.items()) {
      if (listed(kIgnoredBehaviors, item.key())) ignored.push_back("behaviors." + item.key());
    }
  }
  // One line per configuration, so a Python setting that has no effect here is never dropped
  // without a trace (as the Redis backends do).
  if (!ignored.empty()) {
    detail::log(LogLevel::warning, std::string(kBackend) + " backend: ignored " +
                                       detail::join_names(ignored) +
                                       " (Python client settings with no effect here; see "
                                       "docs/backends.md)");
  }
  // `binary` given alongside `behaviors`: the later one in the object wins, as in a dict merge.
  return o;
}

void check_options(const MemcachedOptions& opts) {
  if (opts.url.empty()) bad_argument("url", "is required (\"host:port\" or a list of them)");
  if (opts.max_value_bytes == 0) bad_argument("max_value_bytes", "must be positive");
  if (opts.pool_size == 0) bad_argument("pool_size", "must be positive");
  if (opts.lock_timeout.count() % 1000 != 0) {
    bad_argument("lock_timeout", "must be whole seconds (memcached expiry has 1 s resolution)");
  }
  if (!opts.behaviors.is_object()) bad_argument("behaviors", "must be a JSON object");
}

void configure(memcached_st* master, const MemcachedOptions& opts) {
  add_servers(master, opts);
  const auto timeout_ms = static_cast<std::uint64_t>(opts.socket_timeout.count());
  const auto dead_s =
      static_cast<std::uint64_t>(std::max<std::int64_t>(1, (opts.dead_retry.count() + 999) / 1000));
  // Defaults (any of them may be overridden by `behaviors`): consistent hashing, CAS for the
  // lock, every I/O bounded by socket_timeout, a failed server skipped for dead_retry.
  set_behavior(master, MEMCACHED_BEHAVIOR_KETAMA, 1, "behaviors.ketama");
  set_behavior(master, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1, "behaviors.cas");
  set_behavior(master, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1, "behaviors.tcp_nodelay");
  set_behavior(master, MEMCACHED_BEHAVIOR_NO_BLOCK, 1, "behaviors.no_block");
  set_behavior(master, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, timeout_ms, "socket_timeout");
  set_behavior(master, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, timeout_ms, "socket_timeout");
  set_behavior(master, MEMCACHED_BEHAVIOR_SND_TIMEOUT, timeout_ms * 1000, "socket_timeout");
  set_behavior(master, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, timeout_ms * 1000, "socket_timeout");
  set_behavior(master, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1, "dead_retry");
  set_behavior(master, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, dead_s, "dead_retry");
  set_behavior(master, MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, dead_s, "dead_retry");
  // pylibmc's remove_failed: after server_failure_limit failures the server leaves the ketama
  // continuum (only its share of the keys moves to the live servers) until dead_retry has
  // passed and it answers again. libmemcached 1.1.4 remaps only with AUTO_EJECT_HOSTS: its
  // REMOVE_FAILED_SERVERS alone leaves the keys failing (checked with pylibmc, same library).
  if (opts.remove_failed) {
    set_behavior(master, MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS, 1, "remove_failed");
  }
  set_user_behaviors(master, opts.behaviors);
  if (opts.username || opts.password) {
    if (!opts.username || !opts.password) {
      bad_argument(opts.username ? "password" : "username", "is required with the other");
    }
    set_behavior(master, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1, "username");  // SASL needs it
    const memcached_return_t rc =
        memcached_set_sasl_auth_data(master, opts.username->c_str(), opts.password->c_str());
    if (rc != MEMCACHED_SUCCESS) {
      bad_argument("username", "SASL setup failed: " + rc_text(master, rc));
    }
  }
}

}  // namespace dogpile::memcached_detail
