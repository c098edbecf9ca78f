#pragma once
/// @file memory_store.hpp
/// The `memory` backends' store (not part of the public API): a sharded map of
/// `detail::EvictingShard`s, and the slot a `memory` entry keeps its object in. Included by
/// the compiled backends (src/core/memory.cpp), not by <dogpile/backends/memory.hpp>, so a
/// program that includes the backend's header does not parse or instantiate the store.

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

#include "dogpile/backend.hpp"
#include "dogpile/backends/memory.hpp"
#include "dogpile/detail/eviction.hpp"

namespace dogpile::detail {

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
  /// Calls `f(value, weight)` if `key` is present (lock-free; a bounded hit is buffered for the
  /// policy); see `EvictingShard::visit`.
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

}  // namespace dogpile::detail
