// The three Redis backends' constructors and dogpile-named arguments, and registration.
#include <algorithm>
#include <charconv>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "client.hpp"
#include "dogpile/backends/redis.hpp"
#include "dogpile/detail/backend_arguments.hpp"
#include "dogpile/detail/did_you_mean.hpp"
#include "dogpile/log.hpp"
#include "url.hpp"

namespace dogpile {
namespace {

using detail::bad_argument;
using redis_detail::ConnectSettings;
using redis_detail::Endpoint;

// ---- arguments ------------------------------------------------------------------------------

// Every argument name the Redis backends know, in one place: a name in none of these lists is a
// ValidationError with a "did you mean" (a misspelt `distribued_lock` must not silently leave a
// fleet without its lock). A new argument is one line here plus its parsing below.

// Taken by all three backends (parsed by common_arg).
constexpr std::string_view kCommonArguments[] = {
    "username",
    "password",
    "socket_timeout",
    "socket_connect_timeout",
    "max_value_bytes",
    "pool_size",
    "connection_pool",
    "max_connections",
    "redis_expiration_time",
    "distributed_lock",
    "lock_timeout",
    "lock_sleep",
    "lock_blocking_timeout",
    "lock_prefix",
    "thread_local_lock",
    "lock_blocking",
    // TLS (redis-py's names).
    "ssl",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "ssl_server_hostname",
};
constexpr std::string_view kRedisArguments[] = {"url", "host", "port", "db", "near_cache"};
constexpr std::string_view kSentinelArguments[] = {"sentinels", "service_name", "db",
                                                   "sentinel_kwargs", "near_cache"};
constexpr std::string_view kClusterArguments[] = {"url", "startup_nodes", "near_cache"};
// Names a Python dogpile.cache / redis-py configuration carries that have no effect here:
// accepted and ignored (docs/backends.md says why, per name), so that configuration loads as is.
// `connection_kwargs` is read for the arguments above it holds (see parse_arguments).
constexpr std::string_view kIgnoredArguments[] = {"connection_kwargs", "socket_keepalive",
                                                  "socket_keepalive_options"};

// Throws unless `name` is in `specific`, the common list or the ignored list.
void check_known(const char* b, const std::string& name,
                 std::span<const std::string_view> specific) {
  const auto in = [&name](auto&& list) {
    return std::find(std::begin(list), std::end(list), name) != std::end(list);
  };
  if (in(specific) || in(kCommonArguments) || in(kIgnoredArguments)) return;
  std::vector<std::string_view> known(specific.begin(), specific.end());
  known.insert(known.end(), std::begin(kCommonArguments), std::end(kCommonArguments));
  std::vector<std::string_view> all = known;
  all.insert(all.end(), std::begin(kIgnoredArguments), std::end(kIgnoredArguments));
  bad_argument(b, name,
               "is unknown" + detail::did_you_mean(name, all) +
                   " (known: " + detail::join_names(known) +
                   "; accepted and ignored: " + detail::join_names(kIgnoredArguments) + ")");
}

std::optional<Duration> optional_seconds(const char* b, const std::string& name,
                                         const nlohmann::json& v) {
  if (v.is_null()) return std::nullopt;
  return Duration(detail::seconds_arg(b, name, v));
}

// "host:port", ["host", port] or {"host": ..., "port": ...}.
RedisNode node_arg(const char* b, const std::string& name, const nlohmann::json& v) {
  const std::string what = "must list nodes as [\"host\", port] or \"host:port\", got " + v.dump();
  if (v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_number_integer()) {
    return {v[0].get<std::string>(), v[1].get<int>()};
  }
  if (v.is_object() && v.contains("host") && v["host"].is_string()) {
    int port = 6379;
    if (v.contains("port")) {
      if (!v["port"].is_number_integer()) bad_argument(b, name, what);
      port = v["port"].get<int>();
    }
    return {v["host"].get<std::string>(), port};
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    const auto colon = s.rfind(':');
    int port = 0;
    if (colon != std::string::npos && colon > 0) {
      const auto [p, ec] = std::from_chars(s.data() + colon + 1, s.data() + s.size(), port);
      if (ec == std::errc() && p == s.data() + s.size()) return {s.substr(0, colon), port};
    }
  }
  bad_argument(b, name, what);
}

std::vector<RedisNode> nodes_arg(const char* b, const std::string& name, const nlohmann::json& v) {
  std::vector<RedisNode> out;
  // {{"host", port}, …} in a C++ initializer becomes the object {"host": port, …}: accept it.
  if (v.is_object() && !v.contains("host") && !v.empty()) {
    for (const auto& item : v.items()) {
      if (!item.value().is_number_integer()) {
        bad_argument(b, name,
                     "must list nodes as [\"host\", port] or \"host:port\", got " + v.dump());
      }
      out.emplace_back(item.key(), item.value().get<int>());
    }
    return out;
  }
  if (!v.is_array()) bad_argument(b, name, "must be a list of nodes, got " + v.dump());
  for (const auto& n : v) out.push_back(node_arg(b, name, n));
  return out;
}

// redis-py's ssl_* arguments into `t`. False if `name` is not one of them.
bool tls_arg(const char* b, const std::string& name, const nlohmann::json& v, RedisTlsOptions& t) {
  auto str = [&] { return v.is_null() ? std::string() : detail::string_arg(b, name, v); };
  if (name == "ssl") {
    t.ssl = !v.is_null() && detail::bool_arg(b, name, v);
  } else if (name == "ssl_cert_reqs") {
    // redis-py reads None as CERT_NONE; turning verification off must be said in words here.
    // A null is kept and refused only if TLS is on (tls_of): with `ssl` off it does nothing, so
    // a Python configuration that carries it still loads.
    if (v.is_null()) {
      t.ssl_cert_reqs = "null";
    } else if (!v.is_string()) {
      bad_argument(b, name, R"(must be "required", "optional" or "none", got )" + v.dump());
    } else {
      t.ssl_cert_reqs = v.get<std::string>();
    }
  } else if (name == "ssl_ca_certs") {
    t.ssl_ca_certs = str();
  } else if (name == "ssl_ca_path") {
    t.ssl_ca_path = str();
  } else if (name == "ssl_certfile") {
    t.ssl_certfile = str();
  } else if (name == "ssl_keyfile") {
    t.ssl_keyfile = str();
  } else if (name == "ssl_check_hostname") {
    t.ssl_check_hostname = detail::bool_arg(b, name, v);
  } else if (name == "ssl_server_hostname") {
    t.ssl_server_hostname = str();
  } else {
    return false;
  }
  return true;
}

// The TLS context for `t` (loaded once per backend), or null for plain text.
std::shared_ptr<const redis_detail::TlsContext> tls_of(const char* b, const RedisTlsOptions& t) {
  using redis_detail::TlsConfig;
  if (!t.ssl) return nullptr;
  TlsConfig c;
  if (t.ssl_cert_reqs == "required" || t.ssl_cert_reqs.empty()) {
    c.cert_reqs = TlsConfig::CertReqs::required;
  } else if (t.ssl_cert_reqs == "optional") {
    c.cert_reqs = TlsConfig::CertReqs::optional;
  } else if (t.ssl_cert_reqs == "none") {
    c.cert_reqs = TlsConfig::CertReqs::none;
  } else if (t.ssl_cert_reqs == "null") {
    bad_argument(b, "ssl_cert_reqs",
                 R"(must be "required", "optional" or "none", got null (redis-py reads None as )"
                 R"("none": to turn certificate verification off, say "none"))");
  } else {
    bad_argument(b, "ssl_cert_reqs",
                 R"(must be "required", "optional" or "none", got ")" + t.ssl_cert_reqs + "\"");
  }
  c.ca_certs = t.ssl_ca_certs;
  c.ca_path = t.ssl_ca_path;
  c.certfile = t.ssl_certfile;
  c.keyfile = t.ssl_keyfile;
  c.check_hostname = t.ssl_check_hostname;
  c.server_hostname = t.ssl_server_hostname;
  return std::make_shared<const redis_detail::TlsContext>(b, std::move(c));
}

// Arguments every Redis backend takes. False if `name` is not one of them.
template <class O>
bool common_arg(const char* b, const std::string& name, const nlohmann::json& v, O& o) {
  if (name == "username") {
    o.username = v.is_null() ? "" : detail::string_arg(b, name, v);
  } else if (name == "password") {
    o.password = v.is_null() ? "" : detail::string_arg(b, name, v);
  } else if (name == "socket_timeout") {
    if (!v.is_null()) o.socket_timeout = detail::seconds_arg(b, name, v);
  } else if (name == "socket_connect_timeout") {
    if (!v.is_null()) o.socket_connect_timeout = detail::seconds_arg(b, name, v);
  } else if (name == "max_value_bytes") {
    if (!v.is_null()) o.max_value_bytes = static_cast<std::size_t>(detail::int_arg(b, name, v, 1));
  } else if (name == "pool_size" || name == "connection_pool" || name == "max_connections") {
    if (!v.is_null()) o.pool_size = static_cast<std::size_t>(detail::int_arg(b, name, v, 1));
  } else if (name == "redis_expiration_time") {
    o.redis_expiration_time = optional_seconds(b, name, v);
    if (o.redis_expiration_time && o.redis_expiration_time->count() == 0) {
      o.redis_expiration_time.reset();  // dogpile: 0 = no TTL
    }
  } else if (name == "distributed_lock") {
    o.distributed_lock = detail::bool_arg(b, name, v);
  } else if (name == "lock_timeout") {
    if (!v.is_null()) o.lock_timeout = detail::seconds_arg(b, name, v);
  } else if (name == "lock_sleep") {
    if (!v.is_null()) o.lock_sleep = detail::seconds_arg(b, name, v);
  } else if (name == "lock_blocking_timeout") {
    o.lock_blocking_timeout = optional_seconds(b, name, v);
  } else if (name == "lock_prefix") {
    o.lock_prefix = v.is_null() ? "" : detail::string_arg(b, name, v);
  } else if (tls_arg(b, name, v, o.tls)) {
    // handled
  } else if (name == "thread_local_lock" || name == "lock_blocking") {
    (void)detail::bool_arg(b, name, v);  // accepted, ignored: handles release from any thread
  } else {
    return false;
  }
  return true;
}

template <class O>
RedisBackendBase::Common common_of(const O& o) {
  RedisBackendBase::Common c;
  c.redis_expiration_time = o.redis_expiration_time;
  c.distributed_lock = o.distributed_lock;
  c.lock_timeout = o.lock_timeout;
  c.lock_sleep = o.lock_sleep;
  c.lock_blocking_timeout = o.lock_blocking_timeout;
  c.lock_prefix = o.lock_prefix;
  if constexpr (requires { o.near_cache; }) c.near_cache = o.near_cache;
  return c;
}

template <class O>
ConnectSettings settings_of(const char* b, const O& o, int db) {
  if (o.socket_timeout.count() <= 0) bad_argument(b, "socket_timeout", "must be positive");
  if (o.socket_connect_timeout.count() <= 0) {
    bad_argument(b, "socket_connect_timeout", "must be positive");
  }
  if (o.pool_size == 0) bad_argument(b, "pool_size", "must be at least 1");
  if (o.max_value_bytes == 0) bad_argument(b, "max_value_bytes", "must be at least 1");
  ConnectSettings s;
  s.max_value_bytes = o.max_value_bytes;
  s.connect_timeout = o.socket_connect_timeout;
  s.socket_timeout = o.socket_timeout;
  s.username = o.username;
  s.password = o.password;
  s.db = db;
  s.tls = tls_of(b, o.tls);
  return s;
}

Endpoint endpoint_of(const RedisNode& n, const char* b, const char* arg) {
  if (n.first.empty()) bad_argument(b, arg, "has a node with an empty host");
  if (n.second < 1 || n.second > 65535) {
    bad_argument(b, arg, "has a node with port " + std::to_string(n.second));
  }
  Endpoint ep;
  ep.host = n.first;
  ep.port = n.second;
  return ep;
}

// Applies `url` (if any) to host/port/db/username/password, as redis-py's from_url does.
RedisOptions resolved(RedisOptions o) {
  if (o.url.empty()) return o;
  const auto u = redis_detail::parse_redis_url("redis", o.url);
  o.host = u.endpoint.unix_path.empty() ? u.endpoint.host : u.endpoint.unix_path;
  o.port = u.endpoint.port;
  o.db = u.db;
  if (!u.username.empty()) o.username = u.username;
  if (!u.password.empty()) o.password = u.password;
  if (u.tls) o.tls.ssl = true;
  return o;
}

std::shared_ptr<redis_detail::Client> standalone_client(const RedisOptions& o) {
  if (o.db < 0) bad_argument("redis", "db", "must be >= 0");
  Endpoint ep;
  if (!o.host.empty() && o.host.front() == '/') {
    if (o.tls.ssl) bad_argument("redis", "ssl", "is for TCP, not the unix socket " + o.host);
    ep.unix_path = o.host;
  } else {
    ep = endpoint_of({o.host, o.port}, "redis", "host/port");
  }
  return redis_detail::make_standalone_client(ep, settings_of("redis", o, o.db), o.pool_size);
}

std::shared_ptr<redis_detail::Client> sentinel_client(const RedisSentinelOptions& o) {
  const char* b = "redis_sentinel";
  if (o.sentinels.empty()) bad_argument(b, "sentinels", "must name at least one sentinel");
  if (o.service_name.empty()) bad_argument(b, "service_name", "must not be empty");
  std::vector<Endpoint> eps;
  for (const auto& n : o.sentinels) eps.push_back(endpoint_of(n, b, "sentinels"));
  ConnectSettings ss = settings_of(b, o, 0);
  ss.username = o.sentinel_username;
  ss.password = o.sentinel_password;
  ss.tls = tls_of(b, o.sentinel_tls);
  return redis_detail::make_sentinel_client(std::move(eps), o.service_name, ss,
                                            settings_of(b, o, o.db), o.pool_size);
}

std::shared_ptr<redis_detail::Client> cluster_client(RedisClusterOptions& o) {
  const char* b = "redis_cluster";
  std::vector<Endpoint> eps;
  if (!o.url.empty()) {
    const auto u = redis_detail::parse_redis_url(b, o.url);
    if (!u.endpoint.unix_path.empty()) bad_argument(b, "url", "must be a TCP address");
    if (u.db != 0) bad_argument(b, "url", "must not select a database (a cluster has only db 0)");
    eps.push_back(u.endpoint);
    if (!u.username.empty()) o.username = u.username;
    if (!u.password.empty()) o.password = u.password;
    if (u.tls) o.tls.ssl = true;
  }
  for (const auto& n : o.startup_nodes) eps.push_back(endpoint_of(n, b, "startup_nodes"));
  if (eps.empty()) bad_argument(b, "startup_nodes", "or 'url' must name at least one node");
  return redis_detail::make_cluster_client(std::move(eps), settings_of(b, o, 0), o.pool_size);
}

// `{"max_bytes": N, "max_staleness": seconds, "prefixes": ["p", ...]}`.
RedisNearCacheOptions near_cache_arg(const char* b, const nlohmann::json& v) {
  RedisNearCacheOptions nc;
  if (v.is_null()) return nc;
  if (!v.is_object()) {
    bad_argument(
        b, "near_cache",
        "must be an object {\"max_bytes\": N, \"max_staleness\": seconds}, got " + v.dump());
  }
  for (const auto& item : v.items()) {
    if (item.key() == "max_bytes") {
      nc.max_bytes =
          static_cast<std::size_t>(detail::int_arg(b, "near_cache.max_bytes", item.value(), 0));
    } else if (item.key() == "max_staleness") {
      nc.max_staleness = detail::seconds_arg(b, "near_cache.max_staleness", item.value());
    } else if (item.key() == "prefixes") {
      const auto& ps = item.value();
      const bool strings = ps.is_array() && std::all_of(ps.begin(), ps.end(), [](const auto& p) {
                             return p.is_string();
                           });
      if (!strings) {
        bad_argument(b, "near_cache.prefixes",
                     "must be a list of key prefixes (strings), got " + ps.dump());
      }
      for (const auto& p : ps) nc.prefixes.push_back(p.template get<std::string>());
    } else {
      bad_argument(
          b, "near_cache",
          "has an unknown key '" + item.key() + "' (known: max_bytes, max_staleness, prefixes)");
    }
  }
  return nc;
}

// The options of backend `b` from its arguments: each name must be known (check_known), then
// the common ones are parsed, then `specific(name, value, options)` takes the rest.
template <class O, class F>
O parse_arguments(const char* b, const nlohmann::json& a, std::span<const std::string_view> known,
                  F&& specific) {
  detail::require_object_arguments(b, a);
  O o;
  if (!a.is_object()) return o;
  std::vector<std::string> ignored;  // reported in one log line, so nothing vanishes unseen
  for (const auto& item : a.items()) {
    check_known(b, item.key(), known);
    const auto& n = item.key();
    if (n == "socket_keepalive" || n == "socket_keepalive_options" || n == "thread_local_lock" ||
        n == "lock_blocking") {
      ignored.push_back(n);
    }
  }
  // redis-py's `connection_kwargs` is where dogpile's cluster backend wants the password and
  // the timeouts: those it holds are applied first (a top-level argument wins, as in dogpile);
  // the rest are redis-py knobs with no meaning here.
  if (a.contains("connection_kwargs") && !a["connection_kwargs"].is_null()) {
    const auto& kw = a["connection_kwargs"];
    if (!kw.is_object())
      bad_argument(b, "connection_kwargs", "must be an object, got " + kw.dump());
    for (const auto& item : kw.items()) {
      const auto& n = item.key();
      if (n == "username" || n == "password" || n == "socket_timeout" ||
          n == "socket_connect_timeout") {
        common_arg(b, n, item.value(), o);
      } else {
        ignored.push_back("connection_kwargs." + n);
      }
    }
  }
  if (!ignored.empty()) {
    std::string names;
    for (const auto& n : ignored) names += (names.empty() ? "" : ", ") + n;
    detail::log(LogLevel::warning, std::string(b) + " backend: ignored " + names +
                                       " (Python/redis-py settings with no effect here; see "
                                       "docs/backends.md)");
  }
  for (const auto& item : a.items()) {
    if (!common_arg(b, item.key(), item.value(), o)) specific(item.key(), item.value(), o);
  }
  return o;
}

}  // namespace

// ---- RedisBackend ---------------------------------------------------------------------------

RedisBackend::RedisBackend(RedisOptions options)
    : RedisBackendBase("redis", standalone_client(resolved(options)), common_of(options)),
      opts_(resolved(std::move(options))) {}

std::shared_ptr<CacheBackend> RedisBackend::from_arguments(const nlohmann::json& a) {
  const char* b = "redis";
  auto opts = parse_arguments<RedisOptions>(
      b, a, kRedisArguments,
      [b](const std::string& name, const nlohmann::json& v, RedisOptions& o) {
        if (name == "url") {
          o.url = v.is_null() ? "" : detail::string_arg(b, name, v);
        } else if (name == "host") {
          o.host = detail::string_arg(b, name, v);
        } else if (name == "port") {
          o.port = static_cast<int>(detail::int_arg(b, name, v, 1));
        } else if (name == "db") {
          o.db = static_cast<int>(detail::int_arg(b, name, v, 0));
        } else if (name == "near_cache") {
          o.near_cache = near_cache_arg(b, v);
        }
      });
  return std::make_shared<RedisBackend>(std::move(opts));
}

// ---- RedisSentinelBackend -------------------------------------------------------------------

RedisSentinelBackend::RedisSentinelBackend(RedisSentinelOptions options)
    : RedisBackendBase("redis_sentinel", sentinel_client(options), common_of(options)),
      opts_(std::move(options)) {}

std::shared_ptr<CacheBackend> RedisSentinelBackend::from_arguments(const nlohmann::json& a) {
  const char* b = "redis_sentinel";
  auto opts = parse_arguments<RedisSentinelOptions>(
      b, a, kSentinelArguments,
      [b](const std::string& name, const nlohmann::json& v, RedisSentinelOptions& o) {
        if (name == "sentinels") {
          o.sentinels = nodes_arg(b, name, v);
        } else if (name == "service_name") {
          o.service_name = detail::string_arg(b, name, v);
        } else if (name == "db") {
          o.db = static_cast<int>(detail::int_arg(b, name, v, 0));
        } else if (name == "near_cache") {
          o.near_cache = near_cache_arg(b, v);
        } else if (name == "sentinel_kwargs" && !v.is_null()) {
          if (!v.is_object()) bad_argument(b, name, "must be an object, got " + v.dump());
          if (v.contains("username") && !v["username"].is_null()) {
            o.sentinel_username = detail::string_arg(b, "sentinel_kwargs.username", v["username"]);
          }
          if (v.contains("password") && !v["password"].is_null()) {
            o.sentinel_password = detail::string_arg(b, "sentinel_kwargs.password", v["password"]);
          }
          for (const auto& kw : v.items()) {  // redis-py: sentinel_kwargs={"ssl": True, ...}
            if (kw.key().starts_with("ssl")) (void)tls_arg(b, kw.key(), kw.value(), o.sentinel_tls);
          }
        }
      });
  return std::make_shared<RedisSentinelBackend>(std::move(opts));
}

// ---- RedisClusterBackend --------------------------------------------------------------------

RedisClusterBackend::RedisClusterBackend(RedisClusterOptions options)
    : RedisBackendBase("redis_cluster", cluster_client(options), common_of(options)),
      opts_(std::move(options)) {}

std::shared_ptr<CacheBackend> RedisClusterBackend::from_arguments(const nlohmann::json& a) {
  const char* b = "redis_cluster";
  auto opts = parse_arguments<RedisClusterOptions>(
      b, a, kClusterArguments,
      [b](const std::string& name, const nlohmann::json& v, RedisClusterOptions& o) {
        if (name == "url") {
          o.url = v.is_null() ? "" : detail::string_arg(b, name, v);
        } else if (name == "startup_nodes") {
          o.startup_nodes = nodes_arg(b, name, v);
        } else if (name == "near_cache") {
          o.near_cache = near_cache_arg(b, v);
        }
      });
  return std::make_shared<RedisClusterBackend>(std::move(opts));
}

// ---- registration ---------------------------------------------------------------------------

void register_redis_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_backend("redis",
                     [](const nlohmann::json& a) { return RedisBackend::from_arguments(a); });
    register_backend("redis_sentinel", [](const nlohmann::json& a) {
      return RedisSentinelBackend::from_arguments(a);
    });
    register_backend("redis_cluster", [](const nlohmann::json& a) {
      return RedisClusterBackend::from_arguments(a);
    });
  });
}

}  // namespace dogpile
