#pragma once
// Helpers shared by the test_core sources: proxies, a custom invalidation strategy, the
// region configurations RegionTest runs under, and a bounded wait for threaded tests.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "dogpile/dogpile.hpp"

namespace dogpile_test {

using namespace std::chrono_literals;

/// Counts gets and sets on both the byte and the object path (dogpile's GetCounterProxy and
/// SetCounterProxy in one), then forwards.
class CountingProxy : public dogpile::ProxyBackend {
 public:
  std::atomic<int> gets{0};
  std::atomic<int> sets{0};

 protected:
  std::optional<std::string> do_get(std::string_view key) override {
    ++gets;
    return ProxyBackend::do_get(key);
  }
  void do_set(std::string_view key, std::string_view value) override {
    ++sets;
    ProxyBackend::do_set(key, value);
  }
  std::optional<dogpile::StoredObject> do_get_object(std::string_view key) override {
    ++gets;
    return ProxyBackend::do_get_object(key);
  }
  void do_set_object(std::string_view key, dogpile::StoredObject obj) override {
    ++sets;
    ProxyBackend::do_set_object(key, std::move(obj));
  }
};

/// A proxy whose reads and writes throw BackendError while `failing` is set.
class FailingProxy : public dogpile::ProxyBackend {
 public:
  std::atomic<bool> failing{true};

 protected:
  void check() const {
    if (failing) throw dogpile::BackendError("backend is down");
  }
  std::optional<std::string> do_get(std::string_view key) override {
    check();
    return ProxyBackend::do_get(key);
  }
  void do_set(std::string_view key, std::string_view value) override {
    check();
    ProxyBackend::do_set(key, value);
  }
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override {
    check();
    return ProxyBackend::do_get_multi(keys);
  }
  void do_set_multi(std::span<const dogpile::BytesItem> items) override {
    check();
    ProxyBackend::do_set_multi(items);
  }
  void do_erase(std::string_view key) override {
    check();
    ProxyBackend::do_erase(key);
  }
  std::optional<dogpile::StoredObject> do_get_object(std::string_view key) override {
    check();
    return ProxyBackend::do_get_object(key);
  }
  void do_set_object(std::string_view key, dogpile::StoredObject obj) override {
    check();
    ProxyBackend::do_set_object(key, std::move(obj));
  }
};

/// An in-process mutex like `ThreadMutex` that counts the acquires that had to wait (entered
/// a blocking or timed wait because the lock was held), so threaded tests can tell when
/// callers are blocked without sleeping.
class WaitCountingMutex : public dogpile::CacheMutex {
 public:
  explicit WaitCountingMutex(std::shared_ptr<std::atomic<int>> waits) : waits_(std::move(waits)) {}

 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> timeout) override {
    std::unique_lock lk(m_);
    if (held_ && !(timeout && timeout->count() == 0)) {
      waits_->fetch_add(1);
      if (!timeout) {
        cv_.wait(lk, [&] { return !held_; });
      } else if (!cv_.wait_for(lk, *timeout, [&] { return !held_; })) {
        return false;
      }
    }
    if (held_) return false;
    held_ = true;
    return true;
  }
  void do_release() override {
    {
      std::lock_guard lk(m_);
      if (!held_) throw dogpile::LockError("release of a mutex that is not held");
      held_ = false;
    }
    cv_.notify_one();
  }
  [[nodiscard]] bool do_locked() const override {
    std::lock_guard lk(m_);
    return held_;
  }

 private:
  std::shared_ptr<std::atomic<int>> waits_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  bool held_ = false;
};

/// A pass-through proxy whose dogpile mutexes are `WaitCountingMutex`es sharing `waits`.
class WaitCountingProxy : public dogpile::ProxyBackend {
 public:
  std::shared_ptr<std::atomic<int>> waits = std::make_shared<std::atomic<int>>(0);

 protected:
  std::shared_ptr<dogpile::CacheMutex> do_get_mutex(std::string_view /*key*/) override {
    return std::make_shared<WaitCountingMutex>(waits);
  }
};

/// dogpile's CustomInvalidationStrategy test double: separate soft and hard timestamps, a
/// later call of the other kind clears the first.
class SplitInvalidationStrategy : public dogpile::RegionInvalidationStrategy {
 public:
  explicit SplitInvalidationStrategy(dogpile::Clock clock) : clock_(std::move(clock)) {}
  std::atomic<int> invalidate_calls{0};

  void invalidate(bool hard) override {
    ++invalidate_calls;
    std::lock_guard lk(m_);
    if (hard) {
      soft_.reset();
      hard_ = clock_();
    } else {
      hard_.reset();
      soft_ = clock_();
    }
  }
  [[nodiscard]] bool is_invalidated(dogpile::TimePoint t) const override {
    return is_soft_invalidated(t) || is_hard_invalidated(t);
  }
  [[nodiscard]] bool is_hard_invalidated(dogpile::TimePoint t) const override {
    std::lock_guard lk(m_);
    return hard_ && t < *hard_;
  }
  [[nodiscard]] bool is_soft_invalidated(dogpile::TimePoint t) const override {
    std::lock_guard lk(m_);
    return soft_ && t < *soft_;
  }
  [[nodiscard]] bool was_hard_invalidated() const override {
    std::lock_guard lk(m_);
    return hard_.has_value();
  }
  [[nodiscard]] bool was_soft_invalidated() const override {
    std::lock_guard lk(m_);
    return soft_.has_value();
  }

 private:
  dogpile::Clock clock_;
  mutable std::mutex m_;
  std::optional<dogpile::TimePoint> hard_, soft_;
};

// ---- the configurations RegionTest runs under (dogpile: RegionTest, ProxyRegionTest,
// CustomInvalidationStrategyTest; plus the serialized memory backend) --------------------------

struct PlainMemory {
  static constexpr const char* name = "memory";
  static void configure(dogpile::CacheRegion& r, dogpile::ConfigureOptions o,
                        const dogpile::ManualClock& /*clock*/) {
    r.configure("memory", std::move(o));
  }
};
struct SerializedMemory {
  static constexpr const char* name = "memory_serialized";
  static void configure(dogpile::CacheRegion& r, dogpile::ConfigureOptions o,
                        const dogpile::ManualClock& /*clock*/) {
    r.configure("memory_serialized", std::move(o));
  }
};
struct ThroughProxy {
  static constexpr const char* name = "memory+proxy";
  static void configure(dogpile::CacheRegion& r, dogpile::ConfigureOptions o,
                        const dogpile::ManualClock& /*clock*/) {
    o.wrap.push_back(std::make_shared<dogpile::ProxyBackend>());
    r.configure("memory", std::move(o));
  }
};
struct CustomInvalidation {
  static constexpr const char* name = "memory+custom invalidation";
  static void configure(dogpile::CacheRegion& r, dogpile::ConfigureOptions o,
                        const dogpile::ManualClock& clock) {
    o.region_invalidator = std::make_shared<SplitInvalidationStrategy>(clock);
    r.configure("memory", std::move(o));
  }
};

/// A region with a manual clock, configured the way `Config` says.
template <class Config>
struct TestRegion {
  dogpile::ManualClock clock;
  dogpile::CacheRegion region;
  explicit TestRegion(dogpile::ConfigureOptions co = {}, dogpile::RegionOptions ro = {}) {
    ro.clock = clock;
    region = dogpile::make_region(std::move(ro));
    Config::configure(region, std::move(co), clock);
  }
};

/// True if the backend under the proxies holds something under the (mangled) key.
inline bool raw_present(const dogpile::CacheRegion& r, std::string_view mkey) {
  auto b = r.actual_backend();
  return b->stores_objects() ? b->get_object(mkey).has_value() : b->get(mkey).has_value();
}

/// Waits (yielding, bounded by a generous real-time limit) until `cond` holds.
/// @returns whether it held. Not a timing assertion: the limit only stops a hung test.
inline bool wait_until(const std::function<bool()>& cond,
                       std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

}  // namespace dogpile_test
