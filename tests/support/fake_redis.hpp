// Test support: a server played by the test that speaks RESP on a loopback port — for what a
// real redis-server will not do on demand: a sentinel publishing failover events (a real one
// accepts PUBLISH only on its hello channel), a cluster node that redirects forever. Requests
// are parsed with hiredis' reader; each is answered by the test's handler, which returns raw
// RESP (see `resp::`). One thread serves every connection; stopped and joined by the
// destructor. Header-only; include as "support/fake_redis.hpp".
#pragma once

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace dogpile::test {

/// Raw RESP replies for a FakeRedis handler.
namespace resp {
inline std::string bulk(const std::string& s) {
  return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}
inline std::string integer(long long n) { return ":" + std::to_string(n) + "\r\n"; }
inline std::string error(const std::string& s) { return "-" + s + "\r\n"; }
/// An array of already-encoded elements.
inline std::string array(const std::vector<std::string>& encoded) {
  std::string out = "*" + std::to_string(encoded.size()) + "\r\n";
  for (const auto& e : encoded) out += e;
  return out;
}
/// An array of bulk strings.
inline std::string bulks(const std::vector<std::string>& items) {
  std::vector<std::string> encoded;
  for (const auto& i : items) encoded.push_back(bulk(i));
  return array(encoded);
}
}  // namespace resp

/// See the file comment. SUBSCRIBE is answered here (and the connection marked subscribed, for
/// publish()); every other command goes to the handler. Thread-safe.
class FakeRedis {
 public:
  /// (argv) -> raw RESP reply. Called on the server thread, one request at a time.
  using Handler = std::function<std::string(const std::vector<std::string>& argv)>;

  explicit FakeRedis(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      if (listen_fd_ >= 0) ::close(listen_fd_);
      throw std::runtime_error("FakeRedis: cannot listen on 127.0.0.1");
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRedis() {
    stop_ = true;
    thread_.join();
    for (auto& c : clients_) ::close(c.fd);
    ::close(listen_fd_);
  }
  FakeRedis(const FakeRedis&) = delete;
  FakeRedis& operator=(const FakeRedis&) = delete;

  /// The port it listens on (127.0.0.1).
  int port() const { return port_; }
  /// Sends `payload` on `channel` to every subscribed connection; returns how many.
  int publish(const std::string& channel, const std::string& payload) {
    std::lock_guard lk(m_);
    int n = 0;
    for (auto& c : clients_) {
      if (c.subscribed) {
        send(c.fd, resp::bulks({"message", channel, payload}));
        ++n;
      }
    }
    return n;
  }
  /// Cuts every subscribed connection.
  void drop_subscribers() {
    std::lock_guard lk(m_);
    for (auto& c : clients_) {
      if (c.subscribed) ::shutdown(c.fd, SHUT_RDWR);
    }
  }
  /// How many requests named `command` (case-insensitive) it has received.
  int count(const std::string& command) {
    std::lock_guard lk(m_);
    int n = 0;
    for (const auto& [name, k] : counts_) {
      if (::strcasecmp(name.c_str(), command.c_str()) == 0) n += k;
    }
    return n;
  }

 private:
  struct Client {
    int fd;
    std::shared_ptr<redisReader> reader;
    bool subscribed = false;
  };
  static void send(int fd, const std::string& out) {
    (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
  }
  void answer(Client& c, const redisReply& r) {  // m_ held
    std::vector<std::string> argv;
    for (std::size_t i = 0; r.type == REDIS_REPLY_ARRAY && i < r.elements; ++i) {
      argv.emplace_back(r.element[i]->str, r.element[i]->len);
    }
    if (argv.empty()) return;
    ++counts_[argv[0]];
    if (::strcasecmp(argv[0].c_str(), "SUBSCRIBE") == 0) {
      c.subscribed = true;
      for (std::size_t i = 1; i < argv.size(); ++i) {
        send(c.fd, resp::array({resp::bulk("subscribe"), resp::bulk(argv[i]),
                                resp::integer(static_cast<long long>(i))}));
      }
      return;
    }
    send(c.fd, handler_(argv));
  }
  void serve() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      {
        std::lock_guard lk(m_);
        for (auto& c : clients_) fds.push_back({c.fd, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 10) <= 0) continue;
      std::lock_guard lk(m_);
      if ((fds[0].revents & POLLIN) != 0) {
        const int fd = ::accept(listen_fd_, nullptr, nullptr);
        if (fd >= 0) clients_.push_back({fd, {redisReaderCreate(), redisReaderFree}});
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto it = std::find_if(clients_.begin(), clients_.end(),
                               [&](const Client& c) { return c.fd == fds[i].fd; });
        char buf[4096];
        const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n <= 0) {
          ::close(it->fd);
          clients_.erase(it);
          continue;
        }
        redisReaderFeed(it->reader.get(), buf, static_cast<std::size_t>(n));
        void* reply = nullptr;
        while (redisReaderGetReply(it->reader.get(), &reply) == REDIS_OK && reply != nullptr) {
          answer(*it, *static_cast<redisReply*>(reply));
          freeReplyObject(reply);
        }
      }
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex m_;
  std::vector<Client> clients_;
  std::map<std::string, int> counts_;
  std::thread thread_;
};

}  // namespace dogpile::test
