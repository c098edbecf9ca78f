// SharedInvalidationStrategy (invalidation.hpp), compiled once.

#include "dogpile/invalidation.hpp"

#include <charconv>
#include <cmath>
#include <system_error>

#include "dogpile/detail/python_float.hpp"

namespace dogpile {

void SharedInvalidationStrategy::invalidate(bool hard) {
  const auto now = clock_();
  std::string text;
  detail::append_python_float(text, to_unix_seconds(now));
  text += hard ? " hard" : " soft";
  backend_->set(key_, text);
  std::lock_guard lk(mutex_);
  state_ = State{now, hard};
  next_poll_ = now + poll_;
}

bool SharedInvalidationStrategy::is_invalidated(TimePoint created) const {
  auto s = current();
  return s && created < s->at;
}

bool SharedInvalidationStrategy::was_hard_invalidated() const {
  auto s = current();
  return s && s->hard;
}

bool SharedInvalidationStrategy::was_soft_invalidated() const {
  auto s = current();
  return s && !s->hard;
}

std::optional<SharedInvalidationStrategy::State> SharedInvalidationStrategy::parse(
    std::string_view text) {
  const auto sp = text.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  const std::string_view kind = text.substr(sp + 1);
  if (kind != "hard" && kind != "soft") return std::nullopt;
  double t = 0;
  const auto r = std::from_chars(text.data(), text.data() + sp, t);
  // Out of range is corrupt (ignored), as for a stored ct: clamped, a time in 2100 would
  // invalidate every value until then.
  if (r.ec != std::errc() || r.ptr != text.data() + sp || !std::isfinite(t) ||
      std::fabs(t) > max_unix_seconds) {
    return std::nullopt;
  }
  return State{from_unix_seconds(t), kind == "hard"};
}

std::optional<SharedInvalidationStrategy::State> SharedInvalidationStrategy::current() const {
  const auto now = clock_();
  std::lock_guard lk(mutex_);
  if (now >= next_poll_) {
    next_poll_ = now + poll_;
    std::optional<std::string> raw;
    try {
      raw = backend_->get(key_);
    } catch (const BackendError&) {
      // Keep the last known state and retry at the next poll: a dead backend must not make
      // every region call throw here, outside the region's on_backend_error policy.
    }
    if (raw) {
      if (auto parsed = parse(*raw)) state_ = parsed;
    }
  }
  return state_;
}

}  // namespace dogpile
