#pragma once
// The typed value adapter of a region: a `T` to what its backend stores (a live object on
// `memory`, envelope bytes elsewhere) and back. `Codec<T>` is instantiated only on the byte
// path and only when `T` has one, so a type without a codec works on `memory` and is a clear
// runtime error on a byte backend.

#include <chrono>
#include <cstdint>
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

/// Where `CacheBackend::read_object` copies a stored `T`: into `out`.
template <class T>
ObjectSink object_sink(std::optional<T>& out) {
  return ObjectSink{&typeid(T),
                    [](const void* object, void* o) {
                      static_cast<std::optional<T>*>(o)->emplace(*static_cast<const T*>(object));
                    },
                    &out};
}

/// @throws TypeMismatch: `key` holds `info.type`, not a `T`.
template <class T>
[[noreturn, gnu::cold]] void throw_object_mismatch(const ObjectInfo& info, std::string_view key) {
  throw_error<TypeMismatch>("cache key '" + std::string(key) + "' holds a " + type_name(info.type) +
                            ", not the requested " + type_name<T>());
}

/// What `read_object` found (`info`) and copied (`value`) as a `T`.
/// @throws TypeMismatch (naming both types) when it holds another type.
template <class T>
std::optional<Cached<T>> from_read_object(const std::optional<ObjectInfo>& info,
                                          std::optional<T>& value, std::string_view key) {
  if (!info) return std::nullopt;
  if (!value) throw_object_mismatch<T>(*info, key);
  return Cached<T>{std::move(*value), from_unix_seconds(info->meta.ct),
                   std::chrono::duration<double>(info->meta.delta)};
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

/// The payload of the envelope `e` as a `T`. `owned`, when not null, is the string `e` views
/// into and may be consumed: a `std::string` payload takes its buffer over (the header is cut
/// off in place) instead of being copied into a new one.
/// @throws CantDeserialize, TypeMismatch (from the codec).
template <class T>
T decode_payload(const EnvelopeView& e, const CodecOptions& codec, std::string* owned) {
  // A raw std::string payload is the bytes themselves (Codec<std::string> is the identity);
  // under StringCodec::json it is a JSON string, decoded by dogpile::decode_payload.
  constexpr bool is_string = std::is_same_v<T, std::string>;
  const bool raw = is_string && codec.string_codec != StringCodec::json;
  if (e.zipped) {
    std::string inflated = zlib_decompress(e.payload, codec.max_value_bytes);
    if constexpr (is_string) {
      if (raw) return inflated;
    }
    return ::dogpile::decode_payload<T>(inflated, codec);
  }
  if constexpr (is_string) {
    if (raw && owned != nullptr) {
      owned->erase(0, static_cast<std::size_t>(e.payload.data() - owned->data()));
      return std::move(*owned);
    }
  }
  return ::dogpile::decode_payload<T>(e.payload, codec);
}

/// Envelope bytes decoded into `out` (left empty on a miss), with the creation time in
/// `created`; returns whether `out` holds a value. `b` may be consumed (see decode_payload).
/// Undecodable bytes (and, with `check_version`, a value of another dogpile version) are a
/// miss, as dogpile's CantDeserializeException.
/// @throws TypeMismatch when the bytes decode to something that is not a `T`; Error when `T`
/// has no codec.
template <class T>
bool decode_bytes_into(std::optional<std::string>&& b, bool check_version,
                       const CodecOptions& codec, std::string_view key, std::string_view backend,
                       std::optional<T>& out, TimePoint& created) {
  if constexpr (HasCodec<T>) {
    if (!b) return false;
    try {
      // A dependent call: the JSON parser is instantiated only where a region reads bytes.
      const EnvelopeView e = view_envelope<std::void_t<T>>(*b);
      if (check_version && e.meta.v != 2) return false;
      created = from_unix_seconds(e.meta.ct);
      out.emplace(decode_payload<T>(e, codec, &*b));
      return true;
    } catch (const CantDeserialize&) {
      return false;
    } catch (const TypeMismatch& e) {
      throw_error<TypeMismatch>("cache key '" + std::string(key) + "': " + e.what());
    }
  } else {
    (void)b, (void)check_version, (void)codec, (void)key, (void)out, (void)created;
    // fails even on a miss: before a creator runs for nothing
    throw_error<Error>(no_codec_message<T>("the '" + std::string(backend) + "' backend"));
  }
}

/// The kind of decoded value a region of `T` with `codec` makes from bytes: two regions whose
/// decodings of the same bytes could differ (string codec, payload format, inflate limit) never
/// share a kept value.
template <class T>
DecodedKind decoded_kind(const CodecOptions& codec) {
  return DecodedKind{typeid(T),
                     static_cast<std::uint64_t>(codec.format) |
                         (static_cast<std::uint64_t>(codec.string_codec) << 8),
                     static_cast<std::uint64_t>(codec.max_value_bytes)};
}

/// Envelope bytes decoded into a value to keep next to them (`CacheBackend::keep_decoded`), or
/// nullptr when they are undecodable (a miss, as `from_bytes`), or of another dogpile version
/// with `check_version` (not decoded at all, as `from_bytes`).
/// @throws TypeMismatch when the bytes decode to something that is not a `T`.
template <class T>
std::shared_ptr<const DecodedValue> decode_for_keeping(const std::string& b, bool check_version,
                                                       const DecodedKind& kind,
                                                       const CodecOptions& codec,
                                                       std::string_view key) {
  try {
    const EnvelopeView e = view_envelope<std::void_t<T>>(b);
    if (check_version && e.meta.v != 2) return nullptr;
    auto obj = std::make_shared<const T>(decode_payload<T>(e, codec, nullptr));
    const std::size_t size = weigh(*obj) + kSharedBlockOverhead;
    return std::make_shared<const DecodedValue>(DecodedValue{std::move(obj), kind, e.meta, size});
  } catch (const CantDeserialize&) {
    return nullptr;
  } catch (const TypeMismatch& e) {
    throw_error<TypeMismatch>("cache key '" + std::string(key) + "': " + e.what());
  }
}

/// Envelope bytes as a `T`; `owned` is `b`'s string when the caller lets it be consumed (see
/// decode_payload), else null. Internal to the two from_bytes.
template <class T>
std::optional<Cached<T>> from_bytes_impl(const std::optional<std::string>& b, std::string* owned,
                                         bool check_version, const CodecOptions& codec,
                                         std::string_view key, std::string_view backend) {
  if constexpr (HasCodec<T>) {
    if (!b) return std::nullopt;
    try {
      // A dependent call: the JSON parser is instantiated only where a region reads bytes.
      const EnvelopeView e = view_envelope<std::void_t<T>>(*b);
      if (check_version && e.meta.v != 2) return std::nullopt;
      return Cached<T>{decode_payload<T>(e, codec, owned), from_unix_seconds(e.meta.ct),
                       std::chrono::duration<double>(e.meta.delta)};
    } catch (const CantDeserialize&) {
      return std::nullopt;
    } catch (const TypeMismatch& e) {
      throw_error<TypeMismatch>("cache key '" + std::string(key) + "': " + e.what());
    }
  } else {
    (void)b, (void)owned, (void)check_version, (void)codec, (void)key;  // fails even on a
    // miss: before a creator runs for nothing
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
  return from_bytes_impl<T>(b, nullptr, check_version, codec, key, backend);
}
/// The same, consuming `b` (a string payload takes its buffer over).
template <class T>
std::optional<Cached<T>> from_bytes(std::optional<std::string>&& b, bool check_version,
                                    const CodecOptions& codec, std::string_view key,
                                    std::string_view backend) {
  return from_bytes_impl<T>(b, b ? &*b : nullptr, check_version, codec, key, backend);
}

}  // namespace dogpile::detail
