// Pipelined multi-key writes: every request of a batch is buffered and sent before any reply is
// read, then every reply is read and checked, so a batch costs one round trip per server instead
// of one per key, and a failed write is still reported.
//
// libmemcached 1.1 gives no per-request result for buffered text-protocol requests (its
// memcached_response reads and discards all pending replies but the last), nor for no-reply
// ones. With the binary protocol memcached_fetch_result returns buffered write replies one by
// one: a success as a result, a failure as its return code. Its I/O watermarks bound what may
// stay unread: past io_msg_watermark pending replies or io_bytes_watermark bytes sent it
// "purges" (reads and drops) them, so a batch is sent in chunks under both, each chunk read in
// full before the next. A chunk of writes whose replies do not all come back as successes or
// errors (a purge we did not foresee) is a failure too: nothing unconfirmed passes as stored.
#include <algorithm>
#include <string>
#include <vector>

#include "dogpile/error.hpp"
#include "pool.hpp"

namespace dogpile::memcached_detail {
namespace {

// A binary request's size beyond key and value: 24-byte header and 8 bytes of extras.
constexpr std::size_t kRequestOverhead = 32;

// The first failure of a batch: its code and the key it was sent for (empty when a reply
// could not be matched to a key).
struct FirstFailure {
  memcached_return_t rc = MEMCACHED_SUCCESS;
  std::string key;
  std::string server;  // "host:port" when no key tells it
  void note(memcached_return_t r, std::string_view k) {
    if (rc == MEMCACHED_SUCCESS) {
      rc = r;
      key = std::string(k);
    }
  }
};

// The server whose last error is `rc` (a reply's failure carries no key), or "".
std::string server_with_error(const memcached_st* mc, memcached_return_t rc) {
  for (std::uint32_t i = 0; i < memcached_server_count(mc); ++i) {
    const memcached_instance_st* inst = memcached_server_instance_by_position(mc, i);
    if (inst != nullptr && memcached_server_error_return(inst) == rc) {
      return std::string(memcached_server_name(inst)) + ":" +
             std::to_string(memcached_server_port(inst));
    }
  }
  return {};
}

// Sends `n` requests (`send(i)`: buffers request i, returns libmemcached's code;
// `bytes(i)`: its size) in chunks under the client's watermarks, and reads every reply.
// Returns normally only if every write was confirmed (`confirm`: replies must all be
// successes) or was a tolerated code (`ok(rc)`). Otherwise calls `fail` with the first failure.
template <class Send, class Bytes, class Ok, class KeyOf>
void pipeline(Pool& pool, memcached_st* mc, std::size_t n, const char* what, bool confirm,
              const Send& send, const Bytes& bytes, const Ok& ok, const KeyOf& key_of) {
  const auto msg_mark =
      std::max<std::uint64_t>(2, memcached_behavior_get(mc, MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK));
  const auto byte_mark = memcached_behavior_get(mc, MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK);
  const std::size_t servers = memcached_server_count(mc);
  FirstFailure first;
  std::string unconfirmed;  // set when replies went missing before any other failure
  memcached_result_st storage{};
  memcached_result_st* r = memcached_result_create(mc, &storage);
  if (r == nullptr) detail::throw_error<BackendError>("memcached backend: out of memory");
  struct FreeResult {
    memcached_result_st* r;
    ~FreeResult() { memcached_result_free(r); }
  } free_result{r};
  try {
    for (std::size_t begin = 0; begin < n;) {
      // One chunk: fewer pending replies than io_msg_watermark per server, fewer bytes than
      // io_bytes_watermark (a single larger request goes alone: libmemcached allows that).
      std::size_t end = begin;
      std::size_t chunk_bytes = 0;
      std::size_t buffered = 0;
      while (end < n && end - begin + 1 < msg_mark &&
             (end == begin || chunk_bytes + bytes(end) < byte_mark)) {
        chunk_bytes += bytes(end);
        const memcached_return_t rc = send(end);
        if (rc == MEMCACHED_BUFFERED) {
          ++buffered;
        } else if (rc != MEMCACHED_SUCCESS && !ok(rc)) {
          first.note(rc, key_of(end));  // not sent (e.g. its server is down): go on
        }
        ++end;
      }
      memcached_return_t rc = memcached_flush_buffers(mc);
      if (rc != MEMCACHED_SUCCESS) first.note(rc, {});
      std::size_t confirmed = 0;
      std::size_t errors = 0;
      // Each call consumes at least one reply or ends the chunk; the bound is a safety net.
      for (std::size_t guard = 0; guard <= buffered + servers + 1; ++guard) {
        if (memcached_fetch_result(mc, r, &rc) != nullptr) {
          ++confirmed;
          continue;
        }
        if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND) break;
        ++errors;
        if (!ok(rc)) first.note(rc, {});
      }
      // A server lost while reading (its pending replies dropped with the connection) shows
      // only in the client's last error: memcached_fetch_result may still end with END.
      if (const auto last = memcached_last_error(mc); !in_step(last) && !ok(last)) {
        first.note(last, {});
      }
      if (first.rc != MEMCACHED_SUCCESS && first.key.empty() && first.server.empty()) {
        first.server = server_with_error(mc, first.rc);
      }
      if (confirm && confirmed + errors < buffered) {
        // Replies libmemcached read and dropped (seen: the server's "too large" to a value
        // over its -I): unknown outcome, so a failure. The connection is reset, and the rest
        // of the batch still goes out.
        memcached_quit(mc);
        if (unconfirmed.empty() && first.rc == MEMCACHED_SUCCESS) {
          unconfirmed = std::string("memcached backend: ") + what +
                        " failed: the servers confirmed " + std::to_string(confirmed) + " of " +
                        std::to_string(buffered) + " writes of a batch (" + std::to_string(begin) +
                        ".." + std::to_string(end - 1) + "): the others may not be stored";
        }
      }
      begin = end;
    }
  } catch (...) {
    memcached_quit(mc);  // buffered requests or replies may be left: never lend them again
    throw;
  }
  if (first.rc == MEMCACHED_E2BIG) pool.size_limit.store(0);  // the servers' limit changed
  if (!unconfirmed.empty()) detail::throw_error<ReplyError>(unconfirmed);
  if (first.rc != MEMCACHED_SUCCESS) {
    pool.fail(mc, first.rc, first.server.empty() ? what : what + (" on " + first.server),
              first.key);
  }
}

}  // namespace

void Pool::store_many(std::span<const BytesItem> items) {
  if (items.empty()) return;
  // Every value encoded and its size checked before anything is sent.
  std::vector<std::string> storage(items.size());
  std::vector<std::pair<std::string_view, std::uint32_t>> encoded;
  encoded.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    encoded.push_back(encode(items[i].first, items[i].second, storage[i]));
  }
  const time_t exp = expiry(opts.memcached_expire_time);
  auto c = writer();
  pipeline(
      *this, c.get(), items.size(), "set", true,
      [&](std::size_t i) {
        const auto& k = items[i].first;
        const auto [bytes, flags] = encoded[i];
        return memcached_set(c.get(), k.data(), k.size(), bytes.data(), bytes.size(), exp, flags);
      },
      [&](std::size_t i) {
        return kRequestOverhead + items[i].first.size() + encoded[i].first.size();
      },
      [](memcached_return_t) { return false; },
      [&](std::size_t i) { return std::string_view(items[i].first); });
}

void Pool::remove_many(std::span<const std::string> keys) {
  if (keys.empty()) return;
  auto c = writer();
  pipeline(
      *this, c.get(), keys.size(), "delete", false,
      [&](std::size_t i) { return memcached_delete(c.get(), keys[i].data(), keys[i].size(), 0); },
      [&](std::size_t i) { return kRequestOverhead + keys[i].size(); },
      [](memcached_return_t rc) { return rc == MEMCACHED_NOTFOUND; },
      [&](std::size_t i) { return std::string_view(keys[i]); });
}

}  // namespace dogpile::memcached_detail
