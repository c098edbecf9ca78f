#pragma once
/// @file index.hpp
/// `dogpile::Index<T>`: python-diskcache's `Index`, a persistent mapping from `dogpile::Key`
/// (int64, double, text, bytes) to `T`, iterated in insertion order, on a `DiskCache`.
///
/// ```cpp
/// dogpile::Index<std::int64_t> scores("/var/cache/scores");
/// scores.set("alice", 10);
/// scores.set("bob", 7);
/// scores.set("alice", 12);                    // keeps alice's position
/// std::int64_t a = scores.at("alice");        // throws dogpile::KeyNotFound on a miss
/// std::optional<std::int64_t> c = scores.get("carol");   // nullopt on a miss
/// for (const auto& [key, value] : scores) { ... }        // alice, bob
/// ```
///
/// Storage is the cache's: one row per key, insertion order = rowid order (an overwrite updates
/// the row in place, so it keeps its position, like a Python dict). `diskcache.Index(d)` in
/// Python and `dogpile::Index` in C++ read and write one directory for int / float / str /
/// bytes keys and values. `T` is the value type (`DiskValue` for mixed values; other types go
/// through `Codec<T>`); a template for the same reasons as `Deque` (deque.hpp).
///
/// C++ naming: `at` throws `KeyNotFound` (Python's `index[key]`, `std::map::at`), `get` returns
/// an optional (`dict.get`, and `DiskCache::get`'s miss-is-nullopt). `erase` returns whether the
/// key was there instead of raising. `pop`/`popitem` check the stored value is a `T` before
/// removing it, so a type mismatch loses nothing. `update` writes all pairs in one transaction.
///
/// Thread-safety: every method may be called from any thread and from many processes at once;
/// each call is atomic. Copies share the open cache.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iterator>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/detail/persistent.hpp"
#include "dogpile/disk/types.hpp"
#include "dogpile/error.hpp"

namespace dogpile {

namespace detail {
template <class M>
concept KeyedMapping = requires(const M& m) {
  typename M::key_type;
  typename M::mapped_type;
  m.find(std::declval<const typename M::key_type&>());
};

/// Python's `==` between values: `==` where the types compare, else the stored forms.
template <class A, class B>
bool values_equal(const A& a, const B& b) {
  if constexpr (std::equality_comparable_with<A, B>) {
    return a == b;
  } else {
    return to_disk_value(a) == to_disk_value(b);
  }
}
}  // namespace detail

/// A persistent insertion-ordered mapping `Key -> T` (python-diskcache's `Index`); see the file
/// comment.
template <class T = DiskValue>
class Index {
  struct FetchItem {
    std::optional<std::pair<Key, T>> operator()(DiskCache& cache, const Key& key) const {
      auto v = cache.get<T>(key);
      if (!v) return std::nullopt;
      return std::make_optional(std::pair<Key, T>(key, std::move(*v)));
    }
  };

 public:
  /// The key type.
  using key_type = Key;  // NOLINT(readability-identifier-naming): the standard name
  /// The value type.
  using mapped_type = T;  // NOLINT(readability-identifier-naming): the standard name
  /// What iteration yields.
  using value_type = std::pair<Key, T>;  // NOLINT(readability-identifier-naming): the standard name
  /// The input iterator of `begin()` / `rbegin()`; ends at `std::default_sentinel`.
  using iterator =  // NOLINT(readability-identifier-naming): the standard name
      detail::SnapshotIterator<value_type, FetchItem>;

  /// Opens (creating if needed) the index stored in `directory`. `eviction_policy` left unset
  /// becomes `none`, as Python's Index (another policy is refused: it would drop keys).
  /// @throws ValidationError, and whatever `DiskCache`'s constructor throws.
  explicit Index(const std::filesystem::path& directory, DiskCacheOptions options = {})
      : cache_(directory, detail::persistent_options(std::move(options), "Index")) {}

  /// An index over an existing cache (python's `Index.fromcache`): every key of the cache.
  static Index fromcache(DiskCache cache) { return Index(std::move(cache)); }

  /// The cache holding the items (a handle sharing the open cache).
  [[nodiscard]] DiskCache& cache() const noexcept { return cache_; }
  /// The directory.
  [[nodiscard]] const std::filesystem::path& directory() const noexcept {
    return cache_.directory();
  }

  // ---- single keys --------------------------------------------------------------------------

  /// The value of `key`. @throws KeyNotFound if absent, TypeMismatch / CantDeserialize if the
  /// stored value is not a `T`, DatabaseError.
  [[nodiscard]] T at(const Key& key) const {
    auto v = cache_.get<T>(key);
    if (!v) missing(key, "at", "get(key) returns an optional instead");
    return std::move(*v);
  }
  /// The value of `key`, or nullopt. @throws TypeMismatch, CantDeserialize, DatabaseError.
  [[nodiscard]] std::optional<T> get(const Key& key) const { return cache_.get<T>(key); }
  /// Stores `value` under `key` (a new key goes last; an existing one keeps its position).
  /// Waits for the write lock. @throws DatabaseError, ValidationError.
  void set(const Key& key, const T& value) { cache_.set(key, value, {.retry = true}); }
  /// Removes `key`; true if it was there.
  bool erase(const Key& key) { return cache_.erase(key, /*retry=*/true); }
  /// True if `key` is present.
  [[nodiscard]] bool contains(const Key& key) const { return cache_.contains(key); }
  /// The value of `key`; if absent, stores `default_value` first (atomic `add`, so concurrent
  /// callers all get the one value that won). @throws as `at`/`set`.
  T setdefault(const Key& key, const T& default_value) {
    for (;;) {
      if (auto v = cache_.get<T>(key)) return std::move(*v);
      cache_.add(key, default_value, {.retry = true});
    }
  }
  /// Removes and returns the value of `key`. @throws KeyNotFound if absent, TypeMismatch (the
  /// key stays).
  T pop(const Key& key) {
    auto v = pop_opt(key);
    if (!v) missing(key, "pop", "pop(key, default) returns the default instead");
    return std::move(*v);
  }
  /// Removes and returns the value of `key`, or `default_value` if absent.
  T pop(const Key& key, T default_value) {
    auto v = pop_opt(key);
    return v ? std::move(*v) : std::move(default_value);
  }
  /// The last (or first) item in insertion order, not removed.
  /// @throws KeyNotFound("dictionary is empty"), TypeMismatch.
  [[nodiscard]] std::pair<Key, T> peekitem(bool last = true) const {
    auto item = cache_.peekitem<T>(last, /*retry=*/true);
    if (!item) detail::throw_error<KeyNotFound>("dictionary is empty");
    return std::move(*item);
  }
  /// Removes and returns the last item (LIFO, a stack) or with `last = false` the first (FIFO,
  /// a queue), in one transaction. @throws KeyNotFound("dictionary is empty"), TypeMismatch
  /// (nothing removed).
  std::pair<Key, T> popitem(bool last = true) {
    auto tx = cache_.transact(true);
    auto item = peekitem(last);
    cache_.erase(item.first, true);
    return item;
  }
  /// Pushes `value` onto a queue in the index (python's `Index.push`: integer keys from
  /// 500000000000000, or text keys `prefix-…`); returns its key. Waits for the lock.
  Key push(const T& value, PushOptions options = {}) {
    options.retry = true;
    return cache_.push(value, options);
  }
  /// Pulls `(key, value)` from a queue in the index, or nullopt if it is empty. Waits for the
  /// lock. @throws TypeMismatch / CantDeserialize if the item is not a `T` (it stays).
  std::optional<std::pair<Key, T>> pull(PullOptions options = {}) {
    options.retry = true;
    if constexpr (std::is_same_v<T, DiskValue>) {
      return cache_.pull<T>(options);
    } else {
      auto tx = cache_.transact(true);
      auto item = cache_.peek<T>(options);
      if (item) cache_.erase(item->first, true);
      return item;
    }
  }

  // ---- whole index --------------------------------------------------------------------------

  /// Number of keys.
  [[nodiscard]] std::size_t size() const { return static_cast<std::size_t>(cache_.size()); }
  /// True if there are no keys.
  [[nodiscard]] bool empty() const { return size() == 0; }
  /// Removes every key. @throws DatabaseError.
  void clear() { cache_.clear(/*retry=*/true); }
  /// Insertion-order iteration over `(key, value)` pairs of the keys present when it starts
  /// (keys removed meanwhile are skipped; each value is read when reached).
  [[nodiscard]] iterator begin() const { return iterator(cache_, cache_.keys(), {}); }
  /// The end of `begin()` and `rbegin()`.
  [[nodiscard]] std::default_sentinel_t end() const noexcept { return {}; }
  /// Reverse insertion order (python's `reversed(index)`).
  [[nodiscard]] iterator rbegin() const { return iterator(cache_, cache_.keys(true), {}); }
  /// The end of `rbegin()`.
  [[nodiscard]] std::default_sentinel_t rend() const noexcept { return {}; }
  /// `for (auto& [k, v] : index.reversed())`.
  [[nodiscard]] detail::SnapshotRange<iterator> reversed() const { return {rbegin()}; }
  /// The keys in insertion order (or reversed).
  [[nodiscard]] std::vector<Key> keys(bool reverse = false) const { return cache_.keys(reverse); }
  /// The values in insertion order.
  [[nodiscard]] std::vector<T> values() const {
    std::vector<T> out;
    for (auto& [k, v] : *this) out.push_back(v);
    return out;
  }
  /// The `(key, value)` pairs in insertion order.
  [[nodiscard]] std::vector<std::pair<Key, T>> items() const {
    std::vector<std::pair<Key, T>> out;
    for (const auto& item : *this) out.push_back(item);
    return out;
  }
  /// Stores every `(key, value)` pair of `pairs` (a map or a range of pairs) in one
  /// transaction, in its order. @throws as `set`.
  template <std::ranges::input_range R>
  void update(const R& pairs) {
    std::vector<std::pair<Key, DiskValue>> conv;
    for (const auto& [k, v] : pairs) {
      if constexpr (std::is_same_v<T, DiskValue>) {
        conv.emplace_back(Key(k), detail::to_disk_value(v));  // each value as what it is
      } else {
        conv.emplace_back(Key(k), detail::to_disk_value(static_cast<const T&>(v)));
      }
    }
    cache_.set_many_values(conv, {.retry = true});
  }
  /// Memoizes `fn` in the index (see `DiskCache::memoize`).
  template <class F>
  Memoized<DiskCache, F> memoize(std::string name, F fn, MemoizeOptions options = {}) {
    return cache_.memoize(std::move(name), std::move(fn), std::move(options));
  }
  /// A write transaction over the index (python's `transact()`); waits for the lock.
  [[nodiscard]] Transaction transact() { return cache_.transact(true); }

  /// Against a map (`std::map`, `std::unordered_map`; keys convertible to `Key`): same keys and
  /// values, in any order. Against another Index (of any value type) or a range of pairs
  /// (`std::vector<std::pair<…>>`): same pairs in the same order (python's Index/OrderedDict
  /// comparison).
  template <std::ranges::input_range R>
  [[nodiscard]] bool operator==(const R& other) const {
    if constexpr (detail::KeyedMapping<R>) {
      if (static_cast<std::size_t>(std::ranges::distance(other)) != size()) return false;
      for (const auto& [k, v] : other) {
        auto mine = cache_.get<T>(Key(k));
        if (!mine || !detail::values_equal(*mine, v)) return false;
      }
      return true;
    } else {
      return ordered_equal(other);
    }
  }

 private:
  explicit Index(DiskCache cache) : cache_(std::move(cache)) {}

  [[noreturn]] static void missing(const Key& key, const char* op, const char* instead) {
    detail::throw_error<KeyNotFound>("Index::" + std::string(op) + ": key " + key.repr() +
                                     " is not in the index (" + instead + ")");
  }
  std::optional<T> pop_opt(const Key& key) {
    if constexpr (std::is_same_v<T, DiskValue>) {
      return cache_.pop<T>(key, /*retry=*/true);
    } else {
      // Convert before deleting, so a value that is not a T stays.
      auto tx = cache_.transact(true);
      auto v = cache_.get<T>(key);
      if (v) cache_.erase(key, true);
      return v;
    }
  }
  template <class R>
  bool ordered_equal(const R& other) const {
    auto a = begin();
    auto b = std::ranges::begin(other);
    auto be = std::ranges::end(other);
    for (; a != end() && b != be; ++a, ++b) {
      const auto& [k, v] = *b;
      if (a->first != Key(k) || !detail::values_equal(a->second, v)) return false;
    }
    return a == end() && b == be;
  }

  mutable DiskCache cache_;  // a handle: reading through it does not change the Index object
};

}  // namespace dogpile
