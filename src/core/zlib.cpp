// detail/zlib.hpp: the zlib wrappers, compiled once (<zlib.h> stays out of the headers).

#include "dogpile/detail/zlib.hpp"

#include <zlib.h>

#include <algorithm>

namespace dogpile::detail {

std::string zlib_compress(std::string_view in, int level) {
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

std::string zlib_decompress(std::string_view in, std::size_t max_bytes) {
  if (in.size() < 8) throw_error<CantDeserialize>("truncated compressed payload");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[static_cast<std::size_t>(i)]))
         << (8 * i);
  // A corrupt length must not make us allocate gigabytes: deflate cannot expand beyond ~1032x.
  if (n > (in.size() - 8) * 1032 + 64)
    throw_error<CantDeserialize>("corrupt compressed payload length");
  // A genuine stream can still expand 1032x (a decompression bomb): the bound caps the memory.
  if (n > max_bytes) {
    throw_error<CantDeserialize>("compressed payload inflates to " + std::to_string(n) +
                                 " bytes, more than max_value_bytes (" + std::to_string(max_bytes) +
                                 ")");
  }
  std::string out(n, '\0');
  uLongf len = static_cast<uLongf>(n);
  int rc =
      uncompress(reinterpret_cast<Bytef*>(out.data()), &len,
                 reinterpret_cast<const Bytef*>(in.data() + 8), static_cast<uLong>(in.size() - 8));
  if (rc != Z_OK || len != n) throw_error<CantDeserialize>("corrupt compressed payload");
  return out;
}

Inflated zlib_inflate(std::string_view in, std::size_t max_bytes) {
  Inflated r;
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) return r;
  // avail_in is 32 bits: feed huge inputs in pieces.
  const auto* next = reinterpret_cast<const Bytef*>(in.data());
  std::size_t left = in.size();
  char buf[16384];
  int rc = Z_OK;
  for (;;) {
    if (zs.avail_in == 0 && left > 0) {
      const auto take = static_cast<uInt>(std::min<std::size_t>(left, 1U << 30));
      zs.next_in = const_cast<Bytef*>(next);
      zs.avail_in = take;
      next += take;
      left -= take;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;  // Z_BUF_ERROR: truncated; others: corrupt
    const std::size_t got = sizeof buf - zs.avail_out;
    if (got > max_bytes - r.data.size()) {
      inflateEnd(&zs);
      r.status = InflateStatus::too_large;
      r.data.clear();
      return r;
    }
    r.data.append(buf, got);
    if (rc == Z_STREAM_END) break;
  }
  const bool ok = rc == Z_STREAM_END && zs.avail_in == 0 && left == 0;
  inflateEnd(&zs);
  if (ok) {
    r.status = InflateStatus::ok;
  } else {
    r.data.clear();
  }
  return r;
}

}  // namespace dogpile::detail
