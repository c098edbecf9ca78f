// The `memcached` region backend on libmemcached 1.1: a client pool (pool.hpp), ketama hashing,
// timeouts on every call, an owner-checked `add` lease lock (lock.hpp). Arguments: options.hpp.
#include "dogpile/backends/memcached.hpp"

#include <libmemcached/memcached.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "lock.hpp"
#include "options.hpp"
#include "pool.hpp"

namespace dogpile {

using memcached_detail::in_step;

struct MemcachedBackend::Impl : memcached_detail::Pool {
  using Pool::Pool;
};

// ---- MemcachedBackend -------------------------------------------------------------------------

MemcachedBackend::MemcachedBackend(MemcachedOptions options)
    : CacheBackend("memcached", KeyRules{.max_length = 250,
                                         .no_spaces_or_control = true,
                                         .mangle_bad_keys = options.mangle_bad_keys}),
      impl_(std::make_shared<Impl>(std::move(options))) {}

MemcachedBackend::~MemcachedBackend() = default;

const MemcachedOptions& MemcachedBackend::options() const noexcept { return impl_->opts; }

std::size_t MemcachedBackend::value_size_limit() { return impl_->limit(); }

std::shared_ptr<CacheBackend> MemcachedBackend::from_arguments(const nlohmann::json& arguments) {
  return std::make_shared<MemcachedBackend>(memcached_detail::parse_arguments(arguments));
}

std::optional<std::string> MemcachedBackend::do_get(std::string_view key) {
  auto c = impl_->client();
  std::size_t len = 0;
  std::uint32_t flags = 0;
  memcached_return_t rc = MEMCACHED_SUCCESS;
  char* v = memcached_get(c.get(), key.data(), key.size(), &len, &flags, &rc);
  if (v == nullptr) {
    // memcached_get reports a failed read (a timeout, a refused allocation, a malformed reply)
    // as NOTFOUND; its last error says what happened.
    if (rc == MEMCACHED_NOTFOUND && !in_step(memcached_last_error(c.get()))) {
      rc = memcached_last_error(c.get());
    }
    if (rc == MEMCACHED_NOTFOUND) return std::nullopt;
    if (rc != MEMCACHED_SUCCESS) impl_->fail(c.get(), rc, "get", key);
    return std::string();  // an empty value
  }
  struct Free {
    char* v;
    ~Free() { std::free(v); }
  } free_v{v};
  return impl_->decode(v, len, flags);
}

void MemcachedBackend::do_set(std::string_view key, std::string_view value) {
  auto c = impl_->client();
  impl_->store(c.get(), key, value);
}

void MemcachedBackend::do_erase(std::string_view key) {
  auto c = impl_->client();
  impl_->remove(c.get(), key);
}

std::vector<std::optional<std::string>> MemcachedBackend::do_get_multi(
    std::span<const std::string> keys) {
  auto c = impl_->client();
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(keys.size());
  lens.reserve(keys.size());
  // Key -> first position; a repeated key (rare) chains to its next position in `next`.
  std::unordered_map<std::string_view, std::size_t> where;
  where.reserve(keys.size());
  std::vector<std::size_t> next(keys.size(), keys.size());
  std::vector<std::size_t> last(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto [it, fresh] = where.try_emplace(keys[i], i);
    if (fresh) {
      ptrs.push_back(keys[i].data());
      lens.push_back(keys[i].size());
      last[i] = i;
    } else {
      next[last[it->second]] = i;
      last[it->second] = i;
    }
  }
  memcached_return_t rc = memcached_mget(c.get(), ptrs.data(), lens.data(), ptrs.size());
  if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_SOME_ERRORS) {
    impl_->fail(c.get(), rc, "get_multi", keys.front());
  }
  std::vector<std::optional<std::string>> out(keys.size());
  // One result object reused for every value (no allocation per key).
  memcached_result_st storage{};
  memcached_result_st* r = memcached_result_create(c.get(), &storage);
  if (r == nullptr) detail::throw_error<BackendError>("memcached backend: out of memory");
  struct FreeResult {
    memcached_result_st* r;
    ~FreeResult() { memcached_result_free(r); }
  } free_result{r};
  while (memcached_fetch_result(c.get(), r, &rc) != nullptr) {
    const std::string_view k(memcached_result_key_value(r), memcached_result_key_length(r));
    if (auto it = where.find(k); it != where.end()) {
      const std::size_t first = it->second;
      out[first] = impl_->decode(memcached_result_value(r), memcached_result_length(r),
                                 memcached_result_flags(r));
      for (std::size_t i = next[first]; i < keys.size(); i = next[i]) out[i] = out[first];
    }
  }
  if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
    impl_->fail(c.get(), rc, "get_multi", keys.front());
  }
  return out;
}

void MemcachedBackend::do_set_multi(std::span<const BytesItem> items) { impl_->store_many(items); }

void MemcachedBackend::do_erase_multi(std::span<const std::string> keys) {
  impl_->remove_many(keys);
}

std::size_t MemcachedBackend::do_max_value_bytes() const { return impl_->opts.max_value_bytes; }

std::shared_ptr<CacheMutex> MemcachedBackend::do_get_mutex(std::string_view key) {
  if (!impl_->opts.distributed_lock) return nullptr;
  return memcached_detail::make_lock(impl_, key);
}

void register_memcached_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char* name : {"memcached", "pylibmc", "bmemcached", "pymemcache"}) {
      register_backend(name,
                       [](const nlohmann::json& a) { return MemcachedBackend::from_arguments(a); });
    }
  });
}

}  // namespace dogpile
