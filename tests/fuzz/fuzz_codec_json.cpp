// libFuzzer target: arbitrary bytes into Codec<T>::decode with Format::json (see fuzz_codec.hpp).
#include "fuzz_codec.hpp"
#include "fuzz_target.hpp"

DOGPILE_FUZZ_TARGET(codec_json) {
  return dogpile_fuzz::fuzz_codec(data, size, dogpile::Format::json);
}
