#pragma once
/// @file memory.hpp
/// In-process backends: `memory` keeps live C++ objects (no serialization on a hit),
/// `memory_serialized` keeps envelope bytes (values are copied in and out, like dogpile's
/// memory_pickle). Both are sharded hash maps, unbounded by default, optionally bounded by
/// entry count and/or bytes with W-TinyLFU (default) or LRU eviction.
///
/// Bounds are split evenly over the shards and enforced per shard, so the totals are never
/// exceeded; the eviction order is exact within a shard (use `shards = 1` for a global order).
/// The weight of an entry is its key length plus its value length (bytes) or
/// `StoredObject::size_hint` (objects: what `dogpile::Weigher<T>` says the object owns, see
/// weigher.hpp). An entry heavier than a shard's share of `max_bytes`
/// is not stored.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <typeindex>
#include <typeinfo>
#include <utility>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/detail/eviction.hpp"
#include "dogpile/error.hpp"
#include "dogpile/registry.hpp"

namespace dogpile {

/// Options of the `memory` and `memory_serialized` backends. Plain aggregate: fill it with
/// designated initializers, e.g. `MemoryOptions{.max_entries = 100'000}`.
struct MemoryOptions {
  /// Independent maps, each with its own mutex; rounded up to a power of two (1..65536). When
  /// bounded, lowered so that each shard holds at least 16 entries and 64 KiB of `max_bytes`.
  std::size_t shards = 16;
  /// Most entries kept at once; 0 = no bound.
  std::size_t max_entries = 0;
  /// Most bytes kept at once (sum of key + value lengths / `size_hint`s); 0 = no bound.
  std::size_t max_bytes = 0;
  /// Which entry to drop when a bound is reached (only used when bounded).
  MemoryEviction eviction = MemoryEviction::tiny_lfu;
};

namespace detail {

/// The shard count actually used for `o` (see `MemoryOptions::shards`). @throws ValidationError.
/// Compiled in dogpile::core (src/core/memory.cpp), with the option parsing.
std::size_t effective_memory_shards(const MemoryOptions& o);

// The store, the slot and the backends' reads and writes stay in this header: a region's hit
// on `memory` is a virtual call into an inlined shard lookup and copy, with no pointer to the
// store in between.

/// A sharded map from string keys to `V`, optionally bounded. Thread-safe.
template <class V>
class ShardedStore {
 public:
  explicit ShardedStore(const MemoryOptions& o)
      : count_(effective_memory_shards(o)), shards_(std::make_unique<Shard[]>(count_)) {
    for (std::size_t i = 0; i < count_; ++i) {
      shards_[i].s.configure({share(o.max_entries, i), share(o.max_bytes, i)}, o.eviction,
                             /*lossy_access=*/true);
    }
  }
  std::optional<V> get(std::string_view key) {
    const PrehashedKey k{key, hash_key(key)};
    return shard(k).get(k);
  }
  /// Calls `f(value, weight)` if `key` is present (under the shard's mutex if bounded); see
  /// `EvictingShard::visit`.
  template <class F>
  bool visit(std::string_view key, F&& f) {
    const PrehashedKey k{key, hash_key(key)};
    return shard(k).visit(k, std::forward<F>(f));
  }
  void set(std::string_view key, V value, std::size_t weight) {
    const PrehashedKey k{key, hash_key(key)};
    shard(k).set(k, std::move(value), key.size() + weight);
  }
  /// `set` with the value constructed from `args` in its node.
  template <class... A>
  void emplace(std::string_view key, std::size_t weight, A&&... args) {
    const PrehashedKey k{key, hash_key(key)};
    shard(k).emplace(k, key.size() + weight, std::forward<A>(args)...);
  }
  void erase(std::string_view key) {
    const PrehashedKey k{key, hash_key(key)};
    shard(k).erase(k);
  }
  void clear() {
    for (std::size_t i = 0; i < count_; ++i) shards_[i].s.clear();
  }
  [[nodiscard]] Usage usage() const {
    Usage u;
    for (std::size_t i = 0; i < count_; ++i) {
      const Usage s = shards_[i].s.usage();
      u.entries += s.entries;
      u.bytes += s.bytes;
    }
    return u;
  }
  [[nodiscard]] std::size_t evictions() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < count_; ++i) n += shards_[i].s.evictions();
    return n;
  }
  [[nodiscard]] std::size_t shard_count() const noexcept { return count_; }

 private:
  struct alignas(64) Shard {
    mutable EvictingShard<V> s;
  };
  /// Shard i's part of `total` (0 = unbounded); the parts add up to `total` exactly.
  [[nodiscard]] std::size_t share(std::size_t total, std::size_t i) const noexcept {
    if (total == 0) return kUnbounded;
    return total / count_ + (i < total % count_ ? 1 : 0);
  }
  // Fibonacci hashing of the raw hash: independent of the mix64 bits the sketch uses.
  EvictingShard<V>& shard(const PrehashedKey& k) noexcept {
    if (count_ == 1) return shards_[0].s;
    const std::uint64_t x = static_cast<std::uint64_t>(k.hash) * 0x9E3779B97F4A7C15ULL;
    return shards_[static_cast<std::size_t>(x >> (64 - std::countr_zero(count_)))].s;
  }

  std::size_t count_;
  std::unique_ptr<Shard[]> shards_;
};

/// What the `memory` backend keeps per entry: a live object and its metadata. An object of at
/// most `kInline` bytes (with a non-throwing move) lives inline, in the map's node: one
/// allocation per entry; a bigger one, or one given as a `StoredObject`, is held by its
/// `shared_ptr`. Not copyable or movable (built in place in its node).
class ObjectSlot {
 public:
  static constexpr std::size_t kInline = 32;

  /// A copy of the object at `value`, described by `ops`.
  ObjectSlot(const void* value, const ObjectOps& ops, const Metadata& meta) : meta_(meta) {
    if (ops.size <= kInline && ops.align <= alignof(std::max_align_t) &&
        ops.align <= kInlineAlign && ops.nothrow_move) {
      ops.copy(buf_, value);
      ops_ = &ops;
    } else {
      ::new (buf_) Shared{ops.share(value), *ops.type};
    }
  }
  /// A string moved in (inline).
  ObjectSlot(std::string&& value, const Metadata& meta) noexcept
      : ops_(&object_ops<std::string>), meta_(meta) {
    static_assert(sizeof(std::string) <= kInline && alignof(std::string) <= kInlineAlign);
    ops_->move(buf_, &value);
  }
  /// The object `o` holds, shared.
  ObjectSlot(StoredObject&& o) noexcept : meta_(o.meta) {
    ::new (buf_) Shared{std::move(o.payload), o.type};
  }
  ObjectSlot(const ObjectSlot&) = delete;
  ObjectSlot& operator=(const ObjectSlot&) = delete;
  ~ObjectSlot() {
    if (ops_ != nullptr) {
      ops_->destroy(buf_);
    } else {
      shared()->~Shared();
    }
  }

  [[nodiscard]] std::type_index type() const noexcept {
    return ops_ != nullptr ? std::type_index(*ops_->type) : shared()->type;
  }
  [[nodiscard]] bool is(const std::type_info& t) const noexcept {
    return ops_ != nullptr ? *ops_->type == t : shared()->type == std::type_index(t);
  }
  /// The object's address.
  [[nodiscard]] const void* get() const noexcept {
    return ops_ != nullptr ? static_cast<const void*>(buf_) : shared()->payload.get();
  }
  /// A `shared_ptr` to the object (an inline one is copied into a new one).
  [[nodiscard]] std::shared_ptr<const void> share() const {
    return ops_ != nullptr ? ops_->share(buf_) : shared()->payload;
  }
  [[nodiscard]] const Metadata& meta() const noexcept { return meta_; }

 private:
  static constexpr std::size_t kInlineAlign = 8;
  struct Shared {
    std::shared_ptr<const void> payload;
    std::type_index type;
  };
  static_assert(sizeof(Shared) <= kInline);
  [[nodiscard]] const Shared* shared() const noexcept {
    return std::launder(reinterpret_cast<const Shared*>(buf_));
  }
  [[nodiscard]] Shared* shared() noexcept { return std::launder(reinterpret_cast<Shared*>(buf_)); }

  const ObjectOps* ops_ = nullptr;  // the inline object's type, or nullptr: buf_ is a Shared
  alignas(kInlineAlign) unsigned char buf_[kInline];
  Metadata meta_;
};

/// Parses the backend arguments (never modifies them). @throws ValidationError naming the option.
MemoryOptions memory_options_from_json(const nlohmann::json& a);
}  // namespace detail

/// The `memory` backend: live objects in a sharded map. A region's value of at most 32 bytes
/// (a `std::string`, a `std::vector`, a small struct) is kept in the map's node, one
/// allocation per entry, and a region's hit copies it straight out (`read_object`); a bigger
/// one, or a `StoredObject` given to `set_object`, is kept behind its `shared_ptr`.
/// Thread-safe. Unbounded, a read takes no lock and writes nothing shared (it pins an epoch,
/// walks the map through atomic links and copies the value out of its node, which is never
/// changed once stored and is freed only once no read can hold it); the copy of a value may
/// run in several threads at once, as for any `const` object. Bounded, a read is the same
/// lock-free lookup, and its hit goes to a per-thread read buffer that is replayed into the
/// eviction policy under the shard's mutex, before the next write's decision or when the
/// buffer fills (Caffeine's scheme: one thread's accesses count exactly, in order; under
/// contention a hit may be dropped, so the eviction order is approximate). In `tiny_lfu`'s
/// protected segment a hit marks its entry (CLOCK) instead of moving it, so a hot entry is not
/// rewritten on every read. Writes lock their shard's mutex; a
/// replaced, erased or evicted value is destroyed outside it, once no read can still be
/// copying it.
class MemoryBackend final : public CacheBackend {
 public:
  /// @throws ValidationError if an option is out of range.
  explicit MemoryBackend(MemoryOptions opts = {})
      : CacheBackend("memory"), opts_(opts), map_(opts) {}
  /// Arguments (JSON object, not modified): `shards` (positive integer), `max_entries`,
  /// `max_bytes` (non-negative integers, 0 = unbounded), `eviction` ("tiny_lfu" | "lru").
  /// @throws ValidationError naming the bad or unknown option.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& a);

  /// The options this backend was built with.
  [[nodiscard]] const MemoryOptions& options() const noexcept { return opts_; }
  /// Entries currently stored. Thread-safe (locks each shard in turn: a snapshot, not atomic).
  [[nodiscard]] std::size_t size() const { return map_.usage().entries; }
  /// Current total weight (see the file comment). Thread-safe.
  [[nodiscard]] std::size_t bytes() const { return map_.usage().bytes; }
  /// Entries dropped by the eviction policy so far (not erases, not replacements). Thread-safe.
  [[nodiscard]] std::size_t evictions() const { return map_.evictions(); }
  /// Number of shards in use (see `MemoryOptions::shards`).
  [[nodiscard]] std::size_t shard_count() const noexcept { return map_.shard_count(); }
  /// Removes every entry. Thread-safe.
  void clear() { map_.clear(); }

 protected:
  // Byte access stores the bytes as a std::string object, so proxies and raw tests work.
  std::optional<std::string> do_get(std::string_view key) override {
    std::optional<std::string> out;
    map_.visit(key, [&](const detail::ObjectSlot& s, std::size_t) {
      if (s.is(typeid(std::string))) out.emplace(*static_cast<const std::string*>(s.get()));
    });
    return out;
  }
  void do_set(std::string_view key, std::string_view value) override {
    map_.emplace(key, value.size(), std::string(value), Metadata{});
  }
  void do_erase(std::string_view key) override { map_.erase(key); }
  [[nodiscard]] bool do_stores_objects() const override { return true; }
  std::optional<StoredObject> do_get_object(std::string_view key) override {
    std::optional<StoredObject> out;
    map_.visit(key, [&](const detail::ObjectSlot& s, std::size_t w) {
      out.emplace(StoredObject{s.share(), s.type(), s.meta(), w - key.size()});
    });
    return out;
  }
  void do_set_object(std::string_view key, StoredObject obj) override {
    const std::size_t w = obj.size_hint;
    map_.emplace(key, w, std::move(obj));
  }
  std::optional<ObjectInfo> do_read_object(std::string_view key, const ObjectSink& sink) override {
    std::optional<ObjectInfo> out;
    map_.visit(key, [&](const detail::ObjectSlot& s, std::size_t w) {
      out.emplace(ObjectInfo{s.type(), s.meta(), w - key.size()});
      if (s.is(*sink.type)) sink.copy(s.get(), sink.out);
    });
    return out;
  }
  void do_set_object_copy(std::string_view key, const void* value, const ObjectOps& ops,
                          const Metadata& meta, std::size_t size_hint) override {
    map_.emplace(key, size_hint, value, ops, meta);
  }

 private:
  MemoryOptions opts_;
  detail::ShardedStore<detail::ObjectSlot> map_;
};

/// The `memory_serialized` backend: envelope bytes in a sharded map (a get copies them out).
/// Thread-safe, same structure and options as `MemoryBackend`.
class MemorySerializedBackend final : public CacheBackend {
 public:
  /// @throws ValidationError if an option is out of range.
  explicit MemorySerializedBackend(MemoryOptions opts = {})
      : CacheBackend("memory_serialized"), opts_(opts), map_(opts) {}
  /// Same arguments as `MemoryBackend::from_arguments`. @throws ValidationError.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& a);

  /// The options this backend was built with.
  [[nodiscard]] const MemoryOptions& options() const noexcept { return opts_; }
  /// Entries currently stored. Thread-safe.
  [[nodiscard]] std::size_t size() const { return map_.usage().entries; }
  /// Current total weight (key + value bytes). Thread-safe.
  [[nodiscard]] std::size_t bytes() const { return map_.usage().bytes; }
  /// Entries dropped by the eviction policy so far. Thread-safe.
  [[nodiscard]] std::size_t evictions() const { return map_.evictions(); }
  /// Number of shards in use.
  [[nodiscard]] std::size_t shard_count() const noexcept { return map_.shard_count(); }
  /// Removes every entry. Thread-safe.
  void clear() { map_.clear(); }

 protected:
  std::optional<std::string> do_get(std::string_view key) override { return map_.get(key); }
  void do_set(std::string_view key, std::string_view value) override {
    map_.set(key, std::string(value), value.size());
  }
  void do_erase(std::string_view key) override { map_.erase(key); }

 private:
  MemoryOptions opts_;
  detail::ShardedStore<std::string> map_;
};

/// Registers `memory` and `memory_serialized` (idempotent, thread-safe). They are registered
/// before the registry is first used, so calling this is never needed; it is kept for
/// `<dogpile/all.hpp>` and programs that call it.
void register_memory_backends();

}  // namespace dogpile
