// detail/type_name.hpp: demangled type names for error messages (<cxxabi.h> stays here).

#include "dogpile/detail/type_name.hpp"

#include <cstdlib>
#include <memory>
#include <utility>

#if defined(__GNUG__) || defined(__clang__)
#include <cxxabi.h>
#endif

namespace dogpile::detail {

/// The demangled name of a type_info (the raw name where the ABI offers no demangler).
std::string demangle(const char* raw) {
#if defined(__GNUG__) || defined(__clang__)
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(raw, nullptr, nullptr, &status),
                                           std::free);
  if (status == 0 && p) {
    std::string s = p.get();
    // The standard library's spelled-out aliases, as a user writes them.
    for (const auto& [from, to] :
         {std::pair<std::string_view, std::string_view>{
              "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
              "std::string"},
          {"std::__cxx11::", "std::"}}) {
      for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos)) {
        s.replace(pos, from.size(), to);
        pos += to.size();
      }
    }
    return s;
  }
#endif
  return raw;
}

}  // namespace dogpile::detail
