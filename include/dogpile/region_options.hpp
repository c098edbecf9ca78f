#pragma once
/// @file region_options.hpp
/// The option structs of a region: `RegionOptions` (`make_region`), `ConfigureOptions`
/// (`configure`), `GetOptions`, `CreateOptions<T>`, `InvalidateOptions`, the backend-error
/// policy, and `CachedValue<T>` (what `get_value_metadata` returns). Plain aggregates with a
/// default for every field: fill them with designated initializers.

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/expiration.hpp"
#include "dogpile/invalidation.hpp"
#include "dogpile/keys.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/metadata.hpp"
#include "dogpile/runner.hpp"
#include "dogpile/stats.hpp"

namespace dogpile {

/// What a region does when its backend fails (`BackendError`).
struct BackendErrorPolicy {
  /// The two policies.
  enum class Kind : unsigned char {
    propagate,      ///< rethrow (dogpile's behaviour)
    treat_as_miss,  ///< reads miss, writes are dropped; the creator runs, the app stays up
  };
  Kind kind = Kind::propagate;  ///< the policy
  /// Called with each backend error (both policies), and with the `LockError` of a dogpile
  /// lock whose lease was lost before release. May be empty. Must not throw.
  std::function<void(const std::exception&)> callback{};
};
/// Rethrow backend errors.
inline const BackendErrorPolicy propagate{};
/// Treat backend errors as misses and report them to `callback`.
inline BackendErrorPolicy treat_as_miss(std::function<void(const std::exception&)> callback = {}) {
  return {BackendErrorPolicy::Kind::treat_as_miss, std::move(callback)};
}

/// Options of `make_region`. Plain aggregate: fill with designated initializers.
struct RegionOptions {
  std::string name{};        ///< shown in errors; also the shared-invalidation key
  KeyMangler key_mangler{};  ///< applied to every key; none when empty
  FunctionKeyGenerator function_key_generator{};             ///< for cache_on_arguments
  FunctionMultiKeyGenerator function_multi_key_generator{};  ///< for cache_multi_on_arguments
  AsyncCreationRunner async_creation_runner{};  ///< regenerate expired values in the background
  StalePolicy stale_policy = serve_stale;       ///< what others do while one regenerates
  std::optional<EarlyRefresh> early_refresh{};  ///< XFetch early recomputation; off when empty
  BackendErrorPolicy on_backend_error{};        ///< propagate (default) or treat_as_miss
  InvalidationMode invalidation{};              ///< local (default), shared, or custom
  CodecOptions codec{};                         ///< how byte backends encode values
  std::optional<std::chrono::milliseconds> lock_timeout{};  ///< cap on waiting for a creator
  Clock clock{};              ///< time source; the system clock when empty
  RegionListener listener{};  ///< event hook; none when empty
};

/// Options of `configure`. Plain aggregate.
struct ConfigureOptions {
  Expiration expiration_time{};  ///< default expiration of the region; unset = never
  /// Backend arguments (by-name form); an empty object by default. (`value_t::object` rather than
  /// `json::object()`: the same value without instantiating the initializer-list constructor.)
  nlohmann::json arguments = nlohmann::json::value_t::object;
  std::vector<std::shared_ptr<ProxyBackend>> wrap{};  ///< proxies; the first is outermost
  bool replace_existing_backend = false;              ///< allow reconfiguring
  std::shared_ptr<RegionInvalidationStrategy> region_invalidator{};  ///< custom strategy
};

/// Options of `get`, `get_multi`, `get_value_metadata`.
struct GetOptions {
  Expiration expiration_time{};    ///< overrides the region's for this call
  bool ignore_expiration = false;  ///< no expiry and no invalidation check
};

/// Options of `get_or_create` / `get_or_create_multi`.
template <class T>
struct CreateOptions {
  Expiration expiration_time{};                  ///< overrides the region's for this call
  std::function<bool(const T&)> should_cache{};  ///< store the created value only if true
};

/// Options of `invalidate`.
struct InvalidateOptions {
  bool hard = true;  ///< hard: values become misses; soft: values become expired
};

/// A value with its metadata, as `get_value_metadata` returns it.
template <class T>
struct CachedValue {
  T payload;            ///< the value
  Metadata metadata{};  ///< `ct` (creation time, Unix seconds) and version
  TimePoint read_at{};  ///< when it was read (the region's clock)
  /// When the value was created.
  [[nodiscard]] TimePoint cached_time() const { return from_unix_seconds(metadata.ct); }
  /// How old it was when read.
  [[nodiscard]] std::chrono::duration<double> age() const {
    return std::chrono::duration<double>(to_unix_seconds(read_at) - metadata.ct);
  }
};

}  // namespace dogpile
