#pragma once
// zlib wrappers. The envelope's deflate stream is prefixed with the original length (8 bytes,
// little endian) so decompression can size its buffer and detect truncation; `zlib_inflate`
// reads plain zlib streams (Python's zlib.compress) in bounded chunks.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dogpile/error.hpp"
#include "dogpile/limits.hpp"

namespace dogpile::detail {

std::string zlib_compress(std::string_view in, int level);

/// The envelope's payload, inflated. @throws CantDeserialize when it is truncated or corrupt,
/// or when its recorded length exceeds `max_bytes` (checked before the buffer is allocated).
std::string zlib_decompress(std::string_view in, std::size_t max_bytes = default_max_value_bytes);

/// What `zlib_inflate` found.
enum class InflateStatus : unsigned char {
  ok,         ///< one complete zlib stream, inflated
  corrupt,    ///< not one complete zlib stream (or trailing bytes after it)
  too_large,  ///< it inflates to more than the bound (inflation stopped there)
};

/// The result of `zlib_inflate`: `data` is meaningful only when `status` is `ok`.
struct Inflated {
  InflateStatus status = InflateStatus::corrupt;
  std::string data{};
};

/// Python's `zlib.decompress(in)` with a bound: a plain zlib stream (compress2 / zlib.compress),
/// inflated in chunks; once the output would exceed `max_bytes` it stops (`too_large`), so a
/// decompression bomb costs at most `max_bytes` of memory. The shared inflate of every reader of
/// zlib-compressed values that have no length prefix (disk serializers, memcached flag 8).
/// Does not throw except std::bad_alloc.
Inflated zlib_inflate(std::string_view in, std::size_t max_bytes = default_max_value_bytes);

}  // namespace dogpile::detail
