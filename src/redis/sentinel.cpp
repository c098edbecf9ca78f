// Redis Sentinel: the master of a service, as the sentinels name it. Every command (reads too:
// dogpile #248, replica reads make a waiter miss the value its creator just wrote) goes to
// the master. A connection failure, or a READONLY / MASTERDOWN reply (the server was demoted
// or lost its master), makes the next attempt ask the sentinels again. So does the sentinels'
// `+switch-master` event, heard on a subscription to the sentinels: after a failover, the old
// master keeps accepting writes until the sentinels demote it (seconds later), and writes sent
// to it then are lost; the event moves us to the new master as soon as it is elected.
#include <chrono>
#include <mutex>
#include <thread>

#include <unistd.h>

#include "client.hpp"
#include "dogpile/error.hpp"
#include "subscriber.hpp"

namespace dogpile::redis_detail {
namespace {

bool is_demoted(const Reply& r) {
  const auto code = r.error_code();
  return code == "READONLY" || code == "MASTERDOWN" || code == "LOADING";
}

class SentinelClient final : public Client {
 public:
  SentinelClient(std::vector<Endpoint> sentinels, std::string service, ConnectSettings ss,
                 ConnectSettings ms, std::size_t pool_size)
      : sentinels_(std::move(sentinels)),
        service_(std::move(service)),
        sentinel_settings_(std::move(ss)),
        master_settings_(std::move(ms)),
        pool_size_(pool_size) {
    master_settings_.check_master = true;
    if (sentinels_.empty()) {
      detail::throw_error<ValidationError>(
          "redis_sentinel backend: argument 'sentinels' must name at least one sentinel");
    }
  }

  Reply run(std::string_view /*key*/, const Argv& argv) override {
    return with_master([&](Pool& p) {
      auto r = p.run([&](Connection& c) { return c.command(argv); });
      return std::make_pair(is_demoted(r), std::move(r));
    });
  }

  std::vector<Reply> run_many(const std::vector<Routed>& cmds) override {
    std::vector<Argv> argvs;
    argvs.reserve(cmds.size());
    for (const auto& c : cmds) argvs.push_back(c.argv);
    return with_master([&](Pool& p) {
      auto rs = p.run([&](Connection& c) { return c.pipeline(argvs); });
      bool demoted = false;
      for (const auto& r : rs) demoted = demoted || is_demoted(r);
      return std::make_pair(demoted, std::move(rs));
    });
  }

  Endpoint subscribe_endpoint() override { return master()->endpoint(); }
  [[nodiscard]] const ConnectSettings& settings() const override { return master_settings_; }
  [[nodiscard]] std::string describe() const override {
    return "redis sentinel service '" + service_ + "'";
  }

 private:
  // Runs `f(pool)` on the master; on a failure before the command ran, or a demoted reply,
  // asks the sentinels again and retries, for at most about one socket timeout in all (a
  // failover in progress then surfaces as an error the region can treat as a miss).
  template <class F>
  auto with_master(F&& f) -> decltype(f(std::declval<Pool&>()).second) {
    const auto deadline = std::chrono::steady_clock::now() + master_settings_.socket_timeout;
    auto nap = std::chrono::milliseconds(20);
    for (int attempt = 0;; ++attempt) {
      std::shared_ptr<Pool> pool;
      try {
        pool = master();
        auto [demoted, result] = f(*pool);
        if (!demoted) return result;
        forget(pool);
        if (std::chrono::steady_clock::now() + nap >= deadline) return result;
      } catch (const ConnectionFailure& e) {
        if (pool) forget(pool);
        // A timeout may have run the command: do not run it twice.
        if (e.kind() == Failure::timeout || std::chrono::steady_clock::now() + nap >= deadline) {
          throw_failure(e);
        }
      }
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::milliseconds(200));
    }
  }

  std::shared_ptr<Pool> master() {
    std::lock_guard lk(m_);
    watch_failovers();
    if (!master_) master_ = std::make_shared<Pool>(discover(), master_settings_, pool_size_);
    return master_;
  }

  // Subscribes to +switch-master on the sentinels (one of them at a time, the next after a
  // failure). m_ held.
  void watch_failovers() {
    if (events_ && events_->owner_pid() == ::getpid()) return;
    events_.reset();  // a forked child's copy of the parent's: abandoned, not joined
    auto next = std::make_shared<std::size_t>(0);
    events_ = std::make_unique<Subscriber>(
        [this, next] { return sentinels_[(*next)++ % sentinels_.size()]; }, sentinel_settings_,
        std::vector<std::string>{"+switch-master"},
        [this](const std::string& /*channel*/, const std::string& payload) {
          // "<service> <old ip> <old port> <new ip> <new port>"
          if (payload.compare(0, service_.size() + 1, service_ + " ") != 0) return;
          std::lock_guard lk(m_);
          master_.reset();
        },
        nullptr);
  }

  void forget(const std::shared_ptr<Pool>& p) {
    std::lock_guard lk(m_);
    if (master_ == p) master_.reset();
  }

  // SENTINEL get-master-addr-by-name, asking each sentinel in turn. m_ held.
  Endpoint discover() {
    std::string errors;
    for (const auto& s : sentinels_) {
      try {
        Connection c(s, sentinel_settings_);
        const Reply r = c.command({"SENTINEL", "get-master-addr-by-name", service_});
        if (r.type == Reply::Type::array && r.elements.size() == 2) {
          Endpoint ep;
          ep.host = r.elements[0].str;
          ep.port = std::stoi(r.elements[1].str);
          return ep;
        }
        errors += "; " + s.str() + (r.is_error() ? ": " + r.str : ": does not know it");
      } catch (const ConnectionFailure& e) {
        errors += "; " + std::string(e.what());
      }
    }
    throw ConnectionFailure(Failure::connect, "no sentinel could name the master of service '" +
                                                  service_ + "'" + errors);
  }

  std::vector<Endpoint> sentinels_;
  std::string service_;
  ConnectSettings sentinel_settings_;
  ConnectSettings master_settings_;
  std::size_t pool_size_;
  std::mutex m_;
  std::shared_ptr<Pool> master_;
  std::unique_ptr<Subscriber> events_;  // last member: its thread stops before the rest goes
};

}  // namespace

std::shared_ptr<Client> make_sentinel_client(std::vector<Endpoint> sentinels, std::string service,
                                             ConnectSettings sentinel_settings,
                                             ConnectSettings master_settings,
                                             std::size_t pool_size) {
  return std::make_shared<SentinelClient>(std::move(sentinels), std::move(service),
                                          std::move(sentinel_settings), std::move(master_settings),
                                          pool_size);
}

}  // namespace dogpile::redis_detail
