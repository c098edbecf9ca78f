#pragma once
/// @file registry.hpp
/// The backend registry: `configure("memory", …)` looks names up here. Built-in names:
/// `memory`, `memory_serialized`, `null` (core); `disk`, `fanout` (dogpile::disk, registered
/// when `<dogpile/backends/disk.hpp>` is included); and so on for the other components.
/// `dogpile.cache.<name>` is accepted as an alias of `<name>`.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/backends/memory.hpp"
#include "dogpile/backends/null.hpp"
#include "dogpile/error.hpp"

namespace dogpile {

/// Builds a backend from its `arguments` (a JSON object). Throws `ValidationError` on bad
/// arguments; must not keep a reference to `arguments`.
using BackendFactory =
    std::function<std::shared_ptr<CacheBackend>(const nlohmann::json& arguments)>;

namespace detail {
/// Components that are compiled libraries say so, so a missing one gets a helpful message.
inline const char* component_of(std::string_view name) {
  if (name == "disk" || name == "fanout")
    return "dogpile::disk (include <dogpile/backends/disk.hpp>)";
  if (name == "redis" || name == "redis_sentinel" || name == "redis_cluster")
    return "dogpile::redis";
  if (name == "memcached") return "dogpile::memcached";
  if (name == "dbm") return "dogpile::dbm";
  return nullptr;
}

struct Registry {
  std::mutex mutex;
  std::map<std::string, BackendFactory, std::less<>> factories;
  Registry() {
    factories["memory"] = [](const nlohmann::json& a) { return MemoryBackend::from_arguments(a); };
    factories["memory_serialized"] = [](const nlohmann::json& a) {
      return MemorySerializedBackend::from_arguments(a);
    };
    factories["null"] = [](const nlohmann::json& a) { return NullBackend::from_arguments(a); };
  }
  static Registry& instance() {
    static Registry r;
    return r;
  }
};

inline std::string_view strip_alias(std::string_view name) {
  constexpr std::string_view prefix = "dogpile.cache.";
  if (name.substr(0, prefix.size()) == prefix) name.remove_prefix(prefix.size());
  return name;
}
}  // namespace detail

/// Adds (or replaces) a backend under `name`. Thread-safe.
inline void register_backend(std::string name, BackendFactory factory) {
  auto& r = detail::Registry::instance();
  std::lock_guard lk(r.mutex);
  r.factories[std::string(detail::strip_alias(name))] = std::move(factory);
}

/// True if `name` (or its `dogpile.cache.` alias) is registered. Thread-safe.
inline bool is_backend_registered(std::string_view name) {
  auto& r = detail::Registry::instance();
  std::lock_guard lk(r.mutex);
  return r.factories.find(detail::strip_alias(name)) != r.factories.end();
}

/// Creates the backend registered under `name` with `arguments`.
/// @throws PluginNotFound for an unknown name; ValidationError for bad arguments.
inline std::shared_ptr<CacheBackend> make_backend(
    std::string_view name, const nlohmann::json& arguments = nlohmann::json::object()) {
  BackendFactory f;
  {
    auto& r = detail::Registry::instance();
    std::lock_guard lk(r.mutex);
    auto it = r.factories.find(detail::strip_alias(name));
    if (it != r.factories.end()) f = it->second;
  }
  if (!f) {
    std::string msg = "Couldn't find cache plugin to load: " + std::string(name);
    if (const char* comp = detail::component_of(detail::strip_alias(name))) {
      msg += " (it is provided by " + std::string(comp) + ")";
    }
    detail::throw_error<PluginNotFound>(msg);
  }
  if (!arguments.is_null() && !arguments.is_object()) {
    detail::throw_error<ValidationError>("backend arguments for '" + std::string(name) +
                                         "' must be a JSON object");
  }
  return f(arguments.is_null() ? nlohmann::json::object() : arguments);
}

}  // namespace dogpile
