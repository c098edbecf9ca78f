// The `memcached` region backend on libmemcached 1.1: a client pool, ketama hashing, timeouts on
// every call, an owner-checked `add` lease lock.
#include "dogpile/backends/memcached.hpp"

#include <libmemcached/memcached.h>
#include <libmemcachedutil-1.0/pool.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <map>
#include <mutex>
#include <regex>
#include <unordered_map>
#include <utility>

#include "dogpile/detail/backend_arguments.hpp"
#include "dogpile/detail/sha1.hpp"
#include "dogpile/detail/zlib.hpp"
#include "dogpile/lease_lock.hpp"

namespace dogpile {
namespace {

using std::chrono::milliseconds;

constexpr std::uint32_t kFlagPickle = 1;  // python-memcached / pylibmc: a pickled object
constexpr std::uint32_t kFlagZlib = 8;    // python-memcached / pylibmc: zlib-compressed
// memcached's per-item overhead beyond key and value (item header, CAS, suffix, CRLF), rounded
// up generously: a value within the limit less this never triggers the server's "too large".
constexpr std::size_t kItemOverhead = 128;

[[noreturn]] void bad_argument(const std::string& name, const std::string& what) {
  detail::throw_error<ValidationError>("memcached backend: argument '" + name + "' " +
                                       detail::with_did_you_mean(name, what));
}

milliseconds seconds_arg(const std::string& name, const nlohmann::json& v) {
  if (!v.is_number()) bad_argument(name, "must be a number of seconds, got " + v.dump());
  const double s = v.get<double>();
  if (!std::isfinite(s) || s < 0 || s > 1e9) {
    bad_argument(name, "must be a non-negative number of seconds, got " + v.dump());
  }
  return milliseconds(static_cast<std::int64_t>(std::llround(s * 1000.0)));
}

std::size_t size_arg(const std::string& name, const nlohmann::json& v) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0) {
    bad_argument(name, "must be a non-negative integer, got " + v.dump());
  }
  return static_cast<std::size_t>(v.get<std::int64_t>());
}

bool bool_arg(const std::string& name, const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer() && (v.get<std::int64_t>() == 0 || v.get<std::int64_t>() == 1)) {
    return v.get<std::int64_t>() == 1;
  }
  bad_argument(name, "must be a boolean, got " + v.dump());
}

std::string string_arg(const std::string& name, const nlohmann::json& v) {
  if (!v.is_string()) bad_argument(name, "must be a string, got " + v.dump());
  return v.get<std::string>();
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
};

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

// libmemcached's last error message reads "(0x5625…) CONNECTION FAILURE,  host: h:p ->
// ./src/libmemcached/get.cc:233": the client's address and libmemcached's source line mean
// nothing to a user (and the pointer makes every message unique, defeating log grouping). Keep
// what is left after the return code's own text: the host:port and any system reason.
std::string clean_error_detail(std::string d, const std::string& rc_name) {
  static const std::regex pointer(R"(^\s*\((0x[0-9a-fA-F]+|nil)\)\s*)");
  static const std::regex location(R"(\s*->\s*\S+:[0-9]+\s*$)");
  static const std::regex spaces(R"(\s+)");
  d = std::regex_replace(d, pointer, "");
  d = std::regex_replace(d, location, "");
  d = std::regex_replace(d, spaces, " ");
  if (d.rfind(rc_name, 0) == 0) {
    d.erase(0, rc_name.size());
    const auto first = d.find_first_not_of(", ");
    d.erase(0, first == std::string::npos ? d.size() : first);
  }
  while (!d.empty() && (d.back() == ' ' || d.back() == ',')) d.pop_back();
  return d;
}

std::string rc_text(const memcached_st* mc, memcached_return_t rc) {
  std::string m = memcached_strerror(mc, rc);
  if (mc != nullptr && memcached_last_error_message(mc) != nullptr) {
    const std::string detail =
        clean_error_detail(memcached_last_error_message(const_cast<memcached_st*>(mc)), m);
    if (!detail.empty() && detail != m) m += " (" + detail + ")";
  }
  return m;
}

bool is_timeout(memcached_return_t rc) { return rc == MEMCACHED_TIMEOUT; }

// A libmemcached return code -> the exception a program branches on (docs/backends.md,
// "Errors"): the server unreachable or gone, a timeout, or an answer that was an error.
[[noreturn]] void throw_for(memcached_return_t rc, const std::string& msg) {
  if (is_timeout(rc)) detail::throw_error<TimeoutError>(msg);
  switch (rc) {
    case MEMCACHED_CONNECTION_FAILURE:
    case MEMCACHED_CONNECTION_BIND_FAILURE:
    case MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE:
    case MEMCACHED_HOST_LOOKUP_FAILURE:
    case MEMCACHED_SERVER_MARKED_DEAD:
    case MEMCACHED_SERVER_TEMPORARILY_DISABLED:
    case MEMCACHED_NO_SERVERS:
    case MEMCACHED_READ_FAILURE:
    case MEMCACHED_UNKNOWN_READ_FAILURE:
    case MEMCACHED_WRITE_FAILURE:
    case MEMCACHED_ERRNO:
    case MEMCACHED_FAIL_UNIX_SOCKET:
    case MEMCACHED_AUTH_FAILURE:
    case MEMCACHED_AUTH_PROBLEM:
      detail::throw_error<ConnectionError>(msg);
    default:
      break;
  }
  detail::throw_error<ReplyError>(msg);
}

// ---- zlib as python-memcached / pylibmc do it: a plain zlib stream, flag 8 ------------------
// The shared zlib code (dogpile/detail/zlib.hpp): one bounded inflate for every reader.

std::string zlib_compress(std::string_view in) {
  // detail::zlib_compress prefixes the envelope's 8-byte length; flag 8 is the bare stream.
  return detail::zlib_compress(in, Z_DEFAULT_COMPRESSION).substr(8);
}

// Inflates at most `limit` bytes: a small value must not inflate to gigabytes (BackendError, as
// an oversized reply). Corrupt: nullopt (a miss, never a crash).
std::optional<std::string> zlib_decompress(std::string_view in, std::size_t limit) {
  auto r = detail::zlib_inflate(in, limit);
  switch (r.status) {
    case detail::InflateStatus::ok:
      return std::move(r.data);
    case detail::InflateStatus::too_large:
      detail::throw_error<ReplyError>(
          "memcached backend: a zlib-compressed value (flag 8) inflates past max_value_bytes (" +
          std::to_string(limit) + ")");
    case detail::InflateStatus::corrupt:
      break;
  }
  return std::nullopt;
}

// ---- bounded allocation -------------------------------------------------------------------------

// libmemcached allocates a value's whole announced length (`VALUE k 0 4000000000`) before
// reading a byte of it. Its allocator hooks refuse anything over the bound instead; the call
// then fails with MEMCACHED_MEMORY_ALLOCATION_FAILURE and `t_refused` says it was ours.
thread_local bool t_refused = false;

// Other allocations of libmemcached are small (keys, results, server lists): never refuse
// below this, so a tiny max_value_bytes does not break them (the exact bound is checked after
// the read).
constexpr std::size_t kAllocFloor = 256 * 1024;
// A value's buffer is its length + 2 (CRLF), rounded up to libmemcached's 1 KiB blocks.
constexpr std::size_t kAllocSlack = 4096;

bool over(const void* context, std::size_t size) {
  const std::size_t bound = *static_cast<const std::size_t*>(context);
  if (size <= std::max(kAllocFloor, bound + kAllocSlack)) return false;
  t_refused = true;
  return true;
}
void* bounded_malloc(const memcached_st*, const size_t size, void* context) {
  return over(context, size) ? nullptr : std::malloc(size);
}
void* bounded_realloc(const memcached_st*, void* mem, const size_t size, void* context) {
  return over(context, size) ? nullptr : std::realloc(mem, size);
}
void* bounded_calloc(const memcached_st*, size_t n, const size_t size, void* context) {
  if (size != 0 && n > std::numeric_limits<std::size_t>::max() / size) return nullptr;
  return over(context, n * size) ? nullptr : std::calloc(n, size);
}
void bounded_free(const memcached_st*, void* mem, void*) { std::free(mem); }

// Replies after which the connection is still in step: the server said something expected.
bool in_step(memcached_return_t rc) {
  return rc == MEMCACHED_SUCCESS || rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND ||
         rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_STORED ||
         rc == MEMCACHED_DELETED || rc == MEMCACHED_E2BIG || rc == MEMCACHED_BUFFERED;
}

}  // namespace

// ---- the pool ---------------------------------------------------------------------------------

// Everything a call needs: the options and the client pool. Shared by the backend and its locks.
struct Pool {
  MemcachedOptions opts;
  std::mutex mu;  // guards pool / pid (a forked child builds its own)
  memcached_st* master = nullptr;
  memcached_pool_st* pool = nullptr;
  pid_t pid = ::getpid();
  std::atomic<std::size_t> size_limit{0};  // 0 = not asked yet

  explicit Pool(MemcachedOptions o) : opts(std::move(o)) {
    if (opts.url.empty()) bad_argument("url", "is required (\"host:port\" or a list of them)");
    if (opts.max_value_bytes == 0) bad_argument("max_value_bytes", "must be positive");
    if (opts.pool_size == 0) bad_argument("pool_size", "must be positive");
    if (opts.lock_timeout.count() % 1000 != 0) {
      bad_argument("lock_timeout", "must be whole seconds (memcached expiry has 1 s resolution)");
    }
    if (!opts.behaviors.is_object()) bad_argument("behaviors", "must be a JSON object");
    build_pool();
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() {
    // A forked child leaves its parent's pool alone: quitting would close the parent's
    // connections (the sockets are shared).
    if (pid != ::getpid()) return;
    if (pool != nullptr) memcached_pool_destroy(pool);
    if (master != nullptr) memcached_free(master);
  }

  void set_behavior(memcached_behavior_t b, std::uint64_t v, const std::string& name) {
    const memcached_return_t rc = memcached_behavior_set(master, b, v);
    if (rc != MEMCACHED_SUCCESS) {
      bad_argument(name, "cannot be set to " + std::to_string(v) + ": " + rc_text(master, rc));
    }
  }

  void build_pool() {
    master = memcached_create(nullptr);
    if (master == nullptr) detail::throw_error<BackendError>("memcached backend: out of memory");
    try {
      // The pool's clients are clones of `master`: they inherit the hooks and their context.
      if (memcached_set_memory_allocators(master, bounded_malloc, bounded_free, bounded_realloc,
                                          bounded_calloc,
                                          &opts.max_value_bytes) != MEMCACHED_SUCCESS) {
        detail::throw_error<BackendError>("memcached backend: cannot set the allocators");
      }
      configure_master();
    } catch (...) {
      memcached_free(master);
      master = nullptr;
      throw;
    }
    pool = memcached_pool_create(master, 1, static_cast<std::uint32_t>(opts.pool_size));
    if (pool == nullptr) {
      memcached_free(master);
      master = nullptr;
      detail::throw_error<BackendError>("memcached backend: cannot create the client pool");
    }
  }

  void configure_master() {
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
    const auto timeout_ms = static_cast<std::uint64_t>(opts.socket_timeout.count());
    const auto dead_s = static_cast<std::uint64_t>(
        std::max<std::int64_t>(1, (opts.dead_retry.count() + 999) / 1000));
    // Defaults (any of them may be overridden by `behaviors`): consistent hashing, CAS for the
    // lock, every I/O bounded by socket_timeout, a failed server skipped for dead_retry.
    set_behavior(MEMCACHED_BEHAVIOR_KETAMA, 1, "behaviors.ketama");
    set_behavior(MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1, "behaviors.cas");
    set_behavior(MEMCACHED_BEHAVIOR_TCP_NODELAY, 1, "behaviors.tcp_nodelay");
    set_behavior(MEMCACHED_BEHAVIOR_NO_BLOCK, 1, "behaviors.no_block");
    set_behavior(MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, timeout_ms, "socket_timeout");
    set_behavior(MEMCACHED_BEHAVIOR_POLL_TIMEOUT, timeout_ms, "socket_timeout");
    set_behavior(MEMCACHED_BEHAVIOR_SND_TIMEOUT, timeout_ms * 1000, "socket_timeout");
    set_behavior(MEMCACHED_BEHAVIOR_RCV_TIMEOUT, timeout_ms * 1000, "socket_timeout");
    set_behavior(MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1, "dead_retry");
    set_behavior(MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, dead_s, "dead_retry");
    set_behavior(MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, dead_s, "dead_retry");
    // pylibmc's remove_failed: after server_failure_limit failures the server leaves the ketama
    // continuum (only its share of the keys moves to the live servers) until dead_retry has
    // passed and it answers again. libmemcached 1.1.4 remaps only with AUTO_EJECT_HOSTS: its
    // REMOVE_FAILED_SERVERS alone leaves the keys failing (checked with pylibmc, same library).
    if (opts.remove_failed) set_behavior(MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS, 1, "remove_failed");
    for (const auto& item : opts.behaviors.items()) {
      const std::string name = "behaviors." + item.key();
      const auto& v = item.value();
      if (item.key() == "hash" || item.key() == "distribution" || item.key() == "ketama_hash") {
        const auto value =
            v.is_string()
                ? named_behavior_value(item.key() == "distribution" ? "distribution" : "hash",
                                       v.get<std::string>())
                : std::nullopt;
        if (!value) bad_argument(name, "is not a known name: " + v.dump());
        set_behavior(item.key() == "distribution" ? MEMCACHED_BEHAVIOR_DISTRIBUTION
                     : item.key() == "hash"       ? MEMCACHED_BEHAVIOR_HASH
                                                  : MEMCACHED_BEHAVIOR_KETAMA_HASH,
                     *value, name);
        continue;
      }
      const auto* found = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                                       [&](const BehaviorName& b) { return item.key() == b.name; });
      if (found == std::end(kBehaviors)) {
        bad_argument(name,
                     "is unknown (known: tcp_nodelay, ketama, ketama_weighted, ketama_hash, hash, "
                     "distribution, no_block, binary_protocol, cas, connect_timeout, send_timeout, "
                     "receive_timeout, poll_timeout, retry_timeout, dead_timeout, failure_limit, "
                     "remove_failed, auto_eject, tcp_keepalive, tcp_keepidle, verify_keys, "
                     "hash_with_prefix_key, num_replicas, sort_hosts, io_msg_watermark, "
                     "io_bytes_watermark)");
      }
      std::uint64_t value = 0;
      if (v.is_boolean()) {
        value = v.get<bool>() ? 1 : 0;
      } else if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
        value = v.get<std::uint64_t>();
      } else {
        bad_argument(name, "must be a boolean or a non-negative integer, got " + v.dump());
      }
      set_behavior(found->behavior, value, name);
    }
    if (opts.username || opts.password) {
      if (!opts.username || !opts.password) {
        bad_argument(opts.username ? "password" : "username", "is required with the other");
      }
      set_behavior(MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1, "username");  // SASL needs it
      const memcached_return_t rc =
          memcached_set_sasl_auth_data(master, opts.username->c_str(), opts.password->c_str());
      if (rc != MEMCACHED_SUCCESS)
        bad_argument("username", "SASL setup failed: " + rc_text(master, rc));
    }
  }

  // A client for one call, returned to the pool at scope exit. A client whose last call went
  // wrong (a reply libmemcached could not read, a timeout, a refused value) may have unread
  // bytes of that reply on its connections: they are closed before it goes back, so the next
  // call starts in step (libmemcached asserts on an out-of-step reply).
  class Client {
   public:
    Client(memcached_pool_st* pool, memcached_st* mc) : pool_(pool), mc_(mc) { t_refused = false; }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client() {
      if (!in_step(memcached_last_error(mc_)) || t_refused) memcached_quit(mc_);
      t_refused = false;
      memcached_pool_release(pool_, mc_);
    }
    [[nodiscard]] memcached_st* get() const { return mc_; }

   private:
    memcached_pool_st* pool_;
    memcached_st* mc_;
  };

  Client client() {
    memcached_pool_st* p = nullptr;
    {
      std::lock_guard lk(mu);
      if (pid != ::getpid()) {  // a forked child: its own pool, the parent's left untouched
        pid = ::getpid();
        master = nullptr;
        pool = nullptr;
        build_pool();
      }
      p = pool;
    }
    timespec wait{};
    const auto t = opts.socket_timeout.count();
    wait.tv_sec = static_cast<time_t>(t / 1000);
    wait.tv_nsec = static_cast<long>((t % 1000) * 1'000'000);
    memcached_return_t rc = MEMCACHED_SUCCESS;
    memcached_st* mc = memcached_pool_fetch(p, &wait, &rc);
    if (mc == nullptr) {
      detail::throw_error<TimeoutError>(
          "memcached backend: no free client within socket_timeout (all " +
          std::to_string(opts.pool_size) + " of pool_size in use): " + rc_text(nullptr, rc));
    }
    return {p, mc};
  }

  [[noreturn]] void fail(const memcached_st* mc, memcached_return_t rc, const std::string& what,
                         std::string_view key) {
    std::string server;
    if (!key.empty()) {
      memcached_return_t src = MEMCACHED_SUCCESS;
      if (const auto* inst = memcached_server_by_key(const_cast<memcached_st*>(mc), key.data(),
                                                     key.size(), &src)) {
        server = std::string(" on ") + memcached_server_name(inst) + ":" +
                 std::to_string(memcached_server_port(inst));
      }
    }
    std::string msg = "memcached backend: " + what + server + " failed: " + rc_text(mc, rc);
    if (rc == MEMCACHED_MEMORY_ALLOCATION_FAILURE && t_refused) {
      msg = "memcached backend: " + what + server + " failed: the server announced a value over " +
            "max_value_bytes (" + std::to_string(opts.max_value_bytes) +
            "); the connection was reset";
    }
    // Whatever went wrong, the reply may be half read: reset before the pool lends it again.
    if (!in_step(rc)) memcached_quit(const_cast<memcached_st*>(mc));
    throw_for(rc, msg);
  }

  time_t expiry(milliseconds ttl) const {
    if (ttl.count() <= 0) return 0;
    auto s = static_cast<time_t>((ttl.count() + 999) / 1000);
    // memcached reads more than 30 days as an absolute Unix time.
    if (s > 30 * 24 * 3600) s += std::time(nullptr);
    return s;
  }

  // Decodes a stored value: zlib-flagged values are inflated; pickles are not ours (a miss).
  // Over max_value_bytes (read under the allocator's slack, or inflated): BackendError.
  std::optional<std::string> decode(const char* data, std::size_t len, std::uint32_t flags) const {
    if (len > opts.max_value_bytes) {
      detail::throw_error<ReplyError>(
          "memcached backend: the server sent a " + std::to_string(len) +
          "-byte value, over max_value_bytes (" + std::to_string(opts.max_value_bytes) + ")");
    }
    if ((flags & kFlagPickle) != 0) return std::nullopt;
    if ((flags & kFlagZlib) != 0) {
      return zlib_decompress(std::string_view(data, len), opts.max_value_bytes);
    }
    return std::string(data, len);
  }

  // The servers' smallest item size limit less the item overhead, asked once.
  std::size_t limit() {
    if (opts.max_value_size != 0) return opts.max_value_size;
    if (const auto l = size_limit.load(); l != 0) return l;
    auto c = client();
    std::size_t smallest = 0;
    auto cb = [](const memcached_instance_st*, const char* key, size_t key_len, const char* value,
                 size_t value_len, void* ctx) -> memcached_return_t {
      if (std::string_view(key, key_len) == "item_size_max") {
        const auto v = std::strtoull(std::string(value, value_len).c_str(), nullptr, 10);
        auto* s = static_cast<std::size_t*>(ctx);
        if (v != 0 && (*s == 0 || v < *s)) *s = static_cast<std::size_t>(v);
      }
      return MEMCACHED_SUCCESS;
    };
    const memcached_return_t rc =
        memcached_stat_execute(c.get(), "settings", cb, static_cast<void*>(&smallest));
    if (smallest == 0) {
      if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_SOME_ERRORS)
        fail(c.get(), rc, "stats settings", {});
      smallest = 1024 * 1024;  // memcached's default -I
    }
    const std::size_t l = smallest > 2 * kItemOverhead ? smallest - kItemOverhead : smallest / 2;
    size_limit.store(l);
    return l;
  }

  // The bytes to send for `value`, refused before anything is sent when over the limit.
  std::pair<std::string_view, std::uint32_t> encode(std::string_view key, std::string_view value,
                                                    std::string& storage) {
    std::uint32_t flags = 0;
    if (opts.min_compress_len != 0 && value.size() >= opts.min_compress_len) {
      storage = zlib_compress(value);
      if (storage.size() < value.size()) {
        value = storage;
        flags = kFlagZlib;
      }
    }
    const std::size_t l = limit();
    if (value.size() + key.size() > l) {
      detail::throw_error<ReplyError>(
          "memcached backend: the value for key '" + std::string(key.substr(0, 64)) + "' is " +
          std::to_string(value.size()) + " bytes, over the servers' item size limit (" +
          std::to_string(l + kItemOverhead) +
          " bytes, memcached -I); nothing was sent, the stored value is unchanged");
    }
    return {value, flags};
  }

  void store(memcached_st* mc, std::string_view key, std::string_view value) {
    std::string storage;
    const auto [bytes, flags] = encode(key, value, storage);
    const memcached_return_t rc =
        memcached_set(mc, key.data(), key.size(), bytes.data(), bytes.size(),
                      expiry(opts.memcached_expire_time), flags);
    if (rc == MEMCACHED_E2BIG) {
      size_limit.store(0);  // the servers' limit changed: ask again next time
    }
    if (rc != MEMCACHED_SUCCESS) fail(mc, rc, "set", key);
  }

  void remove(memcached_st* mc, std::string_view key) {
    const memcached_return_t rc = memcached_delete(mc, key.data(), key.size(), 0);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) fail(mc, rc, "delete", key);
  }
};

// ---- the lock ---------------------------------------------------------------------------------

namespace {

// dogpile's `_lock<key>` holding the owner token; renew and release are owner-checked with
// gets + cas (see the header).
class MemcachedLeaseStore final : public LeaseStore {
 public:
  MemcachedLeaseStore(std::shared_ptr<Pool> impl, std::string lock_key, bool never_expires)
      : impl_(std::move(impl)), key_(std::move(lock_key)), never_expires_(never_expires) {}

  bool try_acquire(std::string_view token, milliseconds lease) override {
    auto c = impl_->client();
    const memcached_return_t rc = memcached_add(c.get(), key_.data(), key_.size(), token.data(),
                                                token.size(), exptime(lease), 0);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) return false;
    impl_->fail(c.get(), rc, "lock add", key_);
  }

  bool renew(std::string_view token, milliseconds lease) override {
    auto c = impl_->client();
    const auto cas = owned_cas(c.get(), token);
    if (!cas) return false;
    const memcached_return_t rc = memcached_cas(c.get(), key_.data(), key_.size(), token.data(),
                                                token.size(), exptime(lease), 0, *cas);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND) return false;
    impl_->fail(c.get(), rc, "lock renew", key_);
  }

  bool release(std::string_view token) override {
    auto c = impl_->client();
    const auto cas = owned_cas(c.get(), token);
    if (!cas) return false;
    // Replace our token by a tombstone, only if it is still our token (cas), then delete the
    // tombstone: nobody else can have written it, since `add` fails while it exists. The
    // tombstone expires after a second should the delete not arrive.
    const std::string tomb = "released:" + std::string(token);
    memcached_return_t rc =
        memcached_cas(c.get(), key_.data(), key_.size(), tomb.data(), tomb.size(), 1, 0, *cas);
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND) return false;
    if (rc != MEMCACHED_SUCCESS) impl_->fail(c.get(), rc, "lock release", key_);
    rc = memcached_delete(c.get(), key_.data(), key_.size(), 0);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
      impl_->fail(c.get(), rc, "lock release", key_);
    }
    return true;
  }

  [[nodiscard]] bool held() const override {
    auto c = impl_->client();
    std::size_t len = 0;
    std::uint32_t flags = 0;
    memcached_return_t rc = MEMCACHED_SUCCESS;
    char* v = memcached_get(c.get(), key_.data(), key_.size(), &len, &flags, &rc);
    std::free(v);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTFOUND && !in_step(memcached_last_error(c.get()))) {
      rc = memcached_last_error(c.get());  // see do_get
    }
    if (rc == MEMCACHED_NOTFOUND) return false;
    impl_->fail(c.get(), rc, "lock get", key_);
  }

  [[nodiscard]] std::string describe() const override { return "memcached lock '" + key_ + "'"; }

 private:
  // The lock key's CAS value when it holds `token`.
  std::optional<std::uint64_t> owned_cas(memcached_st* mc, std::string_view token) {
    const char* keys[] = {key_.data()};
    const size_t lens[] = {key_.size()};
    memcached_return_t rc = memcached_mget(mc, keys, lens, 1);
    if (rc != MEMCACHED_SUCCESS) impl_->fail(mc, rc, "lock gets", key_);
    std::optional<std::uint64_t> cas;
    memcached_result_st* r = nullptr;
    while ((r = memcached_fetch_result(mc, nullptr, &rc)) != nullptr) {
      if (std::string_view(memcached_result_value(r), memcached_result_length(r)) == token) {
        cas = memcached_result_cas(r);
      }
      memcached_result_free(r);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
      impl_->fail(mc, rc, "lock gets", key_);
    }
    return cas;
  }

  // Whole seconds, plus one: memcached's clock ticks once a second, so a key set with expiry n
  // can vanish up to a second early; n + 1 keeps it at least the lease.
  [[nodiscard]] time_t exptime(milliseconds lease) const {
    if (never_expires_) return 0;
    return static_cast<time_t>((lease.count() + 999) / 1000 + 1);
  }

  std::shared_ptr<Pool> impl_;
  std::string key_;
  bool never_expires_;
};

// lock_timeout = 0: dogpile's lock that never expires. Not a lease: nothing to renew, and the
// conformance suite must not wait for an expiry that never comes.
class PermanentMemcachedLock final : public LeaseLock {
 public:
  using LeaseLock::LeaseLock;

 protected:
  [[nodiscard]] bool do_is_lease() const override { return false; }
};

}  // namespace

struct MemcachedBackend::Impl : Pool {
  using Pool::Pool;
};

// ---- MemcachedBackend -------------------------------------------------------------------------

MemcachedBackend::MemcachedBackend(MemcachedOptions options)
    : CacheBackend("memcached", KeyRules{.max_length = 250,
                                         .no_spaces_or_control = true,
                                         .mangle_bad_keys = options.mangle_bad_keys}),
      impl_(std::make_shared<Impl>(std::move(options))) {}

MemcachedBackend::~MemcachedBackend() = default;

const MemcachedOptions& MemcachedBackend::options() const noexcept { return impl_->opts; }

std::size_t MemcachedBackend::value_size_limit() { return impl_->limit(); }

std::shared_ptr<CacheBackend> MemcachedBackend::from_arguments(const nlohmann::json& arguments) {
  if (!arguments.is_object()) {
    detail::throw_error<ValidationError>("memcached backend: arguments must be a JSON object");
  }
  MemcachedOptions o;
  bool have_url = false;
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
      o.distributed_lock = bool_arg(name, v);
    } else if (name == "lock_timeout") {
      o.lock_timeout = seconds_arg(name, v);
    } else if (name == "lock_sleep") {
      o.lock_sleep = seconds_arg(name, v);
    } else if (name == "memcached_expire_time") {
      o.memcached_expire_time = seconds_arg(name, v);
    } else if (name == "socket_timeout") {
      o.socket_timeout = seconds_arg(name, v);
      if (o.socket_timeout.count() <= 0) bad_argument(name, "must be positive");
    } else if (name == "dead_retry") {
      o.dead_retry = seconds_arg(name, v);
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
      o.behaviors["binary_protocol"] = bool_arg(name, v);
    } else if (name == "username") {
      o.username = string_arg(name, v);
    } else if (name == "password") {
      o.password = string_arg(name, v);
    } else if (name == "mangle_bad_keys") {
      o.mangle_bad_keys = bool_arg(name, v);
    } else if (name == "remove_failed") {
      o.remove_failed = bool_arg(name, v);
    } else {
      bad_argument(name,
                   "is unknown (known: url, distributed_lock, lock_timeout, lock_sleep, "
                   "memcached_expire_time, min_compress_len, behaviors, binary, socket_timeout, "
                   "dead_retry, remove_failed, username, password, pool_size, mangle_bad_keys, "
                   "max_value_size, max_value_bytes)");
    }
  }
  if (!have_url) bad_argument("url", "is required (\"host:port\" or a list of them)");
  // `binary` given alongside `behaviors`: the later one in the object wins, as in a dict merge.
  return std::make_shared<MemcachedBackend>(std::move(o));
}

std::optional<std::string> MemcachedBackend::do_get(std::string_view key) {
  auto c = impl_->client();
  std::size_t len = 0;
  std::uint32_t flags = 0;
  memcached_return_t rc = MEMCACHED_SUCCESS;
  char* v = memcached_get(c.get(), key.data(), key.size(), &len, &flags, &rc);
  if (v == nullptr) {
    // memcached_get reports a failed read (a timeout, a refused allocation, a malformed reply)
    // as NOTFOUND; its last error says what happened.
    if (rc == MEMCACHED_NOTFOUND && !in_step(memcached_last_error(c.get()))) {
      rc = memcached_last_error(c.get());
    }
    if (rc == MEMCACHED_NOTFOUND) return std::nullopt;
    if (rc != MEMCACHED_SUCCESS) impl_->fail(c.get(), rc, "get", key);
    return std::string();  // an empty value
  }
  struct Free {
    char* v;
    ~Free() { std::free(v); }
  } free_v{v};
  return impl_->decode(v, len, flags);
}

void MemcachedBackend::do_set(std::string_view key, std::string_view value) {
  auto c = impl_->client();
  impl_->store(c.get(), key, value);
}

void MemcachedBackend::do_erase(std::string_view key) {
  auto c = impl_->client();
  impl_->remove(c.get(), key);
}

std::vector<std::optional<std::string>> MemcachedBackend::do_get_multi(
    std::span<const std::string> keys) {
  auto c = impl_->client();
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(keys.size());
  lens.reserve(keys.size());
  // Key -> first position; a repeated key (rare) chains to its next position in `next`.
  std::unordered_map<std::string_view, std::size_t> where;
  where.reserve(keys.size());
  std::vector<std::size_t> next(keys.size(), keys.size());
  std::vector<std::size_t> last(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto [it, fresh] = where.try_emplace(keys[i], i);
    if (fresh) {
      ptrs.push_back(keys[i].data());
      lens.push_back(keys[i].size());
      last[i] = i;
    } else {
      next[last[it->second]] = i;
      last[it->second] = i;
    }
  }
  memcached_return_t rc = memcached_mget(c.get(), ptrs.data(), lens.data(), ptrs.size());
  if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_SOME_ERRORS) {
    impl_->fail(c.get(), rc, "get_multi", keys.front());
  }
  std::vector<std::optional<std::string>> out(keys.size());
  // One result object reused for every value (no allocation per key).
  memcached_result_st storage{};
  memcached_result_st* r = memcached_result_create(c.get(), &storage);
  if (r == nullptr) detail::throw_error<BackendError>("memcached backend: out of memory");
  struct FreeResult {
    memcached_result_st* r;
    ~FreeResult() { memcached_result_free(r); }
  } free_result{r};
  while (memcached_fetch_result(c.get(), r, &rc) != nullptr) {
    const std::string_view k(memcached_result_key_value(r), memcached_result_key_length(r));
    if (auto it = where.find(k); it != where.end()) {
      const std::size_t first = it->second;
      out[first] = impl_->decode(memcached_result_value(r), memcached_result_length(r),
                                 memcached_result_flags(r));
      for (std::size_t i = next[first]; i < keys.size(); i = next[i]) out[i] = out[first];
    }
  }
  if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
    impl_->fail(c.get(), rc, "get_multi", keys.front());
  }
  return out;
}

void MemcachedBackend::do_set_multi(std::span<const BytesItem> items) {
  auto c = impl_->client();
  // Sizes first: an oversized value fails the call before anything is stored.
  const std::size_t l = impl_->limit();
  for (const auto& [k, v] : items) {
    if (impl_->opts.min_compress_len == 0 && v.size() + k.size() > l) {
      std::string storage;
      impl_->encode(k, v, storage);  // throws the size error
    }
  }
  for (const auto& [k, v] : items) impl_->store(c.get(), k, v);
}

void MemcachedBackend::do_erase_multi(std::span<const std::string> keys) {
  auto c = impl_->client();
  for (const auto& k : keys) impl_->remove(c.get(), k);
}

std::size_t MemcachedBackend::do_max_value_bytes() const { return impl_->opts.max_value_bytes; }

std::shared_ptr<CacheMutex> MemcachedBackend::do_get_mutex(std::string_view key) {
  if (!impl_->opts.distributed_lock) return nullptr;
  std::string lock_key = "_lock" + std::string(key);
  // `key` fits memcached (checked); `_lock` + key may not: SHA-1 it, as the value keys are.
  if (lock_key.size() > 250) lock_key = "_lock" + detail::sha1_hex(key);
  const bool never = impl_->opts.lock_timeout.count() == 0;
  LeaseLockOptions lo;
  lo.lease = never ? milliseconds(std::chrono::hours(24)) : milliseconds(impl_->opts.lock_timeout);
  lo.lock_sleep = impl_->opts.lock_sleep;
  lo.renew = !never;
  auto store = std::make_shared<MemcachedLeaseStore>(std::shared_ptr<Pool>(impl_),
                                                     std::move(lock_key), never);
  if (never) return std::make_shared<PermanentMemcachedLock>(std::move(store), lo);
  return std::make_shared<LeaseLock>(std::move(store), lo);
}

void register_memcached_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char* name : {"memcached", "pylibmc", "bmemcached", "pymemcache"}) {
      register_backend(name,
                       [](const nlohmann::json& a) { return MemcachedBackend::from_arguments(a); });
    }
  });
}

}  // namespace dogpile
