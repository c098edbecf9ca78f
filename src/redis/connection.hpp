// One blocking hiredis connection, and the reply type the rest of src/redis sees (hiredis's
// reader builds it directly, in connection.cpp). Internal to dogpile::redis.
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
struct ssl_st;
struct ssl_ctx_st;

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

/// TLS settings, with redis-py's meanings (`ssl_cert_reqs`, `ssl_ca_certs`, ...).
struct TlsConfig {
  enum class CertReqs { required, optional, none };
  CertReqs cert_reqs = CertReqs::required;
  std::string ca_certs{};         // PEM file of trusted CAs; empty (and no ca_path) = system store
  std::string ca_path{};          // directory of hashed CA certificates
  std::string certfile{};         // client certificate chain (mutual TLS)
  std::string keyfile{};          // its key; empty = in certfile
  bool check_hostname = true;     // the certificate must name the host (or server_hostname)
  std::string server_hostname{};  // SNI and the name checked; empty = the endpoint's host
};

/// An OpenSSL client context made once per backend (CA store and client certificate loaded
/// once), shared by every connection. Immutable after construction: thread-safe.
class TlsContext {
 public:
  /// Loads the CA store and the client certificate. @throws ValidationError "<backend>
  /// backend: argument 'ssl_…' …" naming the file that cannot be used and why.
  TlsContext(const char* backend, TlsConfig config);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  [[nodiscard]] ssl_ctx_st* get() const noexcept { return ctx_; }
  [[nodiscard]] const TlsConfig& config() const noexcept { return config_; }

 private:
  ssl_ctx_st* ctx_ = nullptr;
  TlsConfig config_;
};

/// What every new connection does: timeouts, then AUTH and SELECT.
struct ConnectSettings {
  milliseconds connect_timeout{1000};
  milliseconds socket_timeout{2000};
  std::string username{};
  std::string password{};
  int db = 0;
  bool check_master = false;  // sentinel: refuse a server whose ROLE is not master
  /// The largest value (bulk string) a reply may carry; a whole reply may carry this much per
  /// argument of its command (an MGET of n keys: n values). Larger: ConnectionFailure(protocol)
  /// before the memory is taken.
  std::size_t max_value_bytes = std::size_t{64} << 20;
  /// TLS after connecting (null: plain text). Never a plain-text fallback: a failed handshake
  /// is ConnectionFailure(connect).
  std::shared_ptr<const TlsContext> tls{};
};

/// No reply line (status, error, integer, a length header) may be longer: a legitimate one is
/// a few hundred bytes, and hiredis re-scans an unfinished line on every read.
inline constexpr std::size_t kMaxReplyLine = 64 * 1024;

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
  connect,    // could not connect (refused, unreachable, connect timeout, AUTH/SELECT refused)
  timeout,    // the call did not end within socket_timeout: the command may have run
  closed,     // the server closed the connection or the socket failed
  protocol,   // the reply was malformed or over max_value_bytes: the command may have run
  no_master,  // a cluster slot or a sentinel service has no reachable master right now
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
///
/// Deadlines: `socket_timeout` bounds a whole call (`command`, `pipeline`, the handshake's
/// commands each): sending every command and reading every reply in full must end within it,
/// however slowly a server trickles bytes. Replies are bounded by `max_value_bytes` and
/// `kMaxReplyLine` as they arrive, so a hostile server can make a call fail, never hang or
/// exhaust memory.
class Connection {
 public:
  /// Connects, sets the socket timeout and keepalive, authenticates and selects the db.
  /// @throws ConnectionFailure(connect) with the server's reason.
  Connection(const Endpoint& ep, const ConnectSettings& s);
  /// For tests and the fuzz target: a connection over `fd`, a socket already connected (this
  /// object owns and closes it), with `s`'s timeouts and bounds; no TLS, no handshake
  /// commands. @throws ConnectionFailure(connect) when hiredis cannot take the socket.
  static std::unique_ptr<Connection> adopt(int fd, const ConnectSettings& s);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Sends one command and reads its reply. @throws ConnectionFailure.
  Reply command(const Argv& argv);
  /// The same for `name args...` (a multi-key command: `MGET k1 k2 ...`), sent straight from
  /// the caller's strings, without copying them into an `Argv`. @throws ConnectionFailure.
  Reply command(std::string_view name, std::span<const std::string> args);
  /// Sends every command in one write, then reads every reply, in order. @throws
  /// ConnectionFailure.
  std::vector<Reply> pipeline(const std::vector<Argv>& cmds);
  /// The same for commands owned elsewhere (a client's routed commands: no copy of their
  /// arguments). @throws ConnectionFailure.
  std::vector<Reply> pipeline(std::span<const Argv* const> cmds);
  /// `pipeline` in two halves, so that a caller can send to several servers before reading
  /// from any (a cluster's multi-key call): every command written by `deadline`, then every
  /// reply read by the same `deadline`. Between the halves the connection owes replies: read
  /// them or `abandon()` it before it goes back to a pool. @throws ConnectionFailure.
  void send_pipeline(std::span<const Argv* const> cmds,
                     std::chrono::steady_clock::time_point deadline);
  std::vector<Reply> read_pipeline(std::span<const Argv* const> cmds,
                                   std::chrono::steady_clock::time_point deadline);
  /// The pieces of a pipeline, for callers that route each command on their own (a cluster's
  /// multi-key call): `append` queues a command without sending it; `append_keys` queues
  /// `name keys[pick[0]] keys[pick[1]] ...` straight from the caller's strings (no `Argv`);
  /// `flush` writes everything queued by `deadline`; `read_reply` reads the next reply, for a
  /// command of `args` arguments (its size bound). Between `flush` and the last `read_reply`
  /// the connection owes replies: read them or `abandon()` it. @throws ConnectionFailure.
  void append(const Argv& argv);
  void append_keys(std::string_view name, std::span<const std::string> keys,
                   std::span<const std::uint32_t> pick);
  void flush(std::chrono::steady_clock::time_point deadline);
  Reply read_reply(std::chrono::steady_clock::time_point deadline, std::size_t args);
  /// Marks the connection `broken()` (its replies will not be read): a pool drops it.
  void abandon() noexcept;
  /// Shuts the socket down (no close): a read waiting in another thread returns at once and
  /// throws ConnectionFailure(closed). The one call that may race a call in another thread;
  /// the caller keeps the object alive meanwhile.
  void interrupt() noexcept;
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
  using Clock = std::chrono::steady_clock;
  [[noreturn]] void fail();
  [[noreturn]] void fail_with(Failure kind, const std::string& why);
  // @throws ConnectionFailure(closed) once the connection has failed.
  void ensure_open() const;
  // Appends the command that arg_ptrs_ / arg_lens_ point at to the output buffer.
  void append_pointed();
  void write_all(Clock::time_point deadline);
  Reply read_one(Clock::time_point deadline, std::size_t args);
  // A complete reply already buffered, or nullptr; throws on a protocol error.
  void* buffered_reply();
  // Reads what the socket has (waiting at most until `deadline`) into the reader. False when
  // nothing arrived in time.
  bool read_some(Clock::time_point deadline);
  // Refuses an unfinished reply that already broke a bound.
  void check_pending();
  // The TLS handshake, within the connect timeout. @throws ConnectionFailure(connect).
  void start_tls(const TlsContext& tls, milliseconds connect_timeout);
  void tls_write_all(Clock::time_point deadline);
  bool tls_read_some(Clock::time_point deadline);
  // Feeds `got` bytes of rbuf_ to the reader.
  void feed(std::size_t got);
  // adopt(): the socket `fd`, owned.
  struct Adopt {};
  Connection(Adopt, int fd, const ConnectSettings& s);
  // The reply reader's bounds, on a fresh context (both constructors).
  void bound_reader();

 public:
  /// What the reader's array hook needs (hiredis hands it `privdata`).
  struct Limits {
    std::size_t max_elements = 0;  // of an array in the reply being read
    std::size_t max_string = 0;    // of a string in it
    bool refused = false;          // the hook refused an array: the "out of memory" is ours
  };

 private:
  redisContext* ctx_ = nullptr;
  // Bytes read from the socket at once. Large, so a big value arrives in few reader calls.
  static constexpr std::size_t kReadChunkBytes = std::size_t{64} * 1024;
  ssl_st* ssl_ = nullptr;      // TLS session over ctx_->fd, or null (plain text)
  bool received_any_ = false;  // a byte ever came back (else a close hints at a TLS port)
  Endpoint ep_;
  bool broken_ = false;
  int pid_ = 0;
  milliseconds socket_timeout_;
  std::size_t max_value_bytes_;
  std::size_t reply_budget_ = 0;  // bytes the reply being read may take
  std::size_t reply_bytes_ = 0;   // bytes read towards it so far
  Limits limits_{};
  std::unique_ptr<char[]> rbuf_;
  // The argument pointers and lengths hiredis formats a command from, reused by every call.
  std::vector<const char*> arg_ptrs_;
  std::vector<std::size_t> arg_lens_;
};

}  // namespace dogpile::redis_detail
