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
  decode_as<std::vector<double>>(bytes, f);
  decode_as<std::map<std::string, std::vector<std::string>>>(bytes, f);
  decode_as<std::string>(bytes, f);
  decode_as<int>(bytes, f);
  decode_as<std::uint64_t>(bytes, f);
  decode_as<float>(bytes, f);
  decode_as<bool>(bytes, f);
  return 0;
}

}  // namespace dogpile_fuzz
