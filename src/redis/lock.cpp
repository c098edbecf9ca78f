// The Redis lease store, as redis-py's Lock does it (SET NX PX with a random token, Lua
// compare-and-delete), plus owner-checked renewal and release notices, which redis-py lacks.
#include "lock.hpp"

#include <unistd.h>

#include <atomic>
#include <thread>

#include "dogpile/detail/sha1.hpp"
#include "dogpile/error.hpp"

namespace dogpile::redis_detail {
namespace {

// KEYS[1] = lock key, ARGV[1] = token, ARGV[2] = channel.
constexpr const char* kReleaseScript =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "redis.call('del', KEYS[1]) "
    "redis.call('publish', ARGV[2], KEYS[1]) "
    "return 1 end "
    "return 0";
// KEYS[1] = lock key, ARGV[1] = token, ARGV[2] = lease in ms.
constexpr const char* kRenewScript =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end "
    "return 0";

const std::string& script_sha(const char* script) {
  static const std::string release = detail::sha1_hex(kReleaseScript);
  static const std::string renew = detail::sha1_hex(kRenewScript);
  return script == kReleaseScript ? release : renew;
}

// EVALSHA, and EVAL when the server does not have the script cached (NOSCRIPT).
Reply eval(Client& c, const std::string& key, const char* script, const std::string& arg1,
           const std::string& arg2) {
  Reply r = c.run(key, {"EVALSHA", script_sha(script), "1", key, arg1, arg2});
  if (r.error_code() == "NOSCRIPT") r = c.run(key, {"EVAL", script, "1", key, arg1, arg2});
  return r;
}

class RedisLeaseStore final : public LeaseStore {
 public:
  RedisLeaseStore(std::shared_ptr<Client> c, std::shared_ptr<ReleaseNotifier> n, std::string key,
                  std::function<void()> on_acquired)
      : client_(std::move(c)),
        notifier_(std::move(n)),
        key_(std::move(key)),
        on_acquired_(std::move(on_acquired)) {}
  ~RedisLeaseStore() override {
    if (watching_.load() && notifier_) notifier_->unwatch(key_);
  }
  RedisLeaseStore(const RedisLeaseStore&) = delete;
  RedisLeaseStore& operator=(const RedisLeaseStore&) = delete;

  bool try_acquire(std::string_view token, std::chrono::milliseconds lease) override {
    if (notifier_) {
      // Count releases from before the attempt: one that lands between a failed SET and the
      // nap then cuts the nap short instead of being missed.
      if (!watching_.exchange(true)) notifier_->watch(key_);
      seen_.store(notifier_->generation(key_));
    }
    const Reply r = client_->run(
        key_, {"SET", key_, std::string(token), "NX", "PX", std::to_string(lease.count())});
    if (r.is_error()) throw_reply_error(client_->describe(), "the lock's SET NX", r);
    if (r.is_nil()) return false;  // someone holds it
    if (r.type == Reply::Type::status && r.str == "OK") {
      if (on_acquired_) on_acquired_();
      return true;
    }
    // Anything else is not Redis answering SET NX: "held by someone" would wait forever.
    unexpected("the lock's SET NX", r);
  }

  bool renew(std::string_view token, std::chrono::milliseconds lease) override {
    const Reply r =
        eval(*client_, key_, kRenewScript, std::string(token), std::to_string(lease.count()));
    if (r.is_error()) throw_reply_error(client_->describe(), "the lock renewal script", r);
    return one_or_zero("the lock renewal script", r);
  }

  bool release(std::string_view token) override {
    const Reply r = eval(*client_, key_, kReleaseScript, std::string(token), kReleaseChannel);
    if (r.is_error()) throw_reply_error(client_->describe(), "the lock release script", r);
    return one_or_zero("the lock release script", r);
  }

  [[nodiscard]] bool held() const override {
    const Reply r = client_->run(key_, {"EXISTS", key_});
    if (r.is_error()) throw_reply_error(client_->describe(), "EXISTS", r);
    if (r.type != Reply::Type::integer || r.integer < 0) unexpected("EXISTS", r);
    return r.integer > 0;
  }

  [[nodiscard]] std::string describe() const override {
    std::string shown = key_.substr(0, 64);
    return "redis lock '" + shown + (key_.size() > 64 ? "...'" : "'") + " on " +
           client_->describe();
  }

  void nap(std::chrono::microseconds d) override {
    if (notifier_) {
      notifier_->wait(key_, seen_.load(), d);
    } else {
      std::this_thread::sleep_for(d);
    }
  }

 private:
  [[noreturn]] void unexpected(const char* what, const Reply& r) const {
    static constexpr const char* kTypes[] = {"nil",     "status", "error",
                                             "integer", "string", "array"};
    std::string shown = r.str.substr(0, 64);
    if (r.type == Reply::Type::integer) shown = std::to_string(r.integer);
    detail::throw_error<ReplyError>(client_->describe() + " answered " + what + " with an " +
                                    "unexpected " + kTypes[static_cast<int>(r.type)] + " reply '" +
                                    shown + "' (" + describe() + ")");
  }
  bool one_or_zero(const char* what, const Reply& r) const {
    if (r.type != Reply::Type::integer || (r.integer != 0 && r.integer != 1)) unexpected(what, r);
    return r.integer == 1;
  }

  std::shared_ptr<Client> client_;
  std::shared_ptr<ReleaseNotifier> notifier_;
  std::string key_;
  std::function<void()> on_acquired_;
  std::atomic<bool> watching_{false};
  std::atomic<std::uint64_t> seen_{0};
};

}  // namespace

ReleaseNotifier::~ReleaseNotifier() = default;

Subscriber& ReleaseNotifier::subscriber() {
  if (sub_ && sub_->owner_pid() != ::getpid()) sub_.reset();  // the parent's, after fork
  if (!sub_) {
    auto client = client_;
    sub_ = std::make_unique<Subscriber>(
        [client] { return client->subscribe_endpoint(); }, client_->settings(),
        std::vector<std::string>{kReleaseChannel},
        [this](const std::string& /*channel*/, const std::string& payload) { on_message(payload); },
        nullptr);
  }
  return *sub_;
}

void ReleaseNotifier::watch(const std::string& key) {
  std::lock_guard lk(m_);
  ++watched_[key].refs;
}

void ReleaseNotifier::unwatch(const std::string& key) {
  std::lock_guard lk(m_);
  auto it = watched_.find(key);
  if (it != watched_.end() && --it->second.refs <= 0) watched_.erase(it);
}

std::uint64_t ReleaseNotifier::generation(const std::string& key) {
  std::lock_guard lk(m_);
  auto it = watched_.find(key);
  return it == watched_.end() ? 0 : it->second.generation;
}

void ReleaseNotifier::on_message(const std::string& payload) { released(payload); }

void ReleaseNotifier::released(std::string_view key) {
  {
    std::lock_guard lk(m_);
    auto it = watched_.find(key);
    if (it == watched_.end()) return;
    ++it->second.generation;
  }
  cv_.notify_all();
}

void ReleaseNotifier::wait(const std::string& key, std::uint64_t seen,
                           std::chrono::microseconds d) {
  std::unique_lock lk(m_);
  // Started at the first wait. While it is down, a release is heard only through the near
  // cache's invalidation of the lock key (released()), or when `d` has passed: a poll.
  (void)subscriber();
  cv_.wait_for(lk, d, [&] {
    auto it = watched_.find(key);
    return it != watched_.end() && it->second.generation != seen;
  });
}

std::shared_ptr<CacheMutex> make_redis_lock(std::shared_ptr<Client> client,
                                            std::shared_ptr<ReleaseNotifier> notifier,
                                            std::string lock_key, LeaseLockOptions options,
                                            std::function<void()> on_acquired) {
  return std::make_shared<LeaseLock>(
      std::make_shared<RedisLeaseStore>(std::move(client), std::move(notifier), std::move(lock_key),
                                        std::move(on_acquired)),
      options);
}

}  // namespace dogpile::redis_detail
