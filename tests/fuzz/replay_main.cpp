// Runs the fuzz target over corpus files without libFuzzer (any compiler), so the target is
// compiled and its seed corpus exercised in every build, under the sanitizer presets too.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  std::size_t runs = 0;
  for (int i = 1; i < argc; ++i) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(argv[i])) {
      for (const auto& e : std::filesystem::directory_iterator(argv[i])) files.push_back(e.path());
    } else {
      files.emplace_back(argv[i]);
    }
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      // Every prefix too: truncation is the most common corruption.
      for (std::size_t n = 0; n <= s.size(); ++n) {
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), n);
        ++runs;
      }
    }
  }
  if (runs == 0) {
    std::fprintf(stderr, "no corpus input given\n");
    return 1;
  }
  std::printf("%zu inputs ran\n", runs);
  return 0;
}
