// libFuzzer target: arbitrary bytes into Codec<T>::decode with Format::cbor (see fuzz_codec.hpp).
#include "fuzz_codec.hpp"
#include "fuzz_target.hpp"

DOGPILE_FUZZ_TARGET(codec_cbor) {
  return dogpile_fuzz::fuzz_codec(data, size, dogpile::Format::cbor);
}
