// libFuzzer target: what a memcached server returns, as the memcached layer decodes it once
// libmemcached has read the protocol (libmemcached itself is not fuzzed here):
// * a stored value and its flags (src/memcached/values.hpp decode_value): the first 4 bytes are
//   the flags (little endian), the rest the value; bounds 64 KiB and 16 bytes (so a zlib bomb
//   stops early, and the "over max_value_bytes" path is reached). Outcomes: a value within the
//   bound (bytes unchanged unless zlib-flagged), a miss, or ReplyError.
// * the same bytes as a `stats settings` item_size_max value: a number or 0;
// * and as libmemcached's last error message (which carries a server's SERVER_ERROR line),
//   through clean_error_detail: any string, never longer than its input.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "dogpile/error.hpp"
#include "fuzz_target.hpp"
#include "values.hpp"

DOGPILE_FUZZ_TARGET(memcached_reply) {
  std::uint32_t flags = 0;
  const std::size_t head = size < 4 ? size : 4;
  if (head != 0) std::memcpy(&flags, data, head);
  const std::string_view value(reinterpret_cast<const char*>(data) + head, size - head);
  for (const std::size_t bound : {std::size_t{1} << 16, std::size_t{16}}) {
    try {
      const auto v = dogpile::memcached_detail::decode_value(value, flags, bound);
      if (v && v->size() > bound) __builtin_trap();
      if (v && (flags & 9U) == 0 && *v != value) __builtin_trap();
      if (v && (flags & 1U) != 0) __builtin_trap();  // a pickle is never ours
    } catch (const dogpile::BackendError&) {
    }
  }
  (void)dogpile::memcached_detail::parse_item_size_max(value);
  const std::string whole(reinterpret_cast<const char*>(data), size);
  const std::string cleaned =
      dogpile::memcached_detail::clean_error_detail(whole, "CONNECTION FAILURE");
  if (cleaned.size() > whole.size()) __builtin_trap();
  return 0;
}
