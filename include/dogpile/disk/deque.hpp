#pragma once
/// @file deque.hpp
/// `dogpile::Deque<T>`: python-diskcache's `Deque`, a persistent double-ended queue on a
/// `DiskCache`, sharing the directory format with Python.
///
/// ```cpp
/// dogpile::Deque<std::string> jobs("/var/cache/jobs", {.maxlen = 1000});
/// jobs.append("resize a.png");
/// jobs.appendleft("urgent");
/// std::string next = jobs.popleft();   // "urgent"; throws dogpile::IndexError when empty
/// for (const std::string& job : jobs) { ... }
/// ```
///
/// Storage is diskcache's: items are queue entries of the cache (`push`/`pull` without a
/// prefix), integer keys counting up from 500000000000000 at the back and down at the front,
/// in key order. So `diskcache.Deque(directory=d)` in Python and `dogpile::Deque` in C++ read and
/// write one directory, for int / float / str / bytes items (`T` = an integer, a floating-point
/// type, `std::string`, `dogpile::Bytes`, or `dogpile::DiskValue` for mixed items). Other types
/// go through `dogpile::Codec<T>` (JSON by default) and are bytes to Python.
///
/// Why a template over the item type: a `std::deque<T>` user keeps their `T`, conversions are
/// checked where the item is read (a stored item that is not a `T` throws `TypeMismatch`, and a
/// pop that throws it removes nothing), and `Deque<DiskValue>` is the mixed-type choice that
/// reads anything Python stored.
///
/// Differs from Python (all deliberate): `extend`/`extendleft`, `rotate` and `reverse` each run
/// in one transaction (atomic, and one commit instead of one per item; Python's reverse copies
/// into a temporary Deque and is not atomic); setting an item whose key vanished concurrently
/// moves on to the next item instead of re-creating the vanished key; `maxlen` belongs to the
/// handle, as in Python (it is not stored in the directory). Indexing is O(n), as upstream: it
/// lists the keys (use `peek`/`peekleft` for the ends).
///
/// Thread-safety: every method may be called from any thread and from many processes at once
/// (each call is atomic); `set_maxlen` must not race with other calls on the *same handle*.
/// Copies of a `Deque` share the open cache.

#include <algorithm>
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

/// Python's `IndexError`: a pop or peek on an empty `Deque`, or an index out of range. The
/// message is diskcache's (`pop from an empty deque`, `peek from an empty deque`,
/// `deque index out of range`).
class IndexError : public Error {
 public:
  using Error::Error;
};

/// Python's `ValueError` from `Deque::remove`: the value is not in the deque.
class ValueNotFound : public Error {
 public:
  using Error::Error;
};

/// Options of `Deque`. Plain aggregate.
struct DequeOptions {
  /// Most items kept: an append beyond it drops the item at the other end (in the same
  /// transaction). nullopt = unbounded. Belongs to this handle, not the directory (as Python).
  std::optional<std::size_t> maxlen{};
  /// Options of the `DiskCache` created on the directory. `eviction_policy` left unset becomes
  /// `none` (as Python's Deque; an evicting policy would silently drop items, so any other
  /// policy is refused).
  DiskCacheOptions cache{};
};

/// A persistent double-ended queue of `T` (python-diskcache's `Deque`); see the file comment.
template <class T = DiskValue>
class Deque {
  struct FetchItem {
    std::optional<T> operator()(DiskCache& cache, const Key& key) const {
      return cache.get<T>(key);
    }
  };

 public:
  /// The item type.
  using value_type = T;  // NOLINT(readability-identifier-naming): the standard name
  /// The input iterator of `begin()` / `rbegin()`; ends at `std::default_sentinel`.
  using iterator =  // NOLINT(readability-identifier-naming): the standard name
      detail::SnapshotIterator<T, FetchItem>;

  /// Opens (creating if needed) the deque stored in `directory`.
  /// @throws ValidationError for an evicting `options.cache.eviction_policy` or a bad cache
  /// option, and whatever `DiskCache`'s constructor throws.
  explicit Deque(const std::filesystem::path& directory, DequeOptions options = {})
      : cache_(directory, detail::persistent_options(std::move(options.cache), "Deque")),
        maxlen_(options.maxlen) {}

  /// A deque on an existing cache (python's `Deque.fromcache`); it shares `cache`'s queue
  /// (its integer keys in 0 < key < 999999999999999). Existing items are kept even beyond
  /// `maxlen`.
  static Deque fromcache(DiskCache cache, std::optional<std::size_t> maxlen = std::nullopt) {
    return Deque(std::move(cache), maxlen);
  }

  /// The cache holding the items (a handle sharing the open cache).
  [[nodiscard]] DiskCache& cache() const noexcept { return cache_; }
  /// The directory.
  [[nodiscard]] const std::filesystem::path& directory() const noexcept {
    return cache_.directory();
  }
  /// The most items kept (nullopt = unbounded).
  [[nodiscard]] std::optional<std::size_t> maxlen() const noexcept { return maxlen_; }
  /// Sets `maxlen`, dropping items from the front, in one transaction, until at most `maxlen`
  /// remain (python's maxlen setter). Waits for the write lock. Not safe against concurrent
  /// calls on this handle. @throws DatabaseError.
  void set_maxlen(std::optional<std::size_t> maxlen) {
    maxlen_ = maxlen;
    if (!maxlen_) return;
    auto tx = cache_.transact(/*retry=*/true);
    while (size() > *maxlen_ && take(Side::front)) {
    }
  }

  // ---- ends --------------------------------------------------------------------------------

  /// Adds `value` at the back; if that makes more than `maxlen` items, drops the front one, in
  /// the same transaction. Waits for the write lock (retry, as Python).
  /// @throws DatabaseError, ValidationError (a value SQLite cannot hold).
  void append(const T& value) {
    if (!maxlen_) {  // one push is atomic on its own
      cache_.push(value, {.retry = true});
      return;
    }
    auto tx = cache_.transact(true);
    push_trim(detail::to_disk_value(value), Side::back);
  }
  /// Adds `value` at the front; if that makes more than `maxlen` items, drops the back one.
  /// @throws as `append`.
  void appendleft(const T& value) {
    if (!maxlen_) {
      cache_.push(value, {.side = Side::front, .retry = true});
      return;
    }
    auto tx = cache_.transact(true);
    push_trim(detail::to_disk_value(value), Side::front);
  }
  /// Appends every element of `values` at the back, in one transaction (all or none).
  /// @throws as `append`.
  template <std::ranges::input_range R>
  void extend(R&& values) {
    auto tx = cache_.transact(true);
    for (auto&& v : values) push_trim(encode(v), Side::back);
  }
  /// Appends every element of `values` at the front (so they end up reversed, as Python's
  /// `extendleft`), in one transaction. @throws as `append`.
  template <std::ranges::input_range R>
  void extendleft(R&& values) {
    auto tx = cache_.transact(true);
    for (auto&& v : values) push_trim(encode(v), Side::front);
  }
  /// Removes and returns the back item.
  /// @throws IndexError("pop from an empty deque"), TypeMismatch / CantDeserialize if the item
  /// is not a `T` (the item stays), DatabaseError.
  T pop() { return pop_side(Side::back); }
  /// Removes and returns the front item. @throws as `pop`.
  T popleft() { return pop_side(Side::front); }
  /// The back item, not removed. @throws IndexError("peek from an empty deque"), TypeMismatch.
  [[nodiscard]] T peek() const { return peek_side(Side::back); }
  /// The front item, not removed. @throws as `peek`.
  [[nodiscard]] T peekleft() const { return peek_side(Side::front); }

  // ---- by index (O(n), as upstream) -------------------------------------------------------

  /// The item at `index` (0 = front; negative counts from the back: -1 is the back).
  /// @throws IndexError("deque index out of range"), TypeMismatch.
  [[nodiscard]] T at(std::int64_t index) const {
    return at_index(index, [&](const Key& k) { return cache_.get<T>(k); });
  }
  /// Replaces the item at `index` (keeping its position). @throws as `at`.
  void set(std::int64_t index, const T& value) {
    DiskValue v = detail::to_disk_value(value);
    at_index(index, [&](const Key& k) -> std::optional<bool> {
      auto tx = cache_.transact(true);
      if (!cache_.contains(k)) return std::nullopt;  // vanished: the next item takes its place
      cache_.set(k, v, {.retry = true});
      return true;
    });
  }
  /// Removes the item at `index`. @throws IndexError("deque index out of range").
  void erase(std::int64_t index) {
    at_index(index, [&](const Key& k) -> std::optional<bool> {
      if (!cache_.erase(k, true)) return std::nullopt;
      return true;
    });
  }

  // ---- whole deque --------------------------------------------------------------------------

  /// Front-to-back iteration over the items present when it starts (items removed meanwhile
  /// are skipped). Each item is read when the iterator reaches it.
  [[nodiscard]] iterator begin() const { return iterator(cache_, cache_.sorted_keys(), {}); }
  /// The end of `begin()` and `rbegin()`.
  [[nodiscard]] std::default_sentinel_t end() const noexcept { return {}; }
  /// Back-to-front iteration (python's `reversed(deque)`).
  [[nodiscard]] iterator rbegin() const {
    return iterator(cache_, cache_.sorted_keys(/*reverse=*/true), {});
  }
  /// The end of `rbegin()`.
  [[nodiscard]] std::default_sentinel_t rend() const noexcept { return {}; }
  /// `for (auto& v : deque.reversed())`: back to front.
  [[nodiscard]] detail::SnapshotRange<iterator> reversed() const { return {rbegin()}; }
  /// The items, front to back.
  [[nodiscard]] std::vector<T> to_vector() const {
    std::vector<T> out;
    for (const T& v : *this) out.push_back(v);
    return out;
  }
  /// Number of items (the cache's row count).
  [[nodiscard]] std::size_t size() const { return static_cast<std::size_t>(cache_.size()); }
  /// True if there are no items.
  [[nodiscard]] bool empty() const { return size() == 0; }
  /// Removes every item. @throws DatabaseError.
  void clear() { cache_.clear(/*retry=*/true); }
  /// How many items equal `value`.
  [[nodiscard]] std::size_t count(const T& value) const {
    return static_cast<std::size_t>(std::ranges::count(*this, value));
  }
  /// Removes the first item equal to `value`.
  /// @throws ValueNotFound("deque.remove(value): value not in deque").
  void remove(const T& value) {
    for (const Key& k : cache_.sorted_keys()) {
      auto item = cache_.get<T>(k);
      if (item && *item == value && cache_.erase(k, true)) return;
    }
    detail::throw_error<ValueNotFound>("deque.remove(value): value not in deque");
  }
  /// Reverses the items in place, atomically (one transaction swapping values between the
  /// keys; no temporary copy of the deque).
  void reverse() {
    auto tx = cache_.transact(true);
    std::vector<Key> keys = cache_.sorted_keys();
    if (keys.size() < 2) return;
    for (std::size_t i = 0, j = keys.size() - 1; i < j; ++i, --j) {
      auto a = cache_.get<DiskValue>(keys[i]);
      auto b = cache_.get<DiskValue>(keys[j]);
      if (a && b) {
        cache_.set(keys[i], *b, {.retry = true});
        cache_.set(keys[j], *a, {.retry = true});
      }
    }
  }
  /// Rotates right by `steps` (negative: left), in one transaction: `rotate(2)` on 0 1 2 3 4
  /// gives 3 4 0 1 2.
  void rotate(std::int64_t steps = 1) {
    auto tx = cache_.transact(true);
    const auto n = static_cast<std::int64_t>(size());
    if (n == 0) return;
    const Side from = steps >= 0 ? Side::back : Side::front;
    const Side to = steps >= 0 ? Side::front : Side::back;
    // |steps| % n without negating INT64_MIN.
    std::int64_t k = steps >= 0 ? steps % n : ((-(steps + 1)) % n + 1) % n;
    for (; k > 0; --k) {
      auto item = cache_.pull<DiskValue>({.side = from, .retry = true});
      if (!item) return;
      cache_.push(item->second, {.side = to, .retry = true});
    }
  }
  /// A write transaction over the deque (python's `transact()`): calls made by this thread
  /// until it is destroyed are atomic. Waits for the lock.
  [[nodiscard]] Transaction transact() { return cache_.transact(true); }

  /// Same items in the same order as another Deque (of any item type; `1 == 1.0`, as Python)
  /// or a container (`std::vector`, `std::deque`, …).
  template <std::ranges::input_range R>
  [[nodiscard]] bool operator==(const R& other) const {
    return std::ranges::equal(*this, other);
  }

 private:
  Deque(DiskCache cache, std::optional<std::size_t> maxlen)
      : cache_(std::move(cache)), maxlen_(maxlen) {}

  // An element of an extend range: as a T first (so Deque<double> stores ints as REAL), except
  // for the mixed Deque<DiskValue>, which stores each element as what it is.
  template <class V>
  static DiskValue encode(const V& v) {
    if constexpr (std::is_same_v<T, DiskValue>) {
      return detail::to_disk_value(v);
    } else {
      return detail::to_disk_value(static_cast<const T&>(v));
    }
  }
  // Runs inside the caller's transaction.
  void push_trim(const DiskValue& v, Side side) {
    cache_.push(v, {.side = side, .retry = true});
    if (maxlen_ && size() > *maxlen_) take(side == Side::back ? Side::front : Side::back);
  }
  // Drops the item at `side`; false if there was none.
  bool take(Side side) { return cache_.pull<DiskValue>({.side = side, .retry = true}).has_value(); }
  T pop_side(Side side) {
    if constexpr (std::is_same_v<T, DiskValue>) {
      auto item = cache_.pull<DiskValue>({.side = side, .retry = true});
      if (!item) detail::throw_error<IndexError>("pop from an empty deque");
      return std::move(item->second);
    } else {
      // Converting after a pull would lose an item that is not a T: peek (which converts)
      // and delete in one transaction instead.
      auto tx = cache_.transact(true);
      auto item = cache_.peek<T>({.side = side, .retry = true});
      if (!item) detail::throw_error<IndexError>("pop from an empty deque");
      cache_.erase(item->first, true);
      return std::move(item->second);
    }
  }
  T peek_side(Side side) const {
    auto item = cache_.peek<T>({.side = side, .retry = true});
    if (!item) detail::throw_error<IndexError>("peek from an empty deque");
    return std::move(item->second);
  }
  // diskcache's `_index`: the key at `index` in key order (from the back for negative
  // indexes); when `fn` reports it vanished (nullopt), the next key takes its place.
  template <class F>
  auto at_index(std::int64_t index, F fn) const {
    const auto n = static_cast<std::int64_t>(size());
    const bool back = index < 0;
    if (index >= n || index < -n) detail::throw_error<IndexError>("deque index out of range");
    std::vector<Key> keys = cache_.sorted_keys(back);
    for (auto pos = static_cast<std::size_t>(back ? -(index + 1) : index); pos < keys.size();
         ++pos) {
      if (auto r = fn(keys[pos])) return std::move(*r);
    }
    detail::throw_error<IndexError>("deque index out of range");
  }

  mutable DiskCache cache_;  // a handle: reading through it does not change the Deque object
  std::optional<std::size_t> maxlen_;
};

}  // namespace dogpile
