#pragma once
/// @file invalidation.hpp
/// Region invalidation strategies. `invalidate()` marks every value created before "now" as
/// invalid: hard (a miss; callers wait for one regeneration) or soft (expired; one caller
/// regenerates, others get the stale value). dogpile's default is per process; the shared
/// strategy stores the invalidation time in the backend so every process sees it.

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/duration.hpp"

namespace dogpile {

/// dogpile's RegionInvalidationStrategy: sees creation timestamps, never keys.
/// Implementations must be thread-safe.
class RegionInvalidationStrategy {
 public:
  /// Destroys the strategy.
  virtual ~RegionInvalidationStrategy() = default;
  /// Invalidates everything created before now.
  virtual void invalidate(bool hard) = 0;
  /// True if a value created at `created` is invalidated (hard or soft).
  [[nodiscard]] virtual bool is_invalidated(TimePoint created) const = 0;
  /// True if a value created at `created` is invalidated and the last invalidation was hard.
  [[nodiscard]] virtual bool is_hard_invalidated(TimePoint created) const {
    return was_hard_invalidated() && is_invalidated(created);
  }
  /// True if a value created at `created` is invalidated and the last invalidation was soft.
  [[nodiscard]] virtual bool is_soft_invalidated(TimePoint created) const {
    return was_soft_invalidated() && is_invalidated(created);
  }
  /// True if the region was invalidated and the last invalidation was hard.
  [[nodiscard]] virtual bool was_hard_invalidated() const = 0;
  /// True if the region was invalidated and the last invalidation was soft.
  [[nodiscard]] virtual bool was_soft_invalidated() const = 0;
};

/// dogpile's DefaultInvalidationStrategy: one timestamp and one hard/soft flag, in this
/// process's memory; a later call overwrites both. Lock-free reads.
class DefaultInvalidationStrategy : public RegionInvalidationStrategy {
 public:
  /// Not invalidated yet; `clock` stamps each `invalidate()`.
  explicit DefaultInvalidationStrategy(Clock clock = system_clock()) : clock_(std::move(clock)) {}
  /// Records now and `hard`, replacing any earlier invalidation.
  void invalidate(bool hard) override {
    // Packed in one word so readers never see a timestamp with the other call's flag.
    const auto t = clock_().time_since_epoch().count();
    state_.store((t << 1) | (hard ? 1 : 0), std::memory_order_release);
  }
  /// True if `created` is before the last invalidation.
  [[nodiscard]] bool is_invalidated(TimePoint created) const override {
    const auto s = state_.load(std::memory_order_acquire);
    return s != kNone && created.time_since_epoch().count() < (s >> 1);
  }
  /// True if the last invalidation was hard.
  [[nodiscard]] bool was_hard_invalidated() const override {
    const auto s = state_.load(std::memory_order_acquire);
    return s != kNone && (s & 1) != 0;
  }
  /// True if the last invalidation was soft.
  [[nodiscard]] bool was_soft_invalidated() const override {
    const auto s = state_.load(std::memory_order_acquire);
    return s != kNone && (s & 1) == 0;
  }

 private:
  static constexpr TimePoint::rep kNone = -1;
  Clock clock_;
  std::atomic<TimePoint::rep> state_{kNone};
};

/// Invalidation that reaches every process sharing the backend: `invalidate()` writes
/// `<unix seconds> hard` (or `soft`) under `key`, e.g. `1700000000.25 hard`; readers refresh
/// their copy at most once per `poll` interval; a value in another format is ignored.
/// Thread-safe.
class SharedInvalidationStrategy : public RegionInvalidationStrategy {
 public:
  /// Stores its state under `key` in `backend`, re-read at most once per `poll`; `clock` stamps
  /// invalidations and paces the polls.
  SharedInvalidationStrategy(std::shared_ptr<CacheBackend> backend, std::string key,
                             std::chrono::milliseconds poll, Clock clock)
      : backend_(std::move(backend)), key_(std::move(key)), poll_(poll), clock_(std::move(clock)) {}

  /// Writes now and `hard` to the backend (every process sees it within `poll`).
  /// @throws BackendError if the write fails.
  void invalidate(bool hard) override;
  /// True if `created` is before the last invalidation known to this process.
  [[nodiscard]] bool is_invalidated(TimePoint created) const override;
  /// True if the last known invalidation was hard.
  [[nodiscard]] bool was_hard_invalidated() const override;
  /// True if the last known invalidation was soft.
  [[nodiscard]] bool was_soft_invalidated() const override;

 private:
  struct State {
    TimePoint at{};
    bool hard = true;
  };
  /// `<seconds> hard|soft`, or nullopt.
  static std::optional<State> parse(std::string_view text);
  std::optional<State> current() const;
  std::shared_ptr<CacheBackend> backend_;
  std::string key_;
  std::chrono::milliseconds poll_;
  Clock clock_;
  mutable std::mutex mutex_;
  mutable std::optional<State> state_;
  mutable TimePoint next_poll_{};
};

/// Selects the region's invalidation: `local_invalidation` (dogpile's default, per process),
/// `shared_invalidation` (stored in the backend), or a custom strategy object.
struct InvalidationMode {
  /// Where invalidation state lives.
  enum class Kind : unsigned char {
    local,   ///< this process's memory (`DefaultInvalidationStrategy`)
    shared,  ///< the region's backend (`SharedInvalidationStrategy`)
    custom,  ///< `strategy`
  };
  Kind kind = Kind::local;                                 ///< which
  Duration poll = std::chrono::seconds(1);                 ///< shared: re-read interval
  std::shared_ptr<RegionInvalidationStrategy> strategy{};  ///< custom: the strategy
};
/// Per-process invalidation (dogpile's DefaultInvalidationStrategy).
inline const InvalidationMode local_invalidation{};
/// Invalidation stored in the backend, seen by every process within one second.
inline const InvalidationMode shared_invalidation{InvalidationMode::Kind::shared,
                                                  std::chrono::milliseconds(1000), nullptr};

}  // namespace dogpile
