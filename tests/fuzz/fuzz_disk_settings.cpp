// libFuzzer target: a tampered Settings table. The bytes describe rows (key, value of any SQLite
// type: INTEGER, REAL, TEXT, BLOB) and options given at open, merged by merge_settings
// (src/disk/cache_settings.cpp) as DiskCache's constructor does. Outcomes: the settings the
// cache opens with, every known one valid (its default replacing a bad stored row), or
// DatabaseError (a bad counter of a read-only cache) / ValidationError (a bad given option);
// std::out_of_range, std::bad_variant_access or UB are bugs. What the open does next with the
// result (the eviction policy, tag_index, the locally applied settings, each pragma's value)
// must not throw for a known setting.
//
// Layout: byte 0: bit 0 read-only. Then records: a selector byte (bit 7: the row is a given
// option, else a stored row; low bits: one of the known names, or, for 31, a length byte and
// that many bytes of name), a type byte (0 integer: 8 bytes, 1 real: 8 bytes, 2 text / 3 blob:
// a length byte and that many bytes).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include "cache_impl.hpp"
#include "fuzz_target.hpp"

namespace {

const char* const kNames[] = {"statistics",
                              "tag_index",
                              "eviction_policy",
                              "size_limit",
                              "cull_limit",
                              "sqlite_auto_vacuum",
                              "sqlite_cache_size",
                              "sqlite_journal_mode",
                              "sqlite_mmap_size",
                              "sqlite_synchronous",
                              "disk_min_file_size",
                              "disk_pickle_protocol",
                              "count",
                              "size",
                              "hits",
                              "misses",
                              "disk_other",
                              "sqlite_other"};
constexpr std::size_t kKnown = 16;  // the first 16 are settings the cache knows

struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  bool take(void* out, std::size_t k) {
    if (n < k) return false;
    if (k != 0) std::memcpy(out, p, k);
    p += k;
    n -= k;
    return true;
  }
  bool bytes(std::string& out) {
    std::uint8_t len = 0;
    if (!take(&len, 1) || n < len) return false;
    out.assign(reinterpret_cast<const char*>(p), len);
    p += len;
    n -= len;
    return true;
  }
};

}  // namespace

DOGPILE_FUZZ_TARGET(disk_settings) {
  using dogpile::DiskValue;
  Reader r{data, size};
  std::uint8_t head = 0;
  if (!r.take(&head, 1)) return 0;
  std::map<std::string, DiskValue> stored;
  std::map<std::string, DiskValue> given;
  for (;;) {
    std::uint8_t sel = 0;
    std::uint8_t type = 0;
    if (!r.take(&sel, 1) || !r.take(&type, 1)) break;
    std::string name;
    const std::size_t which = sel & 0x1FU;
    if (which == 31) {
      if (!r.bytes(name)) break;
    } else {
      name = kNames[which % (sizeof kNames / sizeof kNames[0])];
    }
    DiskValue v;
    switch (type % 4) {
      case 0: {
        std::int64_t i = 0;
        if (!r.take(&i, sizeof i)) return 0;
        v = i;
        break;
      }
      case 1: {
        double d = 0;
        if (!r.take(&d, sizeof d)) return 0;
        v = d;
        break;
      }
      case 2: {
        std::string s;
        if (!r.bytes(s)) return 0;
        v = std::move(s);
        break;
      }
      default: {
        std::string s;
        if (!r.bytes(s)) return 0;
        v = dogpile::Bytes{std::move(s)};
        break;
      }
    }
    ((sel & 0x80U) != 0 ? given : stored)[name] = std::move(v);
  }
  const bool read_only = (head & 1U) != 0;
  dogpile::detail::OpenSettings out;
  try {
    out = dogpile::detail::merge_settings(stored, given, read_only, "fuzz/cache.db");
  } catch (const dogpile::DatabaseError&) {
    return 0;
  } catch (const dogpile::ValidationError&) {
    return 0;
  }
  for (std::size_t i = 0; i < kKnown; ++i) {
    const auto it = out.settings.find(kNames[i]);
    if (it == out.settings.end()) continue;  // a counter not stored
    const bool recomputed = std::find(out.bad_counters.begin(), out.bad_counters.end(),
                                      it->first) != out.bad_counters.end();
    if (recomputed != dogpile::detail::setting_error(it->first, it->second).has_value()) {
      __builtin_trap();  // a bad setting kept, or a good counter recomputed
    }
  }
  // What init() and apply_setting_locally do with a valid setting: none of these may throw.
  for (const auto& [name, value] : out.settings) {
    const bool known = std::find(kNames, kNames + kKnown, name) != kNames + kKnown;
    if (!known || std::find(out.bad_counters.begin(), out.bad_counters.end(), name) !=
                      out.bad_counters.end()) {
      continue;
    }
    if (name == "eviction_policy" || name == "sqlite_journal_mode") {
      (void)dogpile::detail::as_text(value, name);
    } else {
      (void)dogpile::detail::as_int(value, name);
    }
  }
  (void)dogpile::detail::describe_setting(out.settings["eviction_policy"]);
  for (const auto& p : out.problems) {
    if (p.empty()) __builtin_trap();
  }
  return 0;
}
