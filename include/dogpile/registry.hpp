#pragma once
/// @file registry.hpp
/// The backend registry: `configure("memory", …)` looks names up here. `memory`,
/// `memory_serialized` and `null` (dogpile::core) are always registered; the other backends
/// register themselves: including a backend's header registers its names (`disk` and `fanout`
/// with `<dogpile/backends/disk.hpp>`, and so on). A program that reads its backend name from a
/// config file calls `dogpile::register_all_backends()` from `<dogpile/all.hpp>` once, which
/// covers every component that was built. `dogpile.cache.<name>` is accepted as an alias of
/// `<name>`.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"

namespace dogpile {

/// Builds a backend from its `arguments` (a JSON object). Throws `ValidationError` on bad
/// arguments; must not keep a reference to `arguments`.
using BackendFactory =
    std::function<std::shared_ptr<CacheBackend>(const nlohmann::json& arguments)>;

/// Adds (or replaces) a backend under `name`. Thread-safe.
void register_backend(std::string name, BackendFactory factory);

/// True if `name` (or its `dogpile.cache.` alias) is registered. Thread-safe.
bool is_backend_registered(std::string_view name);

/// The registered names, sorted. Thread-safe.
std::vector<std::string> registered_backends();

/// Creates the backend registered under `name` with `arguments`.
/// @throws PluginNotFound for an unknown name (the message lists the registered names and
/// says what to include or link for a known one); ValidationError for bad arguments.
std::shared_ptr<CacheBackend> make_backend(
    std::string_view name, const nlohmann::json& arguments = nlohmann::json::value_t::object);

}  // namespace dogpile
