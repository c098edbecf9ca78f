// The pure decoding of what a memcached server returns, apart from any connection (libmemcached
// reads the protocol; these read what it hands over): a stored value with its flags, the
// `item_size_max` of `stats settings`, and the detail of libmemcached's last error message
// (which may carry the server's own error line). Internal to dogpile::memcached; fuzzed by
// tests/fuzz/fuzz_memcached_reply.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dogpile::memcached_detail {

/// A stored value as read with its flags: zlib-flagged (8) values are inflated, pickles (1) are
/// not ours (nullopt: a miss), a corrupt zlib stream is a miss too. Over `max_value_bytes` (as
/// read, or inflated): ReplyError (a BackendError). Thread-safe (pure).
std::optional<std::string> decode_value(std::string_view bytes, std::uint32_t flags,
                                        std::size_t max_value_bytes);

/// The value of a server's `item_size_max` statistic as a number of bytes; 0 (unknown) when it
/// is not a plain decimal number that fits. Pure; never throws.
std::size_t parse_item_size_max(std::string_view value);

/// libmemcached's last error message without the client's address and libmemcached's source
/// line, and without a leading copy of the return code's own text `rc_name`. Pure; never throws
/// but std::bad_alloc.
std::string clean_error_detail(std::string d, const std::string& rc_name);

}  // namespace dogpile::memcached_detail
