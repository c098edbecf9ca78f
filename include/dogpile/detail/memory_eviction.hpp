#pragma once
// `MemoryEviction`, on its own so that a header can name it without the eviction machinery
// (detail/eviction.hpp).

namespace dogpile {

/// Which entry a bounded memory backend drops when it is full.
enum class MemoryEviction {
  tiny_lfu,  ///< W-TinyLFU (Caffeine's policy): scan- and one-hit-wonder-resistant; the default
  lru,       ///< plain least-recently-used, for comparison
};

}  // namespace dogpile
