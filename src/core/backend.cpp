// The non-template parts of CacheBackend (backend.hpp), compiled once: key checks, error
// translation, the default hooks, the multi-key writes and the mutex call. The single-key
// reads and writes and get_multi stay inline in the header (the hot paths).

#include "dogpile/backend.hpp"

#include "dogpile/detail/sha1.hpp"

namespace dogpile {

CacheBackend::~CacheBackend() = default;

std::string CacheBackend::storage_key(std::string_view key) const {
  std::string m;
  return std::string(checked(key, &m));
}

void CacheBackend::set_multi(std::span<const BytesItem> items) {
  if (items.empty()) return;
  if (trivial_rules()) return call([&] { do_set_multi(items); });
  std::vector<BytesItem> copy(items.begin(), items.end());
  for (auto& [k, v] : copy) k = storage_key(k);
  call([&] { do_set_multi(copy); });
}

void CacheBackend::erase(std::string_view key) {
  std::string m;
  const auto k = checked(key, &m);
  call([&] { do_erase(k); });
}

void CacheBackend::erase_multi(std::span<const std::string> keys) {
  if (keys.empty()) return;
  std::vector<std::string> m;
  const auto ks = checked_all(keys, m);
  call([&] { do_erase_multi(ks); });
}

std::shared_ptr<CacheMutex> CacheBackend::get_mutex(std::string_view key) {
  std::string m;
  const auto k = checked(key, &m);
  return call([&] { return do_get_mutex(k); });
}

void CacheBackend::set_objects(std::span<const ObjectItem> items) {
  if (items.empty()) return;
  if (trivial_rules()) return call([&] { do_set_objects(items); });
  std::vector<ObjectItem> copy(items.begin(), items.end());
  for (auto& [k, v] : copy) k = storage_key(k);
  call([&] { do_set_objects(copy); });
}

void CacheBackend::do_set_multi(std::span<const BytesItem> items) {
  for (const auto& [k, v] : items) do_set(k, v);
}

void CacheBackend::do_erase_multi(std::span<const std::string> keys) {
  for (const auto& k : keys) do_erase(k);
}

std::shared_ptr<CacheMutex> CacheBackend::do_get_mutex(std::string_view /*key*/) { return nullptr; }

std::optional<StoredObject> CacheBackend::do_get_object(std::string_view /*key*/) {
  detail::throw_error<BackendError>(name_ + " backend does not store objects");
}

std::vector<std::optional<StoredObject>> CacheBackend::do_get_objects(
    std::span<const std::string> keys) {
  std::vector<std::optional<StoredObject>> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(do_get_object(k));
  return out;
}

void CacheBackend::do_set_object(std::string_view /*key*/, StoredObject /*obj*/) {
  detail::throw_error<BackendError>(name_ + " backend does not store objects");
}

std::optional<ObjectInfo> CacheBackend::do_read_object(std::string_view key,
                                                       const ObjectSink& sink) {
  auto o = do_get_object(key);
  if (!o) return std::nullopt;
  if (o->type == *sink.type) sink.copy(o->payload.get(), sink.out);
  return ObjectInfo{o->type, o->meta, o->size_hint};
}

void CacheBackend::do_set_object_copy(std::string_view key, const void* value, const ObjectOps& ops,
                                      const Metadata& meta, std::size_t size_hint) {
  do_set_object(key, StoredObject{ops.share(value), *ops.type, meta, size_hint});
}

void CacheBackend::do_set_objects(std::span<const ObjectItem> items) {
  for (const auto& [k, o] : items) do_set_object(k, o);
}

const char* CacheBackend::broken_rule(std::string_view key) const noexcept {
  if (rules_.max_length != 0 && key.size() > rules_.max_length) return "is too long";
  if (rules_.no_spaces_or_control) {
    for (const char ch : key) {
      const auto c = static_cast<unsigned char>(ch);
      if (c <= 0x20 || c == 0x7f) return "contains a space or control character";
    }
  }
  return nullptr;
}

std::string_view CacheBackend::checked(std::string_view key, std::string* storage) const {
  if (trivial_rules()) return key;
  const char* why = broken_rule(key);
  if (why == nullptr) return key;
  if (!rules_.mangle_bad_keys) {
    std::string shown(key.substr(0, 64));
    detail::throw_error<ValidationError>(
        name_ + " backend cannot take the key '" + shown + (key.size() > 64 ? "...'" : "'") + " (" +
        std::to_string(key.size()) + " bytes): it " + why +
        (rules_.max_length ? " (at most " + std::to_string(rules_.max_length) +
                                 " bytes, no spaces or control characters)"
                           : std::string()) +
        "; give the region a key_mangler such as dogpile::sha1_mangle_key");
  }
  *storage = detail::sha1_hex(key);
  return *storage;
}

std::span<const std::string> CacheBackend::checked_all(std::span<const std::string> keys,
                                                       std::vector<std::string>& storage) const {
  if (trivial_rules()) return keys;
  bool all_ok = true;
  for (const auto& k : keys) all_ok = all_ok && broken_rule(k) == nullptr;
  if (all_ok) return keys;
  storage.reserve(keys.size());
  for (const auto& k : keys) storage.push_back(storage_key(k));
  return storage;
}

void CacheBackend::rethrow_translated() const {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    detail::throw_error<BackendError>(name_ + " backend failed: " + e.what());
  }
}

}  // namespace dogpile
