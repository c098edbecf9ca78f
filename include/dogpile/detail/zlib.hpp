#pragma once
// zlib wrappers for the envelope. The raw deflate stream is prefixed with the original length
// (8 bytes, little endian) so decompression can size its buffer and detect truncation.

#include <zlib.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "dogpile/error.hpp"

namespace dogpile::detail {

inline std::string zlib_compress(std::string_view in, int level) {
  uLongf bound = compressBound(static_cast<uLong>(in.size()));
  std::string out(8 + bound, '\0');
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((in.size() >> (8 * i)) & 0xFF);
  int rc =
      compress2(reinterpret_cast<Bytef*>(out.data() + 8), &bound,
                reinterpret_cast<const Bytef*>(in.data()), static_cast<uLong>(in.size()), level);
  if (rc != Z_OK) throw_error<BackendError>("zlib compress failed: " + std::to_string(rc));
  out.resize(8 + bound);
  return out;
}

inline std::string zlib_decompress(std::string_view in) {
  if (in.size() < 8) throw_error<CantDeserialize>("truncated compressed payload");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[static_cast<std::size_t>(i)]))
         << (8 * i);
  // A corrupt length must not make us allocate gigabytes: deflate cannot expand beyond ~1032x.
  if (n > (in.size() - 8) * 1032 + 64)
    throw_error<CantDeserialize>("corrupt compressed payload length");
  std::string out(n, '\0');
  uLongf len = static_cast<uLongf>(n);
  int rc =
      uncompress(reinterpret_cast<Bytef*>(out.data()), &len,
                 reinterpret_cast<const Bytef*>(in.data() + 8), static_cast<uLong>(in.size() - 8));
  if (rc != Z_OK || len != n) throw_error<CantDeserialize>("corrupt compressed payload");
  return out;
}

}  // namespace dogpile::detail
