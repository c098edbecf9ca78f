// The client pool: bounded allocation, fork safety, lending clients, and turning a failed call
// into a dogpile error.
#include "pool.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string_view>

#include "dogpile/error.hpp"
#include "options.hpp"
#include "values.hpp"

namespace dogpile::memcached_detail {
namespace {

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

// \s of the regexes this replaced (the "C" locale's blanks).
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// The length of a leading "(0x<hex>)" or "(nil)" after leading blanks, with the blanks after
// it; 0 when `d` does not start so.
std::size_t pointer_prefix(std::string_view d) {
  std::size_t i = 0;
  while (i < d.size() && is_space(d[i])) ++i;
  if (i >= d.size() || d[i] != '(') return 0;
  ++i;
  if (d.substr(i, 3) == "nil") {
    i += 3;
  } else if (d.substr(i, 2) == "0x" && i + 2 < d.size() && is_hex(d[i + 2])) {
    i += 2;
    while (i < d.size() && is_hex(d[i])) ++i;
  } else {
    return 0;
  }
  if (i >= d.size() || d[i] != ')') return 0;
  ++i;
  while (i < d.size() && is_space(d[i])) ++i;
  return i;
}

// Where a trailing " -> <file>:<line>" (blanks around the arrow optional, the file one run of
// non-blanks, blanks after the line) begins, or npos. Its leftmost possible start, as a regex
// search for \s*->\s*\S+:[0-9]+\s*$ finds it, in one pass from the end.
std::size_t location_suffix(std::string_view d) {
  std::size_t e = d.size();
  while (e > 0 && is_space(d[e - 1])) --e;
  std::size_t j = e;
  while (j > 0 && is_digit(d[j - 1])) --j;
  if (j == e || j < 2 || d[j - 1] != ':') return std::string_view::npos;
  const std::size_t colon = j - 1;
  std::size_t r = colon;  // the start of the last run of non-blanks (the file, maybe the arrow)
  while (r > 0 && !is_space(d[r - 1])) --r;
  std::size_t arrow = std::string_view::npos;
  // An arrow ending the run before the blanks before the file (" -> file:1"), else the first
  // arrow inside the last run that leaves at least one character of file (" ->file:1").
  if (r < colon) {
    std::size_t g = r;
    while (g > 0 && is_space(d[g - 1])) --g;
    if (g < r && g >= 2 && d[g - 2] == '-' && d[g - 1] == '>') arrow = g - 2;
  }
  if (arrow == std::string_view::npos) {
    for (std::size_t p = r; p + 2 < colon; ++p) {
      if (d[p] == '-' && d[p + 1] == '>') {
        arrow = p;
        break;
      }
    }
  }
  if (arrow == std::string_view::npos) return std::string_view::npos;
  while (arrow > 0 && is_space(d[arrow - 1])) --arrow;
  return arrow;
}
}  // namespace

// libmemcached's last error message reads "(0x5625…) CONNECTION FAILURE,  host: h:p ->
// ./src/libmemcached/get.cc:233": the client's address and libmemcached's source line mean
// nothing to a user (and the pointer makes every message unique, defeating log grouping). Keep
// what is left after the return code's own text: the host:port and any system reason.
// The message may carry a server's SERVER_ERROR line (up to libmemcached's 2 KiB): it is
// scanned in linear time. (It was std::regex: its search for the trailing location backtracks
// quadratically, 4 KiB of blanks took 40 s under the fuzz build, and its executor recurses per
// character.) The result is the one the regexes ^\s*\((0x[0-9a-fA-F]+|nil)\)\s* and
// \s*->\s*\S+:[0-9]+\s*$ removed, and \s+ made one blank.
std::string clean_error_detail(std::string d, const std::string& rc_name) {
  d.erase(0, pointer_prefix(d));
  if (const auto at = location_suffix(d); at != std::string_view::npos) d.erase(at);
  std::string out;
  out.reserve(d.size());
  for (std::size_t i = 0; i < d.size();) {
    if (!is_space(d[i])) {
      out += d[i++];
      continue;
    }
    out += ' ';
    while (i < d.size() && is_space(d[i])) ++i;
  }
  d = std::move(out);
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

bool in_step(memcached_return_t rc) {
  return rc == MEMCACHED_SUCCESS || rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND ||
         rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_STORED ||
         rc == MEMCACHED_DELETED || rc == MEMCACHED_E2BIG || rc == MEMCACHED_BUFFERED;
}

// ---- the pool ---------------------------------------------------------------------------------

Pool::Pool(MemcachedOptions o) : opts(std::move(o)), pid(::getpid()) {
  check_options(opts);
  build_pool();
}

Pool::~Pool() {
  // A forked child leaves its parent's pool alone: quitting would close the parent's
  // connections (the sockets are shared).
  if (pid != ::getpid()) return;
  if (writer_pool != nullptr) memcached_pool_destroy(writer_pool);
  if (writer_master != nullptr) memcached_free(writer_master);
  if (pool != nullptr) memcached_pool_destroy(pool);
  if (master != nullptr) memcached_free(master);
}

void Pool::build_pool() {
  build_one(master, pool, false);
  try {
    build_one(writer_master, writer_pool, true);
  } catch (...) {
    memcached_pool_destroy(pool);
    memcached_free(master);
    pool = nullptr;
    master = nullptr;
    throw;
  }
}

void Pool::build_one(memcached_st*& m, memcached_pool_st*& p, bool pipelined) {
  m = memcached_create(nullptr);
  if (m == nullptr) detail::throw_error<BackendError>("memcached backend: out of memory");
  try {
    // The pool's clients are clones of `m`: they inherit the hooks and their context.
    if (memcached_set_memory_allocators(m, bounded_malloc, bounded_free, bounded_realloc,
                                        bounded_calloc,
                                        &opts.max_value_bytes) != MEMCACHED_SUCCESS) {
      detail::throw_error<BackendError>("memcached backend: cannot set the allocators");
    }
    configure(m, opts);
    // Buffered requests keep every reply unread until fetched. Only the binary protocol lets
    // memcached_fetch_result return them one by one: with text, libmemcached's
    // memcached_response reads and discards all replies but the last (a failed write would
    // pass unseen).
    if (pipelined &&
        (memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1) != MEMCACHED_SUCCESS ||
         memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1) != MEMCACHED_SUCCESS)) {
      detail::throw_error<BackendError>("memcached backend: cannot set up pipelined writes");
    }
  } catch (...) {
    memcached_free(m);
    m = nullptr;
    throw;
  }
  p = memcached_pool_create(m, 1, static_cast<std::uint32_t>(opts.pool_size));
  if (p == nullptr) {
    memcached_free(m);
    m = nullptr;
    detail::throw_error<BackendError>("memcached backend: cannot create the client pool");
  }
}

Pool::Client::Client(memcached_pool_st* pool, memcached_st* mc) : pool_(pool), mc_(mc) {
  t_refused = false;
}

Pool::Client::~Client() {
  if (!in_step(memcached_last_error(mc_)) || t_refused) memcached_quit(mc_);
  t_refused = false;
  memcached_pool_release(pool_, mc_);
}

Pool::Client Pool::client() { return lend(&Pool::pool); }

Pool::Client Pool::writer() { return lend(&Pool::writer_pool); }

Pool::Client Pool::lend(memcached_pool_st* Pool::*which) {
  memcached_pool_st* p = nullptr;
  {
    std::lock_guard lk(mu);
    if (pid != ::getpid()) {  // a forked child: its own pool, the parent's left untouched
      pid = ::getpid();
      master = nullptr;
      pool = nullptr;
      writer_master = nullptr;
      writer_pool = nullptr;
      build_pool();
    }
    p = this->*which;
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

void Pool::fail(const memcached_st* mc, memcached_return_t rc, const std::string& what,
                std::string_view key) {
  std::string server;
  if (!key.empty()) {
    memcached_return_t src = MEMCACHED_SUCCESS;
    if (const auto* inst =
            memcached_server_by_key(const_cast<memcached_st*>(mc), key.data(), key.size(), &src)) {
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

}  // namespace dogpile::memcached_detail
