#pragma once
/// @file region.hpp
/// `CacheRegion`: dogpile.cache's cache region. A region has one backend, a default
/// expiration, a key mangler, and the dogpile lock that makes `get_or_create` run one creator
/// per key while everyone else gets the cached (possibly stale) value.
///
/// ```cpp
/// using namespace std::chrono_literals;
/// dogpile::CacheRegion region = dogpile::make_region({.name = "users"});
/// region.configure("memory", {.expiration_time = 10min});
/// User u = region.get_or_create("user:1", [] { return load_user(1); });
/// ```

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/backends/memory.hpp"
#include "dogpile/backends/null.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/detail/function_traits.hpp"
#include "dogpile/detail/name_registry.hpp"
#include "dogpile/detail/value_adapter.hpp"
#include "dogpile/error.hpp"
#include "dogpile/expiration.hpp"
#include "dogpile/invalidation.hpp"
#include "dogpile/keys.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/log.hpp"
#include "dogpile/mutex.hpp"
#include "dogpile/region_config.hpp"
#include "dogpile/region_options.hpp"
#include "dogpile/registry.hpp"
#include "dogpile/runner.hpp"
#include "dogpile/stats.hpp"

namespace dogpile {

template <class F>
class CachedFunction;
template <class F>
class CachedMultiFunction;
template <class R>
struct DecoratorOptions;

namespace detail {

/// One configuration of a region; immutable once published, kept alive with the region.
struct RegionConfig {
  std::shared_ptr<CacheBackend> backend;         // the outermost (maybe a proxy)
  std::shared_ptr<CacheBackend> actual_backend;  // under the proxies
  std::string backend_name;                      // as configured, for error messages
  Expiration expiration;
  std::shared_ptr<RegionInvalidationStrategy> invalidator;
  // `invalidator` when it is exactly the default strategy: checked without a virtual call.
  const DefaultInvalidationStrategy* default_invalidator = nullptr;
  std::shared_ptr<NameRegistry<CacheMutex>> locks;
  bool stores_objects = false;
  // A byte backend that keeps decoded values next to its bytes (the Redis near cache): reads
  // go through get_decodable, and a hit returns the kept object instead of decoding again.
  bool keeps_decoded = false;
  // The backend is `memory` itself (no proxy): batch reads copy each value straight out of its
  // node (read_object per key) instead of sharing it through get_objects.
  bool memory_objects = false;
  // The region's codec, its max_value_bytes lowered to the backend's: a payload stored small
  // must not inflate past what the backend was configured to return.
  CodecOptions codec;
};

struct RegionState {
  RegionOptions opts;
  Clock clock;
  // No clock was given: read system_clock directly instead of through the std::function (the
  // read path asks for the time on every hit).
  bool default_clock = false;
  std::atomic<const RegionConfig*> config{nullptr};
  std::mutex configure_mutex;
  std::vector<std::unique_ptr<RegionConfig>> configs;  // every published config stays alive
  StatsCounters stats;
  LockOptions lock_options;  // built once from opts; the expiration is passed per call
};

inline double seconds_of(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct deduced {};  // "deduce the value type from the creator"

/// The type a region caches for a creator result `R`: string literals and C strings become
/// `std::string` (a `const char*` would point into the creator's frame).
template <class R>
using cached_type_t = std::conditional_t<std::is_same_v<std::decay_t<R>, const char*> ||
                                             std::is_same_v<std::decay_t<R>, char*>,
                                         std::string, std::decay_t<R>>;

/// Stands for the value type of a "creator" that cannot be called without arguments, so that
/// get_or_create reaches its static_assert instead of failing in a default template argument.
struct not_a_creator {};

/// What a creator `F` returns (as `cached_type_t`), or not_a_creator.
template <class F, bool = std::is_invocable_v<F&>>
struct creator_result {
  using type = cached_type_t<std::invoke_result_t<F&>>;
};
template <class F>
struct creator_result<F, false> {
  using type = not_a_creator;
};

/// `T` when given, else what the creator returns (as `cached_type_t`).
template <class T, class F>
using created_t =
    std::conditional_t<std::is_same_v<T, deduced>, typename creator_result<F>::type, T>;

}  // namespace detail

/// A cache region: a cheap, copyable handle to shared state (copies are the same region;
/// decorated functions keep it alive).
///
/// Thread-safety: every method may be called from many threads at once. `configure` is meant
/// for start-up; replacing the backend while other threads use the region is safe (they see
/// the old or the new configuration), but values in the old backend are not carried over.
class CacheRegion {
 public:
  /// A region with default options (prefer `make_region`).
  CacheRegion() : CacheRegion(RegionOptions{}) {}
  /// A region with `opts` (prefer `make_region`). Not configured yet: call `configure`.
  explicit CacheRegion(RegionOptions opts);

  // ---- configuration ---------------------------------------------------------------------

  /// Configures the backend registered under `backend_name` with `opts.arguments`.
  /// @throws RegionAlreadyConfigured, PluginNotFound, ValidationError.
  CacheRegion& configure(std::string_view backend_name, ConfigureOptions opts = {});
  /// Configures with a backend object.
  /// @throws RegionAlreadyConfigured, ValidationError (null backend).
  CacheRegion& configure(std::shared_ptr<CacheBackend> backend, ConfigureOptions opts = {});
  /// Configures from flat keys: `prefix` followed by `backend`, `expiration_time` (seconds),
  /// `arguments.NAME` or `replace_existing_backend`; string values are coerced as dogpile's
  /// coerce_string_conf (see region_config.hpp).
  /// @throws ValidationError (missing backend, bad value, unknown key under the prefix, with a
  /// "did you mean"), PluginNotFound, RegionAlreadyConfigured.
  CacheRegion& configure_from_config(const nlohmann::json& config, std::string_view prefix);

  /// True once `configure` succeeded.
  [[nodiscard]] bool is_configured() const {
    return state_->config.load(std::memory_order_acquire) != nullptr;
  }
  /// The backend (the outermost proxy when wrapped). @throws RegionNotConfigured.
  [[nodiscard]] std::shared_ptr<CacheBackend> backend() const { return cfg().backend; }
  /// The backend under the proxies. @throws RegionNotConfigured.
  [[nodiscard]] std::shared_ptr<CacheBackend> actual_backend() const {
    return cfg().actual_backend;
  }
  /// The region's name.
  [[nodiscard]] const std::string& name() const { return state_->opts.name; }
  /// The region's default expiration (unset before configure).
  [[nodiscard]] Expiration expiration_time() const {
    const auto* c = state_->config.load(std::memory_order_acquire);
    return c ? c->expiration : Expiration{};
  }
  /// The region's options.
  [[nodiscard]] const RegionOptions& options() const { return state_->opts; }

  // ---- reads -----------------------------------------------------------------------------

  /// The cached value, or nullopt if missing, expired or invalidated. Never locks or creates.
  /// @throws RegionNotConfigured; TypeMismatch (memory backend holds another type);
  ///         BackendError (unless `treat_as_miss`).
  template <class T>
  std::optional<T> get(std::string_view key, const GetOptions& opts = {}) const {
    const auto& c = cfg();
    std::string mangled;
    if (c.stores_objects) return get_object_value<T>(c, mangled_key(key, mangled), key, opts);
    auto v = fetch<T>(c, mangled_key(key, mangled), false);
    if (v && !opts.ignore_expiration && !usable(c, *v, opts.expiration_time)) v.reset();
    count_read(v.has_value(), key);
    if (!v) return std::nullopt;
    return std::move(v->value);
  }

  /// One result per key, in order (one backend round trip).
  template <class T>
  std::vector<std::optional<T>> get_multi(const std::vector<std::string>& keys,
                                          const GetOptions& opts = {}) const {
    // Every value is decoded straight into its slot of `out`; the keys are not copied when
    // there is no mangler, the clock is read once for the batch, and the counters are added
    // once (per value only for a listener).
    std::vector<std::optional<T>> out(keys.size());
    if (keys.empty()) return out;
    const auto& c = cfg();
    std::vector<std::string> mangled;
    const std::vector<std::string>& mkeys = mangled_keys(keys, mangled);
    std::optional<std::chrono::milliseconds> exp;
    if (!opts.ignore_expiration) exp = effective_expiration(c, opts.expiration_time);
    const TimePoint now = exp ? clock_now() : TimePoint{};
    const auto keep = [&](std::optional<T>& slot, TimePoint created) {
      if (!opts.ignore_expiration &&
          ((exp && (now - created) > *exp) || c.invalidator->is_invalidated(created))) {
        slot.reset();
      }
    };
    if (c.memory_objects) {
      guarded(
          [&] {
            for (std::size_t i = 0; i < keys.size(); ++i) {
              const auto info = c.backend->read_object(mkeys[i], detail::object_sink(out[i]));
              if (info && !out[i]) detail::throw_object_mismatch<T>(*info, mkeys[i]);
              if (out[i]) keep(out[i], from_unix_seconds(info->meta.ct));
            }
          },
          [&] {
            for (auto& o : out) o.reset();
          },
          {"get_multi", {}, keys.size()});
    } else if (c.stores_objects) {
      auto objs = guarded([&] { return c.backend->get_objects(mkeys); },
                          [&] { return std::vector<std::optional<StoredObject>>(keys.size()); },
                          {"get_multi", {}, keys.size()});
      for (std::size_t i = 0; i < keys.size(); ++i) {
        auto v = detail::from_object<T>(objs[i], mkeys[i]);
        if (!v) continue;
        out[i].emplace(std::move(v->value));
        keep(out[i], v->created);
      }
    } else {
      auto bytes = guarded([&] { return c.backend->get_multi(mkeys); },
                           [&] { return std::vector<std::optional<std::string>>(keys.size()); },
                           {"get_multi", {}, keys.size()});
      for (std::size_t i = 0; i < keys.size(); ++i) {
        TimePoint created;
        if (detail::decode_bytes_into<T>(std::move(bytes[i]), false, c.codec, mkeys[i],
                                         c.backend_name, out[i], created)) {
          keep(out[i], created);
        }
      }
    }
    count_batch(keys, out);
    return out;
  }

  /// Values of two types in ONE backend round trip, with their creation times: the first
  /// `count_a` of `keys` as `A`, the rest as `B`. For a caller that runs its own
  /// `dogpile::Lock` over what it reads (dogpile::query reads a namespace's generation and a
  /// query's rows together). Expired values are returned, not dropped: the caller decides.
  /// Not counted in the statistics: the caller's lock reports the outcome it decides (a hit,
  /// a creation) through `report_lock_event`, as `get_or_create`'s lock does.
  /// Unless a group's `ignore_expiration`, a hard-invalidated value of it is a miss and a
  /// soft-invalidated one is made to look expired, as `get_or_create` reads them.
  /// @throws as `get_multi`; Error for a soft invalidation without an expiration.
  template <class A, class B>
  std::pair<std::vector<std::optional<Cached<A>>>, std::vector<std::optional<Cached<B>>>>
  get_multi_cached(std::vector<std::string> keys, std::size_t count_a,
                   const GetOptions& opts_a = {}, const GetOptions& opts_b = {}) const {
    const auto& c = cfg();
    if (state_->opts.key_mangler) {
      for (auto& k : keys) k = mangle(k);
    }
    count_a = std::min(count_a, keys.size());
    std::pair<std::vector<std::optional<Cached<A>>>, std::vector<std::optional<Cached<B>>>> out;
    out.first.reserve(count_a);
    out.second.reserve(keys.size() - count_a);
    const auto filter = [&](auto& v, const GetOptions& o) {
      if (!v || o.ignore_expiration) return;
      if (c.invalidator->is_hard_invalidated(v->created)) {
        v.reset();
      } else if (c.invalidator->is_soft_invalidated(v->created)) {
        const auto exp = effective_expiration(c, o.expiration_time);
        require_expiration_for_soft(exp);
        v->created = clock_now() - *exp - std::chrono::microseconds(100);
      }
    };
    const auto put = [&](std::size_t i, auto decode) {
      if (i < count_a) {
        out.first.push_back(decode(std::type_identity<A>{}));
        filter(out.first.back(), opts_a);
      } else {
        out.second.push_back(decode(std::type_identity<B>{}));
        filter(out.second.back(), opts_b);
      }
    };
    if (c.stores_objects) {
      auto objs = guarded([&] { return c.backend->get_objects(keys); },
                          [&] { return std::vector<std::optional<StoredObject>>(keys.size()); },
                          {"get_multi", {}, keys.size()});
      for (std::size_t i = 0; i < keys.size(); ++i) {
        put(i, [&]<class T>(std::type_identity<T>) {
          return detail::from_object<T>(objs[i], keys[i]);
        });
      }
    } else {
      auto bytes = guarded([&] { return c.backend->get_multi(keys); },
                           [&] { return std::vector<std::optional<std::string>>(keys.size()); },
                           {"get_multi", {}, keys.size()});
      for (std::size_t i = 0; i < keys.size(); ++i) {
        put(i, [&]<class T>(std::type_identity<T>) {
          return detail::from_bytes<T>(std::move(bytes[i]), true, c.codec, keys[i], c.backend_name);
        });
      }
    }
    return out;
  }

  /// The value with its metadata (creation time, age), or nullopt; same filter as `get`.
  template <class T>
  std::optional<CachedValue<T>> get_value_metadata(std::string_view key,
                                                   const GetOptions& opts = {}) const {
    const auto& c = cfg();
    std::string mangled;
    auto v = fetch<T>(c, mangled_key(key, mangled), false);
    if (v && !opts.ignore_expiration && !usable(c, *v, opts.expiration_time)) v.reset();
    if (!v) return std::nullopt;
    return CachedValue<T>{std::move(v->value),
                          Metadata{to_unix_seconds(v->created), 2, v->delta.count()}, clock_now()};
  }

  // ---- get_or_create ---------------------------------------------------------------------

  /// The cached value, or the creator's, under the dogpile lock (see lock.hpp): one creator
  /// per key at a time; while a value exists, other callers get it at once. The value type
  /// comes first and is deduced from the creator when omitted (`get_or_create<User>(key, f)`
  /// or `get_or_create(key, f)`); a creator returning a string literal caches a std::string.
  /// @throws what the creator throws (nothing is cached); TimeoutError (lock_timeout);
  ///         Error for soft invalidation without an expiration, or for a type without a codec
  ///         on a byte backend; TypeMismatch; RegionNotConfigured.
  template <class T = detail::deduced, class F, class V = detail::created_t<T, F>>
  V get_or_create(std::string_view key, F&& creator,
                  const CreateOptions<std::type_identity_t<V>>& opts = {}) const {
    static_assert(std::is_invocable_v<F&>,
                  "get_or_create: the creator must take no arguments; capture what it needs "
                  "instead: region.get_or_create(key, [&] { return load(id); })");
    if constexpr (std::is_invocable_v<F&>) {
      try {
        return get_or_create_impl<V>(key, std::forward<F>(creator), opts);
      } catch (BackendError& e) {
        // The reads and writes added theirs already; this names the lock's failures (a
        // distributed lock's server, a lock_timeout wait).
        add_context(e, {"get_or_create", key});
        throw;
      }
    } else {
      return V{};  // not reached: the static_assert above failed
    }
  }

 private:
  template <class V, class F>
  V get_or_create_impl(std::string_view key, F&& creator, const CreateOptions<V>& opts) const {
    static_assert(!std::is_void_v<std::invoke_result_t<F&>>,
                  "get_or_create: the creator must return the value to cache");
    static_assert(std::is_convertible_v<std::invoke_result_t<F&>, V>,
                  "get_or_create<T>: the creator's result does not convert to T");
    const auto& c = cfg();
    const std::string mkey = mangle(key);
    const std::optional<std::chrono::milliseconds> exp =
        effective_expiration(c, opts.expiration_time);
    const LockOptions& lo = state_->lock_options;
    auto observe = [this, key](LockEvent e, std::chrono::nanoseconds d) {
      on_lock_event(e, key, d);
    };
    // Under treat_as_miss the key's mutex is a HandoffMutex: a creator whose value the backend
    // could not store leaves it there, and the callers that waited read it from there.
    detail::HandoffMutex* handoff = nullptr;
    auto value_fn = [&]() { return read_for_create<V>(c, mkey, exp, handoff); };
    auto create = [&]() {
      return create_and_store<V>(c, mkey, creator, opts.should_cache, exp, handoff);
    };
    std::shared_ptr<CacheMutex> held_mutex;
    auto get_mutex = [&]() {
      held_mutex = c.locks->get(mkey);
      handoff = dynamic_cast<detail::HandoffMutex*>(held_mutex.get());
      return held_mutex;
    };
    if constexpr (std::is_copy_constructible_v<std::decay_t<F>>) {
      if (state_->opts.async_creation_runner) {
        auto async = [&](MutexHandle h) {
          auto job = [state = state_, cp = &c, mkey, fn = std::decay_t<F>(creator),
                      should = opts.should_cache, exp]() mutable {
            CacheRegion r(state);
            r.create_and_store<V>(*cp, mkey, fn, should, exp);
          };
          state_->opts.async_creation_runner(std::string(key), std::move(job),
                                             reporting_handle(std::move(h), key));
        };
        return detail::run_dogpile_lock<V>(get_mutex, value_fn, create, async, true, lo, exp,
                                           observe);
      }
    }
    return detail::run_dogpile_lock<V>(get_mutex, value_fn, create, nullptr, false, lo, exp,
                                       observe);
  }

 public:
  /// Many keys at once: one backend read for all, one creator call for every key that needs
  /// a value (`creator(std::span<const std::string> keys) -> std::vector<T>`, keys in sorted
  /// order), one backend write. Results in the order of `keys`, duplicates preserved.
  /// Unlike dogpile, a key another caller created while this one waited is re-read, not
  /// created twice.
  template <class T, class F>
  std::vector<T> get_or_create_multi(
      const std::vector<std::string>& keys, F&& creator,
      const CreateOptions<std::type_identity_t<T>>& opts = {}) const {
    static_assert(std::is_invocable_v<F&, std::span<const std::string>>,
                  "get_or_create_multi: the creator must take the keys to create "
                  "(std::span<const std::string>) and return a std::vector of their values, in "
                  "the same order");
    if constexpr (std::is_invocable_v<F&, std::span<const std::string>>) {
      return get_or_create_multi_impl<T>(keys, std::forward<F>(creator), opts);
    } else {
      return {};  // not reached: the static_assert above failed
    }
  }

 private:
  template <class T, class F>
  std::vector<T> get_or_create_multi_impl(const std::vector<std::string>& keys, F&& creator,
                                          const CreateOptions<std::type_identity_t<T>>& opts) const;

 public:
  // ---- writes ----------------------------------------------------------------------------

  /// Stores `value` under `key` (creation time: now). Never locks.
  template <class T>
  void set(std::string_view key, const T& value) const {
    static_assert(std::is_copy_constructible_v<T>,
                  "region.set: the value must be copyable (the memory backend keeps a copy); "
                  "store a std::shared_ptr<T> instead");
    if constexpr (std::is_copy_constructible_v<T>) {  // no follow-on errors after the assert
      const auto& c = cfg();
      store<T>(c, mangle(key), value, Metadata{to_unix_seconds(clock_now()), 2, 0});
    }
  }
  /// `set("k", "literal")` stores a std::string.
  void set(std::string_view key, const char* value) const;

  /// Stores many values with one shared creation time.
  template <class T>
  void set_multi(const std::vector<std::pair<std::string, T>>& items) const {
    static_assert(std::is_copy_constructible_v<T>,
                  "region.set_multi: the values must be copyable (the memory backend keeps "
                  "copies); store std::shared_ptr<T> instead");
    if constexpr (std::is_copy_constructible_v<T>) {  // no follow-on errors after the assert
      if (items.empty()) return;
      const auto& c = cfg();
      const Metadata meta{to_unix_seconds(clock_now()), 2, 0};
      store_multi<T>(c, items, meta, true);
    }
  }

  /// Removes `key` (dogpile's delete); removing a missing key is fine.
  void erase(std::string_view key) const;
  /// Removes many keys.
  void erase_multi(const std::vector<std::string>& keys) const;

  // ---- invalidation, locks, stats --------------------------------------------------------

  /// Invalidates every value created before now: hard (default) makes them misses, soft
  /// makes them expired. Applies to this process, or to all with `shared_invalidation`.
  void invalidate(InvalidateOptions opts = {}) const;

  /// True if someone holds the dogpile lock of `key` (the key is mangled first).
  [[nodiscard]] bool key_is_locked(std::string_view key) const;
  /// The mutex `get_or_create` uses for `key` (mangled first).
  [[nodiscard]] std::shared_ptr<CacheMutex> mutex_for(std::string_view key) const;

  /// For a component that runs the dogpile lock itself over `get_multi_cached` reads
  /// (dogpile::query): records one of the lock's outcomes for `key` exactly as
  /// `get_or_create` does (a hit, a stale value served, a wait of `waited`, a miss and its
  /// creation, a lease lost under the creator) in the statistics, the listener and, for a lost
  /// lease, the error callback. Thread-safe. @throws what the listener throws.
  void report_lock_event(LockEvent e, std::string_view key,
                         std::chrono::nanoseconds waited = {}) const {
    on_lock_event(e, key, waited);
  }

  /// A snapshot of the counters.
  [[nodiscard]] RegionStats stats() const;
  /// Zeroes the counters.
  void reset_stats() const;

  /// The region's key mangler applied to `key` (identity without one).
  [[nodiscard]] std::string mangle(std::string_view key) const {
    return state_->opts.key_mangler ? state_->opts.key_mangler(key) : std::string(key);
  }

  // ---- decorators (defined in decorator.hpp: include <dogpile/decorator.hpp> to use them) --

  /// Memoizes `fn` in this region: key = namespace + "|" + arguments (see decorator.hpp).
  template <class F>
  CachedFunction<std::decay_t<F>> cache_on_arguments(
      std::string ns, F&& fn, DecoratorOptions<detail::cached_result_t<F>> opts = {}) const;
  /// Memoizes a function of many keys, one cache entry per argument (see decorator.hpp).
  template <class F>
  CachedMultiFunction<std::decay_t<F>> cache_multi_on_arguments(
      std::string ns, F&& fn,
      DecoratorOptions<typename detail::fn_result_t<F>::value_type> opts = {}) const;

  /// Two handles are equal when they refer to the same region.
  friend bool operator==(const CacheRegion& a, const CacheRegion& b) {
    return a.state_ == b.state_;
  }

 private:
  template <class F>
  friend class CachedFunction;
  template <class F>
  friend class CachedMultiFunction;

  explicit CacheRegion(std::shared_ptr<detail::RegionState> s) : state_(std::move(s)) {}

  /// "region 'users'" (or "an unnamed region") for error messages.
  [[nodiscard]] std::string region_label() const;

  const detail::RegionConfig& cfg() const {
    const auto* c = state_->config.load(std::memory_order_acquire);
    if (c == nullptr) throw_not_configured();
    return *c;
  }
  [[noreturn]] void throw_not_configured() const;

  void check_not_configured(const ConfigureOptions& opts) const;

  CacheRegion& install(std::shared_ptr<CacheBackend> backend, const ConfigureOptions& opts,
                       std::string backend_name);

  /// `key` mangled into `storage`, or `key` itself (no copy) without a mangler.
  std::string_view mangled_key(std::string_view key, std::string& storage) const {
    if (!state_->opts.key_mangler) return key;
    storage = state_->opts.key_mangler(key);
    return storage;
  }
  /// `keys` mangled into `storage`, or `keys` itself (no copy) without a mangler.
  const std::vector<std::string>& mangled_keys(const std::vector<std::string>& keys,
                                               std::vector<std::string>& storage) const {
    if (!state_->opts.key_mangler) return keys;
    storage = mangle_all(keys);
    return storage;
  }

  /// Now, by the region's clock (system_clock without the std::function when defaulted).
  [[nodiscard]] TimePoint clock_now() const {
    return state_->default_clock ? std::chrono::system_clock::now() : state_->clock();
  }

  /// Counts a batch read: one hit or miss per result, added to the counters once.
  template <class T>
  void count_batch(const std::vector<std::string>& keys,
                   const std::vector<std::optional<T>>& results) const {
    if (state_->opts.listener) {
      for (std::size_t i = 0; i < keys.size(); ++i) {
        count(results[i] ? RegionEvent::Kind::hit : RegionEvent::Kind::miss, keys[i]);
      }
      return;
    }
    std::uint64_t hits = 0;
    for (const auto& r : results) hits += r ? 1 : 0;
    auto& s = state_->stats.local();
    if (hits != 0) s.hits.fetch_add(hits, std::memory_order_relaxed);
    if (hits != results.size()) {
      s.misses.fetch_add(results.size() - hits, std::memory_order_relaxed);
    }
  }

  std::vector<std::string> mangle_all(const std::vector<std::string>& keys) const {
    if (!state_->opts.key_mangler) return keys;
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(state_->opts.key_mangler(k));
    return out;
  }

  /// `count` for a read's hit or miss, inlined: one relaxed add to this thread's counter (all
  /// the bookkeeping a hit needs); with a listener, the event goes through `count`.
  void count_read(bool hit, std::string_view key) const {
    if (state_->opts.listener) [[unlikely]] {
      count(hit ? RegionEvent::Kind::hit : RegionEvent::Kind::miss, key);
      return;
    }
    auto& s = state_->stats.local();
    (hit ? s.hits : s.misses).fetch_add(1, std::memory_order_relaxed);
  }

  void count(RegionEvent::Kind kind, std::string_view key, std::chrono::nanoseconds d = {},
             const std::exception* error = nullptr,
             const std::exception_ptr& exception = nullptr) const {
    auto& s = state_->stats.local();
    constexpr auto r = std::memory_order_relaxed;
    switch (kind) {
      case RegionEvent::Kind::hit:
        s.hits.fetch_add(1, r);
        break;
      case RegionEvent::Kind::miss:
        s.misses.fetch_add(1, r);
        break;
      case RegionEvent::Kind::stale_served:
        s.stale_served.fetch_add(1, r);
        break;
      case RegionEvent::Kind::created:
        s.creations.fetch_add(1, r);
        break;
      case RegionEvent::Kind::lock_wait:
        s.lock_waits.fetch_add(1, r);
        s.lock_wait_ns.fetch_add(static_cast<std::uint64_t>(d.count()), r);
        break;
      case RegionEvent::Kind::backend_error:
        s.backend_errors.fetch_add(1, r);
        break;
      case RegionEvent::Kind::lock_lost:
        s.locks_lost.fetch_add(1, r);
        break;
    }
    if (state_->opts.listener) {
      state_->opts.listener(RegionEvent{kind, key, d, error, exception});
    }
  }

  /// Where a backend call happens, for the context a `BackendError` gets.
  struct CallSite {
    const char* operation;   // "get", "set_multi"…
    std::string_view key{};  // the (mangled) key of a one-key operation
    std::size_t keys = 0;    // the number of keys of a multi-key operation
  };

  /// Adds the region, the operation and the key to `e` (once: the innermost caller wins).
  void add_context(BackendError& e, const CallSite& at) const;

  /// Runs a backend call under the error policy: `fallback()` replaces the result of a
  /// failed call when errors are treated as misses. The error gets the call's context first.
  template <class Op, class Fallback>
  auto guarded(Op&& op, Fallback&& fallback, const CallSite& at) const -> decltype(op()) {
    try {
      return op();
    } catch (BackendError& e) {
      add_context(e, at);
      count(RegionEvent::Kind::backend_error, at.key, {}, &e, std::current_exception());
      const auto& pol = state_->opts.on_backend_error;
      if (pol.callback) pol.callback(e);
      if (pol.kind == BackendErrorPolicy::Kind::propagate) throw;
      return fallback();
    }
  }

  template <class T>
  std::optional<Cached<T>> fetch(const detail::RegionConfig& c, std::string_view mkey,
                                 bool check_version) const {
    if constexpr (HasCodec<T> && std::is_copy_constructible_v<T>) {
      if (c.keeps_decoded) return fetch_decodable<T>(c, mkey, check_version);
    }
    if (c.stores_objects) {
      // Copied straight out of the backend's node: no shared_ptr copy on a hit.
      std::optional<T> value;
      const auto info =
          guarded([&] { return c.backend->read_object(mkey, detail::object_sink(value)); },
                  [] { return std::optional<ObjectInfo>{}; }, {"get", mkey});
      return detail::from_read_object<T>(info, value, mkey);
    }
    return detail::from_bytes<T>(
        guarded([&] { return c.backend->get(mkey); }, [] { return std::optional<std::string>{}; },
                {"get", mkey}),
        check_version, c.codec, mkey, c.backend_name);
  }
  /// `fetch` from a backend that keeps decoded values: the kept `T` when there is one of this
  /// region's kind (type and codec), else the bytes decoded here and the result attached to
  /// them for the next hit. Same results as decoding the bytes every time.
  template <class T>
  std::optional<Cached<T>> fetch_decodable(const detail::RegionConfig& c, std::string_view mkey,
                                           bool check_version) const {
    const DecodedKind kind = detail::decoded_kind<T>(c.codec);
    DecodableBytes r = guarded([&] { return c.backend->get_decodable(mkey, kind); },
                               [] { return DecodableBytes{}; }, {"get", mkey});
    if (r.decoded && r.decoded->kind == kind) {
      const DecodedValue& d = *r.decoded;
      if (check_version && d.meta.v != 2) return std::nullopt;
      return Cached<T>{*static_cast<const T*>(d.object.get()), from_unix_seconds(d.meta.ct),
                       std::chrono::duration<double>(d.meta.delta)};
    }
    if (!r.bytes) return std::nullopt;
    auto d = detail::decode_for_keeping<T>(*r.bytes, check_version, kind, c.codec, mkey);
    if (!d) return std::nullopt;
    Cached<T> out{*static_cast<const T*>(d->object.get()), from_unix_seconds(d->meta.ct),
                  std::chrono::duration<double>(d->meta.delta)};
    c.backend->keep_decoded(r.slot, std::move(d));
    return out;
  }

  template <class T>
  std::vector<std::optional<Cached<T>>> fetch_multi(const detail::RegionConfig& c,
                                                    const std::vector<std::string>& mkeys,
                                                    bool check_version) const {
    std::vector<std::optional<Cached<T>>> out;
    out.reserve(mkeys.size());
    if (c.memory_objects) {
      for (const auto& k : mkeys) out.push_back(fetch<T>(c, k, check_version));
    } else if (c.stores_objects) {
      auto objs = guarded([&] { return c.backend->get_objects(mkeys); },
                          [&] { return std::vector<std::optional<StoredObject>>(mkeys.size()); },
                          {"get_multi", {}, mkeys.size()});
      for (std::size_t i = 0; i < mkeys.size(); ++i) {
        out.push_back(detail::from_object<T>(objs[i], mkeys[i]));
      }
    } else {
      auto bytes = guarded([&] { return c.backend->get_multi(mkeys); },
                           [&] { return std::vector<std::optional<std::string>>(mkeys.size()); },
                           {"get_multi", {}, mkeys.size()});
      for (std::size_t i = 0; i < mkeys.size(); ++i) {
        out.push_back(detail::from_bytes<T>(std::move(bytes[i]), check_version, c.codec, mkeys[i],
                                            c.backend_name));
      }
    }
    return out;
  }

  template <class T>
  void store(const detail::RegionConfig& c, const std::string& mkey, const T& value,
             const Metadata& meta) const {
    if (c.stores_objects) {
      // The backend may keep a small value inline in its node (one allocation per entry).
      const std::size_t size_hint = weigh(value) + detail::kSharedBlockOverhead;
      guarded([&] { c.backend->set_object_copy(mkey, &value, object_ops<T>, meta, size_hint); },
              [] {}, {"set", mkey});
    } else {
      std::string bytes = detail::to_bytes(value, meta, state_->opts.codec, c.backend_name);
      guarded([&] { c.backend->set(mkey, bytes); }, [] {}, {"set", mkey});
    }
  }
  template <class T>
  void store_multi(const detail::RegionConfig& c,
                   const std::vector<std::pair<std::string, T>>& items, const Metadata& meta,
                   bool needs_mangling) const {
    if (c.memory_objects) {
      // Each value copied into its node (kept inline when small), as `set` does.
      guarded(
          [&] {
            for (const auto& [k, v] : items) {
              const std::string mkey = needs_mangling ? mangle(k) : std::string();
              c.backend->set_object_copy(
                  needs_mangling ? std::string_view(mkey) : std::string_view(k), &v, object_ops<T>,
                  meta, weigh(v) + detail::kSharedBlockOverhead);
            }
          },
          [] {}, {"set_multi", {}, items.size()});
    } else if (c.stores_objects) {
      std::vector<ObjectItem> objs;
      objs.reserve(items.size());
      for (const auto& [k, v] : items) {
        objs.emplace_back(needs_mangling ? mangle(k) : k, detail::to_object(v, meta));
      }
      guarded([&] { c.backend->set_objects(objs); }, [] {}, {"set_multi", {}, objs.size()});
    } else {
      std::vector<BytesItem> bytes;
      bytes.reserve(items.size());
      for (const auto& [k, v] : items) {
        bytes.emplace_back(needs_mangling ? mangle(k) : k,
                           detail::to_bytes(v, meta, state_->opts.codec, c.backend_name));
      }
      guarded([&] { c.backend->set_multi(bytes); }, [] {}, {"set_multi", {}, bytes.size()});
    }
  }

  std::optional<std::chrono::milliseconds> effective_expiration(const detail::RegionConfig& c,
                                                                const Expiration& call) const {
    const Expiration& e = call.or_else(c.expiration);
    return e.is_set() ? e.resolve() : std::nullopt;
  }

  /// The `get` filter: not expired (strict '>') and not invalidated.
  template <class T>
  bool usable(const detail::RegionConfig& c, const Cached<T>& v, const Expiration& call) const {
    return usable_created(c, v.created, call);
  }
  bool usable_created(const detail::RegionConfig& c, TimePoint created,
                      const Expiration& call) const {
    const auto exp = effective_expiration(c, call);
    if (exp && (clock_now() - created) > *exp) return false;
    if (c.default_invalidator != nullptr) {
      return !c.default_invalidator->DefaultInvalidationStrategy::is_invalidated(created);
    }
    return !c.invalidator->is_invalidated(created);
  }

  /// `usable_created` for a stored creation time `ct` (Unix seconds), converted only when an
  /// expiration or an invalidation needs it.
  bool usable_stored(const detail::RegionConfig& c, double ct, const Expiration& call) const {
    const auto exp = effective_expiration(c, call);
    const auto* d = c.default_invalidator;
    if (!exp && d != nullptr && !d->DefaultInvalidationStrategy::was_hard_invalidated() &&
        !d->DefaultInvalidationStrategy::was_soft_invalidated()) {
      return true;
    }
    const TimePoint created = from_unix_seconds(ct);
    if (exp && (clock_now() - created) > *exp) return false;
    if (d != nullptr) return !d->DefaultInvalidationStrategy::is_invalidated(created);
    return !c.invalidator->is_invalidated(created);
  }

  /// `get` on an object backend: the value is copied straight from the backend's node into the
  /// result (no Cached<T> in between), then filtered as `get` does.
  template <class T>
  std::optional<T> get_object_value(const detail::RegionConfig& c, std::string_view mkey,
                                    std::string_view key, const GetOptions& opts) const {
    std::optional<T> value;
    const auto info =
        guarded([&] { return c.backend->read_object(mkey, detail::object_sink(value)); },
                [] { return std::optional<ObjectInfo>{}; }, {"get", mkey});
    if (info && !value) detail::throw_object_mismatch<T>(*info, mkey);
    if (value && !opts.ignore_expiration &&
        !usable_stored(c, info->meta.ct, opts.expiration_time)) {
      value.reset();
    }
    count_read(value.has_value(), key);
    return value;
  }

  static void require_expiration_for_soft(const std::optional<std::chrono::milliseconds>& exp) {
    if (!exp) detail::throw_error<Error>("Non-None expiration time required for soft invalidation");
  }

  /// dogpile's get_value(): a hard-invalidated or wrong-version value is a miss; a
  /// soft-invalidated one is made to look expired.
  template <class T>
  std::optional<Cached<T>> read_for_create(const detail::RegionConfig& c, const std::string& mkey,
                                           const std::optional<std::chrono::milliseconds>& exp,
                                           const detail::HandoffMutex* handoff = nullptr) const {
    auto v = fetch<T>(c, mkey, true);
    if constexpr (std::is_copy_constructible_v<T>) {
      if (handoff != nullptr) {
        // A value this process made while the backend could not store it: newer than (or
        // instead of) what the backend has.
        if (auto h = handoff->take<T>(); h && (!v || h->created > v->created)) v = std::move(h);
      }
    }
    if (!v) return v;
    if (c.invalidator->is_hard_invalidated(v->created)) return std::nullopt;
    if (c.invalidator->is_soft_invalidated(v->created)) {
      require_expiration_for_soft(exp);
      v->created = clock_now() - *exp - std::chrono::microseconds(100);
    }
    return v;
  }

  template <class T, class F>
  Cached<T> create_and_store(const detail::RegionConfig& c, const std::string& mkey, F& creator,
                             const std::function<bool(const T&)>& should_cache,
                             const std::optional<std::chrono::milliseconds>& exp,
                             detail::HandoffMutex* handoff = nullptr) const {
    if (c.invalidator->was_soft_invalidated()) require_expiration_for_soft(exp);
    const auto t0 = std::chrono::steady_clock::now();
    T value = creator();
    const double delta = detail::seconds_of(std::chrono::steady_clock::now() - t0);
    const TimePoint created = clock_now();
    if (!should_cache || should_cache(value)) {
      // This thread's counter shard: a store that fails counts there (a thread sharing the
      // shard may add one too, which only hands over a value that is fresh anyway).
      auto& shard = state_->stats.local();
      const auto errors_before = shard.backend_errors.load(std::memory_order_relaxed);
      store<T>(c, mkey, value, Metadata{to_unix_seconds(created), 2, delta});
      if constexpr (std::is_copy_constructible_v<T>) {
        // The store failed (treated as a miss; another thread's error may count too, which
        // only hands over a value that is fresh anyway): keep it for this key's waiters.
        if (handoff != nullptr &&
            shard.backend_errors.load(std::memory_order_relaxed) != errors_before) {
          handoff->put(Cached<T>{value, created, std::chrono::duration<double>(delta)});
        }
      }
    }
    return Cached<T>{std::move(value), created, std::chrono::duration<double>(delta)};
  }

  void on_lock_event(LockEvent e, std::string_view key, std::chrono::nanoseconds d) const;

  /// A lock whose lease ran out under a creator: the value is fine, so the caller gets it; the
  /// loss goes to the statistics, the listener and the error callback.
  void report_lease_lost(std::string_view key) const;

  /// Wraps an acquired mutex handed to the async runner, so that a lease lost while the job
  /// runs is reported like a synchronous one instead of vanishing in a destructor.
  MutexHandle reporting_handle(MutexHandle h, std::string_view key) const;

  std::shared_ptr<detail::RegionState> state_;
};

/// Creates a region (dogpile's make_region).
inline CacheRegion make_region(RegionOptions opts = {}) { return CacheRegion(std::move(opts)); }

// ---- get_or_create_multi -----------------------------------------------------------------

template <class T, class F>
std::vector<T> CacheRegion::get_or_create_multi_impl(
    const std::vector<std::string>& keys, F&& creator,
    const CreateOptions<std::type_identity_t<T>>& opts) const {
  if (keys.empty()) return {};
  const auto& c = cfg();
  const auto exp = effective_expiration(c, opts.expiration_time);
  const auto now = [&] { return clock_now(); };

  // Sorted unique keys: locks are always taken in this order, so two multi calls cannot
  // deadlock; creation happens in this order too (as dogpile).
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  const std::vector<std::string> mkeys = mangle_all(sorted);

  // One backend read for all keys, filtered like get_or_create's value function.
  auto snapshot = fetch_multi<T>(c, mkeys, true);
  for (auto& v : snapshot) {
    if (!v) continue;
    if (c.invalidator->is_hard_invalidated(v->created)) {
      v.reset();
    } else if (c.invalidator->is_soft_invalidated(v->created)) {
      require_expiration_for_soft(exp);
      v->created = now() - *exp - std::chrono::microseconds(100);
    }
  }

  // Each key goes through the same decision table as get_or_create (lock.hpp's rows).
  const LockOptions& lo = state_->lock_options;
  std::vector<MutexHandle> held;
  std::vector<std::size_t> to_create;
  // A lock failure (a distributed lock's server, a lock_timeout wait) names the key whose lock
  // failed, as get_or_create's does; a read's error keeps the context it already has.
  const auto on_lock = [this](const std::string& key, auto&& f) -> decltype(f()) {
    try {
      return f();
    } catch (BackendError& e) {
      add_context(e, {"lock", key});
      throw;
    }
  };
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    auto& v = snapshot[i];
    const auto emit = [&](LockEvent e, std::chrono::nanoseconds d) {
      on_lock_event(e, sorted[i], d);
    };
    const TimePoint t = now();
    if (v && !detail::is_expired(exp, v->created, t)) {
      if (!detail::wants_early_refresh(lo, exp, v->created, v->delta, t)) {
        count(RegionEvent::Kind::hit, sorted[i]);
        continue;
      }
      // early refresh: nobody waits for a good value
      auto m = on_lock(sorted[i], [&] { return c.locks->get(mkeys[i]); });
      if (!on_lock(sorted[i], [&] { return m->acquire(false); })) {
        count(RegionEvent::Kind::hit, sorted[i]);
        continue;
      }
      held.push_back(MutexHandle::adopt(std::move(m)));
      to_create.push_back(i);
      continue;
    }
    auto m = on_lock(sorted[i], [&] { return c.locks->get(mkeys[i]); });
    if (v && detail::may_serve_stale(lo.stale_policy, exp, v->created, t)) {
      if (!on_lock(sorted[i], [&] { return m->acquire(false); })) {
        count(RegionEvent::Kind::stale_served, sorted[i]);
        continue;
      }
    } else {
      on_lock(sorted[i], [&] { detail::acquire_blocking(*m, lo, emit); });
      // Re-read after waiting: another caller may have just created it (dogpile does not,
      // and creates it a second time).
      auto again = read_for_create<T>(c, mkeys[i], exp);
      if (again && !detail::is_expired(exp, again->created, now())) {
        MutexHandle::adopt(std::move(m)).release();
        count(RegionEvent::Kind::hit, sorted[i]);
        v = std::move(again);
        continue;
      }
    }
    held.push_back(MutexHandle::adopt(std::move(m)));
    to_create.push_back(i);
  }

  if (!to_create.empty()) {
    if (c.invalidator->was_soft_invalidated()) require_expiration_for_soft(exp);
    std::vector<std::string> create_keys;
    create_keys.reserve(to_create.size());
    for (auto i : to_create) create_keys.push_back(sorted[i]);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<T> created = creator(std::span<const std::string>(create_keys));
    if (created.size() != create_keys.size()) {
      detail::throw_error<ValidationError>("get_or_create_multi: the creator returned " +
                                           std::to_string(created.size()) + " values for " +
                                           std::to_string(create_keys.size()) + " keys");
    }
    const double delta = detail::seconds_of(std::chrono::steady_clock::now() - t0);
    const TimePoint ct = now();
    const Metadata meta{to_unix_seconds(ct), 2, delta};
    std::vector<std::pair<std::string, T>> to_store;
    for (std::size_t j = 0; j < to_create.size(); ++j) {
      const auto i = to_create[j];
      count(RegionEvent::Kind::miss, sorted[i]);
      count(RegionEvent::Kind::created, sorted[i]);
      if (!opts.should_cache || opts.should_cache(created[j]))
        to_store.emplace_back(mkeys[i], created[j]);
      snapshot[i] = Cached<T>{std::move(created[j]), ct, std::chrono::duration<double>(delta)};
    }
    if (!to_store.empty()) store_multi<T>(c, to_store, meta, false);
  }
  // Release every mutex (on exceptions the handles' destructors do); a lease lost under the
  // creator is reported, not thrown at a caller whose values are fine.
  for (std::size_t j = 0; j < held.size(); ++j) {
    detail::release_reporting(held[j], [&](LockEvent e, std::chrono::nanoseconds d) {
      on_lock_event(e, sorted[to_create[j]], d);
    });
  }

  std::vector<T> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    const auto i = static_cast<std::size_t>(std::lower_bound(sorted.begin(), sorted.end(), k) -
                                            sorted.begin());
    out.push_back(snapshot[i]->value);
  }
  return out;
}

}  // namespace dogpile
