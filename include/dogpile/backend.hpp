#pragma once
/// @file backend.hpp
/// `CacheBackend`: where a region keeps its values. Public calls are non-virtual and do the
/// shared work once for every backend (spdlog's sink shape): they check keys against the rules
/// the backend declares (`KeyRules`: maximum length, forbidden bytes, mangle or refuse), and
/// turn any non-dogpile exception a client library throws into `BackendError` naming the
/// backend. A backend implements the protected `do_*` hooks.
///
/// A new byte backend needs only `do_get`, `do_set` and `do_erase`; multi-operations, a
/// distributed mutex and in-process object storage are optional overrides.
///
/// What every hook must do, and may throw:
/// * receives keys that already passed the key rules (never a key it declared it cannot take);
/// * reports a miss as `std::nullopt`, never as an exception;
/// * throws `BackendError` when its storage fails — a network backend the subclass that says
///   why: `ConnectionError`, `TimeoutError`, `ReplyError`, `ClusterDownError` (error.hpp) —
///   and `ValidationError` for input it refuses; other exceptions are wrapped into `BackendError`
///   by the public call;
/// * is thread-safe: a region calls it from many threads at once.

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include "dogpile/error.hpp"
#include "dogpile/limits.hpp"
#include "dogpile/metadata.hpp"
#include "dogpile/mutex.hpp"

namespace dogpile {

/// A live C++ object kept by an in-process backend (`memory`): no serialization on a hit.
struct StoredObject {
  std::shared_ptr<const void> payload{};  ///< points to a `const T`
  std::type_index type = typeid(void);    ///< `typeid(T)`
  Metadata meta{};                        ///< creation time etc.
  std::size_t size_hint = 0;  ///< bytes the object costs (`dogpile::weigh`), for `max_bytes`
};

/// Which decoded values a region can use: its value type and how it turns bytes into a value
/// (two regions that could decode the same bytes into different values differ in `decoding`
/// or `limit`). Plain aggregate, compared member by member.
struct DecodedKind {
  std::type_index type = typeid(void);  ///< `typeid(T)`
  std::uint64_t decoding = 0;           ///< the region's payload format and string codec
  std::uint64_t limit = 0;              ///< the largest payload the region inflates
  friend bool operator==(const DecodedKind&, const DecodedKind&) = default;
};

/// A value a byte backend keeps decoded next to the bytes it came from (the Redis near cache's
/// L1), so that a region's hit is not decoded again. Immutable once made.
struct DecodedValue {
  std::shared_ptr<const void> object{};  ///< points to a `const T` (`kind.type`)
  DecodedKind kind{};                    ///< what it was decoded as (type, codec, limit)
  Metadata meta{};            ///< the envelope's metadata (creation time, version, delta)
  std::size_t size_hint = 0;  ///< bytes the object costs (`dogpile::weigh` + control block)
};

/// What `CacheBackend::get_decodable` returns: a decoded value of the asked kind, or the bytes.
struct DecodableBytes {
  /// A value of the asked kind decoded from the bytes stored now; null when there is none.
  std::shared_ptr<const DecodedValue> decoded{};
  /// The bytes stored under the key (empty when `decoded` is set, or on a miss).
  std::optional<std::string> bytes{};
  /// Where `keep_decoded` attaches the value decoded from `bytes`; null: nowhere (opaque).
  std::shared_ptr<void> slot{};
};

/// How to copy, share and destroy a `T` without naming `T` (`object_ops<T>` is the table for
/// `T`): lets a region hand an in-process backend a value that it may keep inline in its own
/// node instead of behind a `shared_ptr` (`CacheBackend::set_object_copy`).
struct ObjectOps {
  const std::type_info* type;                   ///< `&typeid(T)`
  std::size_t size;                             ///< `sizeof(T)`
  std::size_t align;                            ///< `alignof(T)`
  bool nothrow_move;                            ///< `T` has a non-throwing move constructor
  void (*copy)(void* dst, const void* src);     ///< copy-constructs a `T` at `dst`
  void (*move)(void* dst, void* src) noexcept;  ///< move-constructs (only if nothrow_move)
  void (*destroy)(void* object) noexcept;       ///< destroys the `T` at `object`
  std::shared_ptr<const void> (*share)(const void* src);  ///< `make_shared<const T>(copy)`
};

/// The `ObjectOps` of a copyable `T`.
template <class T>
inline const ObjectOps object_ops{
    &typeid(T),
    sizeof(T),
    alignof(T),
    std::is_nothrow_move_constructible_v<T>,
    [](void* dst, const void* src) { ::new (dst) T(*static_cast<const T*>(src)); },
    [](void* dst, void* src) noexcept {
      if constexpr (std::is_nothrow_move_constructible_v<T>) {
        ::new (dst) T(std::move(*static_cast<T*>(src)));
      } else {
        (void)dst, (void)src;  // never called: nothrow_move is false
      }
    },
    [](void* object) noexcept { static_cast<T*>(object)->~T(); },
    [](const void* src) -> std::shared_ptr<const void> {
      return std::make_shared<const T>(*static_cast<const T*>(src));
    }};

/// Where `CacheBackend::read_object` copies a stored object: `copy(object, out)` is called
/// (under the backend's lock, so it must not call back into the backend) only when the stored
/// object is a `*type`.
struct ObjectSink {
  const std::type_info* type;                   ///< `&typeid(T)`: the type the caller wants
  void (*copy)(const void* object, void* out);  ///< copies the `const T` at `object` into `out`
  void* out;                                    ///< the caller's storage, passed to `copy`
};

/// What `read_object` found under a key (whether or not it was copied).
struct ObjectInfo {
  std::type_index type = typeid(void);  ///< the stored object's type
  Metadata meta{};                      ///< creation time etc., as stored
  std::size_t size_hint = 0;            ///< as given to `set_object` / `set_object_copy`
};

/// One key/value pair of bytes for `set_multi`.
using BytesItem = std::pair<std::string, std::string>;
/// One key/object pair for `set_objects`.
using ObjectItem = std::pair<std::string, StoredObject>;

/// The keys a backend can take. `CacheBackend`'s public calls check every key against them
/// once, so the hooks never see a key the storage would reject or misread. Plain aggregate.
struct KeyRules {
  std::size_t max_length = 0;  ///< longest key in bytes; 0 = no limit
  /// Refuse spaces and control bytes (< 0x20, 0x7f), as memcached's text protocol must.
  bool no_spaces_or_control = false;
  /// A key that breaks a rule: true = replaced by its SHA-1 hex digest (40 bytes, as
  /// `dogpile::sha1_mangle_key`); false = `ValidationError`.
  bool mangle_bad_keys = false;
};

/// The abstract backend. Thread-safety: every implementation shipped with dogpile-cpp is safe
/// to call from many threads at once; a custom backend must be too.
class CacheBackend {
 public:
  virtual ~CacheBackend();
  /// A backend with no key rules, named "custom" in error messages.
  CacheBackend() = default;
  /// A backend named `name` (in error messages) whose keys follow `rules`.
  explicit CacheBackend(std::string name, KeyRules rules = {})
      : name_(std::move(name)), rules_(rules) {}
  CacheBackend(const CacheBackend&) = delete;
  CacheBackend& operator=(const CacheBackend&) = delete;

  /// The backend's name, as error messages show it.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// The keys this backend takes.
  [[nodiscard]] const KeyRules& key_rules() const noexcept { return rules_; }
  /// The key the storage sees for `key`: itself, or its SHA-1 hex when it breaks a rule and
  /// the backend mangles bad keys. @throws ValidationError when it breaks a rule otherwise.
  [[nodiscard]] std::string storage_key(std::string_view key) const;

  /// The bytes stored under `key`, or nullopt. @throws BackendError on I/O failure,
  /// ValidationError for a key the backend cannot take.
  std::optional<std::string> get(std::string_view key) {
    if (trivial_rules()) return call([&] { return do_get(key); });
    std::string m;
    const auto k = checked(key, &m);
    return call([&] { return do_get(k); });
  }
  /// One result per key, in order. An empty list does not touch the backend.
  /// @throws as `get`.
  std::vector<std::optional<std::string>> get_multi(std::span<const std::string> keys) {
    if (keys.empty()) return {};
    std::vector<std::string> m;
    const auto ks = checked_all(keys, m);
    return call([&] { return do_get_multi(ks); });
  }
  /// Stores bytes. @throws BackendError on I/O failure, ValidationError on a bad key.
  void set(std::string_view key, std::string_view value) {
    if (trivial_rules()) return call([&] { do_set(key, value); });
    std::string m;
    const auto k = checked(key, &m);
    call([&] { do_set(k, value); });
  }
  /// Stores many. An empty list does not touch the backend. @throws as `set`.
  void set_multi(std::span<const BytesItem> items);
  /// Removes `key`; removing a missing key is not an error. @throws as `set`.
  void erase(std::string_view key);
  /// Removes many; missing keys are fine. @throws as `set`.
  void erase_multi(std::span<const std::string> keys);

  /// A mutex for the dogpile lock on `key`, or nullptr to let the region use an in-process
  /// per-key mutex. Distributed backends return a lock that spans processes or hosts.
  /// @throws BackendError, ValidationError (a key the backend cannot take).
  std::shared_ptr<CacheMutex> get_mutex(std::string_view key);

  /// True if this backend keeps live C++ objects (`get_object`/`set_object`) instead of bytes.
  [[nodiscard]] bool stores_objects() const { return do_stores_objects(); }
  /// The largest value this backend is configured to return (its `max_value_bytes` option;
  /// `default_max_value_bytes` for backends without one). A region decodes this backend's bytes
  /// with the smaller of this and its own `CodecOptions::max_value_bytes`, so a stored payload
  /// that inflates past it is a miss (CantDeserialize). Never throws.
  [[nodiscard]] std::size_t max_value_bytes() const { return do_max_value_bytes(); }
  /// True if this byte backend can keep values decoded next to their bytes
  /// (`get_decodable` / `keep_decoded`): the `redis` backends with a near cache.
  [[nodiscard]] bool keeps_decoded() const { return do_keeps_decoded(); }
  /// The value stored under `key`: decoded, when the backend kept one of `kind` decoded from
  /// the bytes it would return now, else the bytes with a slot to attach their decoded value
  /// to. Serves under the same rules as `get` (an invalidation drops the decoded copy with the
  /// bytes). Default: `get` and no slot. @throws as `get`.
  DecodableBytes get_decodable(std::string_view key, const DecodedKind& kind) {
    if (trivial_rules()) return call([&] { return do_get_decodable(key, kind); });
    std::string m;
    const auto k = checked(key, &m);
    return call([&] { return do_get_decodable(k, kind); });
  }
  /// Attaches `value`, decoded from the bytes `get_decodable` returned with `slot`, to those
  /// bytes: a later `get_decodable` of the same kind returns it while the same bytes are
  /// served. A no-op for a null slot, or when those bytes were dropped or replaced since.
  /// Never throws (the value is just not kept).
  void keep_decoded(const std::shared_ptr<void>& slot,
                    std::shared_ptr<const DecodedValue> value) noexcept {
    if (slot) do_keep_decoded(slot, std::move(value));
  }
  /// The object stored under `key` (only when `stores_objects()`). @throws as `get`.
  std::optional<StoredObject> get_object(std::string_view key) {
    if (trivial_rules()) return call([&] { return do_get_object(key); });
    std::string m;
    const auto k = checked(key, &m);
    return call([&] { return do_get_object(k); });
  }
  /// Reads the object stored under `key` without sharing it: when it is a `*sink.type` it is
  /// copied into `sink` (see `ObjectSink`); returns its type and metadata, or nullopt on a
  /// miss. Same result as `get_object`, but `memory` copies straight from its node (no
  /// `shared_ptr` copy). Only when `stores_objects()`. @throws as `get`, and what the copy
  /// throws.
  std::optional<ObjectInfo> read_object(std::string_view key, const ObjectSink& sink) {
    if (trivial_rules()) return call([&] { return do_read_object(key, sink); });
    std::string m;
    const auto k = checked(key, &m);
    return call([&] { return do_read_object(k, sink); });
  }
  /// Stores a copy of the `T` at `value` (`ops` = `object_ops<T>`): the same as `set_object`
  /// with a `StoredObject` made by `ops.share`, but `memory` keeps a small value inline in its
  /// node (one allocation per entry). Only when `stores_objects()`. @throws as `set`.
  void set_object_copy(std::string_view key, const void* value, const ObjectOps& ops,
                       const Metadata& meta, std::size_t size_hint) {
    if (trivial_rules()) {
      return call([&] { do_set_object_copy(key, value, ops, meta, size_hint); });
    }
    std::string m;
    const auto k = checked(key, &m);
    call([&] { do_set_object_copy(k, value, ops, meta, size_hint); });
  }
  /// One object per key, in order (only when `stores_objects()`). @throws as `get`.
  std::vector<std::optional<StoredObject>> get_objects(std::span<const std::string> keys) {
    if (keys.empty()) return {};
    std::vector<std::string> m;
    const auto ks = checked_all(keys, m);
    return call([&] { return do_get_objects(ks); });
  }
  /// Stores an object (only when `stores_objects()`). @throws as `set`.
  void set_object(std::string_view key, StoredObject obj) {
    if (trivial_rules()) return call([&] { do_set_object(key, std::move(obj)); });
    std::string m;
    const auto k = checked(key, &m);
    call([&] { do_set_object(k, std::move(obj)); });
  }
  /// Stores many objects (only when `stores_objects()`). @throws as `set`.
  void set_objects(std::span<const ObjectItem> items);

 protected:
  /// The bytes under `key` or nullopt.
  virtual std::optional<std::string> do_get(std::string_view key) = 0;
  /// Stores `value` under `key`, replacing what was there.
  virtual void do_set(std::string_view key, std::string_view value) = 0;
  /// Removes `key`; a missing key is not an error.
  virtual void do_erase(std::string_view key) = 0;

  /// Default: one `do_get` per key. Override with one round trip where the storage has one.
  virtual std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) {
    std::vector<std::optional<std::string>> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(do_get(k));
    return out;
  }
  /// Default: one `do_set` per item.
  virtual void do_set_multi(std::span<const BytesItem> items);
  /// Default: one `do_erase` per key.
  virtual void do_erase_multi(std::span<const std::string> keys);
  /// Default: nullptr (the region's in-process mutex).
  virtual std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key);

  /// Default: false (a byte backend).
  [[nodiscard]] virtual bool do_stores_objects() const { return false; }
  /// Default: `default_max_value_bytes`.
  [[nodiscard]] virtual std::size_t do_max_value_bytes() const { return default_max_value_bytes; }
  /// Default: false. Override together with the two hooks below.
  [[nodiscard]] virtual bool do_keeps_decoded() const { return false; }
  /// Default: `do_get` and no slot.
  virtual DecodableBytes do_get_decodable(std::string_view key, const DecodedKind& /*kind*/) {
    return DecodableBytes{nullptr, do_get(key), nullptr};
  }
  /// Default: nothing kept. Must not throw.
  virtual void do_keep_decoded(const std::shared_ptr<void>& /*slot*/,
                               std::shared_ptr<const DecodedValue> /*value*/) noexcept {}
  /// Object hooks: override all of them together with `do_stores_objects`.
  virtual std::optional<StoredObject> do_get_object(std::string_view key);
  /// Default: one `do_get_object` per key.
  virtual std::vector<std::optional<StoredObject>> do_get_objects(
      std::span<const std::string> keys);
  /// Stores an object.
  virtual void do_set_object(std::string_view key, StoredObject obj);
  /// Default: `do_get_object`, then the copy from its payload.
  virtual std::optional<ObjectInfo> do_read_object(std::string_view key, const ObjectSink& sink);
  /// Default: `do_set_object` with a shared copy (`ops.share`).
  virtual void do_set_object_copy(std::string_view key, const void* value, const ObjectOps& ops,
                                  const Metadata& meta, std::size_t size_hint);
  /// Default: one `do_set_object` per item.
  virtual void do_set_objects(std::span<const ObjectItem> items);

 private:
  [[nodiscard]] bool trivial_rules() const noexcept {
    return rules_.max_length == 0 && !rules_.no_spaces_or_control;
  }
  /// The first rule `key` breaks, or nullptr.
  [[nodiscard]] const char* broken_rule(std::string_view key) const noexcept;
  /// `key`, or its mangled form stored in `*storage`. @throws ValidationError.
  std::string_view checked(std::string_view key, std::string* storage) const;
  std::span<const std::string> checked_all(std::span<const std::string> keys,
                                           std::vector<std::string>& storage) const;
  /// Runs a hook; an exception that is not a dogpile::Error (a client library's) becomes
  /// BackendError naming the backend. Out-of-memory passes through unchanged.
  template <class F>
  std::invoke_result_t<F&> call(F&& f) const {
    try {
      return f();
    } catch (...) {
      rethrow_translated();  // out of line: the hot path keeps one small landing pad
    }
  }
  [[noreturn, gnu::noinline, gnu::cold]] void rethrow_translated() const;

  std::string name_ = "custom";
  KeyRules rules_{};
};

/// A backend that wraps another and forwards everything to it; override the hooks you want to
/// intercept and call `ProxyBackend::do_…` (or `proxied()`) to pass on. dogpile's ProxyBackend.
/// Listed in `ConfigureOptions::wrap`, the first proxy is the outermost. A proxy does not
/// keep decoded values (`keeps_decoded()` is false), so every read of a region reaches its
/// `do_get`.
class ProxyBackend : public CacheBackend {
 public:
  /// A proxy named "proxy" with no key rules of its own (the wrapped backend checks its keys).
  ProxyBackend() : CacheBackend("proxy") {}
  /// Sets the wrapped backend; returns this proxy (dogpile's `wrap`).
  std::shared_ptr<CacheBackend> wrap(std::shared_ptr<CacheBackend> backend) {
    proxied_ = std::move(backend);
    return proxied_;
  }
  /// The wrapped backend (nullptr before `wrap`).
  [[nodiscard]] const std::shared_ptr<CacheBackend>& proxied() const { return proxied_; }

 protected:
  std::optional<std::string> do_get(std::string_view key) override { return proxied_->get(key); }
  void do_set(std::string_view key, std::string_view value) override { proxied_->set(key, value); }
  void do_erase(std::string_view key) override { proxied_->erase(key); }
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override {
    return proxied_->get_multi(keys);
  }
  void do_set_multi(std::span<const BytesItem> items) override { proxied_->set_multi(items); }
  void do_erase_multi(std::span<const std::string> keys) override { proxied_->erase_multi(keys); }
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key) override {
    return proxied_->get_mutex(key);
  }
  [[nodiscard]] bool do_stores_objects() const override { return proxied_->stores_objects(); }
  [[nodiscard]] std::size_t do_max_value_bytes() const override {
    return proxied_ ? proxied_->max_value_bytes() : default_max_value_bytes;
  }
  std::optional<StoredObject> do_get_object(std::string_view key) override {
    return proxied_->get_object(key);
  }
  std::vector<std::optional<StoredObject>> do_get_objects(
      std::span<const std::string> keys) override {
    return proxied_->get_objects(keys);
  }
  void do_set_object(std::string_view key, StoredObject obj) override {
    proxied_->set_object(key, std::move(obj));
  }
  void do_set_objects(std::span<const ObjectItem> items) override { proxied_->set_objects(items); }

 private:
  std::shared_ptr<CacheBackend> proxied_;
};

}  // namespace dogpile
