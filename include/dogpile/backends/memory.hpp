#pragma once
/// @file memory.hpp
/// In-process backends: `memory` keeps live C++ objects (no serialization on a hit),
/// `memory_serialized` keeps envelope bytes (values are copied in and out, like dogpile's
/// memory_pickle). Both are sharded hash maps.

#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"

namespace dogpile {

/// Options of the memory backends. Plain aggregate.
struct MemoryOptions {
  std::size_t shards = 16;  ///< independent maps, each with its own mutex (rounded up to 2^n)
};

namespace detail {
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// A sharded map from string keys to `V`. Thread-safe.
template <class V>
class ShardedMap {
 public:
  explicit ShardedMap(std::size_t shards) {
    std::size_t n = 1;
    while (n < shards) n <<= 1;
    shards_ = std::vector<Shard>(n);
    mask_ = n - 1;
  }
  std::optional<V> get(std::string_view key) {
    auto& s = shard(key);
    std::lock_guard lk(s.mutex);
    auto it = s.map.find(key);
    if (it == s.map.end()) return std::nullopt;
    return it->second;
  }
  void set(std::string_view key, V value) {
    auto& s = shard(key);
    std::lock_guard lk(s.mutex);
    auto it = s.map.find(key);
    if (it == s.map.end()) {
      s.map.emplace(std::string(key), std::move(value));
    } else {
      it->second = std::move(value);
    }
  }
  void erase(std::string_view key) {
    auto& s = shard(key);
    std::lock_guard lk(s.mutex);
    auto it = s.map.find(key);
    if (it != s.map.end()) s.map.erase(it);
  }

 private:
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, V, StringHash, std::equal_to<>> map;
  };
  Shard& shard(std::string_view key) { return shards_[StringHash{}(key) & mask_]; }
  std::vector<Shard> shards_;
  std::size_t mask_ = 0;
};

inline MemoryOptions memory_options_from_json(const nlohmann::json& a) {
  MemoryOptions o;
  if (a.contains("shards")) {
    if (!a["shards"].is_number_unsigned() || a["shards"].get<std::size_t>() == 0) {
      throw ValidationError("memory backend option 'shards' must be a positive integer");
    }
    o.shards = a["shards"].get<std::size_t>();
  }
  return o;
}
}  // namespace detail

/// The `memory` backend: live objects in a sharded map. Thread-safe.
class MemoryBackend final : public CacheBackend {
 public:
  explicit MemoryBackend(MemoryOptions opts = {}) : map_(opts.shards) {}
  /// Arguments: `shards` (positive integer). @throws ValidationError.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& a) {
    return std::make_shared<MemoryBackend>(detail::memory_options_from_json(a));
  }

 protected:
  // Byte access stores the bytes as a std::string object, so proxies and raw tests work.
  std::optional<std::string> do_get(std::string_view key) override {
    auto o = map_.get(key);
    if (!o || o->type != typeid(std::string)) return std::nullopt;
    return *static_cast<const std::string*>(o->payload.get());
  }
  void do_set(std::string_view key, std::string_view value) override {
    map_.set(key, StoredObject{std::make_shared<const std::string>(value), typeid(std::string), {}, value.size()});
  }
  void do_erase(std::string_view key) override { map_.erase(key); }
  [[nodiscard]] bool do_stores_objects() const override { return true; }
  std::optional<StoredObject> do_get_object(std::string_view key) override { return map_.get(key); }
  void do_set_object(std::string_view key, StoredObject obj) override { map_.set(key, std::move(obj)); }

 private:
  detail::ShardedMap<StoredObject> map_;
};

/// The `memory_serialized` backend: envelope bytes in a sharded map. Thread-safe.
class MemorySerializedBackend final : public CacheBackend {
 public:
  explicit MemorySerializedBackend(MemoryOptions opts = {}) : map_(opts.shards) {}
  /// Arguments: `shards` (positive integer). @throws ValidationError.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& a) {
    return std::make_shared<MemorySerializedBackend>(detail::memory_options_from_json(a));
  }

 protected:
  std::optional<std::string> do_get(std::string_view key) override { return map_.get(key); }
  void do_set(std::string_view key, std::string_view value) override { map_.set(key, std::string(value)); }
  void do_erase(std::string_view key) override { map_.erase(key); }

 private:
  detail::ShardedMap<std::string> map_;
};

}  // namespace dogpile
