// libFuzzer target: arbitrary bytes into the two zlib readers, with a 1 MiB bound (so a bomb in
// the corpus is cheap): detail::zlib_inflate (plain zlib streams: disk serializers, memcached
// flag 8) and detail::zlib_decompress (the envelope's length-prefixed payload). Outcomes:
// inflated data within the bound, `corrupt` / `too_large`, or CantDeserialize; a stream that
// inflates must round-trip through compression.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dogpile/detail/zlib.hpp"
#include "fuzz_target.hpp"

DOGPILE_FUZZ_TARGET(zlib) {
  constexpr std::size_t kBound = std::size_t{1} << 20;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto r = dogpile::detail::zlib_inflate(bytes, kBound);
  if (r.status == dogpile::detail::InflateStatus::ok) {
    if (r.data.size() > kBound) __builtin_trap();
    const std::string z = dogpile::detail::zlib_compress(r.data, 1).substr(8);
    const auto back = dogpile::detail::zlib_inflate(z, kBound);
    if (back.status != dogpile::detail::InflateStatus::ok || back.data != r.data) __builtin_trap();
  } else if (!r.data.empty()) {
    __builtin_trap();
  }
  try {
    const std::string out = dogpile::detail::zlib_decompress(bytes, kBound);
    if (out.size() > kBound) __builtin_trap();
  } catch (const dogpile::CantDeserialize&) {
  }
  return 0;
}
