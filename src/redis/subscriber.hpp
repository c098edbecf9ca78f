// `Subscriber`: one dedicated pub/sub connection read by its own thread, re-dialled after a
// failure. Today it carries lock-release notices; it is also the shape of the near cache's
// invalidation subscriber (subscribe `__redis__:invalidate`, hand its `client_id()` to
// CLIENT TRACKING … REDIRECT, bump an epoch on every reconnect so fills in flight are
// refused). Internal to dogpile::redis.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "connection.hpp"

namespace dogpile::redis_detail {

class Subscriber {
 public:
  /// Called on the reader thread for each message: (channel, payload).
  using Handler = std::function<void(const std::string& channel, const std::string& payload)>;
  /// Called on the reader thread after each (re)subscription and each loss, with `up`.
  using StateHandler = std::function<void(bool up)>;

  /// Starts the reader thread: it connects to `where()` (asked again at every reconnect, so a
  /// sentinel failover or cluster change is followed) and SUBSCRIBEs to `channels`.
  Subscriber(std::function<Endpoint()> where, ConnectSettings settings,
             std::vector<std::string> channels, Handler on_message, StateHandler on_state);
  /// Stops and joins the reader (within its poll interval). In a forked child, the thread
  /// does not exist: the object is abandoned without joining.
  ~Subscriber();
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  /// Asks the reader to stop without waiting for it (the destructor joins it).
  void request_stop() noexcept;
  /// True while subscribed (the subscription was confirmed and the connection is alive).
  [[nodiscard]] bool up() const noexcept { return up_.load(); }
  /// Bumped on every subscription and every loss: a gap in delivery changes it.
  [[nodiscard]] std::uint64_t epoch() const noexcept { return epoch_.load(); }
  /// Waits until the first connection attempt ended (subscribed, or failed), at most until
  /// `until`. Returns whether it is up.
  bool wait_tried(std::chrono::steady_clock::time_point until);
  /// The process that started it.
  [[nodiscard]] int owner_pid() const noexcept { return pid_; }

 private:
  void loop();
  void set_up(bool up);

  std::function<Endpoint()> where_;
  ConnectSettings settings_;
  std::vector<std::string> channels_;
  Handler on_message_;
  StateHandler on_state_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> up_{false};
  bool tried_ = false;  // m_: the first attempt ended
  std::atomic<std::uint64_t> epoch_{0};
  std::mutex m_;
  std::condition_variable cv_;  // wakes a reconnect backoff at stop, and wait_tried()
  Connection* live_ = nullptr;  // m_: the loop's connection, which request_stop() interrupts
  int pid_;
  std::unique_ptr<std::thread> thread_;
};

}  // namespace dogpile::redis_detail
