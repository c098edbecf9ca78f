// The backend registry (registry.hpp). Compiled once here instead of in every file that
// includes a region: the map, its mutex and the "did you mean" messages need no template
// parameter. The built-in backends (memory, memory_serialized, null) are registered when the
// registry is first used, so no header has to register them from a static initializer.

#include "dogpile/registry.hpp"

#include <map>
#include <mutex>

#include "dogpile/backends/memory.hpp"
#include "dogpile/backends/null.hpp"
#include "dogpile/detail/did_you_mean.hpp"
#include "dogpile/detail/json_text.hpp"
#include "dogpile/error.hpp"

namespace dogpile {
namespace detail {
namespace {

/// Where a backend name that is not registered comes from, so the error says what to do.
struct BackendHint {
  std::string_view name;       ///< the registered name
  std::string_view component;  ///< the CMake target that provides it
  std::string_view header;     ///< the header whose inclusion registers it
};
constexpr BackendHint kBackendHints[] = {
    {"memory", "dogpile::core", "dogpile/backends/memory.hpp"},
    {"memory_serialized", "dogpile::core", "dogpile/backends/memory.hpp"},
    {"null", "dogpile::core", "dogpile/backends/null.hpp"},
    {"disk", "dogpile::disk", "dogpile/backends/disk.hpp"},
    {"fanout", "dogpile::disk", "dogpile/backends/disk.hpp"},
    {"redis", "dogpile::redis", "dogpile/backends/redis.hpp"},
    {"redis_sentinel", "dogpile::redis", "dogpile/backends/redis.hpp"},
    {"redis_cluster", "dogpile::redis", "dogpile/backends/redis.hpp"},
    {"memcached", "dogpile::memcached", "dogpile/backends/memcached.hpp"},
    {"pylibmc", "dogpile::memcached", "dogpile/backends/memcached.hpp"},
    {"bmemcached", "dogpile::memcached", "dogpile/backends/memcached.hpp"},
    {"pymemcache", "dogpile::memcached", "dogpile/backends/memcached.hpp"},
    {"dbm", "dogpile::dbm", "dogpile/backends/dbm.hpp"},
};

struct Registry {
  std::mutex mutex;
  std::map<std::string, BackendFactory, std::less<>> factories;
  Registry() {
    // The built-ins, before anything else can register: a user's own "memory" replaces ours.
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

std::string_view strip_alias(std::string_view name) {
  constexpr std::string_view prefix = "dogpile.cache.";
  if (name.substr(0, prefix.size()) == prefix) name.remove_prefix(prefix.size());
  return name;
}

[[noreturn]] void throw_plugin_not_found(std::string_view name,
                                         const std::vector<std::string>& known) {
  const std::string_view bare = strip_alias(name);
  std::string msg = "no cache backend named '" + std::string(name) + "'";
  for (const auto& h : kBackendHints) {
    if (h.name == bare) {
      msg += ": it is provided by " + std::string(h.component) + "; link that target, include <" +
             std::string(h.header) +
             "> somewhere in the program (or call dogpile::register_all_backends() from "
             "<dogpile/all.hpp>)";
      throw_error<PluginNotFound>(msg);
    }
  }
  msg += did_you_mean(bare, known);
  msg += " (registered: " + join_names(known) +
         "; add your own with dogpile::register_backend(name, factory))";
  throw_error<PluginNotFound>(msg);
}

}  // namespace
}  // namespace detail

void register_memory_backends() { detail::Registry::instance(); }
void register_null_backend() { detail::Registry::instance(); }

void register_backend(std::string name, BackendFactory factory) {
  auto& r = detail::Registry::instance();
  std::lock_guard lk(r.mutex);
  r.factories[std::string(detail::strip_alias(name))] = std::move(factory);
}

bool is_backend_registered(std::string_view name) {
  auto& r = detail::Registry::instance();
  std::lock_guard lk(r.mutex);
  return r.factories.find(detail::strip_alias(name)) != r.factories.end();
}

std::vector<std::string> registered_backends() {
  auto& r = detail::Registry::instance();
  std::lock_guard lk(r.mutex);
  std::vector<std::string> out;
  out.reserve(r.factories.size());
  for (const auto& [name, f] : r.factories) out.push_back(name);
  return out;
}

std::shared_ptr<CacheBackend> make_backend(std::string_view name, const nlohmann::json& arguments) {
  BackendFactory f;
  {
    auto& r = detail::Registry::instance();
    std::lock_guard lk(r.mutex);
    auto it = r.factories.find(detail::strip_alias(name));
    if (it != r.factories.end()) f = it->second;
  }
  if (!f) detail::throw_plugin_not_found(name, registered_backends());
  if (!arguments.is_null() && !arguments.is_object()) {
    detail::throw_error<ValidationError>("backend arguments for '" + std::string(name) +
                                         "' must be a JSON object, got " +
                                         detail::json_text(arguments));
  }
  return f(arguments.is_null() ? nlohmann::json::object() : arguments);
}

}  // namespace dogpile
