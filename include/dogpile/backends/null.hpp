#pragma once
/// @file null.hpp
/// The `null` backend: stores nothing, every read is a miss, and its mutex never excludes, so
/// a decorated function recomputes on every call. Useful to switch caching off by config.

#include <memory>
#include <mutex>

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
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& /*arguments*/) {
    return std::make_shared<NullBackend>();
  }

 protected:
  std::optional<std::string> do_get(std::string_view /*key*/) override { return std::nullopt; }
  void do_set(std::string_view /*key*/, std::string_view /*value*/) override {}
  void do_erase(std::string_view /*key*/) override {}
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view /*key*/) override {
    return std::make_shared<NullMutex>();
  }
  [[nodiscard]] bool do_stores_objects() const override { return true; }
  std::optional<StoredObject> do_get_object(std::string_view /*key*/) override {
    return std::nullopt;
  }
  void do_set_object(std::string_view /*key*/, StoredObject /*obj*/) override {}
};

/// Registers `null` (idempotent, thread-safe). Runs before `main` in every program that
/// includes this header.
inline void register_null_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_backend("null",
                     [](const nlohmann::json& a) { return NullBackend::from_arguments(a); });
  });
}

namespace detail {
/// Makes `configure("null", …)` work for any program that includes this header.
inline const bool null_backend_registered = (register_null_backend(), true);
}  // namespace detail

}  // namespace dogpile
