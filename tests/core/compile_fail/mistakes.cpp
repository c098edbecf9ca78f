// Common mistakes that must NOT compile, each with one message saying what to do
// (compile_fail.cmake checks the compiler's output for every EXPECT line below).
#include <dogpile/dogpile.hpp>

#include <memory>
#include <string>

struct NoCodec {
  int x = 0;
};

int main() {
  auto region = dogpile::make_region();
  region.configure("memory");
  // A creator that takes an argument.
  // EXPECT: get_or_create: the creator must take no arguments
  (void)region.get_or_create("k", [](int id) { return id; });
  // A get_or_create_multi creator that does not take the keys.
  // EXPECT: get_or_create_multi: the creator must take the keys to create
  (void)region.get_or_create_multi<int>({"a", "b"}, [] { return std::vector<int>{1, 2}; });
  // A value the memory backend cannot copy.
  // EXPECT: region.set: the value must be copyable
  region.set("p", std::make_unique<int>(1));
  // A decorated function called with its arguments swapped.
  // EXPECT: cache_on_arguments: the arguments do not match the decorated function's signature
  auto describe = region.cache_on_arguments(
      "describe", [](int id, const std::string& name) { return name + std::to_string(id); });
  (void)describe("ann", 1);
  // Codec<T> used for a type with no to_json/from_json and no specialization.
  // EXPECT: dogpile::Codec<T>: this type has no codec
  (void)dogpile::Codec<NoCodec>::encode(NoCodec{}, dogpile::Format::json);
  return 0;
}
