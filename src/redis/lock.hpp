// The Redis dogpile lock: a `LeaseStore` on one lock key (SET NX PX, Lua owner checks), and the
// release notices that wake waiting processes. Internal to dogpile::redis.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "client.hpp"
#include "dogpile/lease_lock.hpp"
#include "subscriber.hpp"

namespace dogpile::redis_detail {

/// The channel a release publishes the lock key on.
inline constexpr const char* kReleaseChannel = "dogpile:lock-released";

/// Tells waiters of this process that a lock key was released, from a `Subscriber` started at
/// the first wait. Without a live subscription a wait is a plain sleep (the caller polls).
/// Thread-safe.
class ReleaseNotifier {
 public:
  explicit ReleaseNotifier(std::shared_ptr<Client> client) : client_(std::move(client)) {}
  ~ReleaseNotifier();
  ReleaseNotifier(const ReleaseNotifier&) = delete;
  ReleaseNotifier& operator=(const ReleaseNotifier&) = delete;

  /// Starts counting releases of `key` (reference-counted).
  void watch(const std::string& key);
  /// Stops counting them.
  void unwatch(const std::string& key);
  /// Releases of `key` heard so far.
  std::uint64_t generation(const std::string& key);
  /// Waits at most `d` for a release of `key` after generation `seen`.
  void wait(const std::string& key, std::uint64_t seen, std::chrono::microseconds d);
  /// A release of `key` heard elsewhere: the near cache's invalidation of the lock key (its
  /// DEL or expiry, by anyone: a Python holder publishes no notice). Wakes its waiters.
  void released(std::string_view key);

 private:
  struct Watched {
    int refs = 0;
    std::uint64_t generation = 0;
  };
  void on_message(const std::string& payload);
  Subscriber& subscriber();  // m_ held

  std::shared_ptr<Client> client_;
  std::mutex m_;
  std::condition_variable cv_;
  std::map<std::string, Watched, std::less<>> watched_;
  std::unique_ptr<Subscriber> sub_;
};

/// The lease lock on `lock_key`. `on_acquired` (may be empty) runs after each acquisition.
std::shared_ptr<CacheMutex> make_redis_lock(std::shared_ptr<Client> client,
                                            std::shared_ptr<ReleaseNotifier> notifier,
                                            std::string lock_key, LeaseLockOptions options,
                                            std::function<void()> on_acquired = {});

}  // namespace dogpile::redis_detail
