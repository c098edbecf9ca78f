// What the near-cache tests of the three redis backends share. Header-only; include as
// "support/near_cache.hpp".
#pragma once

#include <chrono>
#include <string>
#include <thread>

namespace dogpile::test {

/// Reads `key` through `b` until one read is an L1 hit (tracking up and a fence seen); false
/// when none came within `limit`. `Backend`: any redis backend (near_cache_stats(), get()).
/// Polls every millisecond (tracking comes up within a few).
template <class Backend>
bool l1_serves(Backend& b, const std::string& key,
               std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto before = b.near_cache_stats().l1_hits;
    (void)b.get(key);
    if (b.near_cache_stats().l1_hits > before) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace dogpile::test
