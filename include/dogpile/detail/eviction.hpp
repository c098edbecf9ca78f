#pragma once
/// @file eviction.hpp
/// Internals of the bounded in-process backends: a 4-bit count-min frequency sketch with aging
/// (TinyLFU's admission filter), an intrusive doubly-linked list, and one cache shard that runs
/// either W-TinyLFU (window LRU + segmented LRU main + sketch admission) or plain LRU.
/// Not part of the public API. Every `EvictingShard` member locks the shard's own mutex.

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dogpile/detail/memory_eviction.hpp"

namespace dogpile {

namespace detail {

/// 64-bit finalizer (splitmix64): spreads the bits of a hash so that the shard index, the map
/// bucket and the sketch counters do not use correlated bits.
inline std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/// A key together with its hash, computed once per operation and reused for the shard, the
/// map lookup (heterogeneous lookup) and the frequency sketch.
struct PrehashedKey {
  std::string_view key;
  std::size_t hash;
};

inline std::size_t hash_key(std::string_view key) noexcept {
  return std::hash<std::string_view>{}(key);
}

// Deliberately not noexcept: libstdc++ then caches each node's hash code, so a bucket walk
// compares hash codes instead of rehashing and memcmp-ing every key in the chain.
struct PrehashedHash {
  using is_transparent = void;
  std::size_t operator()(const PrehashedKey& k) const { return k.hash; }
  std::size_t operator()(std::string_view s) const { return hash_key(s); }
};

struct PrehashedEq {
  using is_transparent = void;
  bool operator()(const PrehashedKey& a, std::string_view b) const noexcept { return a.key == b; }
  bool operator()(std::string_view a, const PrehashedKey& b) const noexcept { return a == b.key; }
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
};

/// Count-min sketch of 4-bit counters, four per key, packed 16 to a 64-bit word (Caffeine's
/// FrequencySketch). After `10 × capacity` increments every counter is halved ("aging"), so
/// the sketch follows a changing popularity. Not thread-safe (the shard mutex guards it).
class FrequencySketch {
 public:
  /// Sizes the table for about `capacity` distinct hot keys; clears all counters.
  void ensure_capacity(std::size_t capacity) {
    const std::size_t want =
        std::bit_ceil(std::clamp<std::size_t>(capacity, 16, std::size_t{1} << 24));
    if (want <= capacity_) return;
    table_.assign(want + 8, 0);  // + one block of slack to start on a cache line
    const auto addr = reinterpret_cast<std::uintptr_t>(table_.data());
    base_ = ((64 - addr % 64) % 64) / sizeof(std::uint64_t);
    capacity_ = want;
    block_mask_ = (want >> 3) - 1;
    sample_size_ = 10 * std::max<std::size_t>(capacity, 16);
    additions_ = 0;
  }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

  /// Estimated number of recent accesses of the key with hash `h` (0..15).
  [[nodiscard]] unsigned frequency(std::uint64_t h) const noexcept {
    if (table_.empty()) return 0;
    const Slots s = slots(h);
    unsigned f = 15;
    for (unsigned i = 0; i < 4; ++i) {
      f = std::min(f, static_cast<unsigned>((table_[s.word[i]] >> s.shift[i]) & 0xF));
    }
    return f;
  }

  /// Starts loading the counters of `h` into the cache (overlaps with the map lookup).
  void prefetch(std::uint64_t h) const noexcept {
    if (!table_.empty())
      __builtin_prefetch(&table_[base_ + (static_cast<std::size_t>(mix64(h) & block_mask_) << 3)]);
  }

  /// Records one access of the key with hash `h`.
  void increment(std::uint64_t h) noexcept {
    if (table_.empty()) return;
    const Slots s = slots(h);
    bool added = false;
    for (unsigned i = 0; i < 4; ++i) {
      std::uint64_t& word = table_[s.word[i]];
      const std::uint64_t m = std::uint64_t{0xF} << s.shift[i];
      if ((word & m) != m) {
        word += std::uint64_t{1} << s.shift[i];
        added = true;
      }
    }
    if (added && ++additions_ >= sample_size_) age();
  }

 private:
  // Caffeine 3's layout: a key's four counters all live in one 64-byte block (8 words), one
  // counter in each pair of words, so an update costs one cache miss, not four.
  struct Slots {
    std::size_t word[4];
    unsigned shift[4];
  };
  [[nodiscard]] Slots slots(std::uint64_t h) const noexcept {
    const std::uint64_t x = mix64(h);
    const std::size_t block = static_cast<std::size_t>(x & block_mask_) << 3;
    const std::uint64_t c = x >> 32;
    Slots s{};
    for (unsigned i = 0; i < 4; ++i) {
      const auto bits = static_cast<unsigned>(c >> (i << 3));
      s.word[i] = base_ + block + (i << 1) + (bits & 1);
      s.shift[i] = ((bits >> 1) & 15) << 2;
    }
    return s;
  }
  void age() noexcept {
    std::size_t odd = 0;
    for (auto& w : table_) {
      odd += static_cast<std::size_t>(std::popcount(w & 0x1111111111111111ULL));
      w = (w >> 1) & 0x7777777777777777ULL;
    }
    additions_ = (additions_ >> 1) - std::min(additions_ >> 1, odd >> 2);
  }

  std::vector<std::uint64_t> table_;
  std::size_t base_ = 0;
  std::size_t capacity_ = 0;
  std::uint64_t block_mask_ = 0;
  std::size_t sample_size_ = 0;
  std::size_t additions_ = 0;
};

/// Links of an intrusive doubly-linked list node.
struct ListHook {
  ListHook* prev = nullptr;
  ListHook* next = nullptr;
};

/// An intrusive circular list with a sentinel; front = least recently used.
class HookList {
 public:
  HookList() noexcept { head_.prev = head_.next = &head_; }
  HookList(const HookList&) = delete;
  HookList& operator=(const HookList&) = delete;
  [[nodiscard]] bool empty() const noexcept { return head_.next == &head_; }
  [[nodiscard]] ListHook* front() noexcept { return empty() ? nullptr : head_.next; }
  void push_back(ListHook* n) noexcept {
    n->prev = head_.prev;
    n->next = &head_;
    head_.prev->next = n;
    head_.prev = n;
  }
  static void unlink(ListHook* n) noexcept {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }
  void move_to_back(ListHook* n) noexcept {
    if (head_.prev == n) return;
    unlink(n);
    push_back(n);
  }
  void reset() noexcept { head_.prev = head_.next = &head_; }

 private:
  ListHook head_;
};

/// Entry count and byte weight; `std::numeric_limits<size_t>::max()` means "no bound".
struct Usage {
  std::size_t entries = 0;
  std::size_t bytes = 0;
  [[nodiscard]] bool over(const Usage& limit) const noexcept {
    return entries > limit.entries || bytes > limit.bytes;
  }
};
inline constexpr std::size_t kUnbounded = std::numeric_limits<std::size_t>::max();

/// One shard of a memory backend: a hash map plus (when bounded) the eviction policy.
/// Thread-safe: every public member takes the shard mutex. Values that leave the shard
/// (evicted, replaced, erased) are destroyed after the mutex is released, so a destructor may
/// call back into the cache.
template <class V>
class EvictingShard {
 public:
  /// Sets the bounds (kUnbounded for none) and the policy. Call before use.
  void configure(Usage limits, MemoryEviction policy) {
    std::lock_guard lk(mutex_);
    limits_ = limits;
    policy_ = policy;
    bounded_ = limits.entries != kUnbounded || limits.bytes != kUnbounded;
    // W-TinyLFU: a 1% admission window, the rest is main; 80% of main is "protected".
    auto part = [](std::size_t v, std::size_t num, std::size_t den, std::size_t min) {
      return v == kUnbounded ? kUnbounded : std::max(min, v / den * num + v % den * num / den);
    };
    window_limit_ = {part(limits.entries, 1, 100, 1), part(limits.bytes, 1, 100, 1)};
    const Usage main{limits.entries == kUnbounded
                         ? kUnbounded
                         : limits.entries - std::min(limits.entries, window_limit_.entries),
                     limits.bytes == kUnbounded
                         ? kUnbounded
                         : limits.bytes - std::min(limits.bytes, window_limit_.bytes)};
    protected_limit_ = {part(main.entries, 4, 5, 0), part(main.bytes, 4, 5, 0)};
    // The sketch starts small and grows with the shard (up to its entry bound), so a large
    // `max_entries` costs no memory until the entries are there.
    if (bounded_ && policy_ == MemoryEviction::tiny_lfu) sketch_.ensure_capacity(64);
  }

  /// The value under `k`, or nullopt; a hit counts as an access for the policy.
  std::optional<V> get(const PrehashedKey& k) {
    std::lock_guard lk(mutex_);
    auto it = map_.find(k);
    if (it == map_.end()) return std::nullopt;
    if (bounded_) on_access(it->second);
    return it->second.value;
  }

  /// Stores `value` (of `weight` bytes) under `k`, then evicts down to the bounds. An entry
  /// heavier than the whole shard is not stored (and any older value under `k` is dropped).
  void set(const PrehashedKey& k, V value, std::size_t weight) {
    std::vector<V> graveyard;  // destroyed after `lk` below is released
    std::lock_guard lk(mutex_);
    auto it = map_.find(k);
    if (bounded_ && (weight > limits_.bytes || limits_.entries == 0)) {
      if (it != map_.end()) graveyard.push_back(remove(it));
      graveyard.push_back(std::move(value));
      return;
    }
    if (it != map_.end()) {
      Entry& e = it->second;
      graveyard.push_back(std::exchange(e.value, std::move(value)));
      usage_of(e.queue).bytes += weight;
      usage_of(e.queue).bytes -= e.weight;
      total_.bytes += weight;
      total_.bytes -= e.weight;
      e.weight = weight;
      if (bounded_) {
        on_access(e);
        evict(graveyard);
      }
      return;
    }
    auto [pos, inserted] = map_.try_emplace(std::string(k.key), std::move(value), weight, k.hash);
    (void)inserted;
    Entry& e = pos->second;
    e.key = &pos->first;
    ++total_.entries;
    total_.bytes += weight;
    if (!bounded_) return;
    if (policy_ == MemoryEviction::lru) {
      e.queue = Queue::probation;
      probation_.push_back(&e);
    } else {
      if (map_.size() > sketch_.capacity()) grow_sketch();
      drain_pending();
      sketch_.increment(e.hash);
      e.queue = Queue::window;
      window_.push_back(&e);
      window_usage_.entries += 1;
      window_usage_.bytes += weight;
    }
    evict(graveyard);
  }

  /// Removes `k`; true if it was present.
  bool erase(const PrehashedKey& k) {
    std::optional<V> old;  // destroyed after `lk` below is released
    std::lock_guard lk(mutex_);
    auto it = map_.find(k);
    if (it == map_.end()) return false;
    old.emplace(remove(it));
    return true;
  }

  /// Removes everything (the eviction counter is kept).
  void clear() {
    decltype(map_) old;
    std::lock_guard lk(mutex_);
    old.swap(map_);
    window_.reset();
    probation_.reset();
    protected_.reset();
    total_ = window_usage_ = protected_usage_ = {};
  }

  [[nodiscard]] Usage usage() {
    std::lock_guard lk(mutex_);
    return total_;
  }
  [[nodiscard]] std::size_t evictions() {
    std::lock_guard lk(mutex_);
    return evictions_;
  }

 private:
  enum class Queue : std::uint8_t { none, window, probation, protect };
  struct Entry : ListHook {
    Entry(V v, std::size_t w, std::size_t h) : value(std::move(v)), weight(w), hash(h) {}
    V value;
    std::size_t weight;
    std::size_t hash;
    const std::string* key = nullptr;
    Queue queue = Queue::none;
  };
  using Map = std::unordered_map<std::string, Entry, PrehashedHash, PrehashedEq>;

  static Entry* entry(ListHook* h) noexcept { return static_cast<Entry*>(h); }
  Usage& usage_of(Queue q) noexcept {
    switch (q) {
      case Queue::window:
        return window_usage_;
      case Queue::protect:
        return protected_usage_;
      default:
        return scratch_;  // probation/none: derived from the total, nothing to track
    }
  }
  HookList& list_of(Queue q) noexcept {
    switch (q) {
      case Queue::window:
        return window_;
      case Queue::protect:
        return protected_;
      default:
        return probation_;
    }
  }
  void move_to(Entry& e, Queue q) {
    if (e.queue != Queue::none) {
      HookList::unlink(&e);
      Usage& from = usage_of(e.queue);
      from.entries -= 1;
      from.bytes -= e.weight;
    }
    e.queue = q;
    list_of(q).push_back(&e);
    Usage& to = usage_of(q);
    to.entries += 1;
    to.bytes += e.weight;
    scratch_ = {};
  }

  void on_access(Entry& e) {
    if (policy_ == MemoryEviction::lru) {
      probation_.move_to_back(&e);
      return;
    }
    // Hits are counted in batches: a sketch update right on the hit path stalls behind the
    // map lookup's cache misses; a batch of independent updates overlaps them (Caffeine
    // buffers reads for the same reason). Drained before any admission decision.
    pending_[pending_count_++] = e.hash;
    if (pending_count_ == pending_.size()) drain_pending();
    switch (e.queue) {
      case Queue::window:
        window_.move_to_back(&e);
        break;
      case Queue::protect:
        protected_.move_to_back(&e);
        break;
      default:  // probation: promote, and demote protected's LRU entries that no longer fit
        move_to(e, Queue::protect);
        while (protected_usage_.over(protected_limit_)) {
          ListHook* lru = protected_.front();
          if (lru == &e || lru == nullptr) break;
          move_to(*entry(lru), Queue::probation);
        }
        break;
    }
  }

  // A bigger sketch starts empty: count every entry present once (O(n), amortized over the
  // doubling), so the entries already cached don't look colder than the next newcomer.
  void grow_sketch() {
    const std::size_t before = sketch_.capacity();
    sketch_.ensure_capacity(std::min(limits_.entries, 2 * map_.size()));
    if (sketch_.capacity() == before) return;
    pending_count_ = 0;
    for (const auto& kv : map_) sketch_.increment(kv.second.hash);
  }

  void drain_pending() noexcept {
    for (std::size_t i = 0; i < pending_count_; ++i) sketch_.prefetch(pending_[i]);
    for (std::size_t i = 0; i < pending_count_; ++i) sketch_.increment(pending_[i]);
    pending_count_ = 0;
  }

  /// Main region's victim: probation's LRU entry, else protected's.
  Entry* main_victim() noexcept {
    if (ListHook* h = probation_.front()) return entry(h);
    if (ListHook* h = protected_.front()) return entry(h);
    return nullptr;
  }

  /// TinyLFU admission: does the window's candidate deserve the main victim's place?
  bool admit(const Entry& candidate, const Entry& victim) noexcept {
    const unsigned cf = sketch_.frequency(candidate.hash);
    const unsigned vf = sketch_.frequency(victim.hash);
    if (cf > vf) return true;
    if (cf <= 5) return false;
    // A warm candidate that ties or loses is admitted now and then, so an attacker cannot
    // pin a victim by inflating its (colliding) frequency (Caffeine's hash-flooding guard).
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return (rng_ & 127) == 0;
  }

  void evict(std::vector<V>& graveyard) {
    if (policy_ == MemoryEviction::lru) {
      while (total_.over(limits_)) {
        ListHook* h = probation_.front();
        if (h == nullptr) break;
        graveyard.push_back(drop(*entry(h)));
      }
      return;
    }
    drain_pending();
    while (total_.over(limits_)) {
      Entry* victim = main_victim();
      ListHook* w = window_.front();
      if (w != nullptr && (victim == nullptr || window_usage_.over(window_limit_))) {
        Entry& candidate = *entry(w);
        if (victim == nullptr) {
          graveyard.push_back(drop(candidate));
        } else if (admit(candidate, *victim)) {
          graveyard.push_back(drop(*victim));
          move_to(candidate, Queue::probation);
        } else {
          graveyard.push_back(drop(candidate));
        }
      } else if (victim != nullptr) {
        graveyard.push_back(drop(*victim));
      } else {
        break;
      }
    }
    // Filling up: the window's overflow joins main without a contest.
    while (window_usage_.over(window_limit_) && window_usage_.entries > 1) {
      move_to(*entry(window_.front()), Queue::probation);
    }
  }

  /// Unlinks and erases an evicted entry; returns its value for destruction outside the lock.
  V drop(Entry& e) {
    ++evictions_;
    auto it = map_.find(PrehashedKey{*e.key, e.hash});
    return remove(it);
  }

  V remove(typename Map::iterator it) {
    Entry& e = it->second;
    if (e.queue != Queue::none) {
      HookList::unlink(&e);
      Usage& u = usage_of(e.queue);
      u.entries -= 1;
      u.bytes -= e.weight;
      scratch_ = {};
    }
    total_.entries -= 1;
    total_.bytes -= e.weight;
    V v = std::move(e.value);
    map_.erase(it);
    return v;
  }

  std::mutex mutex_;
  Map map_;
  bool bounded_ = false;
  MemoryEviction policy_ = MemoryEviction::tiny_lfu;
  Usage limits_{kUnbounded, kUnbounded};
  Usage window_limit_{kUnbounded, kUnbounded};
  Usage protected_limit_{kUnbounded, kUnbounded};
  Usage total_;
  Usage window_usage_;
  Usage protected_usage_;
  Usage scratch_;
  HookList window_;
  HookList probation_;  // the only list of the lru policy
  HookList protected_;
  FrequencySketch sketch_;
  std::array<std::uint64_t, 16> pending_{};  // hashes of hits not yet counted in sketch_
  std::size_t pending_count_ = 0;
  std::uint64_t rng_ = 0x2545F4914F6CDD1DULL;
  std::size_t evictions_ = 0;
};

}  // namespace detail
}  // namespace dogpile
