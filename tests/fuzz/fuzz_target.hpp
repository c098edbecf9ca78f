#pragma once
// One fuzz target per source file, built two ways:
// * as a libFuzzer binary (DOGPILE_FUZZ_REPLAY undefined): DOGPILE_FUZZ_TARGET defines
//   LLVMFuzzerTestOneInput;
// * into the one replay executable (DOGPILE_FUZZ_REPLAY defined), which holds every target and
//   runs one over its seed corpus by name (replay_main.cpp): a function registered under `name`.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace dogpile_fuzz {
using Target = int (*)(const std::uint8_t*, std::size_t);
inline std::map<std::string, Target>& targets() {
  static std::map<std::string, Target> t;
  return t;
}
struct Register {
  Register(const char* name, Target fn) { targets()[name] = fn; }
};
}  // namespace dogpile_fuzz

#ifdef DOGPILE_FUZZ_REPLAY
#define DOGPILE_FUZZ_TARGET(name)                                                                \
  static int dogpile_fuzz_##name(const std::uint8_t* data, std::size_t size);                    \
  static const dogpile_fuzz::Register dogpile_fuzz_register_##name(#name, &dogpile_fuzz_##name); \
  static int dogpile_fuzz_##name(const std::uint8_t* data, std::size_t size)
#else
#define DOGPILE_FUZZ_TARGET(name) \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
#endif
