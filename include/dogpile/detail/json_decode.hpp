#pragma once
// Depth-limited nlohmann_json decoding: the one entry point every decoder of stored JSON,
// MessagePack and CBOR goes through (see dogpile/limits.hpp for why).
//
// nlohmann's binary readers (from_msgpack / from_cbor) recurse once per nesting level, and
// several things done with a decoded value recurse too (copying a json, dump(), get<T>), so a
// payload nested a million deep overflows the stack. The DOM is therefore built through the SAX
// interface with a wrapper that counts the nesting and throws at `start_object` /
// `start_array` -- before the reader recurses into the too-deep container.

#include <cstddef>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dogpile/limits.hpp"

namespace dogpile::detail {

/// `bytes` decoded as `format` (strict: the whole input is one value), nested at most `limit`
/// deep. @throws nlohmann::json::exception (parse_error, out_of_range) on malformed bytes, as
/// json::parse / from_msgpack / from_cbor do; CantDeserialize when nested too deep.
/// Compiled in dogpile::core (src/core/json_decode.cpp): nlohmann's parser and binary readers
/// are instantiated there once, not in every file that includes a region.
nlohmann::json parse_json_limited(std::string_view bytes, nlohmann::json::input_format_t format,
                                  std::size_t limit = max_nesting_depth);

}  // namespace dogpile::detail
