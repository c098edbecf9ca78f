// Built with `g++ -std=c++20 main.cpp $(pkg-config --cflags --libs dogpile)` against the
// installed package (tests/consumer/pkg_config/run.sh): every backend of the installation
// registers and links without CMake.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <dogpile/all.hpp>
#include <dogpile/dogpile.hpp>

int main() {
  dogpile::register_all_backends();
  auto region = dogpile::make_region();
  region.configure("memory");
  int calls = 0;
  auto make = [&] {
    ++calls;
    return std::string("value");
  };
  const bool ok = region.get_or_create("k", make) == "value" &&
                  region.get_or_create("k", make) == "value" && calls == 1;
  if (!ok) {
    std::puts("pkg-config consumer FAILED");
    return EXIT_FAILURE;
  }
  std::string names;
  for (const auto& n : dogpile::registered_backends()) names += n + " ";
  std::printf("backends: %s\npkg-config consumer ok\n", names.c_str());
  return EXIT_SUCCESS;
}
