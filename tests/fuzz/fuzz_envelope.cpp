// libFuzzer target: arbitrary bytes into unpack_envelope and every Codec decode path. The only
// acceptable outcomes are a value, dogpile::CantDeserialize or (well-formed bytes of another
// type) dogpile::TypeMismatch; anything else (another exception,
// a sanitizer report, a crash) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/codec.hpp"
#include "fuzz_codec.hpp"
#include "fuzz_target.hpp"

namespace {

template <class T>
void decode_all_formats(std::string_view payload) {
  for (dogpile::Format f :
       {dogpile::Format::json, dogpile::Format::msgpack, dogpile::Format::cbor}) {
    try {
      (void)dogpile::Codec<T>::decode(payload, f);
    } catch (const dogpile::CantDeserialize&) {
    } catch (const dogpile::TypeMismatch&) {  // well-formed, but not a T
    }
  }
}

// The header fast path must agree with the general (nlohmann) reader on everything it accepts:
// the same metadata bit for bit, the same payload. What it does not accept goes to the
// general reader anyway, so only acceptance is checked.
void check_fast_header(std::string_view bytes) {
  dogpile::detail::EnvelopeView fast;
  if (!dogpile::detail::parse_dogpile_header_fast(bytes, fast)) return;
  dogpile::detail::EnvelopeView general;
  try {
    dogpile::detail::parse_dogpile_header_general(bytes, general);
  } catch (const dogpile::CantDeserialize&) {
    __builtin_trap();  // the fast path accepted a header the general reader refuses
  }
  const auto same = [](double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; };
  if (!same(fast.meta.ct, general.meta.ct) || fast.meta.v != general.meta.v ||
      !same(fast.meta.delta, general.meta.delta) || fast.zipped != general.zipped ||
      fast.payload.data() != general.payload.data() ||
      fast.payload.size() != general.payload.size()) {
    __builtin_trap();
  }
}

}  // namespace

DOGPILE_FUZZ_TARGET(envelope) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  check_fast_header(bytes);
  try {
    const dogpile::Unpacked u = dogpile::unpack_envelope(bytes);
    if (dogpile_fuzz::pick(data, size, 2) == 0) {
      decode_all_formats<nlohmann::json>(u.payload);
    } else {
      decode_all_formats<std::map<std::string, std::vector<std::string>>>(u.payload);
    }
    // Re-packing what was read must round-trip.
    for (auto env : {dogpile::EnvelopeFormat::dogpile, dogpile::EnvelopeFormat::compact}) {
      const dogpile::CodecOptions opts{.envelope = env, .compress_threshold = 32};
      const std::string again =
          dogpile::pack_envelope(dogpile::Metadata{.ct = 1.5}, u.payload, opts);
      if (dogpile::unpack_envelope(again).payload != u.payload) __builtin_trap();
    }
  } catch (const dogpile::CantDeserialize&) {
  }
  // Each typed decode parses the whole input again: all eight types in all three formats was 24
  // parses (and as many exceptions) per input, most of a run's time. One type per input
  // (dogpile_fuzz::pick: from every byte, so the same input always takes the same path) keeps
  // every type's conversion reached at an eighth of the cost.
  switch (dogpile_fuzz::pick(data, size, 8)) {
    case 0:
      decode_all_formats<nlohmann::json>(bytes);
      break;
    case 1:
      decode_all_formats<std::vector<double>>(bytes);
      break;
    case 2:
      decode_all_formats<std::string>(bytes);
      break;
    case 3:
      decode_all_formats<int>(bytes);
      break;
    case 4:
      decode_all_formats<std::uint8_t>(bytes);
      break;
    case 5:
      decode_all_formats<std::uint64_t>(bytes);
      break;
    case 6:
      decode_all_formats<float>(bytes);
      break;
    default:
      decode_all_formats<bool>(bytes);
      break;
  }
  return 0;
}
