#pragma once
/// @file persistent.hpp
/// What `Deque` and `Index` share. Internal.
///
/// The iterator walks a key list taken when iteration starts and fetches
/// each value when it gets there, skipping keys that vanished in between (another thread or
/// process popped them), as diskcache's `__iter__` skips its KeyErrors.

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dogpile/disk/cache.hpp"

namespace dogpile::detail {

/// Deque/Index caches never evict: an unset policy becomes `none`, another one is refused.
inline DiskCacheOptions persistent_options(DiskCacheOptions options, const char* who) {
  if (!options.eviction_policy) {
    options.eviction_policy = EvictionPolicy::none;
  } else if (*options.eviction_policy != EvictionPolicy::none) {
    throw_error<ValidationError>(std::string(who) +
                                 ": eviction_policy must be none (an evicting cache would drop "
                                 "items); leave it unset");
  }
  return options;
}

/// An input iterator over `keys`, yielding `fetch(cache, key)` for every key where it is not
/// nullopt. Copies share one position (an input iterator). Ends at `std::default_sentinel`.
template <class V, class Fetch>
class SnapshotIterator {
 public:
  // NOLINTBEGIN(readability-identifier-naming): the standard iterator names
  using iterator_category = std::input_iterator_tag;
  using iterator_concept = std::input_iterator_tag;
  using value_type = V;
  using difference_type = std::ptrdiff_t;
  using reference = const V&;
  using pointer = const V*;
  // NOLINTEND(readability-identifier-naming)

  SnapshotIterator() = default;
  SnapshotIterator(DiskCache cache, std::vector<Key> keys, Fetch fetch)
      : state_(std::make_shared<State>(
            State{std::move(cache), std::move(keys), 0, std::nullopt, std::move(fetch)})) {
    advance();
  }

  const V& operator*() const { return *state_->current; }
  const V* operator->() const { return &*state_->current; }
  SnapshotIterator& operator++() {
    advance();
    return *this;
  }
  void operator++(int) { advance(); }
  friend bool operator==(const SnapshotIterator& it, std::default_sentinel_t) noexcept {
    return !it.state_ || !it.state_->current;
  }

 private:
  struct State {
    DiskCache cache;
    std::vector<Key> keys;
    std::size_t next;
    std::optional<V> current;
    Fetch fetch;
  };
  void advance() {
    State& s = *state_;
    s.current.reset();
    while (s.next < s.keys.size()) {
      const Key& key = s.keys[s.next++];
      auto v = s.fetch(s.cache, key);
      if (v) {
        s.current = std::move(v);
        return;
      }
    }
  }
  std::shared_ptr<State> state_;
};

/// `begin()`/`end()` over a SnapshotIterator, for `for (auto& v : deque.reversed())`.
template <class It>
struct SnapshotRange {
  It first;
  [[nodiscard]] It begin() const { return first; }
  [[nodiscard]] std::default_sentinel_t end() const noexcept { return {}; }
};

}  // namespace dogpile::detail
