// The memcached dogpile lock: dogpile's `_lock<key>` added with the owner token, renewed and
// released owner-checked (gets + cas).
#include "lock.hpp"

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

#include "dogpile/detail/sha1.hpp"
#include "dogpile/lease_lock.hpp"

namespace dogpile::memcached_detail {
namespace {

using std::chrono::milliseconds;

// dogpile's `_lock<key>` holding the owner token; renew and release are owner-checked with
// gets + cas (see dogpile/backends/memcached.hpp).
class MemcachedLeaseStore final : public LeaseStore {
 public:
  MemcachedLeaseStore(std::shared_ptr<Pool> impl, std::string lock_key, bool never_expires)
      : impl_(std::move(impl)), key_(std::move(lock_key)), never_expires_(never_expires) {}

  bool try_acquire(std::string_view token, milliseconds lease) override {
    auto c = impl_->client();
    const memcached_return_t rc = memcached_add(c.get(), key_.data(), key_.size(), token.data(),
                                                token.size(), exptime(lease), 0);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) return false;
    impl_->fail(c.get(), rc, "lock add", key_);
  }

  bool renew(std::string_view token, milliseconds lease) override {
    auto c = impl_->client();
    const auto cas = owned_cas(c.get(), token);
    if (!cas) return false;
    const memcached_return_t rc = memcached_cas(c.get(), key_.data(), key_.size(), token.data(),
                                                token.size(), exptime(lease), 0, *cas);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND) return false;
    impl_->fail(c.get(), rc, "lock renew", key_);
  }

  bool release(std::string_view token) override {
    auto c = impl_->client();
    const auto cas = owned_cas(c.get(), token);
    if (!cas) return false;
    // Replace our token by a tombstone, only if it is still our token (cas), then delete the
    // tombstone: nobody else can have written it, since `add` fails while it exists. The
    // tombstone expires after a second should the delete not arrive.
    const std::string tomb = "released:" + std::string(token);
    memcached_return_t rc =
        memcached_cas(c.get(), key_.data(), key_.size(), tomb.data(), tomb.size(), 1, 0, *cas);
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND) return false;
    if (rc != MEMCACHED_SUCCESS) impl_->fail(c.get(), rc, "lock release", key_);
    rc = memcached_delete(c.get(), key_.data(), key_.size(), 0);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
      impl_->fail(c.get(), rc, "lock release", key_);
    }
    return true;
  }

  [[nodiscard]] bool held() const override {
    auto c = impl_->client();
    std::size_t len = 0;
    std::uint32_t flags = 0;
    memcached_return_t rc = MEMCACHED_SUCCESS;
    char* v = memcached_get(c.get(), key_.data(), key_.size(), &len, &flags, &rc);
    std::free(v);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTFOUND && !in_step(memcached_last_error(c.get()))) {
      rc = memcached_last_error(c.get());  // see do_get
    }
    if (rc == MEMCACHED_NOTFOUND) return false;
    impl_->fail(c.get(), rc, "lock get", key_);
  }

  [[nodiscard]] std::string describe() const override { return "memcached lock '" + key_ + "'"; }

 private:
  // The lock key's CAS value when it holds `token`.
  std::optional<std::uint64_t> owned_cas(memcached_st* mc, std::string_view token) {
    const char* keys[] = {key_.data()};
    const size_t lens[] = {key_.size()};
    memcached_return_t rc = memcached_mget(mc, keys, lens, 1);
    if (rc != MEMCACHED_SUCCESS) impl_->fail(mc, rc, "lock gets", key_);
    std::optional<std::uint64_t> cas;
    memcached_result_st* r = nullptr;
    while ((r = memcached_fetch_result(mc, nullptr, &rc)) != nullptr) {
      if (std::string_view(memcached_result_value(r), memcached_result_length(r)) == token) {
        cas = memcached_result_cas(r);
      }
      memcached_result_free(r);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
      impl_->fail(mc, rc, "lock gets", key_);
    }
    return cas;
  }

  // Whole seconds, plus one: memcached's clock ticks once a second, so a key set with expiry n
  // can vanish up to a second early; n + 1 keeps it at least the lease.
  [[nodiscard]] time_t exptime(milliseconds lease) const {
    if (never_expires_) return 0;
    return static_cast<time_t>((lease.count() + 999) / 1000 + 1);
  }

  std::shared_ptr<Pool> impl_;
  std::string key_;
  bool never_expires_;
};

// lock_timeout = 0: dogpile's lock that never expires. Not a lease: nothing to renew, and the
// conformance suite must not wait for an expiry that never comes.
class PermanentMemcachedLock final : public LeaseLock {
 public:
  using LeaseLock::LeaseLock;

 protected:
  [[nodiscard]] bool do_is_lease() const override { return false; }
};

}  // namespace

std::shared_ptr<CacheMutex> make_lock(std::shared_ptr<Pool> pool, std::string_view key) {
  std::string lock_key = "_lock" + std::string(key);
  // `key` fits memcached (checked); `_lock` + key may not: SHA-1 it, as the value keys are.
  if (lock_key.size() > 250) lock_key = "_lock" + detail::sha1_hex(key);
  const bool never = pool->opts.lock_timeout.count() == 0;
  LeaseLockOptions lo;
  lo.lease = never ? milliseconds(std::chrono::hours(24)) : milliseconds(pool->opts.lock_timeout);
  lo.lock_sleep = pool->opts.lock_sleep;
  lo.renew = !never;
  auto store = std::make_shared<MemcachedLeaseStore>(std::move(pool), std::move(lock_key), never);
  if (never) return std::make_shared<PermanentMemcachedLock>(std::move(store), lo);
  return std::make_shared<LeaseLock>(std::move(store), lo);
}

}  // namespace dogpile::memcached_detail
