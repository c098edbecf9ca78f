// Test support: servers played by the test on 127.0.0.1 (a free port). The real servers are in
// servers.hpp; these only play a script.
// * `FakeServer`: raw bytes, for what a client does when a server sends hostile bytes (a
//   trickled reply, an endless line, a lying length, a reply of the wrong type).
// * `FakeRedis` (on a FakeServer): speaks RESP, requests parsed with hiredis' reader, each
//   answered by the test's handler — for what a real redis-server will not do on demand: a
//   sentinel publishing failover events (a real one accepts PUBLISH only on its hello channel),
//   a cluster node that redirects forever.
//
// Every accepted connection runs `handler(conn)` on its own thread; `conn` reads requests and
// writes replies with helpers that give up when the server is being destroyed, so a handler
// that streams forever still ends. The destructor stops accepting, tells handlers to stop,
// closes every socket and joins every thread. `connections()` counts accepted connections (a
// test checks that a broken connection was not reused).
//
// Header-only; include as "support/fake_server.hpp".
#pragma once

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/error.hpp"

namespace dogpile::test {

/// Milliseconds `f` took (a hostile-server test checks a call ends within its deadline).
template <class F>
long long ms_of(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t0)
      .count();
}

/// The message of the `BackendError` `f` throws ("" if it throws none).
template <class F>
std::string backend_error(F&& f) {
  try {
    f();
  } catch (const dogpile::BackendError& e) {
    return e.what();
  }
  return "";
}

/// One accepted connection, as its handler sees it. Used by one thread.
class FakeConnection {
 public:
  FakeConnection(int fd, const std::atomic<bool>& stop) : fd_(fd), stop_(stop) {}

  /// Waits (until the server stops) for bytes and returns what arrived; empty when the peer
  /// closed or the server is stopping.
  std::string read_some() {
    while (!stop_.load()) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return {};
      return std::string(buf, static_cast<std::size_t>(n));
    }
    return {};
  }

  /// Reads until `marker` was received (a whole request); false when the peer closed first.
  bool read_until(std::string_view marker) {
    while (pending_.find(marker) == std::string::npos) {
      std::string more = read_some();
      if (more.empty()) return false;
      pending_ += more;
    }
    pending_.erase(0, pending_.find(marker) + marker.size());
    return true;
  }

  /// Sends `bytes`; false when the peer closed (or stopped reading until the server stops).
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      if (stop_.load()) return false;
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  /// Sends `bytes` one byte every `gap`; false when the peer closed.
  bool trickle(std::string_view bytes, std::chrono::milliseconds gap) {
    for (const char c : bytes) {
      if (!send(std::string_view(&c, 1))) return false;
      if (!nap(gap)) return false;
    }
    return true;
  }

  /// Sends `chunk` over and over until the peer closes (or the server stops).
  void stream_forever(std::string_view chunk) {
    while (send(chunk)) {
    }
  }

  /// Sleeps `d` unless the server stops first; false if it did.
  bool nap(std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
      if (stop_.load()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  /// Holds the connection open without answering, until the peer closes or the server stops.
  void hold() {
    while (!read_some().empty()) {
    }
  }

  [[nodiscard]] int fd() const { return fd_; }
  /// The server is stopping: a handler that loops on its own must return.
  [[nodiscard]] bool stopping() const { return stop_.load(); }

 private:
  int fd_;
  const std::atomic<bool>& stop_;
  std::string pending_;
};

/// A loopback TCP listener that runs `handler` on every connection (see the file comment).
class FakeServer {
 public:
  using Handler = std::function<void(FakeConnection&)>;

  explicit FakeServer(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd_ < 0) throw std::runtime_error("FakeServer: socket failed");
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(listen_fd_);
      throw std::runtime_error(std::string("FakeServer: bind/listen failed: ") +
                               std::strerror(errno));
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~FakeServer() {
    stop_.store(true);
    acceptor_.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard lk(m_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
    ::close(listen_fd_);
  }

  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  /// Connections accepted so far.
  [[nodiscard]] int connections() const { return accepted_.load(); }
  /// Connections closed so far (their handler returned and the socket was closed).
  [[nodiscard]] int closed() const { return closed_.load(); }

 private:
  void accept_loop() {
    while (!stop_.load()) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      accepted_.fetch_add(1);
      std::lock_guard lk(m_);
      threads_.emplace_back([this, fd] {
        FakeConnection conn(fd, stop_);
        try {
          handler_(conn);
        } catch (...) {  // a handler's failure only ends its connection
        }
        ::close(fd);
        closed_.fetch_add(1);
      });
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> closed_{0};
  std::mutex m_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

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
  encoded.reserve(items.size());
  for (const auto& i : items) encoded.push_back(bulk(i));
  return array(encoded);
}
}  // namespace resp

/// A RESP server on a FakeServer (see the file comment). SUBSCRIBE is answered here (and the
/// connection marked subscribed, for publish()); every other command goes to the handler, one
/// request at a time across all connections. Thread-safe; stopped and joined by the destructor.
class FakeRedis {
 public:
  /// (argv) -> raw RESP reply. Called on a connection's thread, never two at once.
  using Handler = std::function<std::string(const std::vector<std::string>& argv)>;

  explicit FakeRedis(Handler handler)
      : handler_(std::move(handler)), server_([this](FakeConnection& c) { serve(c); }) {}

  /// The port it listens on (127.0.0.1).
  [[nodiscard]] int port() const { return server_.port(); }
  /// Sends `payload` on `channel` to every subscribed connection; returns how many.
  int publish(const std::string& channel, const std::string& payload) {
    std::lock_guard lk(m_);
    int n = 0;
    for (auto& c : subscribed_) {
      std::lock_guard wl(c.write);
      if (c.conn->send(resp::bulks({"message", channel, payload}))) ++n;
    }
    return n;
  }
  /// Cuts every subscribed connection.
  void drop_subscribers() {
    std::lock_guard lk(m_);
    for (auto& c : subscribed_) ::shutdown(c.conn->fd(), SHUT_RDWR);
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
  struct Subscribed {
    FakeConnection* conn;
    std::mutex write;  // publish() and the connection's own thread both send
  };

  void serve(FakeConnection& c) {
    const std::unique_ptr<redisReader, void (*)(redisReader*)> reader(redisReaderCreate(),
                                                                      redisReaderFree);
    Subscribed* sub = nullptr;
    for (std::string in; !(in = c.read_some()).empty();) {
      redisReaderFeed(reader.get(), in.data(), in.size());
      void* reply = nullptr;
      while (redisReaderGetReply(reader.get(), &reply) == REDIS_OK && reply != nullptr) {
        const std::unique_ptr<redisReply, void (*)(void*)> r(static_cast<redisReply*>(reply),
                                                             freeReplyObject);
        std::vector<std::string> argv;
        for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
          argv.emplace_back(r->element[i]->str, r->element[i]->len);
        }
        if (argv.empty()) continue;
        {
          std::lock_guard lk(m_);
          ++counts_[argv[0]];
        }
        if (::strcasecmp(argv[0].c_str(), "SUBSCRIBE") == 0) {
          if (sub == nullptr) {
            std::lock_guard lk(m_);
            sub = &subscribed_.emplace_back();
            sub->conn = &c;
          }
          std::lock_guard wl(sub->write);
          for (std::size_t i = 1; i < argv.size(); ++i) {
            c.send(resp::array({resp::bulk("subscribe"), resp::bulk(argv[i]),
                                resp::integer(static_cast<long long>(i))}));
          }
          continue;
        }
        std::string out;
        {
          std::lock_guard hl(handler_m_);
          out = handler_(argv);
        }
        if (sub != nullptr) {
          std::lock_guard wl(sub->write);
          c.send(out);
        } else {
          c.send(out);
        }
      }
    }
    if (sub != nullptr) {
      std::lock_guard lk(m_);
      subscribed_.remove_if([&](const Subscribed& s) { return &s == sub; });
    }
  }

  Handler handler_;
  std::mutex handler_m_;  // one request at a time (handlers keep plain state)
  std::mutex m_;          // subscribed_, counts_
  std::list<Subscribed> subscribed_;
  std::map<std::string, int> counts_;
  FakeServer server_;  // last: its threads use the members above; joined first
};

/// A TCP proxy on 127.0.0.1 to a real server on 127.0.0.1:`target` that a test can freeze:
/// while frozen, no byte moves either way but every connection stays open (a network partition
/// between the proxy's clients and the server, which clients that connect directly do not see).
/// Thread-safe; stopped and joined by the destructor.
class FreezableProxy {
 public:
  explicit FreezableProxy(int target)
      : target_(target), server_([this](FakeConnection& c) { pump(c); }) {}
  [[nodiscard]] int port() const { return server_.port(); }
  void freeze() { frozen_.store(true); }
  void thaw() { frozen_.store(false); }

 private:
  void pump(FakeConnection& down) {
    const int up = ::socket(AF_INET, SOCK_STREAM, 0);
    if (up < 0) return;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(target_));
    if (::connect(up, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(up);
      return;
    }
    char buf[65536];
    while (!down.stopping()) {
      if (frozen_.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      pollfd p[2] = {{down.fd(), POLLIN, 0}, {up, POLLIN, 0}};
      if (::poll(p, 2, 10) <= 0) continue;
      bool closed = false;
      for (int i = 0; i < 2 && !closed; ++i) {
        if (p[i].revents == 0) continue;
        const ssize_t n = ::recv(p[i].fd, buf, sizeof buf, 0);
        if (n <= 0) {
          closed = true;
          break;
        }
        std::string_view bytes(buf, static_cast<std::size_t>(n));
        const int to = i == 0 ? up : down.fd();
        while (!bytes.empty()) {
          const ssize_t w = ::send(to, bytes.data(), bytes.size(), MSG_NOSIGNAL);
          if (w <= 0) {
            closed = true;
            break;
          }
          bytes.remove_prefix(static_cast<std::size_t>(w));
        }
      }
      if (closed) break;
    }
    ::close(up);
  }

  int target_;
  std::atomic<bool> frozen_{false};
  FakeServer server_;  // last: its threads use the members above; joined first
};

}  // namespace dogpile::test
