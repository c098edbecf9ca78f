// Redis Sentinel: the master of a service, as the sentinels name it. Every command (reads too:
// dogpile #248, replica reads make a waiter miss the value its creator just wrote) goes to
// the master. A connection failure, or a READONLY / MASTERDOWN reply (the server was demoted
// or lost its master), makes the next attempt ask the sentinels again.
//
// A failover loses the writes the old master acknowledges after the replica being promoted
// stopped replicating from it (`SLAVEOF NO ONE`): the old master keeps accepting writes until
// the sentinels demote it, seconds later, and its resync then throws them away. Measured (one
// sentinel tick is 50-100 ms): the leader publishes `+elected-leader`, `+selected-slave` a tick
// later, sends SLAVEOF NO ONE the tick after, sees the promotion on its next INFO (~0.8 s) and
// publishes `+promoted-slave`, then `+switch-master` (~0.1 s later). So we subscribe to those
// events on every sentinel (only the leader publishes them) and hold writes from the leader's
// election until the new master is named: a held write waits at most socket_timeout, then
// fails with BackendError without being sent. Reads are not held: until the new master takes
// writes, the old one has every acknowledged write.
// A write already in flight when the hold begins is confirmed with `WAIT 1` (the replica is
// still attached for another tick); unconfirmed, it fails rather than being acknowledged.
// A hold lasts at most the service's failover-timeout (the sentinels abort a failover then),
// so a leader that falls silent without dropping our connection cannot stop writes for good.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <strings.h>
#include <unistd.h>

#include "client.hpp"
#include "dogpile/error.hpp"
#include "dogpile/log.hpp"
#include "subscriber.hpp"

namespace dogpile::redis_detail {
namespace {

bool is_demoted(const Reply& r) {
  const auto code = r.error_code();
  return code == "READONLY" || code == "MASTERDOWN" || code == "LOADING";
}

// Commands that only read, and so may still go to the old master during a failover.
bool is_read(std::string_view name) {
  for (const char* r : {"GET", "MGET", "EXISTS", "PTTL", "TTL", "PING"}) {
    if (name.size() == std::strlen(r) && ::strncasecmp(name.data(), r, name.size()) == 0) {
      return true;
    }
  }
  return false;
}
bool is_read(const Argv& argv) { return argv.empty() || is_read(argv[0]); }

// Failover progress, in the order the leading sentinel publishes it.
constexpr const char* kHoldEvents[] = {"+elected-leader", "+failover-state-select-slave",
                                       "+selected-slave", "+failover-state-send-slaveof-noone",
                                       "+failover-state-wait-promotion"};
constexpr const char* kPromoted = "+promoted-slave";
constexpr const char* kSwitched = "+switch-master";
constexpr const char* kEndEvents[] = {
    "+failover-end", "+failover-end-for-timeout", "-failover-abort-not-elected",
    "-failover-abort-no-good-slave", "-failover-abort-slave-timeout"};

// A sentinel event's payload: "<service> <old ip> <old port> <new ip> <new port>" for
// +switch-master; otherwise the instance, "master <service> <ip> <port>" or
// "slave <ip:port> <ip> <port> @ <service> <master ip> <master port>".
struct Event {
  std::string service;
  std::optional<Endpoint> new_master;  // +promoted-slave, +switch-master
};

std::optional<Event> parse_event(const std::string& channel, const std::string& payload) {
  std::istringstream in(payload);
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  auto endpoint = [&](std::size_t i) -> std::optional<Endpoint> {
    if (i + 1 >= w.size()) return std::nullopt;
    try {
      return Endpoint{w[i], std::stoi(w[i + 1])};
    } catch (const std::exception&) {
      return std::nullopt;
    }
  };
  Event e;
  if (channel == kSwitched) {
    if (w.size() != 5) return std::nullopt;
    e.service = w[0];
    e.new_master = endpoint(3);
    return e.new_master ? std::optional(e) : std::nullopt;
  }
  if (w.size() >= 4 && w[0] == "master") {
    e.service = w[1];
  } else if (w.size() >= 8 && w[4] == "@") {
    e.service = w[5];
    if (channel == kPromoted) {
      e.new_master = endpoint(2);
      if (!e.new_master) return std::nullopt;
    }
  } else {
    return std::nullopt;
  }
  return e;
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

  ~SentinelClient() override {
    // Stop every subscriber at once (each wakes within its poll interval), then join them
    // before the members their handlers use go. No lock: no call can be running now, and in
    // a forked child m_ may have been copied locked.
    for (auto& e : events_) {
      if (e->owner_pid() == ::getpid()) e->request_stop();
    }
    events_.clear();
  }

  Reply run(std::string_view /*key*/, const Argv& argv) override {
    return run_one(!is_read(argv), [&](Connection& c) { return c.command(argv); });
  }

  Reply run_keys(std::string_view name, std::span<const std::string> keys) override {
    return run_one(!is_read(name), [&](Connection& c) { return c.command(name, keys); });
  }

  std::vector<Reply> run_many(const std::vector<Routed>& cmds) override {
    std::vector<const Argv*> argvs;  // the routed commands themselves: no copy of arguments
    argvs.reserve(cmds.size());
    bool write = false;
    for (const auto& c : cmds) {
      argvs.push_back(&c.argv);
      write = write || !is_read(c.argv);
    }
    return with_master(write, [&](Pool& p, std::uint64_t hold_gen) {
      auto rs = p.run([&](Connection& c) {
        auto replies = c.pipeline(std::span<const Argv* const>(argvs));
        if (write && std::any_of(replies.begin(), replies.end(),
                                 [](const Reply& r) { return !r.is_error(); })) {
          confirm_if_held(c, hold_gen);
        }
        return replies;
      });
      bool demoted = false;
      for (const auto& r : rs) demoted = demoted || is_demoted(r);
      return std::make_pair(demoted, std::move(rs));
    });
  }

  Endpoint subscribe_endpoint() override {
    std::unique_lock lk(m_);
    return master(lk, false, std::chrono::steady_clock::now()).first->endpoint();
  }
  [[nodiscard]] std::uint64_t topology_generation() const override { return topo_gen_.load(); }
  [[nodiscard]] const std::atomic<std::uint64_t>* topology_counter() const override {
    return &topo_gen_;
  }
  void not_a_master(const Endpoint& ep) override {
    std::lock_guard lk(m_);
    if (master_ && master_->endpoint() == ep) drop_master();
  }
  [[nodiscard]] const ConnectSettings& settings() const override { return master_settings_; }
  [[nodiscard]] std::string describe() const override {
    return "redis sentinel service '" + service_ + "'";
  }

 private:
  using Clock = std::chrono::steady_clock;

  // One command (`send(Connection&)` sends it and reads its reply) on the master.
  template <class Send>
  Reply run_one(bool write, const Send& send) {
    return with_master(write, [&](Pool& p, std::uint64_t hold_gen) {
      auto r = p.run([&](Connection& c) {
        auto reply = send(c);
        if (write && !reply.is_error()) confirm_if_held(c, hold_gen);
        return reply;
      });
      return std::make_pair(is_demoted(r), std::move(r));
    });
  }

  // Runs `f(pool, hold generation)` on the master; on a failure before the command ran, or a
  // demoted reply, asks the sentinels again and retries, for at most about one socket timeout
  // in all (a failover in progress then surfaces as an error the region can treat as a miss).
  // A write first waits, within the same deadline, for a failover hold to end.
  template <class F>
  auto with_master(bool write, F&& f)
      -> decltype(f(std::declval<Pool&>(), std::uint64_t{}).second) {
    const auto deadline = Clock::now() + master_settings_.socket_timeout;
    auto nap = std::chrono::milliseconds(20);
    for (int attempt = 0;; ++attempt) {
      std::shared_ptr<Pool> pool;
      try {
        std::uint64_t gen = 0;
        {
          std::unique_lock lk(m_);
          std::tie(pool, gen) = master(lk, write, deadline);
        }
        auto [demoted, result] = f(*pool, gen);
        if (!demoted) return result;
        forget(pool);
        if (Clock::now() + nap >= deadline) return result;
      } catch (const ConnectionFailure& e) {
        if (pool) forget(pool);
        // A timeout may have run the command: do not run it twice.
        if (e.kind() == Failure::timeout || Clock::now() + nap >= deadline) throw_failure(e);
      }
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::milliseconds(200));
    }
  }

  // The master's pool and the hold generation the caller runs under. A write waits (until
  // `deadline`) while a failover is between the leader's election and the new master's name.
  // lk holds m_.
  std::pair<std::shared_ptr<Pool>, std::uint64_t> master(std::unique_lock<std::mutex>& lk,
                                                         bool write, Clock::time_point deadline) {
    watch_failovers(lk);
    if (holding_ && Clock::now() - hold_since_ > failover_timeout_) {
      // The sentinels have given this failover up by now: ask them again.
      release();
      drop_master();
      announced_.reset();
    }
    if (write && holding_ && !held_.wait_until(lk, deadline, [&] { return !holding_; })) {
      detail::throw_error<ClusterDownError>(
          describe() + ": a failover is in progress (" + hold_event_ +
          ") and the new master was not named within socket_timeout (" +
          std::to_string(master_settings_.socket_timeout.count()) +
          " ms); the write was not sent, so that it cannot be lost");
    }
    if (!master_) {
      Endpoint ep;
      if (announced_) {
        ep = *announced_;  // named by the failover's events: fresher than a sentinel's answer
        announced_.reset();
      } else {
        ep = discover();
      }
      if (last_master_ && !(*last_master_ == ep)) {
        detail::log(LogLevel::warning, describe() + ": failover followed, the master is now " +
                                           ep.str() + " (was " + last_master_->str() + ")");
      }
      last_master_ = ep;
      master_ = std::make_shared<Pool>(ep, master_settings_, pool_size_);
    }
    return {master_, hold_gen_.load()};
  }

  // A write that was in flight when a hold began may have reached the old master after the
  // replica left it: acknowledge it only once the replica confirms it has it.
  void confirm_if_held(Connection& c, std::uint64_t gen) {
    if (hold_gen_.load() == gen) return;
    const auto wait = std::min(master_settings_.socket_timeout / 2, milliseconds(100));
    const Reply r = c.command({"WAIT", "1", std::to_string(wait.count())});
    if (r.type != Reply::Type::integer || r.integer < 1) {
      detail::throw_error<ClusterDownError>(
          describe() + ": a failover began while a write was in flight to " + c.endpoint().str() +
          ", and no replica confirmed it (WAIT 1 " + std::to_string(wait.count()) +
          " ms): it may be lost, so it is not acknowledged");
    }
  }

  // Subscribes to the failover's progress on every sentinel (only the leader of a failover
  // publishes it), and waits (at most the sentinel connect timeout) until each subscription
  // was tried once, so that the first write is already covered. m_ held by lk.
  void watch_failovers(std::unique_lock<std::mutex>& lk) {
    if (!events_.empty() && events_.front()->owner_pid() == ::getpid()) return;
    if (!events_.empty()) {
      // A forked child's copies of the parent's: abandoned, not joined; the state is the parent's.
      events_.clear();
      holding_ = false;
      drop_master();
      announced_.reset();
    }
    std::vector<std::string> channels(std::begin(kHoldEvents), std::end(kHoldEvents));
    channels.insert(channels.end(), std::begin(kEndEvents), std::end(kEndEvents));
    channels.emplace_back(kPromoted);
    channels.emplace_back(kSwitched);
    ever_up_.assign(sentinels_.size(), false);
    for (std::size_t i = 0; i < sentinels_.size(); ++i) {
      events_.push_back(std::make_unique<Subscriber>(
          [this, i] { return sentinels_[i]; }, sentinel_settings_, channels,
          [this, i](const std::string& channel, const std::string& payload) {
            on_event(i, channel, payload);
          },
          [this, i](bool up) { on_subscription(i, up); }));
    }
    const auto until = Clock::now() + sentinel_settings_.connect_timeout;
    lk.unlock();
    for (auto& e : events_) e->wait_tried(until);
    lk.lock();
  }

  void on_event(std::size_t from, const std::string& channel, const std::string& payload) {
    const auto e = parse_event(channel, payload);
    if (!e || e->service != service_) return;
    std::lock_guard lk(m_);
    if (e->new_master) {
      // +promoted-slave or +switch-master: writes go to the new master from now on.
      if (!master_ || !(master_->endpoint() == *e->new_master)) {
        drop_master();  // leases out finish on the old pool; it goes with the last of them
        announced_ = e->new_master;
      }
      release();
    } else if (std::find_if(std::begin(kEndEvents), std::end(kEndEvents),
                            [&](const char* c) { return channel == c; }) != std::end(kEndEvents)) {
      if (channel.rfind("-failover-abort", 0) == 0 && holding_) {
        drop_master();
        announced_.reset();
      }
      release();
    } else if (!holding_) {
      holding_ = true;
      hold_since_ = Clock::now();
      hold_source_ = from;
      hold_event_ = channel + " from sentinel " + sentinels_[from].str();
      hold_gen_.fetch_add(1);
    }
  }

  void on_subscription(std::size_t from, bool up) {
    std::lock_guard lk(m_);
    const bool gap = !up || ever_up_[from];
    if (up) ever_up_[from] = true;
    if (!gap) return;
    // Events may have been missed: ask the sentinels again at the next call. A hold whose
    // leader we lost is over (we cannot tell when the failover ends).
    drop_master();
    announced_.reset();
    if (holding_ && hold_source_ == from) release();
  }

  // The master may change: the near cache must not trust what it learnt from this one. m_ held.
  void drop_master() {
    master_.reset();
    topo_gen_.fetch_add(1);
  }

  void release() {  // m_ held
    holding_ = false;
    held_.notify_all();
  }

  void forget(const std::shared_ptr<Pool>& p) {
    std::lock_guard lk(m_);
    if (master_ == p) drop_master();
  }

  // Asks every sentinel (get-master-addr-by-name, and SENTINEL MASTER for its config-epoch,
  // in one pipeline) and takes the address named under the highest epoch: after a failover the
  // sentinels that did not lead it name the old master until the leader's hello reaches them
  // (up to 2 s), and the old master still says it is one until it is demoted. m_ held.
  Endpoint discover() {
    std::optional<Endpoint> best;
    long long best_epoch = -1;
    std::string errors;
    for (const auto& s : sentinels_) {
      try {
        Connection c(s, sentinel_settings_);
        const auto rs = c.pipeline(std::vector<Argv>{
            {"SENTINEL", "get-master-addr-by-name", service_}, {"SENTINEL", "MASTER", service_}});
        const Reply& addr = rs[0];
        if (addr.type != Reply::Type::array || addr.elements.size() != 2) {
          errors += "; " + s.str() + (addr.is_error() ? ": " + addr.str : ": does not know it");
          continue;
        }
        long long epoch = 0;
        std::optional<long long> timeout;
        const auto& f = rs[1].elements;
        for (std::size_t i = 0; i + 1 < f.size(); i += 2) {
          if (f[i].str == "config-epoch") epoch = std::stoll(f[i + 1].str);
          if (f[i].str == "failover-timeout") timeout = std::stoll(f[i + 1].str);
        }
        if (epoch > best_epoch) {
          best = Endpoint{addr.elements[0].str, std::stoi(addr.elements[1].str)};
          best_epoch = epoch;
          if (timeout && *timeout > 0) failover_timeout_ = milliseconds(*timeout);
        }
      } catch (const ConnectionFailure& e) {
        errors += "; " + std::string(e.what());
      } catch (const std::logic_error&) {  // stoi/stoll: not a number
        errors += "; " + s.str() + ": a malformed answer";
      }
    }
    if (best) return *best;
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
  std::optional<Endpoint> announced_;    // the new master named by +promoted-/+switch-master
  std::optional<Endpoint> last_master_;  // for the failover log line
  bool holding_ = false;                 // a failover is between election and promotion
  Clock::time_point hold_since_{};
  milliseconds failover_timeout_{180'000};  // the service's, from SENTINEL MASTER
  std::size_t hold_source_ = 0;             // the sentinel that leads it
  std::string hold_event_;
  std::condition_variable held_;
  std::atomic<std::uint64_t> hold_gen_{0};  // bumped when a hold begins
  std::atomic<std::uint64_t> topo_gen_{0};  // bumped when master_ is dropped
  std::vector<bool> ever_up_;
  std::vector<std::unique_ptr<Subscriber>> events_;
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
