#pragma once
// The typed value adapter of a region: a `T` to what its backend stores (a live object on
// `memory`, envelope bytes elsewhere) and back. `Codec<T>` is instantiated only on the byte
// path and only when `T` has one, so a type without a codec works on `memory` and is a clear
// runtime error on a byte backend.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/detail/type_name.hpp"
#include "dogpile/error.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/metadata.hpp"
#include "dogpile/weigher.hpp"

namespace dogpile::detail {

/// Bytes `make_shared` adds to an object (control block: two counters, vptr, padding).
inline constexpr std::size_t kSharedBlockOverhead = 32;

/// `value` as a live object for an object backend, weighed by `Weigher<T>`.
template <class T>
StoredObject to_object(const T& value, const Metadata& meta) {
  return StoredObject{std::make_shared<const T>(value), typeid(T), meta,
                      weigh(value) + kSharedBlockOverhead};
}

/// A stored object as a `T`. @throws TypeMismatch (naming both types) when it holds another.
template <class T>
std::optional<Cached<T>> from_object(const std::optional<StoredObject>& o, std::string_view key) {
  if (!o) return std::nullopt;
  if (o->type != typeid(T)) {
    throw_error<TypeMismatch>("cache key '" + std::string(key) + "' holds a " + type_name(o->type) +
                              ", not the requested " + type_name<T>());
  }
  return Cached<T>{*static_cast<const T*>(o->payload.get()), from_unix_seconds(o->meta.ct),
                   std::chrono::duration<double>(o->meta.delta)};
}

/// `value` as envelope bytes for a byte backend.
/// @throws Error (naming `T` and saying how to make it serializable) when `T` has no codec.
template <class T>
std::string to_bytes(const T& value, const Metadata& meta, const CodecOptions& codec,
                     std::string_view backend) {
  if constexpr (HasCodec<T>) {
    return encode_value(value, meta, codec);
  } else {
    (void)value, (void)meta, (void)codec;
    throw_error<Error>(no_codec_message<T>("the '" + std::string(backend) + "' backend"));
  }
}

/// Envelope bytes as a `T`. Undecodable bytes (and, with `check_version`, a value of another
/// dogpile version) are a miss, as dogpile's CantDeserializeException.
/// @throws TypeMismatch when the bytes decode to something that is not a `T`; Error when `T`
/// has no codec.
template <class T>
std::optional<Cached<T>> from_bytes(const std::optional<std::string>& b, bool check_version,
                                    const CodecOptions& codec, std::string_view key,
                                    std::string_view backend) {
  if constexpr (HasCodec<T>) {
    if (!b) return std::nullopt;
    try {
      // A dependent call: the JSON parser is instantiated only where a region reads bytes.
      Unpacked u = unpack_envelope<std::void_t<T>>(*b, codec.max_value_bytes);
      if (check_version && u.meta.v != 2) return std::nullopt;
      return Cached<T>{decode_payload<T>(u.payload, codec), from_unix_seconds(u.meta.ct),
                       std::chrono::duration<double>(u.meta.delta)};
    } catch (const CantDeserialize&) {
      return std::nullopt;
    } catch (const TypeMismatch& e) {
      throw_error<TypeMismatch>("cache key '" + std::string(key) + "': " + e.what());
    }
  } else {
    (void)b, (void)check_version, (void)codec, (void)key;  // fails even on a miss: before a
                                                           // creator runs for nothing
    throw_error<Error>(no_codec_message<T>("the '" + std::string(backend) + "' backend"));
  }
}

}  // namespace dogpile::detail
