// libFuzzer target: arbitrary bytes as what a tampered cache.db row holds: a stored value (a
// BLOB or TEXT column) through both disk serializers' decode, and a `filename` column through
// the value-file name check (which keeps paths inside the cache directory). The Settings rows
// and the row reader have no pure function (they read SQLite statements); they are covered by
// the tampered-cache tests instead. Outcomes: a value, or CantDeserialize; a name accepted only
// if it has the cache's own layout.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dogpile/disk/serializer.hpp"
#include "fuzz_target.hpp"
#include "value_files.hpp"

DOGPILE_FUZZ_TARGET(disk_value) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  if (dogpile::detail::is_value_filename(s)) {
    // ab/cd/<28 hex>.val: relative, no "..", no separators beyond the layout's
    if (s.size() != 38 || s.find("..") != std::string::npos || s[0] == '/') __builtin_trap();
  }
  // A 64 KiB bound: a bomb (corpus/disk_value/dpz_bomb) stops there, and its mutants reach the
  // "too large" path after inflating 64 KiB instead of 1 MiB each run.
  constexpr std::size_t kBound = std::size_t{1} << 16;
  static const dogpile::JsonSerializer json(1, kBound);
  static const dogpile::ZlibSerializer zlib(1024, 6, kBound);
  const dogpile::ValueSerializer* const serializers[] = {&json, &zlib};
  for (const dogpile::ValueSerializer* ser : serializers) {
    for (int kind = 0; kind < 2; ++kind) {
      const dogpile::DiskValue stored =
          kind == 0 ? dogpile::DiskValue(dogpile::Bytes{s}) : dogpile::DiskValue(s);
      try {
        (void)ser->decode(stored);
      } catch (const dogpile::CantDeserialize&) {
      }
    }
  }
  return 0;
}
