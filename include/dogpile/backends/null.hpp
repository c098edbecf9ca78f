#pragma once
/// @file null.hpp
/// The `null` backend: stores nothing, every read is a miss, and its mutex never excludes, so
/// a decorated function recomputes on every call. Useful to switch caching off by config.

#include <memory>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/registry.hpp"

namespace dogpile {

/// Stores nothing. Thread-safe (stateless).
class NullBackend final : public CacheBackend {
 public:
  /// A backend named "null".
  NullBackend() : CacheBackend("null") {}
  /// Takes no arguments; any given are ignored (as dogpile).
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);

 protected:
  std::optional<std::string> do_get(std::string_view key) override;
  void do_set(std::string_view key, std::string_view value) override;
  void do_erase(std::string_view key) override;
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key) override;
  [[nodiscard]] bool do_stores_objects() const override;
  std::optional<StoredObject> do_get_object(std::string_view key) override;
  void do_set_object(std::string_view key, StoredObject obj) override;
};

/// Registers `null` (idempotent, thread-safe). It is registered before the registry is first
/// used, so calling this is never needed; it is kept for `<dogpile/all.hpp>` and programs that
/// call it.
void register_null_backend();

}  // namespace dogpile
