#pragma once
/// @file backend.hpp
/// `CacheBackend`: where a region keeps its values. Public calls are non-virtual and check
/// their input once; a backend implements the protected `do_*` hooks (spdlog's sink shape).
/// A new byte backend needs only `do_get`, `do_set` and `do_erase`; multi-operations, a
/// distributed mutex and in-process object storage are optional overrides.

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <typeindex>
#include <utility>
#include <vector>

#include "dogpile/codec.hpp"
#include "dogpile/error.hpp"
#include "dogpile/mutex.hpp"

namespace dogpile {

/// A live C++ object kept by an in-process backend (`memory`): no serialization on a hit.
struct StoredObject {
  std::shared_ptr<const void> payload;  ///< points to a `const T`
  std::type_index type = typeid(void);  ///< `typeid(T)`
  Metadata meta;                        ///< creation time etc.
  std::size_t size_hint = 0;            ///< approximate bytes, for `max_bytes` bounds
};

/// One key/value pair of bytes for `set_multi`.
using BytesItem = std::pair<std::string, std::string>;
/// One key/object pair for `set_objects`.
using ObjectItem = std::pair<std::string, StoredObject>;

/// The abstract backend. Thread-safety: every implementation shipped with dogpile-cpp is safe
/// to call from many threads at once; a custom backend must be too.
class CacheBackend {
 public:
  virtual ~CacheBackend() = default;
  CacheBackend() = default;
  CacheBackend(const CacheBackend&) = delete;
  CacheBackend& operator=(const CacheBackend&) = delete;

  /// The bytes stored under `key`, or nullopt. @throws BackendError on I/O failure.
  std::optional<std::string> get(std::string_view key) { return do_get(key); }
  /// One result per key, in order. An empty list does not touch the backend.
  std::vector<std::optional<std::string>> get_multi(std::span<const std::string> keys) {
    if (keys.empty()) return {};
    return do_get_multi(keys);
  }
  /// Stores bytes. @throws BackendError on I/O failure, ValidationError on a bad key.
  void set(std::string_view key, std::string_view value) { do_set(key, value); }
  /// Stores many. An empty list does not touch the backend.
  void set_multi(std::span<const BytesItem> items) {
    if (!items.empty()) do_set_multi(items);
  }
  /// Removes `key`; removing a missing key is not an error.
  void erase(std::string_view key) { do_erase(key); }
  /// Removes many; missing keys are fine.
  void erase_multi(std::span<const std::string> keys) {
    if (!keys.empty()) do_erase_multi(keys);
  }

  /// A mutex for the dogpile lock on `key`, or nullptr to let the region use an in-process
  /// per-key mutex. Distributed backends return a lock that spans processes or hosts.
  std::shared_ptr<CacheMutex> get_mutex(std::string_view key) { return do_get_mutex(key); }

  /// True if this backend keeps live C++ objects (`get_object`/`set_object`) instead of bytes.
  [[nodiscard]] bool stores_objects() const { return do_stores_objects(); }
  /// Object storage (only when `stores_objects()`).
  std::optional<StoredObject> get_object(std::string_view key) { return do_get_object(key); }
  std::vector<std::optional<StoredObject>> get_objects(std::span<const std::string> keys) {
    if (keys.empty()) return {};
    return do_get_objects(keys);
  }
  void set_object(std::string_view key, StoredObject obj) { do_set_object(key, std::move(obj)); }
  void set_objects(std::span<const ObjectItem> items) {
    if (!items.empty()) do_set_objects(items);
  }

 protected:
  virtual std::optional<std::string> do_get(std::string_view key) = 0;
  virtual void do_set(std::string_view key, std::string_view value) = 0;
  virtual void do_erase(std::string_view key) = 0;

  virtual std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) {
    std::vector<std::optional<std::string>> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(do_get(k));
    return out;
  }
  virtual void do_set_multi(std::span<const BytesItem> items) {
    for (const auto& [k, v] : items) do_set(k, v);
  }
  virtual void do_erase_multi(std::span<const std::string> keys) {
    for (const auto& k : keys) do_erase(k);
  }
  virtual std::shared_ptr<CacheMutex> do_get_mutex(std::string_view /*key*/) { return nullptr; }

  [[nodiscard]] virtual bool do_stores_objects() const { return false; }
  virtual std::optional<StoredObject> do_get_object(std::string_view /*key*/) {
    detail::throw_error<BackendError>("this backend does not store objects");
  }
  virtual std::vector<std::optional<StoredObject>> do_get_objects(
      std::span<const std::string> keys) {
    std::vector<std::optional<StoredObject>> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(do_get_object(k));
    return out;
  }
  virtual void do_set_object(std::string_view /*key*/, StoredObject /*obj*/) {
    detail::throw_error<BackendError>("this backend does not store objects");
  }
  virtual void do_set_objects(std::span<const ObjectItem> items) {
    for (const auto& [k, o] : items) do_set_object(k, o);
  }
};

/// A backend that wraps another and forwards everything to it; override the hooks you want to
/// intercept and call `ProxyBackend::do_…` (or `proxied()`) to pass on. dogpile's ProxyBackend.
/// Listed in `ConfigureOptions::wrap`, the first proxy is the outermost.
class ProxyBackend : public CacheBackend {
 public:
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
