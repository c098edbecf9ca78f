#pragma once
/// @file memory.hpp
/// In-process backends: `memory` keeps live C++ objects (no serialization on a hit),
/// `memory_serialized` keeps envelope bytes (values are copied in and out, like dogpile's
/// memory_pickle). Both are sharded hash maps, unbounded by default, optionally bounded by
/// entry count and/or bytes with W-TinyLFU (default) or LRU eviction.
///
/// Bounds are split evenly over the shards and enforced per shard, so the totals are never
/// exceeded; eviction is decided per shard (use `shards = 1` for a global order).
/// The weight of an entry is its key length plus its value length (bytes) or
/// `StoredObject::size_hint` (objects: what `dogpile::Weigher<T>` says the object owns, see
/// weigher.hpp). An entry heavier than a shard's share of `max_bytes`
/// is not stored.
///
/// The store is compiled into dogpile::core (src/core/memory.cpp): a region calls a backend
/// through virtual functions anyway, so its hit costs the same, and a file that includes this
/// header parses the class declarations only.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/detail/memory_eviction.hpp"
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

template <class V>
class ShardedStore;
class ObjectSlot;

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
/// rewritten on every read, and once its frequency estimate reaches 4 its hits are not
/// buffered at all until the estimates age: reads of a hot set cost what unbounded reads do.
/// Writes lock their shard's mutex; a replaced, erased or evicted value is destroyed outside
/// it, once no read can still be copying it.
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
  [[nodiscard]] bool do_stores_objects() const override { return true; }
  std::optional<StoredObject> do_get_object(std::string_view key) override;
  void do_set_object(std::string_view key, StoredObject obj) override;
  std::optional<ObjectInfo> do_read_object(std::string_view key, const ObjectSink& sink) override;
  void do_set_object_copy(std::string_view key, const void* value, const ObjectOps& ops,
                          const Metadata& meta, std::size_t size_hint) override;

 private:
  MemoryOptions opts_;
  std::unique_ptr<detail::ShardedStore<detail::ObjectSlot>> map_;
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
