// Runs fuzz targets over corpus files without libFuzzer (any compiler), so every target is
// compiled and its seed corpus exercised in every build, under the sanitizer presets too.
// Usage: fuzz_envelope_replay <target> <corpus dir or file>...   (targets: see fuzz_target.hpp)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_target.hpp"

int main(int argc, char** argv) {
  const auto& targets = dogpile_fuzz::targets();
  const auto it = argc > 1 ? targets.find(argv[1]) : targets.end();
  if (it == targets.end()) {
    std::fprintf(stderr, "usage: %s <target> <corpus>...; targets:", argv[0]);
    for (const auto& [name, fn] : targets) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  std::size_t runs = 0;
  for (int i = 2; i < argc; ++i) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(argv[i])) {
      for (const auto& e : std::filesystem::directory_iterator(argv[i])) files.push_back(e.path());
    } else {
      files.emplace_back(argv[i]);
    }
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      // Every prefix too (truncation is the most common corruption); of a seed above 128
      // bytes (deep nesting, bombs: each prefix costs a full decode), about 128 of them, which
      // keeps the replay fast.
      const std::size_t step = s.size() > 128 ? s.size() / 128 : 1;
      for (std::size_t n = 0; n <= s.size(); n += (s.size() - n < step ? 1 : step)) {
        it->second(reinterpret_cast<const std::uint8_t*>(s.data()), n);
        ++runs;
      }
    }
  }
  if (runs == 0) {
    std::fprintf(stderr, "no corpus input given\n");
    return 1;
  }
  std::printf("%s: %zu inputs ran\n", argv[1], runs);
  return 0;
}
