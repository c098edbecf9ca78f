// The memory backends (backends/memory.hpp): option checks and JSON parsing, and the backends'
// reads and writes over the store (detail/memory_store.hpp), compiled once. A region reaches
// them through virtual calls, so compiling them here costs a hit nothing (region_hit_bench,
// docs/benchmarks.md) and spares every file that includes the header the store's templates.

#include "dogpile/backends/memory.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <mutex>
#include <typeinfo>

#include "dogpile/detail/did_you_mean.hpp"
#include "dogpile/detail/eviction.hpp"
#include "dogpile/detail/json_text.hpp"
#include "dogpile/detail/memory_store.hpp"
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
      map_(std::make_unique<detail::ShardedStore<detail::ObjectSlot>>(opts)) {}
MemoryBackend::~MemoryBackend() = default;
std::size_t MemoryBackend::size() const { return map_->usage().entries; }
std::size_t MemoryBackend::bytes() const { return map_->usage().bytes; }
std::size_t MemoryBackend::evictions() const { return map_->evictions(); }
std::size_t MemoryBackend::shard_count() const noexcept { return map_->shard_count(); }
void MemoryBackend::clear() { map_->clear(); }

std::optional<std::string> MemoryBackend::do_get(std::string_view key) {
  std::optional<std::string> out;
  map_->visit(key, [&](const detail::ObjectSlot& s, std::size_t) {
    if (s.is(typeid(std::string))) out.emplace(*static_cast<const std::string*>(s.get()));
  });
  return out;
}
void MemoryBackend::do_set(std::string_view key, std::string_view value) {
  map_->emplace(key, value.size(), std::string(value), Metadata{});
}
void MemoryBackend::do_erase(std::string_view key) { map_->erase(key); }
std::optional<StoredObject> MemoryBackend::do_get_object(std::string_view key) {
  std::optional<StoredObject> out;
  map_->visit(key, [&](const detail::ObjectSlot& s, std::size_t w) {
    out.emplace(StoredObject{s.share(), s.type(), s.meta(), w - key.size()});
  });
  return out;
}
void MemoryBackend::do_set_object(std::string_view key, StoredObject obj) {
  const std::size_t w = obj.size_hint;
  map_->emplace(key, w, std::move(obj));
}
std::optional<ObjectInfo> MemoryBackend::do_read_object(std::string_view key,
                                                        const ObjectSink& sink) {
  std::optional<ObjectInfo> out;
  map_->visit(key, [&](const detail::ObjectSlot& s, std::size_t w) {
    out.emplace(ObjectInfo{s.type(), s.meta(), w - key.size()});
    if (s.is(*sink.type)) sink.copy(s.get(), sink.out);
  });
  return out;
}
void MemoryBackend::do_set_object_copy(std::string_view key, const void* value,
                                       const ObjectOps& ops, const Metadata& meta,
                                       std::size_t size_hint) {
  map_->emplace(key, size_hint, value, ops, meta);
}

MemorySerializedBackend::MemorySerializedBackend(MemoryOptions opts)
    : CacheBackend("memory_serialized"),
      opts_(opts),
      map_(std::make_unique<detail::ShardedStore<std::string>>(opts)) {}
MemorySerializedBackend::~MemorySerializedBackend() = default;
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

std::shared_ptr<CacheBackend> MemoryBackend::from_arguments(const nlohmann::json& a) {
  return std::make_shared<MemoryBackend>(detail::memory_options_from_json(a));
}

std::shared_ptr<CacheBackend> MemorySerializedBackend::from_arguments(const nlohmann::json& a) {
  return std::make_shared<MemorySerializedBackend>(detail::memory_options_from_json(a));
}

}  // namespace dogpile
