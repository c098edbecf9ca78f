#pragma once
/// @file eviction.hpp
/// Internals of the bounded in-process backends: a 4-bit count-min frequency sketch with aging
/// (TinyLFU's admission filter), an intrusive doubly-linked list, and one cache shard (an
/// intrusive hash table, one allocation per entry) that runs either W-TinyLFU (window LRU +
/// segmented LRU main + sketch admission) or plain LRU when bounded.
/// Not part of the public API. Every `EvictingShard` member locks the shard's own mutex, except
/// the reads of an unbounded shard (lock-free, see `EvictingShard`).

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dogpile/detail/epoch.hpp"
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
/// FrequencySketch, with twice its width: 32 counters, 16 bytes, per key of capacity). After
/// `10 × capacity` increments every counter is halved ("aging"), so the sketch follows a
/// changing popularity. Not thread-safe (the shard mutex guards it).
class FrequencySketch {
 public:
  /// Sizes the sketch for about `capacity` distinct hot keys (never shrinks): the sample (the
  /// increments between two agings) becomes `10 × capacity`, and a table too small for it is
  /// replaced, every counter cleared. Returns whether it was.
  bool ensure_capacity(std::size_t capacity) {
    capacity = std::clamp<std::size_t>(capacity, 16, std::size_t{1} << 24);
    if (capacity <= capacity_) return false;
    capacity_ = capacity;
    sample_size_ = 10 * capacity;
    const std::size_t words = (capacity * kWordsPerKey + 7) & ~std::size_t{7};  // whole blocks
    if (words + 8 <= table_.size()) return false;
    table_.assign(words + 8, 0);  // + one block of slack to start on a cache line
    const auto addr = reinterpret_cast<std::uintptr_t>(table_.data());
    base_ = ((64 - addr % 64) % 64) / sizeof(std::uint64_t);
    blocks_ = words >> 3;
    additions_ = 0;
    next_quiet_mark();
    return true;
  }
  /// The `capacity` the sample is sized for.
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

  /// Estimated number of recent accesses of the key with hash `h` (0..15).
  [[nodiscard]] unsigned frequency(std::uint64_t h) const noexcept {
    if (table_.empty()) return 0;
    return counters(h).low();
  }

  /// Starts loading the counters of `h` into the cache (overlaps with the map lookup).
  void prefetch(std::uint64_t h) const noexcept {
    if (!table_.empty()) __builtin_prefetch(&table_[base_ + (block_of(mix64(h)) << 3)]);
  }

  /// Records one access of the key with hash `h`: its smallest counters go up by one
  /// (conservative update: a counter it shares with a more frequent key is left alone, so
  /// collisions inflate estimates less; +0.1–0.2 pt of hit rate on every eviction_hit_rate
  /// trace against incrementing all four). Returns the key's estimate after it (and after the
  /// aging it may trigger), as `frequency(h)` would then.
  unsigned increment(std::uint64_t h) noexcept {
    if (table_.empty()) return 0;
    const Counters c = counters(h);
    const unsigned low = c.low();
    if (low == 15) return 15;
    // The four counters are in four different words: the updates are independent.
    for (unsigned i = 0; i < 4; ++i) {
      if (c.value[i] == low) table_[c.word[i]] += std::uint64_t{1} << c.shift[i];
    }
    if (++additions_ >= sample_size_) {
      age();
      return (low + 1) >> 1;  // every counter halved: so is their minimum
    }
    return low + 1;
  }

  /// A tag that changes whenever the counters go down (aging, a new table): a key's estimate
  /// known under one tag may be lower under the next. Cycles through 2..255 (see
  /// `EvictingShard::Node::mark`). Read without the lock.
  [[nodiscard]] std::uint8_t quiet_mark() const noexcept {
    return quiet_mark_.load(std::memory_order_relaxed);
  }

 private:
  // Two words (32 counters) per key of capacity, where Caffeine has one (rounded up to a
  // power of two, so 1-2): fewer keys share a counter, and zipf-0.99 in eviction_hit_rate
  // comes 0.2-0.3 pt closer to keeping the most popular keys (docs/benchmarks.md).
  static constexpr std::size_t kWordsPerKey = 2;
  // Caffeine 3's layout: a key's four counters all live in one 64-byte block (8 words), one
  // counter in each pair of words, so an update costs one cache miss, not four.
  struct Counters {
    std::size_t word[4];  // indexes into table_
    unsigned shift[4];
    unsigned value[4];  // as read
    [[nodiscard]] unsigned low() const noexcept {
      return std::min(std::min(value[0], value[1]), std::min(value[2], value[3]));
    }
  };
  // The block of a mixed hash: its low 32 bits scaled to the block count (any count, not
  // only a power of two); the high 32 bits pick the counters within it.
  [[nodiscard]] std::size_t block_of(std::uint64_t x) const noexcept {
    return static_cast<std::size_t>(((x & 0xffffffffULL) * blocks_) >> 32);
  }
  // Located and read once for both halves of `increment` (and the replay no longer calls
  // `frequency` after it): ~160 instructions per increment before, ~120 now.
  [[nodiscard]] Counters counters(std::uint64_t h) const noexcept {
    const std::uint64_t x = mix64(h);
    const std::size_t block = base_ + (block_of(x) << 3);
    const std::uint64_t c = x >> 32;
    Counters r{};
    for (unsigned i = 0; i < 4; ++i) {
      const auto bits = static_cast<unsigned>(c >> (i << 3));
      r.word[i] = block + (i << 1) + (bits & 1);
      r.shift[i] = ((bits >> 1) & 15) << 2;
      r.value[i] = static_cast<unsigned>((table_[r.word[i]] >> r.shift[i]) & 0xF);
    }
    return r;
  }
  void age() noexcept {
    std::size_t odd = 0;
    for (auto& w : table_) {
      odd += static_cast<std::size_t>(std::popcount(w & 0x1111111111111111ULL));
      w = (w >> 1) & 0x7777777777777777ULL;
    }
    additions_ = (additions_ >> 1) - std::min(additions_ >> 1, odd >> 2);
    next_quiet_mark();
  }
  void next_quiet_mark() noexcept {
    const std::uint8_t m = quiet_mark_.load(std::memory_order_relaxed);
    quiet_mark_.store(m == 255 ? 2 : m + 1, std::memory_order_relaxed);
  }

  std::vector<std::uint64_t> table_;
  std::size_t base_ = 0;
  std::size_t capacity_ = 0;
  std::uint64_t blocks_ = 0;
  std::size_t sample_size_ = 0;
  std::size_t additions_ = 0;
  std::atomic<std::uint8_t> quiet_mark_{2};
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
  /// The sentinel a walk from `front()` along `next` ends at.
  [[nodiscard]] const ListHook* end() const noexcept { return &head_; }
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
  /// Puts `n` at `old`'s place in its list; `old` leaves it.
  static void replace(ListHook* old, ListHook* n) noexcept {
    n->prev = old->prev;
    n->next = old->next;
    n->prev->next = n;
    n->next->prev = n;
    old->prev = old->next = nullptr;
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
/// Thread-safe: writes take the shard mutex, and so do the reads of a bounded shard (a hit
/// updates the policy) unless it has `lossy_access` (see `configure`).
/// Reads of an unbounded shard take no lock and write nothing shared: they
/// pin the epoch (detail/epoch.hpp), walk the table through atomic links and copy the value
/// out of its node, which stays alive (nodes are never changed once published: a set swaps in
/// a new node) until no reader can still hold it. A read that misses while the table was being
/// resized looks again under the mutex. Values that leave the shard (evicted, replaced, erased)
/// are destroyed after the mutex is released, so a destructor may call back into the cache; in
/// an unbounded shard, once no read can still be copying them (at once when no read is in
/// progress, else at a later write to the shard).
///
/// The map is an intrusive chained hash table of one allocation per entry: the node holds the
/// chain link, the hash, the weight, the value and the key's bytes; the policy's list links sit
/// in front of the node and exist only when the shard is bounded. A new node is built (and the
/// value moved or constructed into it) before the mutex is taken; a replaced node is swapped
/// in whole, so no value is moved or destroyed under the mutex.
template <class V>
class EvictingShard {
 public:
  EvictingShard() = default;
  EvictingShard(const EvictingShard&) = delete;
  EvictingShard& operator=(const EvictingShard&) = delete;
  ~EvictingShard() {
    // No reader is left (the store is being destroyed): everything is freed at once.
    for (auto& r : limbo_) release(r);
    limbo_.clear();
    free_all(take_all());
    Table::destroy(table_.load(std::memory_order_relaxed));
  }

  /// Sets the bounds (kUnbounded for none) and the policy. Call before use (it drops any
  /// entries already stored: a bounded node has a different layout).
  /// With `lossy_access`, a bounded shard's read takes no lock either, as an unbounded one's:
  /// a hit appends its key's hash to its thread's stripe of a read buffer (Caffeine's striped
  /// read buffer), and the buffered hits are replayed into the policy, in order, under the
  /// mutex: by the read that fills a stripe (if the mutex is free) and before every write's
  /// policy decision. A single thread's accesses are therefore applied exactly as if each read
  /// had taken the mutex. A hit is dropped only when its stripe is full and the mutex busy
  /// (or when more threads than stripes race on one), so under contention the eviction order
  /// is approximate, as Caffeine's; `hits()` counts the replayed hits. A hit on a protected
  /// entry that is already marked and whose estimate has reached `kQuietAt` is not buffered
  /// at all (it would only raise that estimate), until the sketch ages or the entry moves.
  void configure(Usage limits, MemoryEviction policy, bool lossy_access = false) {
    Graveyard dead;
    std::lock_guard lk(mutex_);
    dead.head = take_all();
    limits_ = limits;
    policy_ = policy;
    bounded_ = limits.entries != kUnbounded || limits.bytes != kUnbounded;
    lock_free_ = !bounded_ || lossy_access;
    reads_.reset(bounded_ && lossy_access ? new ReadStripe[kReadStripes] : nullptr);
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
    std::optional<V> out;
    visit(k, [&](const V& v, std::size_t) { out.emplace(v); });
    return out;
  }

  /// Calls `f(value, weight)` if `k` is present (a hit counts as an access for the policy,
  /// except a lossy one: see `configure`); returns whether it was. `f` must not call back into
  /// the shard.
  template <class F>
  bool visit(const PrehashedKey& k, F&& f) {
    if (lock_free_) {
      EpochGuard pin;
      const std::uint64_t v = version_.load(std::memory_order_seq_cst);
      if ((v & 1) == 0) {
        if (Node* n = find<std::memory_order_seq_cst>(k)) {
          f(static_cast<const V&>(n->value()), n->weight);
          if (reads_ && n->mark.load(std::memory_order_relaxed) != sketch_.quiet_mark()) {
            buffer_read(pin.index(), n->hash);
          }
          return true;
        }
        // A miss counts only if no resize moved the chains meanwhile.
        if (version_.load(std::memory_order_seq_cst) == v) return false;
      }
    }
    std::lock_guard lk(mutex_);
    return visit_locked(k, f);
  }

  /// Stores `value` (of `weight` bytes) under `k`, then evicts down to the bounds. An entry
  /// heavier than the whole shard is not stored (and any older value under `k` is dropped).
  void set(const PrehashedKey& k, V value, std::size_t weight) {
    emplace(k, weight, std::move(value));
  }

  /// `set` with the value constructed in place from `args` (before the mutex is taken).
  template <class... A>
  void emplace(const PrehashedKey& k, std::size_t weight, A&&... args) {
    Node* fresh = make_node(k, weight, std::forward<A>(args)...);
    Graveyard dead;  // freed after `lk` below is released
    std::lock_guard lk(mutex_);
    if (reads_) drain_reads();  // the reads before this write count before its decisions
    Link* slot = find_slot(k);
    Node* old = slot != nullptr ? slot->load(std::memory_order_relaxed) : nullptr;
    if (bounded_ && (weight > limits_.bytes || limits_.entries == 0)) {
      if (old != nullptr) discard(unlink_slot(slot), dead);
      dead.add(fresh);  // never published
      reclaim(dead);
      return;
    }
    if (old != nullptr) {
      // Swap the new node in at the old one's place, in the chain and in its policy list.
      fresh->chain.store(old->chain.load(std::memory_order_relaxed), std::memory_order_relaxed);
      slot->store(fresh, std::memory_order_seq_cst);
      fresh->queue = old->queue;
      fresh->mark.store(referenced(*old) ? 1 : 0, std::memory_order_relaxed);
      if (old->queue != Queue::none) HookList::replace(hook(old), hook(fresh));
      old->queue = Queue::none;                // out of the shard
      usage_of(fresh->queue).bytes += weight;  // its segment's bytes follow the new weight
      usage_of(fresh->queue).bytes -= old->weight;
      scratch_ = {};
      total_.bytes += weight;
      total_.bytes -= old->weight;
      discard(old, dead);
      if (bounded_) {
        on_access(*fresh);
        evict(dead);
      }
      reclaim(dead);
      return;
    }
    insert(fresh);
    ++total_.entries;
    total_.bytes += weight;
    if (!bounded_) {
      reclaim(dead);  // a resize may have retired the old table
      return;
    }
    struct Reclaim {  // whatever return below: evicted nodes and an old table are reclaimed
      EvictingShard& s;
      Graveyard& d;
      ~Reclaim() { s.reclaim(d); }
    } at_end{*this, dead};
    if (policy_ == MemoryEviction::lru) {
      fresh->queue = Queue::probation;
      probation_.push_back(hook(fresh));
    } else {
      if (size_ > sketch_.capacity() && sketch_.capacity() < limits_.entries) grow_sketch();
      drain_pending();
      sketch_.increment(fresh->hash);
      fresh->queue = Queue::window;
      window_.push_back(hook(fresh));
      window_usage_.entries += 1;
      window_usage_.bytes += weight;
    }
    evict(dead);
  }

  /// Removes `k`; true if it was present.
  bool erase(const PrehashedKey& k) {
    Graveyard dead;  // freed after `lk` below is released
    std::lock_guard lk(mutex_);
    Link* slot = find_slot(k);
    if (slot == nullptr) return false;
    discard(unlink_slot(slot), dead);
    reclaim(dead);
    return true;
  }

  /// Removes everything (the eviction counter is kept).
  void clear() {
    Graveyard dead;
    std::lock_guard lk(mutex_);
    if (!lock_free_) {
      dead.head = take_all();
      return;
    }
    // Readers may be walking the chains: empty the buckets and retire each node as it is
    // (its link intact), never relinking a chain a reader could follow.
    if (const Table t = Table::of(table_.load(std::memory_order_relaxed)); t) {
      for (std::size_t i = 0; i <= t.mask; ++i) {
        for (Node* n = t.slots[i].exchange(nullptr, std::memory_order_seq_cst); n != nullptr;
             n = n->chain.load(std::memory_order_relaxed)) {
          n->queue = Queue::none;
          retire(n);
        }
      }
    }
    forget_all();
    reclaim(dead);
  }

  [[nodiscard]] Usage usage() {
    std::lock_guard lk(mutex_);
    return total_;
  }
  [[nodiscard]] std::size_t evictions() {
    std::lock_guard lk(mutex_);
    return evictions_;
  }
  /// Recounts the policy's segments and the table and compares them with the running counts
  /// (entries and bytes of the window, protected and the whole shard); true if all agree. For
  /// tests: O(entries), under the mutex.
  [[nodiscard]] bool consistent() {
    std::lock_guard lk(mutex_);
    auto sum = [this](HookList& l) {
      Usage u;
      for (ListHook* h = l.front(); h != nullptr && h != l.end(); h = h->next) {
        u.entries += 1;
        u.bytes += entry(h)->weight;
      }
      return u;
    };
    auto same = [](const Usage& a, const Usage& b) {
      return a.entries == b.entries && a.bytes == b.bytes;
    };
    Usage all;
    const Table t = Table::of(table_.load(std::memory_order_relaxed));
    for (std::size_t i = 0; t && i <= t.mask; ++i) {
      for (Node* n = t.slots[i].load(std::memory_order_relaxed); n != nullptr;
           n = n->chain.load(std::memory_order_relaxed)) {
        all.entries += 1;
        all.bytes += n->weight;
      }
    }
    return same(all, total_) && all.entries == size_ &&
           (!bounded_ ||
            (same(sum(window_), window_usage_) && same(sum(protected_), protected_usage_)));
  }
  /// Successful `get`s of a bounded shard so far (an unbounded shard's reads take no lock and
  /// are not counted; with `lossy_access`, only the hits replayed from the read buffer: not
  /// those dropped, nor those of quiet entries, which are not buffered).
  [[nodiscard]] std::size_t hits() {
    std::lock_guard lk(mutex_);
    return hits_;
  }
  /// The entry count tiny_lfu's frequency sample is sized for: it follows the shard's size
  /// up to the entry bound (see `FrequencySketch::ensure_capacity`). For tests.
  [[nodiscard]] std::size_t sketch_capacity() {
    std::lock_guard lk(mutex_);
    return sketch_.capacity();
  }

 private:
  enum class Queue : std::uint8_t { none, window, probation, protect };

  // The mutex held: the lookup, the policy update and the copy.
  template <class F>
  bool visit_locked(const PrehashedKey& k, F& f) {
    Node* n = find(k);
    if (n == nullptr) return false;
    if (bounded_) on_access(*n);
    ++hits_;  // under the mutex: no atomic on the hit path (buffered reads count when replayed)
    f(static_cast<const V&>(n->value()), n->weight);
    return true;
  }
  // A node: this header, the key's bytes, then the value (aligned), so that a lookup reads the
  // hash and the key from the node's first cache line and a hit the value right after them.
  struct Node {
    Node(std::size_t h, std::size_t w, std::uint32_t ks, bool l) noexcept
        : hash(h), weight(w), key_size(ks), linked(l) {}
    std::atomic<Node*> chain{nullptr};  // next node in the bucket (or in a graveyard)
    std::size_t hash;
    std::size_t weight;
    std::uint32_t key_size;
    Queue queue = Queue::none;
    bool linked;  // has list links in front (the shard was bounded when it was made)
    // Protected only (0 elsewhere): 0 = not hit since it last moved (see on_access); 1 = hit;
    // equal to the sketch's `quiet_mark()` = hit, and its estimate at least kQuietAt under
    // that mark: lock-free readers do not buffer its hits (see drain_reads).
    std::atomic<std::uint8_t> mark{0};

    [[nodiscard]] const char* key_data() const noexcept {
      return reinterpret_cast<const char*>(this) + sizeof(Node);
    }
    [[nodiscard]] std::string_view key() const noexcept { return {key_data(), key_size}; }
    [[nodiscard]] static std::size_t value_offset(std::size_t key_size) noexcept {
      return (sizeof(Node) + key_size + alignof(V) - 1) / alignof(V) * alignof(V);
    }
    [[nodiscard]] V& value() noexcept {
      return *std::launder(
          reinterpret_cast<V*>(reinterpret_cast<char*>(this) + value_offset(key_size)));
    }
  };
  static_assert(alignof(V) <= alignof(std::max_align_t), "over-aligned values");
  // The list links in front of a bounded node; a multiple of the node's and value's alignment.
  static constexpr std::size_t kAlign = std::max(alignof(Node), alignof(V));
  static constexpr std::size_t kPrefix = (sizeof(ListHook) + kAlign - 1) / kAlign * kAlign;
  using Link = std::atomic<Node*>;

  /// The bucket array: `1 << bits` links, aligned to 64 bytes. The shard keeps it as one word,
  /// the array's address with `bits` in its six low bits, so that a lock-free reader gets the
  /// buckets and their count from one load (and a consistent pair across a resize).
  struct Table {
    Link* slots = nullptr;
    std::size_t mask = 0;
    explicit operator bool() const noexcept { return slots != nullptr; }
    static Table of(std::uintptr_t w) noexcept {
      if (w == 0) return {};
      return {reinterpret_cast<Link*>(w & ~std::uintptr_t{63}), (std::size_t{1} << (w & 63)) - 1};
    }
    static std::uintptr_t make(std::size_t count) {
      void* raw = ::operator new (count * sizeof(Link), std::align_val_t{64});
      auto* links = static_cast<Link*>(raw);
      for (std::size_t i = 0; i < count; ++i) ::new (links + i) Link(nullptr);
      return reinterpret_cast<std::uintptr_t>(raw) |
             static_cast<std::uintptr_t>(std::countr_zero(count));
    }
    static void destroy(std::uintptr_t w) noexcept {
      const Table t = of(w);
      if (!t) return;
      for (std::size_t i = 0; i <= t.mask; ++i) t.slots[i].~Link();
      ::operator delete (static_cast<void*>(t.slots), std::align_val_t{64});
    }
  };

  /// A node or table unlinked from an unbounded shard, kept until no reader can hold it.
  struct Retired {
    void* p;
    bool table;
    std::uint64_t epoch;  // 0 until sealed by reclaim()
  };

  /// Nodes to free once the mutex is released (declared before the lock_guard).
  struct Graveyard {
    Node* head = nullptr;
    Graveyard() = default;
    Graveyard(const Graveyard&) = delete;
    Graveyard& operator=(const Graveyard&) = delete;
    void add(Node* n) noexcept {
      n->chain.store(head, std::memory_order_relaxed);
      head = n;
    }
    ~Graveyard() { free_all(head); }
  };

  static ListHook* hook(Node* n) noexcept {
    return reinterpret_cast<ListHook*>(reinterpret_cast<char*>(n) - kPrefix);
  }
  static Node* entry(ListHook* h) noexcept {
    return reinterpret_cast<Node*>(reinterpret_cast<char*>(h) + kPrefix);
  }

  template <class... A>
  Node* make_node(const PrehashedKey& k, std::size_t weight, A&&... args) {
    if (k.key.size() > std::numeric_limits<std::uint32_t>::max()) {
      throw std::length_error("memory backend: key longer than 4 GiB");
    }
    const bool linked = bounded_;
    const std::size_t prefix = linked ? kPrefix : 0;
    const std::size_t at = Node::value_offset(k.key.size());
    char* raw = static_cast<char*>(::operator new(prefix + at + sizeof(V)));
    try {
      ::new (raw + prefix + at) V(std::forward<A>(args)...);
    } catch (...) {
      ::operator delete(raw);
      throw;
    }
    Node* n =
        ::new (raw + prefix) Node(k.hash, weight, static_cast<std::uint32_t>(k.key.size()), linked);
    if (linked) ::new (raw) ListHook();
    if (!k.key.empty()) std::memcpy(raw + prefix + sizeof(Node), k.key.data(), k.key.size());
    return n;
  }
  static void free_node(Node* n) noexcept {
    char* raw = reinterpret_cast<char*>(n) - (n->linked ? kPrefix : 0);
    n->value().~V();
    n->~Node();
    ::operator delete(raw);
  }
  static void free_all(Node* n) noexcept {
    while (n != nullptr) {
      Node* next = n->chain.load(std::memory_order_relaxed);
      free_node(n);
      n = next;
    }
  }

  // ---- deferred reclamation (unbounded shards; mutex held) ------------------------------------
  void retire(Node* n) { limbo_.push_back({n, false, 0}); }
  /// A node that left the table: freed after the mutex (locked reads), or retired (lock-free
  /// reads may still hold it).
  void discard(Node* n, Graveyard& dead) {
    if (lock_free_) {
      retire(n);
    } else {
      dead.add(n);
    }
  }
  static void release(const Retired& r) noexcept {
    if (r.table) {
      Table::destroy(reinterpret_cast<std::uintptr_t>(r.p));
    } else {
      free_node(static_cast<Node*>(r.p));
    }
  }
  /// Hands to `dead` (nodes) or frees (tables) whatever no reader can hold any more: everything
  /// when no read is in progress; else what was retired two epochs ago (what was retired since
  /// the last call is tagged with the current epoch, read after the unlinks).
  void reclaim(Graveyard& dead) {
    if (limbo_.empty()) return;
    if (epoch_quiescent()) {
      // No read in progress (the common case for a write): everything goes, no epoch to move.
      for (auto& r : limbo_) {
        if (r.table) {
          release(r);
        } else {
          dead.add(static_cast<Node*>(r.p));
        }
      }
      limbo_.clear();
      return;
    }
    const std::uint64_t now = epoch_global.load(std::memory_order_seq_cst);
    std::uint64_t oldest = now;
    for (auto& r : limbo_) {
      if (r.epoch == 0) r.epoch = now;
      oldest = std::min(oldest, r.epoch);
    }
    std::uint64_t e = epoch_try_advance();
    if (e < oldest + 2) e = epoch_try_advance();
    if (e < oldest + 2) return;
    std::size_t kept = 0;
    for (auto& r : limbo_) {
      if (r.epoch + 2 > e) {
        limbo_[kept++] = r;
      } else if (r.table) {
        release(r);
      } else {
        dead.add(static_cast<Node*>(r.p));
      }
    }
    limbo_.resize(kept);
  }

  // ---- the read buffer (bounded with lossy_access) -------------------------------------------
  // A protected entry's hits stop being buffered once its estimate reaches this (until the
  // sketch ages or the entry moves): a buffered hit, replayed, is most of what a bounded read
  // costs over an unbounded one, and for an entry already protected and marked it only raises
  // the estimate. So a protected entry's estimate stops near 4 between agings; every
  // eviction_hit_rate trace gains 0 to 0.17 pt with it (docs/benchmarks.md), as a victim
  // demoted from protected is less sticky against newcomers.
  static constexpr unsigned kQuietAt = 4;
  static constexpr std::size_t kReadStripes = 4;  // a power of two
  static constexpr std::size_t kReadSlots = 64;   // hashes per stripe, a power of two
  /// One thread's lane: a ring of hit hashes it appends to with plain stores (no locked
  /// instruction, no line shared with other readers) and the mutex holder consumes. Threads
  /// sharing a stripe (more threads than stripes) can overwrite each other's hashes or move
  /// `tail` back: only hits are lost, and `drain_reads` resets a stripe it cannot make sense of.
  struct alignas(64) ReadStripe {
    std::atomic<std::uint64_t> tail{0};  // next slot to write (readers)
    std::atomic<std::uint64_t> head{0};  // next slot to replay (the mutex holder)
    std::array<std::atomic<std::uint64_t>, kReadSlots> slots{};
  };

  /// Records a lock-free hit; the read that fills its stripe replays the buffer if the mutex
  /// is free (else a later read or write will).
  void buffer_read(std::uint32_t thread, std::uint64_t hash) noexcept {
    ReadStripe& s = reads_[thread & (kReadStripes - 1)];
    const std::uint64_t t = s.tail.load(std::memory_order_relaxed);
    const std::uint64_t h = s.head.load(std::memory_order_acquire);  // slots up to it replayed
    if (t - h < kReadSlots) {
      s.slots[t & (kReadSlots - 1)].store(hash, std::memory_order_relaxed);
      s.tail.store(t + 1, std::memory_order_release);
      if (t + 1 - h < kReadSlots) return;
    }
    // Full (this hit is dropped if it did not fit): replay, unless another thread is busy.
    std::unique_lock lk(mutex_, std::try_to_lock);
    if (lk.owns_lock()) drain_reads();
  }

  /// Replays every stripe's buffered hits into the policy, oldest first (mutex held).
  void drain_reads() noexcept {
    for (std::size_t i = 0; i < kReadStripes; ++i) {
      ReadStripe& s = reads_[i];
      std::uint64_t h = s.head.load(std::memory_order_relaxed);
      const std::uint64_t t = s.tail.load(std::memory_order_acquire);
      if (t - h <= kReadSlots) {
        for (; h != t; ++h) {
          if (Node* n = find_hash(s.slots[h & (kReadSlots - 1)].load(std::memory_order_relaxed))) {
            ++hits_;
            if (policy_ == MemoryEviction::tiny_lfu && referenced(*n)) {
              // A marked protected entry: the hit only counts in the sketch (on_access would
              // queue that count; it goes in now, in the same order). From kQuietAt on, the
              // entry is marked quiet: readers stop buffering its hits until the sketch ages
              // or the entry moves.
              drain_pending();
              if (sketch_.increment(n->hash) >= kQuietAt) {
                n->mark.store(sketch_.quiet_mark(), std::memory_order_relaxed);
              }
              continue;
            }
            on_access(*n);
          }
        }
      }  // else racing writers moved `tail` back: skip what is there
      s.head.store(t, std::memory_order_release);
    }
  }

  /// A node with this hash (mutex held); nullptr if it left the shard since it was read.
  Node* find_hash(std::uint64_t hash) const noexcept {
    const Table t = Table::of(table_.load(std::memory_order_relaxed));
    if (!t) return nullptr;
    for (Node* n = t.slots[hash & t.mask].load(std::memory_order_relaxed); n != nullptr;
         n = n->chain.load(std::memory_order_relaxed)) {
      if (n->hash == hash) return n;
    }
    return nullptr;
  }

  // ---- the hash table (mutex held) ------------------------------------------------------------
  // A lock-free reader loads seq_cst (plain loads on x86): that orders it against the unlinks
  // and the retire tag (detail/epoch.hpp). Under the mutex (the default) no ordering is needed.
  template <std::memory_order Order = std::memory_order_relaxed>
  Node* find(const PrehashedKey& k) const noexcept {
    const Table t = Table::of(table_.load(Order));
    if (!t) return nullptr;
    for (Node* n = t.slots[k.hash & t.mask].load(Order); n != nullptr; n = n->chain.load(Order)) {
      if (n->hash == k.hash && n->key() == k.key) return n;
    }
    return nullptr;
  }
  /// The link that points to `k`'s node, or nullptr (mutex held).
  Link* find_slot(const PrehashedKey& k) noexcept {
    const Table t = Table::of(table_.load(std::memory_order_relaxed));
    if (!t) return nullptr;
    for (Link* s = &t.slots[k.hash & t.mask];; s = &n_of(s)->chain) {
      Node* n = s->load(std::memory_order_relaxed);
      if (n == nullptr) return nullptr;
      if (n->hash == k.hash && n->key() == k.key) return s;
    }
  }
  static Node* n_of(Link* s) noexcept { return s->load(std::memory_order_relaxed); }
  Link* slot_of(Node* n) noexcept {
    const Table t = Table::of(table_.load(std::memory_order_relaxed));
    Link* s = &t.slots[n->hash & t.mask];
    while (n_of(s) != n) s = &n_of(s)->chain;
    return s;
  }
  [[nodiscard]] std::size_t bucket_count() const noexcept {
    const Table t = Table::of(table_.load(std::memory_order_relaxed));
    return t ? t.mask + 1 : 0;
  }
  void insert(Node* n) {
    if (size_ + 1 > bucket_count()) rehash(std::max<std::size_t>(16, 2 * bucket_count()));
    const Table t = Table::of(table_.load(std::memory_order_relaxed));
    Link& b = t.slots[n->hash & t.mask];
    n->chain.store(b.load(std::memory_order_relaxed), std::memory_order_relaxed);
    b.store(n, std::memory_order_seq_cst);  // published whole
    ++size_;
  }
  void rehash(std::size_t count) {
    const std::uintptr_t fresh_word = Table::make(count);
    const Table fresh = Table::of(fresh_word);
    const std::uintptr_t old_word = table_.load(std::memory_order_relaxed);
    const Table old = Table::of(old_word);
    // Moving a node relinks its chain under a concurrent reader of an unbounded shard, which
    // may then miss a present key: the odd version tells it to look again under the mutex.
    // (Every chain it can follow still ends: moved nodes link only to moved nodes.)
    version_.fetch_add(1, std::memory_order_seq_cst);
    if (old) {
      for (std::size_t i = 0; i <= old.mask; ++i) {
        Node* head = old.slots[i].load(std::memory_order_relaxed);
        while (head != nullptr) {
          Node* next = head->chain.load(std::memory_order_relaxed);
          Link& b = fresh.slots[head->hash & fresh.mask];
          head->chain.store(b.load(std::memory_order_relaxed), std::memory_order_seq_cst);
          b.store(head, std::memory_order_relaxed);  // `fresh` is not published yet
          head = next;
        }
      }
    }
    table_.store(fresh_word, std::memory_order_seq_cst);
    version_.fetch_add(1, std::memory_order_seq_cst);
    if (!old) return;
    if (!lock_free_) {
      Table::destroy(old_word);
    } else {
      limbo_.push_back({reinterpret_cast<void*>(old_word), true, 0});
    }
  }
  /// Every node, unlinked from the table and the lists, chained for free_all; resets the counts.
  /// Only where no lock-free reader can run (bounded shards, configure, the destructor).
  Node* take_all() noexcept {
    Node* all = nullptr;
    if (const Table t = Table::of(table_.load(std::memory_order_relaxed)); t) {
      for (std::size_t i = 0; i <= t.mask; ++i) {
        Node* head = t.slots[i].exchange(nullptr, std::memory_order_relaxed);
        while (head != nullptr) {
          Node* next = head->chain.load(std::memory_order_relaxed);
          head->chain.store(all, std::memory_order_relaxed);
          all = head;
          head = next;
        }
      }
    }
    forget_all();
    return all;
  }
  /// Empties the policy's lists and resets the counts (the table is already empty).
  void forget_all() noexcept {
    size_ = 0;
    window_.reset();
    probation_.reset();
    protected_.reset();
    total_ = window_usage_ = protected_usage_ = {};
    pending_count_ = 0;
    for (std::size_t i = 0; reads_ && i < kReadStripes; ++i) {  // buffered hits are moot
      reads_[i].head.store(reads_[i].tail.load(std::memory_order_acquire),
                           std::memory_order_release);
    }
  }

  // ---- the policy (mutex held) ----------------------------------------------------------------
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
  void move_to(Node& e, Queue q) {
    e.mark.store(0, std::memory_order_relaxed);
    if (e.queue != Queue::none) {
      HookList::unlink(hook(&e));
      Usage& from = usage_of(e.queue);
      from.entries -= 1;
      from.bytes -= e.weight;
    }
    e.queue = q;
    list_of(q).push_back(hook(&e));
    Usage& to = usage_of(q);
    to.entries += 1;
    to.bytes += e.weight;
    scratch_ = {};
  }

  static bool referenced(const Node& e) noexcept {
    return e.mark.load(std::memory_order_relaxed) != 0;
  }

  void on_access(Node& e) {
    if (policy_ == MemoryEviction::lru) {
      probation_.move_to_back(hook(&e));
      return;
    }
    // Hits are counted in batches: a sketch update right on the hit path stalls behind the
    // map lookup's cache misses; a batch of independent updates overlaps them (Caffeine
    // buffers reads for the same reason). Drained before any admission decision.
    pending_[pending_count_++] = e.hash;
    if (pending_count_ == pending_.size()) drain_pending();
    switch (e.queue) {
      case Queue::window:
        window_.move_to_back(hook(&e));
        break;
      case Queue::protect:
        // CLOCK instead of a move to the back: the protected list is ordered by promotion, and
        // a hit only marks the entry, which then gets a second chance when it reaches the front
        // (below). A hot entry's node is written once per trip through the list rather than on
        // every hit: its first cache line holds the key that lock-free readers on other cores
        // compare, and moving it would also write its two neighbours.
        if (!referenced(e)) e.mark.store(1, std::memory_order_relaxed);
        break;
      default:  // probation: promote, and demote protected's LRU entries that no longer fit
        move_to(e, Queue::protect);
        while (protected_usage_.over(protected_limit_)) {
          ListHook* lru = protected_.front();
          if (lru == hook(&e) || lru == nullptr) break;
          if (Node& old = *entry(lru); referenced(old)) {
            old.mark.store(0, std::memory_order_relaxed);  // hit since its promotion: keep it,
                                                           // go round once more
            protected_.move_to_back(lru);
            continue;
          }
          move_to(*entry(lru), Queue::probation);
        }
        break;
    }
  }

  // The sketch follows the shard up to its entry bound, growing by half: its 16 bytes per key
  // of capacity stay within 24 per entry. A bigger table starts empty: count every entry
  // present once (O(n), amortized over the growth), so the entries already cached don't look
  // colder than the next newcomer.
  void grow_sketch() {
    if (!sketch_.ensure_capacity(std::min(limits_.entries, size_ + size_ / 2))) return;
    pending_count_ = 0;
    const Table t = Table::of(table_.load(std::memory_order_relaxed));
    for (std::size_t i = 0; t && i <= t.mask; ++i) {
      for (Node* n = t.slots[i].load(std::memory_order_relaxed); n != nullptr;
           n = n->chain.load(std::memory_order_relaxed)) {
        sketch_.increment(n->hash);
      }
    }
  }

  void drain_pending() noexcept {
    for (std::size_t i = 0; i < pending_count_; ++i) sketch_.prefetch(pending_[i]);
    for (std::size_t i = 0; i < pending_count_; ++i) sketch_.increment(pending_[i]);
    pending_count_ = 0;
  }

  /// Main region's victim: probation's LRU entry, else protected's.
  Node* main_victim() noexcept {
    if (ListHook* h = probation_.front()) return entry(h);
    if (ListHook* h = protected_.front()) return entry(h);
    return nullptr;
  }

  /// TinyLFU admission: does the window's candidate deserve the main victim's place?
  bool admit(const Node& candidate, const Node& victim) noexcept {
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

  void evict(Graveyard& dead) {
    if (policy_ == MemoryEviction::lru) {
      while (total_.over(limits_)) {
        ListHook* h = probation_.front();
        if (h == nullptr) break;
        discard(drop(*entry(h)), dead);
      }
      return;
    }
    drain_pending();
    while (total_.over(limits_)) {
      Node* victim = main_victim();
      ListHook* w = window_.front();
      if (w != nullptr && (victim == nullptr || window_usage_.over(window_limit_))) {
        Node& candidate = *entry(w);
        if (victim == nullptr) {
          discard(drop(candidate), dead);
        } else if (admit(candidate, *victim)) {
          discard(drop(*victim), dead);
          move_to(candidate, Queue::probation);
        } else {
          discard(drop(candidate), dead);
        }
      } else if (victim != nullptr) {
        discard(drop(*victim), dead);
      } else {
        break;
      }
    }
    // Filling up: the window's overflow joins main without a contest.
    while (window_usage_.over(window_limit_) && window_usage_.entries > 1) {
      ListHook* oldest = window_.front();
      if (oldest == nullptr) break;  // not while entries > 1; tells the compiler so
      move_to(*entry(oldest), Queue::probation);
    }
  }

  /// Unlinks an evicted entry; returns it for freeing outside the lock.
  Node* drop(Node& e) {
    ++evictions_;
    return unlink_slot(slot_of(&e));
  }

  /// Takes the node `*slot` out of the table, its list and the counts.
  Node* unlink_slot(Link* slot) noexcept {
    Node* e = slot->load(std::memory_order_relaxed);
    // The node keeps its own link: a reader standing on it walks on.
    slot->store(e->chain.load(std::memory_order_relaxed), std::memory_order_seq_cst);
    --size_;
    if (e->queue != Queue::none) {
      HookList::unlink(hook(e));
      Usage& u = usage_of(e->queue);
      u.entries -= 1;
      u.bytes -= e->weight;
      scratch_ = {};
      e->queue = Queue::none;  // out of the shard
    }
    total_.entries -= 1;
    total_.bytes -= e->weight;
    return e;
  }

  std::mutex mutex_;
  std::atomic<std::uintptr_t> table_{0};   // a Table word; chains through Node::chain
  std::atomic<std::uint64_t> version_{0};  // odd while a rehash relinks the chains
  std::vector<Retired> limbo_;             // unbounded: unlinked, not yet safe to free
  std::size_t size_ = 0;
  bool bounded_ = false;
  bool lock_free_ = true;  // reads take no lock: unbounded, or bounded with lossy access
  std::unique_ptr<ReadStripe[]> reads_;  // bounded with lossy access: hits to replay
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
  std::size_t hits_ = 0;
};

}  // namespace detail
}  // namespace dogpile
