#pragma once
// Readable C++ type names for error messages ("std::optional<app::User>", not
// "St8optionalIN3app4UserEE").

#include <memory>
#include <string>
#include <string_view>
#include <typeindex>
#include <typeinfo>
#include <utility>

namespace dogpile::detail {

/// The demangled name of a type_info (the raw name where the ABI offers no demangler).
std::string demangle(const char* raw);

/// The readable name of `T`.
template <class T>
std::string type_name() {
  return demangle(typeid(T).name());
}

/// The readable name of a stored type.
inline std::string type_name(std::type_index t) { return demangle(t.name()); }

}  // namespace dogpile::detail
