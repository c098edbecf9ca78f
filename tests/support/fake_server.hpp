// Test support: a fake, misbehaving TCP server on 127.0.0.1 (a free port), for tests of what a
// client does when a server sends hostile bytes (a trickled reply, an endless line, a lying
// length, a reply of the wrong type). The real servers are in servers.hpp; this one only
// plays a script.
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
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace dogpile::test {

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
      });
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::mutex m_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace dogpile::test
