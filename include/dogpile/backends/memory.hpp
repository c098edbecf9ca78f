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

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/detail/memory_eviction.hpp"
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
template <class V>
class ShardedStore;  // src/core/memory.cpp: the sharded, optionally bounded map
}  // namespace detail

/// The `memory` backend: live objects in a sharded map; a hit copies one `shared_ptr`.
/// Thread-safe: one mutex per shard, held only for the map lookup and the policy update.
class MemoryBackend final : public CacheBackend {
 public:
  /// @throws ValidationError if an option is out of range.
  explicit MemoryBackend(MemoryOptions opts = {});
  ~MemoryBackend() override;
  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;
  /// Arguments (JSON object, not modified): `shards` (positive integer), `max_entries`,
  /// `max_bytes` (non-negative integers, 0 = unbounded), `eviction` ("tiny_lfu" | "lru").
  /// @throws ValidationError naming the bad or unknown option.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& a);

  /// The options this backend was built with.
  [[nodiscard]] const MemoryOptions& options() const noexcept { return opts_; }
  /// Entries currently stored. Thread-safe (locks each shard in turn: a snapshot, not atomic).
  [[nodiscard]] std::size_t size() const;
  /// Current total weight (see the file comment). Thread-safe.
  [[nodiscard]] std::size_t bytes() const;
  /// Entries dropped by the eviction policy so far (not erases, not replacements). Thread-safe.
  [[nodiscard]] std::size_t evictions() const;
  /// Number of shards in use (see `MemoryOptions::shards`).
  [[nodiscard]] std::size_t shard_count() const noexcept;
  /// Removes every entry. Thread-safe.
  void clear();

 protected:
  // Byte access stores the bytes as a std::string object, so proxies and raw tests work.
  std::optional<std::string> do_get(std::string_view key) override;
  void do_set(std::string_view key, std::string_view value) override;
  void do_erase(std::string_view key) override;
  [[nodiscard]] bool do_stores_objects() const override;
  std::optional<StoredObject> do_get_object(std::string_view key) override;
  void do_set_object(std::string_view key, StoredObject obj) override;

 private:
  MemoryOptions opts_;
  std::unique_ptr<detail::ShardedStore<StoredObject>> map_;
};

/// The `memory_serialized` backend: envelope bytes in a sharded map (a get copies them out).
/// Thread-safe, same structure and options as `MemoryBackend`.
class MemorySerializedBackend final : public CacheBackend {
 public:
  /// @throws ValidationError if an option is out of range.
  explicit MemorySerializedBackend(MemoryOptions opts = {});
  ~MemorySerializedBackend() override;
  MemorySerializedBackend(const MemorySerializedBackend&) = delete;
  MemorySerializedBackend& operator=(const MemorySerializedBackend&) = delete;
  /// Same arguments as `MemoryBackend::from_arguments`. @throws ValidationError.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& a);

  /// The options this backend was built with.
  [[nodiscard]] const MemoryOptions& options() const noexcept { return opts_; }
  /// Entries currently stored. Thread-safe.
  [[nodiscard]] std::size_t size() const;
  /// Current total weight (key + value bytes). Thread-safe.
  [[nodiscard]] std::size_t bytes() const;
  /// Entries dropped by the eviction policy so far. Thread-safe.
  [[nodiscard]] std::size_t evictions() const;
  /// Number of shards in use.
  [[nodiscard]] std::size_t shard_count() const noexcept;
  /// Removes every entry. Thread-safe.
  void clear();

 protected:
  std::optional<std::string> do_get(std::string_view key) override;
  void do_set(std::string_view key, std::string_view value) override;
  void do_erase(std::string_view key) override;

 private:
  MemoryOptions opts_;
  std::unique_ptr<detail::ShardedStore<std::string>> map_;
};

/// Registers `memory` and `memory_serialized` (idempotent, thread-safe). They are registered
/// before the registry is first used, so calling this is never needed; it is kept for
/// `<dogpile/all.hpp>` and programs that call it.
void register_memory_backends();

}  // namespace dogpile
