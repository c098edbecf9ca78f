// The memory backends (backends/memory.hpp): compiled once here, so that a file including a
// region does not instantiate the sharded W-TinyLFU store (detail/eviction.hpp) and the
// option parsing.

#include "dogpile/backends/memory.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <mutex>
#include <typeinfo>

#include "dogpile/detail/did_you_mean.hpp"
#include "dogpile/detail/eviction.hpp"
#include "dogpile/detail/json_text.hpp"
#include "dogpile/error.hpp"

namespace dogpile {

namespace detail {

constexpr std::size_t kMaxMemoryShards = std::size_t{1} << 16;

/// @throws ValidationError naming the bad field.
void validate_memory_options(const MemoryOptions& o) {
  if (o.shards == 0 || o.shards > kMaxMemoryShards) {
    throw_error<ValidationError>("memory backend option 'shards' must be in 1..65536, got " +
                                 std::to_string(o.shards));
  }
  if (o.eviction != MemoryEviction::tiny_lfu && o.eviction != MemoryEviction::lru) {
    throw_error<ValidationError>("memory backend option 'eviction' has an unknown value");
  }
}

/// The shard count actually used for `o` (see `MemoryOptions::shards`). @throws ValidationError.
std::size_t effective_memory_shards(const MemoryOptions& o) {
  validate_memory_options(o);
  std::size_t n = std::bit_ceil(std::clamp<std::size_t>(o.shards, 1, kMaxMemoryShards));
  while (n > 1 && o.max_entries != 0 && o.max_entries / n < 16) n >>= 1;
  while (n > 1 && o.max_bytes != 0 && o.max_bytes / n < (std::size_t{64} << 10)) n >>= 1;
  return n;
}

/// A sharded map from string keys to `V`, optionally bounded. Thread-safe.
template <class V>
class ShardedStore {
 public:
  explicit ShardedStore(const MemoryOptions& o)
      : count_(effective_memory_shards(o)), shards_(std::make_unique<Shard[]>(count_)) {
    for (std::size_t i = 0; i < count_; ++i) {
      shards_[i].s.configure({share(o.max_entries, i), share(o.max_bytes, i)}, o.eviction);
    }
  }
  std::optional<V> get(std::string_view key) {
    const PrehashedKey k{key, hash_key(key)};
    return shard(k).get(k);
  }
  void set(std::string_view key, V value, std::size_t weight) {
    const PrehashedKey k{key, hash_key(key)};
    shard(k).set(k, std::move(value), key.size() + weight);
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

const nlohmann::json* memory_option(const nlohmann::json& a, const char* name) {
  auto it = a.find(name);
  return it == a.end() ? nullptr : &*it;
}

std::size_t memory_size_option(const nlohmann::json& v, const char* name, bool positive) {
  const bool ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0);
  if (!ok || (positive && v.get<std::uint64_t>() == 0)) {
    throw_error<ValidationError>(std::string("memory backend option '") + name + "' must be a " +
                                 (positive ? "positive" : "non-negative") + " integer, got " +
                                 detail::json_text(v));
  }
  return static_cast<std::size_t>(v.get<std::uint64_t>());
}

/// Parses the backend arguments (never modifies them). @throws ValidationError naming the option.
MemoryOptions memory_options_from_json(const nlohmann::json& a) {
  MemoryOptions o;
  if (a.is_null()) return o;
  if (!a.is_object()) {
    throw_error<ValidationError>("memory backend arguments must be a JSON object, got " +
                                 detail::json_text(a));
  }
  for (const auto& [name, value] : a.items()) {
    if (name != "shards" && name != "max_entries" && name != "max_bytes" && name != "eviction") {
      static constexpr std::string_view known[] = {"shards", "max_entries", "max_bytes",
                                                   "eviction"};
      throw_error<ValidationError>("memory backend: unknown option '" + name + "'" +
                                   detail::did_you_mean(name, known) +
                                   " (known: shards, max_entries, max_bytes, eviction)");
    }
  }
  if (const auto* v = memory_option(a, "shards")) o.shards = memory_size_option(*v, "shards", true);
  if (const auto* v = memory_option(a, "max_entries")) {
    o.max_entries = memory_size_option(*v, "max_entries", false);
  }
  if (const auto* v = memory_option(a, "max_bytes")) {
    o.max_bytes = memory_size_option(*v, "max_bytes", false);
  }
  if (const auto* v = memory_option(a, "eviction")) {
    if (v->is_string() && v->get_ref<const std::string&>() == "tiny_lfu") {
      o.eviction = MemoryEviction::tiny_lfu;
    } else if (v->is_string() && v->get_ref<const std::string&>() == "lru") {
      o.eviction = MemoryEviction::lru;
    } else {
      throw_error<ValidationError>(
          "memory backend option 'eviction' must be \"tiny_lfu\" or \"lru\", got " +
          detail::json_text(*v));
    }
  }
  validate_memory_options(o);
  return o;
}
}  // namespace detail

MemoryBackend::MemoryBackend(MemoryOptions opts)
    : CacheBackend("memory"),
      opts_(opts),
      map_(std::make_unique<detail::ShardedStore<StoredObject>>(opts)) {}
MemoryBackend::~MemoryBackend() = default;

std::shared_ptr<CacheBackend> MemoryBackend::from_arguments(const nlohmann::json& a) {
  return std::make_shared<MemoryBackend>(detail::memory_options_from_json(a));
}
std::size_t MemoryBackend::size() const { return map_->usage().entries; }
std::size_t MemoryBackend::bytes() const { return map_->usage().bytes; }
std::size_t MemoryBackend::evictions() const { return map_->evictions(); }
std::size_t MemoryBackend::shard_count() const noexcept { return map_->shard_count(); }
void MemoryBackend::clear() { map_->clear(); }

std::optional<std::string> MemoryBackend::do_get(std::string_view key) {
  auto o = map_->get(key);
  if (!o || o->type != typeid(std::string)) return std::nullopt;
  return *static_cast<const std::string*>(o->payload.get());
}
void MemoryBackend::do_set(std::string_view key, std::string_view value) {
  map_->set(key,
            StoredObject{
                std::make_shared<const std::string>(value), typeid(std::string), {}, value.size()},
            value.size());
}
void MemoryBackend::do_erase(std::string_view key) { map_->erase(key); }
bool MemoryBackend::do_stores_objects() const { return true; }
std::optional<StoredObject> MemoryBackend::do_get_object(std::string_view key) {
  return map_->get(key);
}
void MemoryBackend::do_set_object(std::string_view key, StoredObject obj) {
  const std::size_t w = obj.size_hint;
  map_->set(key, std::move(obj), w);
}

MemorySerializedBackend::MemorySerializedBackend(MemoryOptions opts)
    : CacheBackend("memory_serialized"),
      opts_(opts),
      map_(std::make_unique<detail::ShardedStore<std::string>>(opts)) {}
MemorySerializedBackend::~MemorySerializedBackend() = default;

std::shared_ptr<CacheBackend> MemorySerializedBackend::from_arguments(const nlohmann::json& a) {
  return std::make_shared<MemorySerializedBackend>(detail::memory_options_from_json(a));
}
std::size_t MemorySerializedBackend::size() const { return map_->usage().entries; }
std::size_t MemorySerializedBackend::bytes() const { return map_->usage().bytes; }
std::size_t MemorySerializedBackend::evictions() const { return map_->evictions(); }
std::size_t MemorySerializedBackend::shard_count() const noexcept { return map_->shard_count(); }
void MemorySerializedBackend::clear() { map_->clear(); }

std::optional<std::string> MemorySerializedBackend::do_get(std::string_view key) {
  return map_->get(key);
}
void MemorySerializedBackend::do_set(std::string_view key, std::string_view value) {
  map_->set(key, std::string(value), value.size());
}
void MemorySerializedBackend::do_erase(std::string_view key) { map_->erase(key); }

}  // namespace dogpile
