#include "subscriber.hpp"

#include <unistd.h>

#include <chrono>

namespace dogpile::redis_detail {

Subscriber::Subscriber(std::function<Endpoint()> where, ConnectSettings settings,
                       std::vector<std::string> channels, Handler on_message, StateHandler on_state)
    : where_(std::move(where)),
      settings_(std::move(settings)),
      channels_(std::move(channels)),
      on_message_(std::move(on_message)),
      on_state_(std::move(on_state)),
      pid_(::getpid()) {
  thread_ = std::make_unique<std::thread>([this] { loop(); });
}

Subscriber::~Subscriber() {
  if (pid_ != ::getpid()) {
    (void)thread_.release();  // the parent's thread: not in this process, never joinable here
    return;
  }
  request_stop();
  thread_->join();
}

void Subscriber::request_stop() noexcept {
  {
    std::lock_guard lk(m_);
    stop_ = true;
    // A read waiting out its poll returns now: a destructor does not wait up to kPoll.
    if (live_ != nullptr) live_->interrupt();
  }
  cv_.notify_all();
}

bool Subscriber::wait_tried(std::chrono::steady_clock::time_point until) {
  std::unique_lock lk(m_);
  cv_.wait_until(lk, until, [&] { return tried_; });
  return up_.load();
}

void Subscriber::set_up(bool up) {
  {
    // Before on_state_: a waiter in wait_tried() may hold a lock that on_state_ takes.
    std::lock_guard lk(m_);
    tried_ = true;
  }
  cv_.notify_all();
  if (up_.exchange(up) == up && !up) return;
  epoch_.fetch_add(1);
  if (on_state_) on_state_(up);
}

void Subscriber::loop() {
  constexpr auto kPoll = std::chrono::milliseconds(100);
  auto backoff = std::chrono::milliseconds(10);
  std::unique_ptr<Connection> conn;
  // live_ names conn for request_stop() only while it is alive (set and cleared under m_).
  const auto drop = [&] {
    {
      std::lock_guard lk(m_);
      live_ = nullptr;
    }
    conn.reset();
  };
  while (!stop_.load()) {
    try {
      if (!conn) {
        conn = std::make_unique<Connection>(where_(), settings_);
        {
          std::lock_guard lk(m_);
          live_ = conn.get();
          if (stop_.load()) break;  // stopped while connecting: the interrupt missed this one
        }
        Argv argv{"SUBSCRIBE"};
        argv.insert(argv.end(), channels_.begin(), channels_.end());
        conn->send(argv);
      }
      auto r = conn->read_push(kPoll);
      if (!r || r->type != Reply::Type::array || r->elements.size() < 3) continue;
      const std::string& kind = r->elements[0].str;
      if (kind == "subscribe") {
        // Confirmed: from now on every message is delivered.
        if (r->elements[2].integer == static_cast<long long>(channels_.size())) set_up(true);
        backoff = std::chrono::milliseconds(10);
      } else if (kind == "message" && on_message_) {
        on_message_(r->elements[1].str, r->elements[2].str);
      }
    } catch (const std::exception&) {
      // Lost (or never reached) the server: report the gap, then re-dial with backoff.
      drop();
      if (stop_.load()) break;
      set_up(false);
      std::unique_lock lk(m_);
      cv_.wait_for(lk, backoff, [&] { return stop_.load(); });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
  }
  drop();
}

}  // namespace dogpile::redis_detail
