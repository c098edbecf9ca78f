#pragma once
/// @file metadata.hpp
/// `Metadata`: what a region stores beside a value (creation time, version, creation cost).
/// Its own small header so backends need neither JSON nor the codecs to name it.

namespace dogpile {

/// Envelope metadata. `ct` is the creation time in Unix seconds (dogpile's `ct`), `v` the
/// dogpile value version (2), `delta` the seconds the creator took (for early refresh; 0 if
/// unknown). Plain aggregate.
struct Metadata {
  double ct = 0;     ///< creation time, Unix seconds
  int v = 2;         ///< dogpile's value version
  double delta = 0;  ///< seconds the creator took; 0 = unknown
};

}  // namespace dogpile
