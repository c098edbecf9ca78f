// Test support: starts and stops real servers (redis-server, a redis cluster, a redis sentinel
// set, memcached) for integration tests. No mocks: every server is a real child process that
// listens on 127.0.0.1 on a free port and runs in a fresh temporary directory.
//
// Lifetime rules:
//  * every object stops its servers in its destructor;
//  * a child started here gets PR_SET_PDEATHSIG(SIGKILL), so it dies with the test process even
//    when that one is killed (note: the signal fires when the *thread* that started the server
//    exits, so start servers from the test's main thread or one that outlives them);
//  * objects remember the pid that created them: in a forked worker process, destructors,
//    stop(), kill() and start() do nothing, so a worker that exits or returns never stops the
//    parent's servers or removes its directories;
//  * readiness is polled with short naps against a deadline (10 s); a server that does not come
//    up throws std::runtime_error with the tail of its log;
//  * a missing binary throws and names the Debian package to install (tests never skip).
//  * a server made *inside* a worker that then _exits (no destructors) dies with the worker
//    (PDEATHSIG), but its /tmp/dogpile-test-* directory stays: let workers destroy their objects.
//  * servers are children of the test process: wait for forked workers by pid, never with
//    wait()/waitpid(-1), which would block on (or reap) the servers.
//
// Start-up times measured on a 2-core Debian 12 machine (redis 7.0, memcached 1.6): RedisServer
// ~20-35 ms, MemcachedServer ~5-15 ms, RedisSentinelSet ~90 ms with one sentinel (plus ~1.1 s
// per failover()), RedisCluster 2-5 s (`redis-cli --cluster create` polls the join once a
// second).
// MemcachedServer::stop() takes up to ~1 s (memcached acts on SIGTERM at its clock tick); its
// destructor SIGKILLs.
//
// Header-only; include as "support/servers.hpp".
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace dogpile::test {

/// How long a server may take to become ready before its constructor (or restart()) throws.
inline constexpr std::chrono::milliseconds kStartDeadline{10'000};

namespace detail {

/// Throws std::runtime_error with `what` followed by strerror(errno).
[[noreturn]] inline void throw_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

/// The Debian package that ships `program` (for "install X" messages).
inline std::string debian_package_for(std::string_view program) {
  if (program == "redis-server") return "redis-server";
  if (program == "redis-cli") return "redis-tools";
  if (program == "redis-sentinel") return "redis-sentinel";
  if (program == "memcached") return "memcached";
  if (program == "saslpasswd2") return "sasl2-bin";
  if (program == "stunnel") return "stunnel4";
  return std::string(program);
}

/// The absolute path of `program` (searched in PATH when it has no '/'); throws naming the Debian
/// package to install when it is missing.
inline std::string find_program(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), X_OK) == 0) return program;
  } else {
    const char* path_env = std::getenv("PATH");
    std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
      if (dir.empty()) dir = ".";
      std::string candidate = dir + "/" + program;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  throw std::runtime_error("dogpile test harness: the program '" + program +
                           "' is not installed (not found in PATH); install the Debian package: "
                           "apt-get install " +
                           debian_package_for(std::filesystem::path(program).filename().string()));
}

/// The last `lines` lines of a text file ("" when it cannot be read).
inline std::string file_tail(const std::filesystem::path& file, std::size_t lines) {
  std::ifstream in(file);
  if (!in) return "";
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (tail.size() > lines) tail.pop_front();
  }
  std::string out;
  for (const auto& l : tail) out += l + "\n";
  return out;
}

/// Polls `ready` with short naps (5 ms growing to 50 ms) until it returns true or `deadline`
/// passes; returns whether it became true. `alive` (optional) aborts the wait early when false.
inline bool poll_until(const std::function<bool()>& ready, std::chrono::milliseconds deadline,
                       const std::function<bool()>& alive = {}) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  auto nap = std::chrono::milliseconds(5);
  while (true) {
    if (ready()) return true;
    if (alive && !alive()) return false;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::milliseconds(50));
  }
}

/// Sets SO_RCVTIMEO and SO_SNDTIMEO on a socket.
inline void set_socket_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/// A 127.0.0.1 sockaddr for `port`.
inline sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

/// Whether 127.0.0.1:port can be bound right now (nothing listens or is bound there).
inline bool port_is_free(int port) {
  if (port <= 0 || port > 65535) return false;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno("socket");
  sockaddr_in addr = loopback(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

/// Whether the log of a server that exited says its port was taken (a race with another process
/// between free_port() and the server's bind): the caller then retries on another port.
inline bool log_says_address_in_use(const std::filesystem::path& log) {
  return file_tail(log, 50).find("ddress already in use") != std::string::npos;
}

}  // namespace detail

/// A 127.0.0.1 TCP port in [min_port, max_port] that nothing is bound to right now: tries random
/// ports of the range (bind, close), preferring ports below the kernel's ephemeral range (so that
/// a restart on the same port does not meet an outgoing connection's local port), then scans the
/// range. Throws when the whole range is taken. The port is free when this returns, not
/// reserved: start the server soon (the server classes retry on another port when they lose the
/// race).
inline int free_port(int max_port = 60000, int min_port = 20000) {
  if (min_port < 1) min_port = 1;
  if (max_port > 65535) max_port = 65535;
  if (min_port > max_port) throw std::invalid_argument("free_port: empty port range");
  // Seeded per process: forked workers must not replay their parent's sequence of picks.
  static thread_local std::mt19937 rng;
  static thread_local pid_t seeded_for = 0;
  if (seeded_for != ::getpid()) {
    seeded_for = ::getpid();
    rng.seed(std::random_device{}() ^ static_cast<unsigned>(seeded_for));
  }
  int ephemeral_low = 32768;
  {
    std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
    int low = 0;
    if (range >> low && low > 1024) ephemeral_low = low;
  }
  if (std::min(max_port, ephemeral_low - 1) - min_port >= 1000) {
    std::uniform_int_distribution<int> below(min_port, std::min(max_port, ephemeral_low - 1));
    for (int i = 0; i < 100; ++i) {
      int port = below(rng);
      if (detail::port_is_free(port)) return port;
    }
  }
  std::uniform_int_distribution<int> dist(min_port, max_port);
  for (int i = 0; i < 200; ++i) {
    int port = dist(rng);
    if (detail::port_is_free(port)) return port;
  }
  for (int port = min_port; port <= max_port; ++port) {
    if (detail::port_is_free(port)) return port;
  }
  throw std::runtime_error("free_port: no free 127.0.0.1 port in [" + std::to_string(min_port) +
                           ", " + std::to_string(max_port) + "]");
}

/// Whether a TCP connection to 127.0.0.1:port is accepted right now (false when refused).
inline bool port_accepts(int port,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) detail::throw_errno("socket");
  detail::set_socket_timeout(fd, timeout);
  sockaddr_in addr = detail::loopback(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

/// Connects to 127.0.0.1:port, sends `request` and reads until the reply contains `until` (or the
/// peer closes). Returns the bytes read, or std::nullopt when the connection is refused, fails, or
/// `timeout` (per socket operation) passes first — e.g. against a paused server.
inline std::optional<std::string> tcp_exchange(
    int port, std::string_view request, std::string_view until = "\r\n",
    std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) detail::throw_errno("socket");
  detail::set_socket_timeout(fd, timeout);
  sockaddr_in addr = detail::loopback(port);
  std::optional<std::string> result;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::size_t sent = 0;
    bool ok = true;
    while (sent < request.size()) {
      ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        ok = false;
        break;
      }
      sent += static_cast<std::size_t>(n);
    }
    std::string reply;
    char buf[4096];
    while (ok && (until.empty() || reply.find(until) == std::string::npos)) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 0) ok = false;  // timeout or error
      if (n <= 0) break;      // closed by the peer
      reply.append(buf, static_cast<std::size_t>(n));
    }
    if (ok && (until.empty() || reply.find(until) != std::string::npos)) result = std::move(reply);
  }
  ::close(fd);
  return result;
}

/// A temporary directory made with mkdtemp under /tmp, removed recursively on destruction (only by
/// the process that created it). Movable, not copyable.
class TempDir {
 public:
  /// Creates /tmp/dogpile-test-XXXXXX.
  TempDir() : owner_(::getpid()) {
    std::string tmpl = "/tmp/dogpile-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) detail::throw_errno("mkdtemp " + tmpl);
    path_ = tmpl;
  }
  /// Removes the directory and everything in it (no-op in another process than the creator).
  ~TempDir() { remove(); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  /// Takes over `other`'s directory; `other` then owns nothing.
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})), owner_(other.owner_) {}
  /// Removes this directory and takes over `other`'s.
  TempDir& operator=(TempDir&& other) noexcept {
    if (this != &other) {
      remove();
      path_ = std::exchange(other.path_, {});
      owner_ = other.owner_;
    }
    return *this;
  }
  /// The directory's absolute path.
  const std::filesystem::path& path() const { return path_; }

 private:
  void remove() noexcept {
    if (path_.empty() || ::getpid() != owner_) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    path_.clear();
  }
  std::filesystem::path path_;
  pid_t owner_;
};

/// One child process (a server): fork + exec with stdout/stderr appended to a log file, stdin from
/// /dev/null, PR_SET_PDEATHSIG(SIGKILL). Stopped by the destructor. Only the process that created
/// the object starts, stops, kills or reaps it (in a forked child those calls do nothing); pause()
/// and resume() just send signals.
class ServerProcess {
 public:
  /// Starts argv (argv[0] is looked up in PATH; throws naming the Debian package when missing).
  ServerProcess(std::vector<std::string> argv, std::filesystem::path log_file)
      : argv_(std::move(argv)), log_file_(std::move(log_file)), owner_(::getpid()) {
    if (argv_.empty()) throw std::invalid_argument("ServerProcess: empty argv");
    executable_ = detail::find_program(argv_[0]);
    start();
  }
  /// Stops the process (SIGTERM, then SIGKILL after 5 s); does nothing in another process.
  ~ServerProcess() { stop(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ServerProcess(ServerProcess&&) = delete;
  ServerProcess& operator=(ServerProcess&&) = delete;

  /// The child's pid (-1 when it is not running).
  pid_t pid() const { return pid_; }
  /// The command line it runs.
  const std::vector<std::string>& argv() const { return argv_; }
  /// The file that receives its stdout and stderr.
  const std::filesystem::path& log_file() const { return log_file_; }

  /// Whether the child is still alive (reaps it, in the owner process, if it has exited).
  bool running() const {
    if (pid_ <= 0) return false;
    if (::getpid() != owner_) return ::kill(pid_, 0) == 0;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  /// Graceful stop: SIGCONT (in case it is paused) and SIGTERM, waits up to 5 s, then SIGKILL;
  /// reaps the child. No-op when not running or in another process.
  void stop() {
    if (pid_ <= 0 || ::getpid() != owner_) return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGTERM);
    if (!detail::poll_until([this] { return !running(); }, std::chrono::milliseconds(5000))) {
      kill();
    }
  }

  /// SIGKILL and reap (simulates a crash). No-op when not running or in another process.
  void kill() {
    if (pid_ <= 0 || ::getpid() != owner_) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  /// SIGSTOP: the process stops answering (connections still queue in the kernel).
  void pause() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGSTOP);
    // kill() returns before the stop takes effect: a server thread already running can still
    // answer a request sent right after. Wait until every thread reports state T (stopped).
    const std::string tasks = "/proc/" + std::to_string(pid_) + "/task";
    detail::poll_until(
        [&] {
          std::error_code ec;
          for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
            std::ifstream stat(t.path() / "stat");
            std::string line;
            std::getline(stat, line);
            const auto close = line.rfind(')');  // the name may hold spaces and parentheses
            if (close == std::string::npos || close + 2 >= line.size()) return false;
            const char state = line[close + 2];
            if (state != 'T' && state != 't') return false;
          }
          return !ec;
        },
        std::chrono::milliseconds(5000));
  }
  /// SIGCONT: undoes pause().
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

  /// Starts the process again with the same argv (after stop() or kill(); no-op while running or
  /// in another process). Does not wait for readiness: the server classes do that.
  void start() {
    if (::getpid() != owner_ || running()) return;
    // Everything the child needs is built before fork: after fork in a (possibly) multithreaded
    // program the child may only call async-signal-safe functions until exec.
    std::vector<char*> args;
    args.reserve(argv_.size() + 1);
    for (auto& a : argv_) args.push_back(a.data());
    args.push_back(nullptr);
    const char* exe = executable_.c_str();
    int log_fd = ::open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) detail::throw_errno("open " + log_file_.string());
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) {
      ::close(log_fd);
      detail::throw_errno("open /dev/null");
    }
    static constexpr char kExecFailed[] = "dogpile test harness: execve failed\n";
    const pid_t parent = ::getpid();
    pid_t child = ::fork();
    if (child == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);  // the parent died before prctl
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      ::dup2(null_fd, 0);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::close_range(3, ~0U, 0);  // no inherited sockets or files
      ::execve(exe, args.data(), environ);
      ssize_t ignored = ::write(2, kExecFailed, sizeof kExecFailed - 1);
      (void)ignored;
      ::_exit(127);
    }
    int fork_errno = errno;
    ::close(log_fd);
    ::close(null_fd);
    if (child < 0) {
      errno = fork_errno;
      detail::throw_errno("fork");
    }
    pid_ = child;
  }

  /// The last `lines` lines of the log file.
  std::string log_tail(std::size_t lines = 20) const { return detail::file_tail(log_file_, lines); }

 private:
  std::vector<std::string> argv_;
  std::filesystem::path log_file_;
  std::string executable_;
  pid_t owner_;
  mutable pid_t pid_ = -1;
};

/// Runs `redis-cli -h 127.0.0.1 -p port [--no-auth-warning -a password] args...` and returns its
/// stdout (redis-cli exits 0 on error replies: those come back as "ERR ..." text). Throws when
/// redis-cli exits non-zero (e.g. connection refused) or does not finish within `timeout` (it is
/// then killed: e.g. against a paused server).
inline std::string redis_cli(
    int port, const std::vector<std::string>& args, const std::string& password = "",
    std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000)) {
  static const std::string exe = detail::find_program("redis-cli");
  std::vector<std::string> argv = {"redis-cli", "-h", "127.0.0.1", "-p", std::to_string(port)};
  if (!password.empty()) {
    argv.insert(argv.end(), {"--no-auth-warning", "-a", password});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) detail::throw_errno("pipe2");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    detail::throw_errno("pipe2");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    errno = rc;
    detail::throw_errno("posix_spawn redis-cli");
  }
  std::string out;
  std::string err;
  bool timed_out = false;
  const auto end = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
      if (r > 0) {
        (i == 0 ? out : err).append(buf, static_cast<std::size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::string cmd;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (i > 0) cmd += ' ';
    cmd += (!password.empty() && i > 0 && argv[i - 1] == "-a") ? "***" : argv[i];
  }
  if (timed_out) {
    throw std::runtime_error("redis-cli timed out after " + std::to_string(timeout.count()) +
                             " ms: " + cmd);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("redis-cli failed (status " + std::to_string(status) + "): " + cmd +
                             "\n" + err + out);
  }
  return out;
}

/// Options of RedisServer.
struct RedisServerOptions {
  /// requirepass (empty: no password).
  std::string password = "";
  /// Appended to the redis-server command line (e.g. {"--maxmemory", "10mb"}).
  std::vector<std::string> extra_args = {};
  /// Port to listen on; 0 picks a free one.
  int port = 0;
  /// Highest port free_port() may pick when port is 0.
  int max_port = 60000;
  /// TLS: a second, TLS-only port (tls_port()) beside the plain one (which the harness's own
  /// readiness checks and cli() keep using). Paths to PEM files the test made.
  struct Tls {
    std::string cert_file;
    std::string key_file;
    std::string ca_cert_file;
    bool auth_clients = false;  ///< --tls-auth-clients: a client certificate is required
  };
  std::optional<Tls> tls = std::nullopt;
};

/// A single redis-server on 127.0.0.1 without persistence (--save "" --appendonly no), in its own
/// TempDir (its log is <dir>/redis.log). Ready means `redis-cli ping` answers PONG.
class RedisServer {
 public:
  /// Starts the server and waits until it answers PING (throws after kStartDeadline).
  explicit RedisServer(RedisServerOptions o = {}) : options_(std::move(o)) {
    const bool pick_port = options_.port == 0;
    for (int attempt = 0;; ++attempt) {
      port_ = pick_port ? free_port(options_.max_port) : options_.port;
      std::vector<std::string> argv = {"redis-server", "--port", std::to_string(port_), "--bind",
                                       host_, "--dir", dir_.path(), "--save", "", "--appendonly",
                                       "no", "--daemonize", "no", "--protected-mode", "no",
                                       // a replica's full sync starts at once (default: 5 s)
                                       "--repl-diskless-sync-delay", "0"};
      if (!options_.password.empty()) {
        argv.insert(argv.end(),
                    {"--requirepass", options_.password, "--masterauth", options_.password});
      }
      if (options_.tls) {
        do {
          tls_port_ = free_port(options_.max_port);
        } while (tls_port_ == port_);
        argv.insert(argv.end(), {"--tls-port", std::to_string(tls_port_), "--tls-cert-file",
                                 options_.tls->cert_file, "--tls-key-file", options_.tls->key_file,
                                 "--tls-ca-cert-file", options_.tls->ca_cert_file,
                                 "--tls-auth-clients", options_.tls->auth_clients ? "yes" : "no"});
      }
      argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
      process_.reset();
      process_ = std::make_unique<ServerProcess>(argv, dir_.path() / "redis.log");
      if (wait_ready(false)) return;
      if (!(pick_port && attempt < 3 && !process_->running() &&
            detail::log_says_address_in_use(process_->log_file()))) {
        wait_ready(true);  // throws with the log tail
      }
      std::filesystem::remove(process_->log_file());
    }
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  /// The port it listens on.
  int port() const { return port_; }
  /// The TLS port (options.tls set), else 0.
  int tls_port() const { return tls_port_; }
  /// "127.0.0.1".
  const std::string& host() const { return host_; }
  /// The password ("" when none).
  const std::string& password() const { return options_.password; }
  /// "redis://[:password@]127.0.0.1:port/db".
  std::string url(int db = 0) const {
    std::string auth = options_.password.empty() ? "" : ":" + options_.password + "@";
    return "redis://" + auth + host_ + ":" + std::to_string(port_) + "/" + std::to_string(db);
  }
  /// redis_cli against this server, with its password.
  std::string cli(const std::vector<std::string>& args,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000)) const {
    return redis_cli(port_, args, options_.password, timeout);
  }
  /// Whether it answers PING with PONG within `timeout`.
  bool ping(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) const {
    try {
      return cli({"ping"}, timeout) == "PONG\n";
    } catch (const std::exception&) {
      return false;
    }
  }
  /// SIGKILL (a crash).
  void kill() { process_->kill(); }
  /// Graceful stop (SIGTERM; SIGKILL after 5 s).
  void stop() { process_->stop(); }
  /// Stops it if running, starts it again on the same port and waits until it answers PING
  /// (the data is gone: there is no persistence).
  void restart() {
    process_->stop();
    process_->start();
    wait_ready(true);
  }
  /// SIGSTOP: requests hang until resume().
  void pause() { process_->pause(); }
  /// SIGCONT.
  void resume() { process_->resume(); }
  /// The underlying process.
  ServerProcess& process() { return *process_; }
  /// Its temporary directory.
  const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  bool wait_ready(bool throw_on_failure) {
    // The answer must come from our process: another server may hold a fixed port.
    const std::string pid_line = "process_id:" + std::to_string(process_->pid()) + "\r";
    bool ok = detail::poll_until(
        [&] {
          if (!port_accepts(port_) || !ping()) return false;
          try {
            return cli({"info", "server"}, std::chrono::milliseconds(1000)).find(pid_line) !=
                   std::string::npos;
          } catch (const std::exception&) {
            return false;
          }
        },
        kStartDeadline, [this] { return process_->running(); });
    if (!ok && throw_on_failure) {
      std::string why = process_->running() ? "did not answer PING within " +
                                                  std::to_string(kStartDeadline.count()) + " ms"
                                            : "exited";
      throw std::runtime_error("redis-server on port " + std::to_string(port_) + " " + why +
                               "; log tail (" + process_->log_file().string() + "):\n" +
                               process_->log_tail());
    }
    return ok;
  }
  RedisServerOptions options_;
  std::string host_ = "127.0.0.1";
  TempDir dir_;
  int port_ = 0;
  int tls_port_ = 0;
  std::unique_ptr<ServerProcess> process_;
};

/// A redis cluster of N masters (default 3) and no replicas, made with `redis-cli --cluster
/// create`. Ports are <= 55535 (the cluster bus uses port + 10000, checked free too). Ready means
/// every node reports cluster_state:ok and all nodes return the same CLUSTER SLOTS.
class RedisCluster {
 public:
  /// Starts the nodes, creates the cluster and waits until it is ready (throws after 10 s + the
  /// creation time).
  /// With `tls`, every node also serves TLS on a second port (tls_ports()) and the cluster bus
  /// runs over TLS (`tls-cluster yes`): a TLS client is told the nodes' TLS ports, a plain one
  /// (the harness's redis-cli) their plain ports.
  explicit RedisCluster(int masters = 3,
                        std::optional<RedisServerOptions::Tls> tls = std::nullopt) {
    if (masters < 3) throw std::invalid_argument("RedisCluster: redis needs at least 3 masters");
    int lost_races = 0;
    for (int i = 0; i < masters; ++i) {
      int port = 0;
      do {
        port = free_port(55535);
      } while (!detail::port_is_free(port + 10000) ||
               std::find(ports_.begin(), ports_.end(), port) != ports_.end());
      RedisServerOptions o;
      o.port = port;
      o.extra_args = {"--cluster-enabled",      "yes", "--cluster-config-file", "nodes.conf",
                      "--cluster-node-timeout", "5000"};
      if (tls) {
        // The bus would follow the TLS port under tls-cluster: pin it to the checked one.
        o.tls = tls;
        o.extra_args.insert(o.extra_args.end(), {"--tls-cluster", "yes", "--cluster-port",
                                                 std::to_string(port + 10000)});
      }
      try {
        nodes_.push_back(std::make_unique<RedisServer>(o));
      } catch (const std::runtime_error& e) {
        // Another process took the port since free_port(): pick another one (a few times).
        if (++lost_races > 3 ||
            std::string(e.what()).find("ddress already in use") == std::string::npos) {
          throw;
        }
        --i;
        continue;
      }
      ports_.push_back(port);
      if (tls) tls_ports_.push_back(nodes_.back()->tls_port());
    }
    std::vector<std::string> create = {"--cluster", "create"};
    for (int p : ports_) create.push_back("127.0.0.1:" + std::to_string(p));
    create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
    std::string out = redis_cli(ports_[0], create, "", std::chrono::milliseconds(30'000));
    if (out.find("[OK] All 16384 slots covered") == std::string::npos) {
      throw std::runtime_error("redis-cli --cluster create did not cover all slots:\n" + out);
    }
    bool ok = detail::poll_until([this] { return converged(); }, kStartDeadline);
    if (!ok) {
      std::string logs;
      for (auto& n : nodes_) {
        logs += "--- node " + std::to_string(n->port()) + ":\n" + n->process().log_tail(10);
      }
      throw std::runtime_error(
          "redis cluster did not reach cluster_state:ok with one slot map on every node within " +
          std::to_string(kStartDeadline.count()) + " ms; logs:\n" + logs);
    }
  }
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  /// The masters' ports.
  const std::vector<int>& ports() const { return ports_; }
  /// The masters' TLS ports (empty without `tls`), in the order of ports().
  const std::vector<int>& tls_ports() const { return tls_ports_; }
  /// "redis://127.0.0.1:<first port>".
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(ports_.front()); }
  /// redis_cli against one node (add "-c" first in args to follow redirections).
  std::string cli(int port, const std::vector<std::string>& args) const {
    return redis_cli(port, args);
  }
  /// {"127.0.0.1", port} for every node.
  std::vector<std::pair<std::string, int>> startup_nodes() const {
    std::vector<std::pair<std::string, int>> out;
    for (int p : ports_) out.emplace_back("127.0.0.1", p);
    return out;
  }
  /// The master that serves `slot` right now, from CLUSTER SLOTS (asked of the first node that
  /// answers). Throws when no node serves it.
  int port_for_slot(int slot) const {
    for (int p : ports_) {
      std::string slots;
      try {
        slots = redis_cli(p, {"cluster", "slots"}, "", std::chrono::milliseconds(2000));
      } catch (const std::exception&) {
        continue;
      }
      for (const auto& [first, last, port] : parse_slots(slots)) {
        if (slot >= first && slot <= last) return port;
      }
    }
    throw std::runtime_error("RedisCluster: no node serves slot " + std::to_string(slot));
  }
  /// Starts a replica of the master on `master_port`, joins it to the cluster (CLUSTER MEET,
  /// CLUSTER REPLICATE) and waits until its link is up and its
  /// master's command stream reaches it. Returns its port (not in ports(): those are masters).
  int add_replica(int master_port) {
    const std::string master_id = trimmed(cli(master_port, {"cluster", "myid"}));
    int port = 0;
    do {
      port = free_port(55535);
    } while (!detail::port_is_free(port + 10000));
    RedisServerOptions o;
    o.port = port;
    o.extra_args = {"--cluster-enabled",      "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "5000"};
    nodes_.push_back(std::make_unique<RedisServer>(o));
    // What `redis-cli --cluster add-node --cluster-slave` does, without its 1 s polls: MEET,
    // then REPLICATE once the new node knows the master.
    redis_cli(port, {"cluster", "meet", "127.0.0.1", std::to_string(master_port)});
    const bool met = detail::poll_until(
        [&] {
          try {
            return redis_cli(port, {"cluster", "nodes"}).find(master_id) != std::string::npos &&
                   trimmed(redis_cli(port, {"cluster", "replicate", master_id})) == "OK";
          } catch (const std::exception&) {
            return false;
          }
        },
        kStartDeadline);
    if (!met) throw std::runtime_error("RedisCluster: the new node never learnt its master");
    // A key the master serves: writing it moves the master's replication offset.
    const auto ranges = parse_slots(cli(master_port, {"cluster", "slots"}));
    std::string probe;
    for (int i = 0; probe.empty(); ++i) {
      const std::string k = "__dogpile_probe" + std::to_string(i);
      const int slot = std::stoi(cli(master_port, {"cluster", "keyslot", k}));
      for (const auto& r : ranges) {
        if (slot >= r.first && slot <= r.last && r.port == master_port) probe = k;
      }
    }
    const auto master_info = [&](const std::string& name, std::size_t from_field = 0) {
      const auto m =
          redis_cli(master_port, {"info", "replication"}, "", std::chrono::milliseconds(1000));
      const auto from = from_field == 0 ? 0 : m.find("slave0:");
      const auto at = from == std::string::npos ? from : m.find(name, from);
      return at == std::string::npos ? -1LL : std::atoll(m.c_str() + at + name.size());
    };
    const bool ok = detail::poll_until(
        [&] {
          try {
            const auto info =
                redis_cli(port, {"info", "replication"}, "", std::chrono::milliseconds(1000));
            if (info.find("master_link_status:up") == std::string::npos) return false;
            // The stream reaches it: the replica acknowledges a write made after it linked up
            // (after a diskless full sync, redis 7.0 starts the stream only at the replica's
            // first ACK, up to 1 s later).
            // Every master knows it as the master's replica (a manual failover needs their
            // votes).
            const std::string id = trimmed(redis_cli(port, {"cluster", "myid"}));
            for (int p : ports_) {
              const auto nodes = redis_cli(p, {"cluster", "nodes"});
              const auto at = nodes.find(id);
              if (at == std::string::npos) return false;
              const auto line = nodes.substr(at, nodes.find('\n', at) - at);
              if (line.find("slave " + master_id) == std::string::npos) return false;
            }
            redis_cli(master_port, {"incr", probe});
            const long long written = master_info("master_repl_offset:");
            return detail::poll_until([&] { return master_info("offset=", 1) >= written; },
                                      std::chrono::milliseconds(1500));
          } catch (const std::exception&) {
            return false;
          }
        },
        kStartDeadline);
    if (!ok) {
      throw std::runtime_error("RedisCluster: replica on port " + std::to_string(port) +
                               " did not sync with " + std::to_string(master_port) + "; log:\n" +
                               nodes_.back()->process().log_tail(10));
    }
    return port;
  }

  /// The node with the given port.
  RedisServer& node(int port) {
    for (auto& n : nodes_) {
      if (n->port() == port) return *n;
    }
    throw std::invalid_argument("RedisCluster: no node on port " + std::to_string(port));
  }

  /// A slot range and its master's port, parsed from redis-cli's flattened CLUSTER SLOTS output
  /// (per range: start, end, then per node ip, port, id, metadata).
  struct SlotRange {
    int first;  ///< first slot
    int last;   ///< last slot (inclusive)
    int port;   ///< the master's port
  };
  /// Parses redis-cli's CLUSTER SLOTS output.
  static std::vector<SlotRange> parse_slots(const std::string& text) {
    std::vector<std::string> lines;
    std::stringstream ss(text);
    for (std::string line; std::getline(ss, line);) lines.push_back(line);
    auto is_int = [](const std::string& s) {
      return !s.empty() && s.size() < 10 &&
             std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    std::vector<SlotRange> out;
    for (std::size_t i = 0; i + 3 < lines.size(); ++i) {
      // A range starts with two integers; a node entry starts with an ip, never an integer.
      if (is_int(lines[i]) && is_int(lines[i + 1]) && !is_int(lines[i + 2]) &&
          is_int(lines[i + 3])) {
        out.push_back({std::stoi(lines[i]), std::stoi(lines[i + 1]), std::stoi(lines[i + 3])});
        i += 3;
      }
    }
    return out;
  }

 private:
  bool converged() const {
    std::optional<std::string> first_map;
    for (int p : ports_) {
      try {
        if (redis_cli(p, {"cluster", "info"}, "", std::chrono::milliseconds(2000))
                .find("cluster_state:ok") == std::string::npos) {
          return false;
        }
        std::string map = redis_cli(p, {"cluster", "slots"}, "", std::chrono::milliseconds(2000));
        if (!first_map) {
          first_map = map;
        } else if (*first_map != map) {
          return false;
        }
      } catch (const std::exception&) {
        return false;
      }
    }
    return true;
  }
  static std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  std::vector<std::unique_ptr<RedisServer>> nodes_;
  std::vector<int> ports_;
  std::vector<int> tls_ports_;
};

/// One redis master, one replica (--replicaof) and `n` sentinels (default 1; `redis-server <conf>
/// --sentinel`, monitoring "mymaster" with quorum n/2+1, down-after-milliseconds `down_after`,
/// failover-timeout 3000). master()/replica() are the servers started as such: after failover()
/// their roles are swapped (current_master() tells which is master now).
class RedisSentinelSet {
 public:
  /// Starts the servers and waits until the replica is in sync (the master's command stream
  /// reaches it), every sentinel lists it and answers get-master-addr-by-name (throws after
  /// 10 s).
  /// With `sentinel_tls`, each sentinel also serves TLS on sentinel_tls_ports() (it still
  /// watches the servers in plain text).
  /// With `data_tls`, the master and the replica also serve TLS (tls_port()), the replica
  /// replicates over it and the sentinels monitor the TLS ports (`tls-replication yes`), so
  /// the sentinels name TLS ports; the harness's own redis-cli keeps using the plain ones.
  explicit RedisSentinelSet(int n = 1,
                            std::chrono::milliseconds down_after = std::chrono::milliseconds(1000),
                            std::optional<RedisServerOptions::Tls> sentinel_tls = std::nullopt,
                            std::optional<RedisServerOptions::Tls> data_tls = std::nullopt)
      : down_after_(down_after),
        sentinel_tls_(std::move(sentinel_tls)),
        data_tls_(std::move(data_tls)) {
    RedisServerOptions mo;
    if (data_tls_) mo = {.extra_args = {"--tls-replication", "yes"}, .tls = data_tls_};
    master_ = std::make_unique<RedisServer>(mo);
    RedisServerOptions ro = mo;
    ro.extra_args.insert(ro.extra_args.end(),
                         {"--replicaof", "127.0.0.1", std::to_string(named_port(*master_))});
    replica_ = std::make_unique<RedisServer>(ro);
    for (int i = 0; i < n; ++i) start_sentinel(i, n / 2 + 1);
    bool ok = detail::poll_until(
        [this] {
          if (!replica_in_sync(*master_, *replica_)) return false;
          for (std::size_t i = 0; i < sentinels_.size(); ++i) {
            if (sentinel_at(i, {"sentinel", "replicas", "mymaster"}).empty()) return false;
          }
          return current_master_or_none().second == named_port(*master_);
        },
        kStartDeadline);
    if (!ok) {
      throw std::runtime_error("redis sentinel set not ready within " +
                               std::to_string(kStartDeadline.count()) +
                               " ms; sentinel log tail:\n" + sentinels_[0]->log_tail() +
                               "--- replica log tail:\n" + replica_->process().log_tail(10));
    }
  }
  RedisSentinelSet(const RedisSentinelSet&) = delete;
  RedisSentinelSet& operator=(const RedisSentinelSet&) = delete;

  /// The first sentinel's port.
  int sentinel_port() const { return sentinel_ports_[0]; }
  /// Every sentinel's port.
  const std::vector<int>& sentinel_ports() const { return sentinel_ports_; }
  /// Every sentinel's TLS port (empty without `sentinel_tls`).
  const std::vector<int>& sentinel_tls_ports() const { return sentinel_tls_ports_; }
  /// The port of the server started as master.
  int master_port() const { return master_->port(); }
  /// The port the sentinels name for a server: its TLS port under `data_tls`, else its port.
  int named_port(const RedisServer& s) const { return data_tls_ ? s.tls_port() : s.port(); }
  /// The port of the server started as replica.
  int replica_port() const { return replica_->port(); }
  /// "mymaster".
  std::string service_name() const { return "mymaster"; }
  /// The server started as master.
  RedisServer& master() { return *master_; }
  /// The server started as replica.
  RedisServer& replica() { return *replica_; }
  /// The process of the server started as master.
  ServerProcess& master_process() { return master_->process(); }
  /// The process of the server started as replica.
  ServerProcess& replica_process() { return replica_->process(); }
  /// The first sentinel's process.
  ServerProcess& sentinel_process() { return *sentinels_[0]; }
  /// redis_cli against the first sentinel.
  std::string sentinel(const std::vector<std::string>& args) const { return sentinel_at(0, args); }
  /// redis_cli against sentinel `i`.
  std::string sentinel_at(std::size_t i, const std::vector<std::string>& args) const {
    return redis_cli(sentinel_ports_.at(i), args, "", std::chrono::milliseconds(2000));
  }

  /// {host, port} of the master according to the sentinels: the address SENTINEL MASTER reports
  /// with the highest config-epoch (the others learn a failover from the leader's hello
  /// messages, up to 2 s later).
  std::pair<std::string, int> current_master() const {
    auto m = current_master_or_none();
    if (m.second == 0) {
      throw std::runtime_error("sentinel does not know the master of mymaster; log tail:\n" +
                               sentinels_[0]->log_tail());
    }
    return m;
  }

  /// SENTINEL FAILOVER mymaster sent to sentinel `via`, which leads it (retried while it answers
  /// NOGOODSLAVE/INPROG), then waits (20 s deadline) until current_master() names the other
  /// server AND that server's ROLE is master. Throws on timeout.
  void failover(std::size_t via = 0) {
    const int old_port = current_master().second;
    const int new_port =
        old_port == named_port(*master_) ? named_port(*replica_) : named_port(*master_);
    const auto deadline = std::chrono::milliseconds(20'000);
    const auto start = std::chrono::steady_clock::now();
    std::string last;
    bool requested = detail::poll_until(
        [&] {
          try {
            last = sentinel_at(via, {"sentinel", "failover", service_name()});
          } catch (const std::exception& e) {
            last = e.what();
          }
          return last.rfind("OK", 0) == 0;
        },
        deadline);
    if (!requested) {
      throw std::runtime_error("SENTINEL FAILOVER was refused: " + last + "\nsentinel log:\n" +
                               sentinels_.at(via)->log_tail());
    }
    auto left = deadline - std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - start);
    if (!wait_master(new_port, std::max(left, std::chrono::milliseconds(1)))) {
      throw std::runtime_error("sentinel failover to port " + std::to_string(new_port) +
                               " did not complete within 20 s; sentinel log:\n" +
                               sentinels_.at(via)->log_tail());
    }
  }

  /// Waits (up to `deadline`) until current_master() names `port` and that server's ROLE is
  /// master (an unplanned failover: kill or pause the master, then wait for the replica).
  /// `port` is a port the sentinels name (named_port()).
  bool wait_master(int port, std::chrono::milliseconds deadline) {
    const int cli_port = port == named_port(*master_)    ? master_->port()
                         : port == named_port(*replica_) ? replica_->port()
                                                         : port;
    return detail::poll_until(
        [&] {
          if (current_master_or_none().second != port) return false;
          try {
            return redis_cli(cli_port, {"role"}, "", std::chrono::milliseconds(1000))
                       .rfind("master", 0) == 0;
          } catch (const std::exception&) {
            return false;
          }
        },
        deadline);
  }

  /// Waits (up to `deadline`) until the set is at rest after whatever failovers ran before:
  /// EVERY sentinel names the same master (the ones that did not lead a failover learn it from
  /// the leader's hello messages, up to 2 s later), that server's ROLE is master, and the other
  /// server replicates from it in sync (rejoin_old_master() if the sentinels have not converted
  /// it yet). A test that gives the backend a single sentinel needs this: that sentinel may
  /// still name the old master. Returns whether it happened.
  bool wait_settled(std::chrono::milliseconds deadline = std::chrono::milliseconds(20'000)) {
    const auto start = std::chrono::steady_clock::now();
    const bool agreed = detail::poll_until(
        [this] {
          const auto m = current_master_or_none();
          if (m.second == 0) return false;
          for (std::size_t i = 0; i < sentinel_ports_.size(); ++i) {
            try {
              if (sentinel_at(i, {"sentinel", "get-master-addr-by-name", service_name()}) !=
                  m.first + "\n" + std::to_string(m.second) + "\n") {
                return false;
              }
            } catch (const std::exception&) {
              return false;
            }
          }
          const RedisServer& s = m.second == named_port(*master_) ? *master_ : *replica_;
          try {
            return s.cli({"role"}, std::chrono::milliseconds(1000)).rfind("master", 0) == 0;
          } catch (const std::exception&) {
            return false;
          }
        },
        deadline);
    if (!agreed) return false;
    const auto left = deadline - std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - start);
    return rejoin_old_master(std::max(left, std::chrono::milliseconds(1)));
  }

  /// Waits (up to `deadline`) until the server that is not the current master is a replica with
  /// master_link_status:up (after failover() the old master is turned into a replica by the
  /// sentinel only some seconds later). Returns whether it happened.
  bool wait_replication(std::chrono::milliseconds deadline = std::chrono::milliseconds(20'000)) {
    return detail::poll_until(
        [this] {
          int m = current_master_or_none().second;
          const bool first = m == named_port(*master_);
          return replica_in_sync(first ? *master_ : *replica_, first ? *replica_ : *master_);
        },
        deadline);
  }

  /// Makes the server that is not the current master its replica (REPLICAOF), as the sentinel's
  /// `+convert-to-slave` does only 8-18 s after a failover (it waits 4 publish periods, then for
  /// the next INFO), and waits (up to `deadline`) until it is in sync (the master's command
  /// stream reaches it). Its resync throws away whatever only it had (the writes a
  /// failover loses). Returns whether that happened.
  bool rejoin_old_master(std::chrono::milliseconds deadline = std::chrono::milliseconds(5000)) {
    const auto m = current_master();
    RedisServer& old = m.second == named_port(*master_) ? *replica_ : *master_;
    old.cli({"replicaof", m.first, std::to_string(m.second)});
    return wait_replication(deadline);
  }

 private:
  void start_sentinel(int index, int quorum) {
    for (int attempt = 0;; ++attempt) {
      const int port = free_port();
      int tls_port = 0;
      const auto conf = dir_.path() / ("sentinel" + std::to_string(index) + ".conf");
      {
        std::ofstream f(conf, std::ios::trunc);
        if (data_tls_) {  // the sentinel's connections to the servers, as a TLS client
          f << "tls-replication yes\n"
            << "tls-cert-file " << data_tls_->cert_file << "\n"
            << "tls-key-file " << data_tls_->key_file << "\n"
            << "tls-ca-cert-file " << data_tls_->ca_cert_file << "\n";
        }
        if (sentinel_tls_) {
          do {
            tls_port = free_port();
          } while (tls_port == port);
          f << "tls-port " << tls_port << "\n"
            << "tls-cert-file " << sentinel_tls_->cert_file << "\n"
            << "tls-key-file " << sentinel_tls_->key_file << "\n"
            << "tls-ca-cert-file " << sentinel_tls_->ca_cert_file << "\n"
            << "tls-auth-clients " << (sentinel_tls_->auth_clients ? "yes" : "no") << "\n";
        }
        f << "port " << port << "\n"
          << "bind 127.0.0.1\n"
          << "protected-mode no\n"
          << "daemonize no\n"
          << "dir " << dir_.path().string() << "\n"
          << "sentinel monitor " << service_name() << " 127.0.0.1 " << named_port(*master_) << " "
          << quorum << "\n"
          << "sentinel down-after-milliseconds " << service_name() << " " << down_after_.count()
          << "\n"
          << "sentinel failover-timeout " << service_name() << " 3000\n";
        if (!f) throw std::runtime_error("cannot write " + conf.string());
      }
      auto p = std::make_unique<ServerProcess>(
          std::vector<std::string>{"redis-server", conf.string(), "--sentinel"},
          dir_.path() / ("sentinel" + std::to_string(index) + ".log"));
      auto ping = [&] {
        try {
          return redis_cli(port, {"ping"}, "", std::chrono::milliseconds(2000)) == "PONG\n";
        } catch (const std::exception&) {
          return false;
        }
      };
      if (detail::poll_until(ping, kStartDeadline, [&] { return p->running(); })) {
        sentinel_ports_.push_back(port);
        if (tls_port != 0) sentinel_tls_ports_.push_back(tls_port);
        sentinels_.push_back(std::move(p));
        return;
      }
      if (attempt >= 3 || p->running() || !detail::log_says_address_in_use(p->log_file())) {
        throw std::runtime_error("redis sentinel on port " + std::to_string(port) +
                                 " did not start; log tail:\n" + p->log_tail());
      }
      std::filesystem::remove(p->log_file());
    }
  }
  std::pair<std::string, int> current_master_or_none() const {
    std::pair<std::string, int> best{"", 0};
    long long best_epoch = -1;
    for (std::size_t i = 0; i < sentinel_ports_.size(); ++i) {
      try {
        // redis-cli prints the reply's field/value pairs one per line.
        std::stringstream ss(sentinel_at(i, {"sentinel", "master", service_name()}));
        std::map<std::string, std::string> fields;
        for (std::string k, v; std::getline(ss, k) && std::getline(ss, v);) fields[k] = v;
        const long long epoch = std::stoll(fields.at("config-epoch"));
        if (epoch > best_epoch) {
          best_epoch = epoch;
          best = {fields.at("ip"), std::stoi(fields.at("port"))};
        }
      } catch (const std::exception&) {
      }
    }
    return best;
  }
  // In sync: the link is up AND the master's command stream reaches the replica. After a
  // diskless full sync, redis 7.0 starts the stream only at the replica's first REPLCONF ACK
  // (up to 1 s later); until then both report the replica online and no write reaches it, so
  // a replica promoted then lacks them all. Proved with a marker key written on the master.
  static bool replica_in_sync(const RedisServer& master, const RedisServer& replica) {
    try {
      std::string info = replica.cli({"info", "replication"}, std::chrono::milliseconds(1000));
      if (info.find("role:slave") == std::string::npos ||
          info.find("master_link_status:up") == std::string::npos) {
        return false;
      }
      const std::string key = "__dogpile_test_stream";
      const std::string token =
          std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
      master.cli({"set", key, token}, std::chrono::milliseconds(1000));
      return detail::poll_until(
          [&] {
            return replica.cli({"get", key}, std::chrono::milliseconds(1000)) == token + "\n";
          },
          std::chrono::milliseconds(100));
    } catch (const std::exception&) {
      return false;
    }
  }
  std::chrono::milliseconds down_after_;
  std::optional<RedisServerOptions::Tls> sentinel_tls_;
  std::optional<RedisServerOptions::Tls> data_tls_;
  TempDir dir_;
  std::unique_ptr<RedisServer> master_;
  std::unique_ptr<RedisServer> replica_;
  std::vector<int> sentinel_ports_;
  std::vector<int> sentinel_tls_ports_;
  std::vector<std::unique_ptr<ServerProcess>> sentinels_;
};

/// A SASL user for MemcachedServer: the server runs with `-S` (binary protocol only, every
/// command but `version` needs authentication) and a SASL database holding this one user.
struct MemcachedSasl {
  std::string username;
  std::string password;
};

/// TLS for MemcachedServer: PEM files the test made.
struct MemcachedTls {
  std::string cert_file;
  std::string key_file;
};

/// memcached -l 127.0.0.1 -p port -U 0 -m 64 (plus -u root when run as root) and extra_args, in
/// its own TempDir (log <dir>/memcached.log). Ready means a `stats` request is answered with our
/// pid (with SASL: after a PLAIN authentication as the configured user, binary protocol).
class MemcachedServer {
 public:
  /// Starts memcached and waits until it answers `stats` (throws after kStartDeadline). With
  /// `sasl`: `-S`, and a SASL database made with saslpasswd2 (Debian's sasl2-bin) in its TempDir,
  /// found by memcached through SASL_CONF_PATH (a memcached.conf with `mech_list: plain` and
  /// `sasldb_path`), as Debian's memcached looks it up.
  /// With `tls`: a second, TLS-only listener on tls_port() (`-Z`); the plain port (which the
  /// harness's readiness check uses) stays plain text (`notls:`).
  explicit MemcachedServer(std::vector<std::string> extra_args = {},
                           std::optional<MemcachedSasl> sasl = std::nullopt,
                           std::optional<MemcachedTls> tls = std::nullopt)
      : sasl_(std::move(sasl)) {
    std::vector<std::string> prefix;
    if (sasl_) {
      make_sasl_db();
      // memcached reads SASL_CONF_PATH from its environment: `env` sets it for the child only
      // (exec keeps the pid, so stop/kill/pause still reach memcached).
      prefix = {"env", "SASL_CONF_PATH=" + dir_.path().string()};
      extra_args.insert(extra_args.begin(), "-S");
    }
    for (int attempt = 0;; ++attempt) {
      port_ = free_port();
      std::vector<std::string> argv = prefix;
      if (tls) {
        do {
          tls_port_ = free_port();
        } while (tls_port_ == port_);
        argv.insert(
            argv.end(),
            {"memcached", "-l",
             "notls:127.0.0.1:" + std::to_string(port_) + ",127.0.0.1:" + std::to_string(tls_port_),
             "-Z", "-o", "ssl_chain_cert=" + tls->cert_file + ",ssl_key=" + tls->key_file, "-U",
             "0", "-m", "64"});
      } else {
        argv.insert(argv.end(), {"memcached", "-l", "127.0.0.1", "-p", std::to_string(port_), "-U",
                                 "0", "-m", "64"});
      }
      if (::geteuid() == 0) argv.insert(argv.end(), {"-u", "root"});
      argv.insert(argv.end(), extra_args.begin(), extra_args.end());
      process_.reset();
      process_ = std::make_unique<ServerProcess>(argv, dir_.path() / "memcached.log");
      if (wait_ready(false)) return;
      if (!(attempt < 3 && !process_->running() &&
            detail::log_says_address_in_use(process_->log_file()))) {
        wait_ready(true);
      }
      std::filesystem::remove(process_->log_file());
    }
  }
  /// SIGKILL: memcached keeps nothing worth a graceful exit, and its SIGTERM handling waits for
  /// its 1 s clock tick.
  ~MemcachedServer() { process_->kill(); }
  MemcachedServer(const MemcachedServer&) = delete;
  MemcachedServer& operator=(const MemcachedServer&) = delete;

  /// The port it listens on.
  int port() const { return port_; }
  /// "127.0.0.1:port".
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  /// The TLS listener's port (with `tls`), else 0.
  int tls_port() const { return tls_port_; }
  /// Whether `version` is answered VERSION within `timeout`.
  bool ping(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) const {
    auto reply = tcp_exchange(port_, "version\r\n", "\r\n", timeout);
    return reply && reply->rfind("VERSION", 0) == 0;
  }
  /// SIGKILL (a crash).
  void kill() { process_->kill(); }
  /// Graceful stop (SIGTERM; SIGKILL after 5 s). memcached notices SIGTERM on its 1 s clock tick,
  /// so this takes up to ~1 s.
  void stop() { process_->stop(); }
  /// Stops it if running, starts it again on the same port and waits until it answers.
  void restart() {
    process_->stop();
    process_->start();
    wait_ready(true);
  }
  /// SIGSTOP: requests hang until resume().
  void pause() { process_->pause(); }
  /// SIGCONT.
  void resume() { process_->resume(); }
  /// The underlying process.
  ServerProcess& process() { return *process_; }
  /// Its temporary directory.
  const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  bool wait_ready(bool throw_on_failure) {
    // The answer must come from our process (STAT pid), not another memcached on the port.
    const std::string pid_line = "STAT pid " + std::to_string(process_->pid()) + "\r\n";
    bool ok = detail::poll_until(
        [&] {
          if (sasl_) {
            // Binary protocol: SASL_AUTH (PLAIN) then STAT; a stat packet's body is its key
            // then its value ("pid" "1234"), and the empty key ends the list.
            const std::string pid_stat = "pid" + std::to_string(process_->pid());
            auto stats = tcp_exchange(port_, sasl_stats_request(), pid_stat);
            return stats.has_value();
          }
          auto stats = tcp_exchange(port_, "stats\r\n", "END\r\n");
          return stats && stats->find(pid_line) != std::string::npos;
        },
        kStartDeadline, [this] { return process_->running(); });
    if (!ok && throw_on_failure) {
      throw std::runtime_error("memcached on port " + std::to_string(port_) +
                               (process_->running() ? " did not answer `version`" : " exited") +
                               "; log tail (" + process_->log_file().string() + "):\n" +
                               process_->log_tail());
    }
    return ok;
  }
  void make_sasl_db() {
    const auto db = dir_.path() / "sasldb";
    {
      std::ofstream conf(dir_.path() / "memcached.conf");
      conf << "mech_list: plain\nsasldb_path: " << db.string() << "\n";
    }
    const std::string exe = detail::find_program("saslpasswd2");
    // -p: the password from stdin, no prompt; -a memcached: the application name memcached
    // authenticates as; -c: create the user.
    const std::string cmd =
        exe + " -a memcached -c -p -f '" + db.string() + "' '" + sasl_->username + "' 2>&1";
    std::FILE* p = ::popen(cmd.c_str(), "w");
    if (p == nullptr) detail::throw_errno("popen " + cmd);
    std::fwrite(sasl_->password.data(), 1, sasl_->password.size(), p);
    if (::pclose(p) != 0) throw std::runtime_error("dogpile test harness: failed: " + cmd);
  }
  // A binary-protocol request: header (24 bytes, big-endian lengths) then key then value.
  static std::string binary_request(std::uint8_t opcode, std::string_view key,
                                    std::string_view value) {
    std::string h(24, '\0');
    h[0] = static_cast<char>(0x80);
    h[1] = static_cast<char>(opcode);
    h[2] = static_cast<char>((key.size() >> 8) & 0xff);
    h[3] = static_cast<char>(key.size() & 0xff);
    const std::size_t body = key.size() + value.size();
    for (int i = 0; i < 4; ++i) h[8 + i] = static_cast<char>((body >> (8 * (3 - i))) & 0xff);
    return h + std::string(key) + std::string(value);
  }
  std::string sasl_stats_request() const {
    std::string plain;  // authzid NUL authcid NUL password
    plain.push_back('\0');
    plain += sasl_->username;
    plain.push_back('\0');
    plain += sasl_->password;
    return binary_request(0x21, "PLAIN", plain) + binary_request(0x10, "", "");
  }
  TempDir dir_;
  std::optional<MemcachedSasl> sasl_;
  int port_ = 0;
  int tls_port_ = 0;
  std::unique_ptr<ServerProcess> process_;
};

/// A local TLS tunnel (stunnel, client mode): plain-text clients connect to 127.0.0.1:port()
/// and their bytes go over TLS to 127.0.0.1:`target`, whose certificate must chain to `ca_file`
/// and name 127.0.0.1. Ready when port() accepts connections. Stopped by the destructor.
class TlsTunnel {
 public:
  TlsTunnel(int target, const std::string& ca_file) {
    for (int attempt = 0;; ++attempt) {
      port_ = free_port();
      const auto conf = dir_.path() / "stunnel.conf";
      {
        std::ofstream f(conf, std::ios::trunc);
        f << "foreground = yes\npid =\n[tunnel]\nclient = yes\naccept = 127.0.0.1:" << port_
          << "\nconnect = 127.0.0.1:" << target << "\nCAfile = " << ca_file
          << "\nverifyChain = yes\ncheckIP = 127.0.0.1\n";
        if (!f) throw std::runtime_error("cannot write " + conf.string());
      }
      process_ = std::make_unique<ServerProcess>(std::vector<std::string>{"stunnel", conf.string()},
                                                 dir_.path() / "stunnel.log");
      if (detail::poll_until([&] { return port_accepts(port_); }, kStartDeadline,
                             [&] { return process_->running(); })) {
        return;
      }
      if (attempt >= 3 || process_->running()) {
        throw std::runtime_error("stunnel did not listen on " + std::to_string(port_) +
                                 "; log tail:\n" + process_->log_tail());
      }
    }
  }
  TlsTunnel(const TlsTunnel&) = delete;
  TlsTunnel& operator=(const TlsTunnel&) = delete;
  /// The plain-text end.
  int port() const { return port_; }
  /// "127.0.0.1:port()".
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  /// The tunnel's log (one line per connection and certificate check).
  std::string log_tail(std::size_t lines = 20) const { return process_->log_tail(lines); }

 private:
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ServerProcess> process_;
};

}  // namespace dogpile::test
