#pragma once
/// @file decorator.hpp
/// Function memoization in a region: dogpile.cache's `cache_on_arguments` and
/// `cache_multi_on_arguments`.
///
/// ```cpp
/// auto get_user = region.cache_on_arguments("app.get_user", load_user, {.expiration_time =
/// 10min}); User u = get_user(42);                 // key "app.get_user|42", under the dogpile lock
/// get_user.invalidate(42);  get_user.set(user, 42);  std::optional<User> g = get_user.get(42);
/// User fresh = get_user.refresh(42);     get_user.original()(42);
/// ```
/// Keys: `namespace + "|" + arguments joined by " "`, each argument through
/// `dogpile::to_key_string` (keys.hpp). Override per region
/// (`RegionOptions::function_key_generator`) or per decorator (`DecoratorOptions`).

#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dogpile/keys.hpp"
#include "dogpile/region.hpp"

namespace dogpile {

/// Options of a decorated function. Plain aggregate.
template <class R>
struct DecoratorOptions {
  Expiration expiration_time{};                     ///< overrides the region's; may be a callable
  std::function<bool(const R&)> should_cache{};     ///< cache a result only if true
  FunctionKeyGenerator key_generator{};             ///< overrides the region's (single form)
  FunctionMultiKeyGenerator multi_key_generator{};  ///< overrides the region's (multi form)
};

/// A function memoized in a region (what `cache_on_arguments` returns). Copyable; keeps the
/// region alive. Thread-safe: calls from many threads share the region's dogpile lock.
template <class F>
class CachedFunction {
 public:
  using result_type = detail::cached_result_t<F>;  ///< the cached value type

  /// Memoizes `fn` in `region` under the namespace `ns` (prefer `region.cache_on_arguments`).
  CachedFunction(CacheRegion region, std::string ns, F fn, DecoratorOptions<result_type> opts)
      : region_(std::move(region)),
        ns_(std::move(ns)),
        fn_(std::make_shared<const F>(std::move(fn))),
        opts_(std::move(opts)) {
    if (!opts_.key_generator) opts_.key_generator = region_.options().function_key_generator;
  }

  /// The cached result for these arguments, creating it under the dogpile lock if needed.
  /// @throws what the function throws (nothing is cached), and what `get_or_create` throws.
  template <class... A>
  result_type operator()(const A&... args) const {
    static_assert(std::is_invocable_v<const F&, const A&...>,
                  "cache_on_arguments: the arguments do not match the decorated function's "
                  "signature; pass the function's parameters, in order");
    if constexpr (std::is_invocable_v<const F&, const A&...>) {  // no follow-on errors
      return region_.template get_or_create<result_type>(
          key(args...),
          [fn = fn_, args...]() { return static_cast<result_type>(std::invoke(*fn, args...)); },
          CreateOptions<result_type>{opts_.expiration_time, opts_.should_cache});
    } else {
      std::terminate();
    }
  }
  /// The cache key of a call with these arguments.
  template <class... A>
  [[nodiscard]] std::string key(const A&... args) const {
    if (!opts_.key_generator) return make_key(ns_, args...);
    return opts_.key_generator(ns_, std::vector<std::string>{to_key_string(args)...});
  }
  /// Removes the cached result of these arguments (dogpile's `invalidate`: a delete).
  template <class... A>
  void invalidate(const A&... args) const {
    region_.erase(key(args...));
  }
  /// Stores `value` as the result of these arguments (the value comes first, as dogpile).
  template <class... A>
  void set(const result_type& value, const A&... args) const {
    region_.template set<result_type>(key(args...), value);
  }
  /// The cached result, or nullopt; uses the decorator's expiration (dogpile used the
  /// region's, which surprised users).
  template <class... A>
  std::optional<result_type> get(const A&... args) const {
    return region_.template get<result_type>(key(args...),
                                             GetOptions{opts_.expiration_time, false});
  }
  /// Calls the function without the lock, stores and returns the result.
  template <class... A>
  result_type refresh(const A&... args) const {
    result_type v = std::invoke(*fn_, args...);
    set(v, args...);
    return v;
  }
  /// The undecorated function.
  [[nodiscard]] const F& original() const { return *fn_; }
  /// The region.
  [[nodiscard]] const CacheRegion& region() const { return region_; }

 private:
  CacheRegion region_;
  std::string ns_;
  std::shared_ptr<const F> fn_;
  DecoratorOptions<result_type> opts_;
};

/// A function of many keys memoized one entry per argument (what
/// `cache_multi_on_arguments` returns). `fn(const std::vector<A>&)` (or a span) returns one
/// value per argument, in order; it is called only with the arguments that need a value.
template <class F>
class CachedMultiFunction {
 public:
  using arg_type = typename detail::fn_arg_t<F, 0>::value_type;     ///< one argument
  using result_type = typename detail::fn_result_t<F>::value_type;  ///< one value
  using creator_input = std::vector<std::remove_cv_t<arg_type>>;    ///< what `fn` receives

  /// Memoizes `fn` in `region` under `ns` (prefer `region.cache_multi_on_arguments`).
  CachedMultiFunction(CacheRegion region, std::string ns, F fn, DecoratorOptions<result_type> opts)
      : region_(std::move(region)),
        ns_(std::move(ns)),
        fn_(std::make_shared<const F>(std::move(fn))),
        opts_(std::move(opts)) {
    if (!opts_.multi_key_generator)
      opts_.multi_key_generator = region_.options().function_multi_key_generator;
  }

  /// One result per argument, in order; missing ones are created with one call of the function.
  template <class... A>
  std::vector<result_type> operator()(const A&... args) const {
    return call(creator_input{static_cast<std::remove_cv_t<arg_type>>(args)...});
  }
  /// The same with the arguments in a vector.
  std::vector<result_type> call(const creator_input& argv) const {
    const auto keys = keys_for(argv);
    std::map<std::string, std::size_t, std::less<>> index;
    for (std::size_t i = 0; i < keys.size(); ++i) index.emplace(keys[i], i);
    return region_.template get_or_create_multi<result_type>(
        keys,
        [&](std::span<const std::string> need) {
          creator_input sub;
          sub.reserve(need.size());
          for (const auto& k : need) sub.push_back(argv[index.find(k)->second]);
          return std::vector<result_type>(std::invoke(*fn_, sub));
        },
        CreateOptions<result_type>{opts_.expiration_time, opts_.should_cache});
  }
  /// Stores values for arguments.
  void set(const std::vector<std::pair<arg_type, result_type>>& mapping) const {
    std::vector<std::pair<std::string, result_type>> items;
    items.reserve(mapping.size());
    for (const auto& [a, v] : mapping) items.emplace_back(keys_for(creator_input{a}).front(), v);
    region_.template set_multi<result_type>(items);
  }
  /// Removes the entries of these arguments.
  template <class... A>
  void invalidate(const A&... args) const {
    region_.erase_multi(keys_for(creator_input{static_cast<std::remove_cv_t<arg_type>>(args)...}));
  }
  /// The cached values (nullopt where missing).
  template <class... A>
  std::vector<std::optional<result_type>> get(const A&... args) const {
    return region_.template get_multi<result_type>(
        keys_for(creator_input{static_cast<std::remove_cv_t<arg_type>>(args)...}),
        GetOptions{opts_.expiration_time, false});
  }
  /// Calls the function for every argument (no lock), stores and returns the values.
  template <class... A>
  std::vector<result_type> refresh(const A&... args) const {
    creator_input argv{static_cast<std::remove_cv_t<arg_type>>(args)...};
    std::vector<result_type> values = std::invoke(*fn_, argv);
    const auto keys = keys_for(argv);
    std::vector<std::pair<std::string, result_type>> items;
    for (std::size_t i = 0; i < keys.size() && i < values.size(); ++i)
      items.emplace_back(keys[i], values[i]);
    region_.template set_multi<result_type>(items);
    return values;
  }
  /// The keys of these arguments.
  [[nodiscard]] std::vector<std::string> keys_for(const creator_input& argv) const {
    std::vector<std::string> parts;
    parts.reserve(argv.size());
    for (const auto& a : argv) parts.push_back(to_key_string(a));
    return opts_.multi_key_generator ? opts_.multi_key_generator(ns_, parts)
                                     : default_multi_key_generator(ns_, parts);
  }
  /// The undecorated function.
  [[nodiscard]] const F& original() const { return *fn_; }

 private:
  CacheRegion region_;
  std::string ns_;
  std::shared_ptr<const F> fn_;
  DecoratorOptions<result_type> opts_;
};

template <class F>
CachedFunction<std::decay_t<F>> CacheRegion::cache_on_arguments(
    std::string ns, F&& fn, DecoratorOptions<detail::cached_result_t<F>> opts) const {
  return CachedFunction<std::decay_t<F>>(*this, std::move(ns), std::forward<F>(fn),
                                         std::move(opts));
}

template <class F>
CachedMultiFunction<std::decay_t<F>> CacheRegion::cache_multi_on_arguments(
    std::string ns, F&& fn,
    DecoratorOptions<typename detail::fn_result_t<F>::value_type> opts) const {
  return CachedMultiFunction<std::decay_t<F>>(*this, std::move(ns), std::forward<F>(fn),
                                              std::move(opts));
}

/// The free-function form: `dogpile::cache_on_arguments(region, "ns", fn, {...})`.
template <class F>
CachedFunction<std::decay_t<F>> cache_on_arguments(
    const CacheRegion& region, std::string ns, F&& fn,
    DecoratorOptions<detail::cached_result_t<F>> opts = {}) {
  return region.cache_on_arguments(std::move(ns), std::forward<F>(fn), std::move(opts));
}

/// The free-function form of `cache_multi_on_arguments`.
template <class F>
CachedMultiFunction<std::decay_t<F>> cache_multi_on_arguments(
    const CacheRegion& region, std::string ns, F&& fn,
    DecoratorOptions<typename detail::fn_result_t<F>::value_type> opts = {}) {
  return region.cache_multi_on_arguments(std::move(ns), std::forward<F>(fn), std::move(opts));
}

}  // namespace dogpile
