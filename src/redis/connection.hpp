// One blocking hiredis connection, and the reply type the rest of src/redis sees (hiredis'
// redisReply never leaves connection.cpp). Internal to dogpile::redis.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;

namespace dogpile::redis_detail {

using std::chrono::milliseconds;

/// Where a server listens: TCP host/port, or a unix socket path when `unix_path` is set.
struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path{};
  [[nodiscard]] std::string str() const {
    return unix_path.empty() ? host + ":" + std::to_string(port) : "unix:" + unix_path;
  }
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

/// What every new connection does: timeouts, then AUTH and SELECT.
struct ConnectSettings {
  milliseconds connect_timeout{1000};
  milliseconds socket_timeout{2000};
  std::string username{};
  std::string password{};
  int db = 0;
  bool check_master = false;  // sentinel: refuse a server whose ROLE is not master
};

/// One reply, owned. Errors are replies too (`type == error`): the caller decides.
struct Reply {
  enum class Type { nil, status, error, integer, string, array };
  Type type = Type::nil;
  std::string str{};              // status, error, string
  long long integer = 0;          // integer
  std::vector<Reply> elements{};  // array
  [[nodiscard]] bool is_error() const { return type == Type::error; }
  [[nodiscard]] bool is_nil() const { return type == Type::nil; }
  /// The error's first word: MOVED, ASK, TRYAGAIN, NOSCRIPT, READONLY, MASTERDOWN...
  [[nodiscard]] std::string_view error_code() const {
    if (!is_error()) return {};
    std::string_view s = str;
    return s.substr(0, s.find(' '));
  }
};

/// A command: its arguments, binary-safe.
using Argv = std::vector<std::string>;

/// Why a connection failed.
enum class Failure {
  connect,  // could not connect (refused, unreachable, connect timeout, AUTH/SELECT refused)
  timeout,  // a reply did not arrive within socket_timeout: the command may have run
  closed,   // the server closed the connection or the socket failed
};

/// Thrown by `Connection` for connection-level failures (not for error replies).
class ConnectionFailure : public std::exception {
 public:
  ConnectionFailure(Failure kind, std::string what) : kind_(kind), what_(std::move(what)) {}
  [[nodiscard]] const char* what() const noexcept override { return what_.c_str(); }
  [[nodiscard]] Failure kind() const noexcept { return kind_; }

 private:
  Failure kind_;
  std::string what_;
};

/// One blocking connection. Not thread-safe: one user at a time (the pool lends it out).
/// After any ConnectionFailure it is `broken()` and must be dropped.
class Connection {
 public:
  /// Connects, sets the socket timeout and keepalive, authenticates and selects the db.
  /// @throws ConnectionFailure(connect) with the server's reason.
  Connection(const Endpoint& ep, const ConnectSettings& s);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Sends one command and reads its reply. @throws ConnectionFailure.
  Reply command(const Argv& argv);
  /// Sends every command in one write, then reads every reply, in order. @throws
  /// ConnectionFailure.
  std::vector<Reply> pipeline(const std::vector<Argv>& cmds);
  /// The same for commands owned elsewhere (a client's routed commands: no copy of their
  /// arguments). @throws ConnectionFailure.
  std::vector<Reply> pipeline(std::span<const Argv* const> cmds);
  /// Sends without reading (a subscriber's SUBSCRIBE). @throws ConnectionFailure.
  void send(const Argv& argv);
  /// The next reply already sent by the server (a pub/sub message), waiting at most `wait`;
  /// nullopt when none arrived in time (the connection stays usable). @throws
  /// ConnectionFailure(closed).
  std::optional<Reply> read_push(milliseconds wait);

  [[nodiscard]] bool broken() const noexcept { return broken_; }
  [[nodiscard]] const Endpoint& endpoint() const noexcept { return ep_; }
  /// The process that opened it: a forked child must not use its parent's sockets.
  [[nodiscard]] int owner_pid() const noexcept { return pid_; }

 private:
  [[noreturn]] void fail();
  Reply read_one();

  redisContext* ctx_ = nullptr;
  Endpoint ep_;
  bool broken_ = false;
  int pid_ = 0;
};

}  // namespace dogpile::redis_detail
