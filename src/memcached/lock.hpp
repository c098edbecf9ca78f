// The memcached dogpile lock: a `LeaseStore` on `_lock<key>` (add, owner-checked gets + cas).
// Internal to dogpile::memcached.
#pragma once

#include <memory>
#include <string_view>

#include "dogpile/mutex.hpp"
#include "pool.hpp"

namespace dogpile::memcached_detail {

/// The lock of value key `key` (a lease renewed while held, or with lock_timeout 0 a lock that
/// never expires). Thread-safe, as every CacheMutex.
std::shared_ptr<CacheMutex> make_lock(std::shared_ptr<Pool> pool, std::string_view key);

}  // namespace dogpile::memcached_detail
