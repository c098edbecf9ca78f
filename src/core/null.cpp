// The `null` backend (backends/null.hpp).

#include "dogpile/backends/null.hpp"

namespace dogpile {

std::shared_ptr<CacheBackend> NullBackend::from_arguments(const nlohmann::json& /*arguments*/) {
  return std::make_shared<NullBackend>();
}
std::optional<std::string> NullBackend::do_get(std::string_view /*key*/) { return std::nullopt; }
void NullBackend::do_set(std::string_view /*key*/, std::string_view /*value*/) {}
void NullBackend::do_erase(std::string_view /*key*/) {}
std::shared_ptr<CacheMutex> NullBackend::do_get_mutex(std::string_view /*key*/) {
  return std::make_shared<NullMutex>();
}
bool NullBackend::do_stores_objects() const { return true; }
std::optional<StoredObject> NullBackend::do_get_object(std::string_view /*key*/) {
  return std::nullopt;
}
void NullBackend::do_set_object(std::string_view /*key*/, StoredObject /*obj*/) {}

}  // namespace dogpile
