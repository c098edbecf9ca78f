#include "pool.hpp"

#include <unistd.h>

#include <string>

#include "dogpile/error.hpp"
#include "dogpile/log.hpp"

namespace dogpile::redis_detail {

Pool::Pool(Endpoint ep, ConnectSettings settings, std::size_t max_size)
    : ep_(std::move(ep)),
      settings_(std::move(settings)),
      max_size_(max_size == 0 ? 1 : max_size),
      pid_(::getpid()) {}

// A forked child's copy closes its inherited sockets on destruction: harmless (the parent's
// stay open), and hiredis sends nothing on free.
Pool::~Pool() = default;

void Pool::reset_if_forked() {
  if (pid_ == ::getpid()) return;
  idle_.clear();
  out_ = 0;
  pid_ = ::getpid();
  epoch_.fetch_add(1);
}

Pool::Lease Pool::acquire() {
  std::unique_lock lk(m_);
  reset_if_forked();
  const auto wait = settings_.connect_timeout + settings_.socket_timeout;
  if (!cv_.wait_for(lk, wait, [&] { return !idle_.empty() || out_ < max_size_; })) {
    detail::throw_error<TimeoutError>(
        "redis at " + ep_.str() + ": all " + std::to_string(max_size_) +
        " pooled connections stayed busy for " + std::to_string(wait.count()) +
        " ms; raise pool_size or the timeouts");
  }
  if (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    ++out_;
    return Lease(this, std::move(c), true);
  }
  ++out_;
  lk.unlock();
  try {
    auto c = std::make_unique<Connection>(ep_, settings_);
    if (lost_.exchange(false)) {
      detail::log(LogLevel::info,
                  "redis at " + ep_.str() + ": reconnected after a lost connection");
    }
    return Lease(this, std::move(c), false);
  } catch (...) {
    lk.lock();
    --out_;
    lk.unlock();
    cv_.notify_one();
    throw;
  }
}

void Pool::give_back(std::unique_ptr<Connection> c) {
  {
    std::lock_guard lk(m_);
    if (c->owner_pid() != pid_) return;  // opened before a fork: not this pool's any more
    if (out_ > 0) --out_;
    if (c->broken()) {
      epoch_.fetch_add(1);
      lost_.store(true);
    } else {
      idle_.push_back(std::move(c));
    }
  }
  cv_.notify_one();
}

void Pool::drop_idle() {
  std::lock_guard lk(m_);
  idle_.clear();
  epoch_.fetch_add(1);
}

}  // namespace dogpile::redis_detail
