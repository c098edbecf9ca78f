// Common mistakes that must NOT compile, each with one message saying what to do
// (compile_fail.cmake checks the compiler's output for every EXPECT line below).
#include <dogpile/dogpile.hpp>

#include <memory>

int main() {
  auto region = dogpile::make_region();
  region.configure("memory");
  // A creator that takes an argument.
  // EXPECT: get_or_create: the creator must take no arguments
  (void)region.get_or_create("k", [](int id) { return id; });
  // A value the memory backend cannot copy.
  // EXPECT: region.set: the value must be copyable
  region.set("p", std::make_unique<int>(1));
  return 0;
}
