// The stored bytes: python-memcached / pylibmc flags (zlib, pickles), the servers' item size
// limit, expiry, and the single-key writes.
#include <zlib.h>

#include <charconv>

#include "dogpile/detail/zlib.hpp"
#include "dogpile/error.hpp"
#include "pool.hpp"
#include "values.hpp"

namespace dogpile::memcached_detail {
namespace {

constexpr std::uint32_t kFlagPickle = 1;  // python-memcached / pylibmc: a pickled object
constexpr std::uint32_t kFlagZlib = 8;    // python-memcached / pylibmc: zlib-compressed
// memcached's per-item overhead beyond key and value (item header, CAS, suffix, CRLF), rounded
// up generously: a value within the limit less this never triggers the server's "too large".
constexpr std::size_t kItemOverhead = 128;

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

}  // namespace

time_t Pool::expiry(std::chrono::milliseconds ttl) const {
  if (ttl.count() <= 0) return 0;
  auto s = static_cast<time_t>((ttl.count() + 999) / 1000);
  // memcached reads more than 30 days as an absolute Unix time.
  if (s > 30 * 24 * 3600) s += std::time(nullptr);
  return s;
}

std::optional<std::string> decode_value(std::string_view bytes, std::uint32_t flags,
                                        std::size_t max_value_bytes) {
  if (bytes.size() > max_value_bytes) {
    detail::throw_error<ReplyError>(
        "memcached backend: the server sent a " + std::to_string(bytes.size()) +
        "-byte value, over max_value_bytes (" + std::to_string(max_value_bytes) + ")");
  }
  if ((flags & kFlagPickle) != 0) return std::nullopt;
  if ((flags & kFlagZlib) != 0) return zlib_decompress(bytes, max_value_bytes);
  return std::string(bytes);
}

std::size_t parse_item_size_max(std::string_view value) {
  // The whole value is the number (strtoull read "-1" as 2^64 - 1 and stopped at junk).
  std::size_t v = 0;
  const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || p != value.data() + value.size()) return 0;
  return v;
}

std::optional<std::string> Pool::decode(const char* data, std::size_t len,
                                        std::uint32_t flags) const {
  return decode_value(std::string_view(data, len), flags, opts.max_value_bytes);
}

std::size_t Pool::limit() {
  if (opts.max_value_size != 0) return opts.max_value_size;
  if (const auto l = size_limit.load(); l != 0) return l;
  auto c = client();
  std::size_t smallest = 0;
  auto cb = [](const memcached_instance_st*, const char* key, size_t key_len, const char* value,
               size_t value_len, void* ctx) -> memcached_return_t {
    if (std::string_view(key, key_len) == "item_size_max") {
      const auto v = parse_item_size_max(std::string_view(value, value_len));
      auto* s = static_cast<std::size_t*>(ctx);
      if (v != 0 && (*s == 0 || v < *s)) *s = static_cast<std::size_t>(v);
    }
    return MEMCACHED_SUCCESS;
  };
  const memcached_return_t rc =
      memcached_stat_execute(c.get(), "settings", cb, static_cast<void*>(&smallest));
  // A server that is down (or ejected) does not answer: then use what the others said, or
  // memcached's default -I, for this call only, and ask again next time. Failing the write here
  // instead would fail every write of a process started while one server is down, where
  // remove_failed would have moved that server's keys to the live ones.
  // Any other failure (a refused authentication...) is the caller's error, as before.
  const bool every_server = rc == MEMCACHED_SUCCESS;
  const bool server_down = rc == MEMCACHED_SOME_ERRORS || rc == MEMCACHED_CONNECTION_FAILURE ||
                           rc == MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE ||
                           rc == MEMCACHED_SERVER_MARKED_DEAD ||
                           rc == MEMCACHED_SERVER_TEMPORARILY_DISABLED || rc == MEMCACHED_TIMEOUT ||
                           rc == MEMCACHED_ERRNO || rc == MEMCACHED_READ_FAILURE ||
                           rc == MEMCACHED_WRITE_FAILURE || rc == MEMCACHED_UNKNOWN_READ_FAILURE;
  if (smallest == 0 && !every_server && !server_down) fail(c.get(), rc, "stats settings", {});
  if (smallest == 0) smallest = 1024 * 1024;  // memcached's default -I
  const std::size_t l = smallest > 2 * kItemOverhead ? smallest - kItemOverhead : smallest / 2;
  if (every_server) size_limit.store(l);
  return l;
}

std::pair<std::string_view, std::uint32_t> Pool::encode(std::string_view key,
                                                        std::string_view value,
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

void Pool::store(memcached_st* mc, std::string_view key, std::string_view value) {
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

void Pool::remove(memcached_st* mc, std::string_view key) {
  const memcached_return_t rc = memcached_delete(mc, key.data(), key.size(), 0);
  if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) fail(mc, rc, "delete", key);
}

}  // namespace dogpile::memcached_detail
