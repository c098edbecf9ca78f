#pragma once
/// @file limits.hpp
/// The fixed bounds dogpile-cpp puts on what it reads back from a cache. Stored values come
/// from outside the process (another process, another version, another language, or someone
/// who tampered with the cache), so every decoder bounds the work and memory a value can cost:
///
/// * `max_nesting_depth`: arrays/objects nested deeper than this (JSON, MessagePack, CBOR) are
///   refused with `CantDeserialize` before the decoder recurses into them; a payload nested a
///   million deep would otherwise overflow the stack of every reader of that key.
/// * `default_max_value_bytes`: the default bound on a decompressed payload (the envelope's
///   zlib, the disk serializers). A larger one is `CantDeserialize` before the memory is taken:
///   a 1 MB zlib stream can inflate to 1 GiB. Decoders take the bound as a parameter defaulting
///   to this constant (`CodecOptions::max_value_bytes` for a region's byte backend).
/// * `max_unix_seconds` / `max_expiration_seconds`: the range of stored creation times and of
///   configured expiration times, chosen so that time arithmetic on `std::chrono::system_clock`
///   (64-bit nanoseconds with libstdc++, about +-292 years around 1970) can never overflow.
///
/// Thread-safety: constants.

#include <cstddef>

namespace dogpile {

/// Deepest nesting of arrays and objects a decoded payload may have (a scalar is depth 0,
/// `[1]` depth 1). Deeper is `CantDeserialize`.
inline constexpr std::size_t max_nesting_depth = 512;

/// Default bound, in bytes, on a decompressed payload: 64 MiB.
inline constexpr std::size_t default_max_value_bytes = std::size_t{64} << 20;

/// Stored creation times (an envelope's `ct`) must lie within +-this many seconds of the Unix
/// epoch (2100-01-01T00:00:00Z): anything else is a corrupt envelope (`CantDeserialize`, a
/// miss).
inline constexpr double max_unix_seconds = 4'102'444'800.0;

/// A configured expiration time may be at most this many seconds (100 Julian years); more is a
/// `ValidationError` (use `dogpile::never` for "never expires").
inline constexpr double max_expiration_seconds = 100 * 365.25 * 86'400;

}  // namespace dogpile
