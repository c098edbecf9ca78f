#pragma once
// Shared body of the per-codec fuzz targets: arbitrary bytes into Codec<T>::decode for one
// format. The only acceptable outcomes are a value, dogpile::CantDeserialize or (well-formed
// bytes of another type) dogpile::TypeMismatch; anything else (another exception, a sanitizer
// report, a crash, a stack overflow on deep nesting) is a bug. A decoded document must also
// encode again and decode to the same JSON text.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/codec.hpp"

namespace dogpile_fuzz {

/// A number below `n` derived from every byte of the input (a mutation anywhere may change
/// it): which of several equivalent-cost paths this input takes.
inline std::size_t pick(const std::uint8_t* data, std::size_t size, std::size_t n) {
  std::uint32_t h = 2166136261U;  // FNV-1a
  for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 16777619U;
  return h % n;
}

template <class T>
void decode_as(std::string_view bytes, dogpile::Format f) {
  try {
    (void)dogpile::Codec<T>::decode(bytes, f);
  } catch (const dogpile::CantDeserialize&) {
  } catch (const dogpile::TypeMismatch&) {
  }
}

inline int fuzz_codec(const std::uint8_t* data, std::size_t size, dogpile::Format f) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto j = dogpile::Codec<nlohmann::json>::decode(bytes, f);
    std::string again;
    try {
      again = dogpile::Codec<nlohmann::json>::encode(j, f);
    } catch (const dogpile::ValidationError&) {  // e.g. MessagePack text that is not UTF-8
      return 0;
    }
    const auto k = dogpile::Codec<nlohmann::json>::decode(again, f);
    // Compared as text: NaN != NaN, and dump() of a binary value is fine.
    if (j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) !=
        k.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)) {
      __builtin_trap();
    }
  } catch (const dogpile::CantDeserialize&) {
  }
  // Every decode of a typed value parses the whole input again (then converts it, or throws):
  // decoding one input as all seven types cost seven parses and up to seven exceptions, most of
  // the time of a run. One type per input instead, picked from the input's bytes (so the same
  // input always takes the same path, and a mutation moves it to another type): every type's
  // conversion is still reached, at a seventh of the cost.
  switch (pick(data, size, 7)) {
    case 0:
      decode_as<std::vector<double>>(bytes, f);
      break;
    case 1:
      decode_as<std::map<std::string, std::vector<std::string>>>(bytes, f);
      break;
    case 2:
      decode_as<std::string>(bytes, f);
      break;
    case 3:
      decode_as<int>(bytes, f);
      break;
    case 4:
      decode_as<std::uint64_t>(bytes, f);
      break;
    case 5:
      decode_as<float>(bytes, f);
      break;
    default:
      decode_as<bool>(bytes, f);
      break;
  }
  return 0;
}

}  // namespace dogpile_fuzz
