// hiredis 0.14.1's blocking API behind `Connection`: the only file that sees redisContext and
// hiredis's reader.
#include "connection.hpp"

// sds.h (the command buffer's type) declares C functions without extern "C".
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace dogpile::redis_detail {
namespace {

timeval to_timeval(milliseconds d) {
  if (d.count() <= 0) d = milliseconds(1);
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(d.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((d.count() % 1000) * 1000);
  return tv;
}

// hiredis's reader builds our `Reply` tree directly through its reply-object hooks: no
// redisReply per element (two allocations each) converted into a `Reply` and freed. A string
// is copied once, from the reader's buffer into its `Reply`; an array's elements are built in
// place in its `elements`. Only the root is heap-allocated (the reader holds it as a void*,
// frees it through `free_object` when it fails half-way). An element's address is stable while
// the reader uses it: an array grows only when its next element starts, after the previous one
// (and everything under it) is complete.
//
// The hooks also enforce the bounds: an element count the reply's byte budget cannot hold (each
// element is at least 3 bytes on the wire; otherwise `*2e9` would make us allocate before a
// single element arrived) and a string over max_value_bytes (the pending-bytes check allows a
// read chunk of slack) are refused. `refused` tells the caller that hiredis's "out of memory"
// was a refusal. The hooks never throw (hiredis is C): an allocation failure is a null return,
// which hiredis reports as out of memory.
Reply* place(const redisReadTask* task) {
  if (task->parent == nullptr) return new Reply;
  auto* parent = static_cast<Reply*>(task->parent->obj);
  if (static_cast<std::size_t>(task->idx) != parent->elements.size()) return nullptr;
  return &parent->elements.emplace_back();
}

// Elements reserved up front at most: beyond, an array grows as elements actually arrive.
constexpr std::size_t kMaxReserve = 4096;

void* create_array(const redisReadTask* task, int elements) noexcept {
  auto* limits = static_cast<Connection::Limits*>(task->privdata);
  if (limits != nullptr && elements > 0 &&
      static_cast<std::size_t>(elements) > limits->max_elements) {
    limits->refused = true;
    return nullptr;  // hiredis reports "out of memory"; `refused` says why
  }
  try {
    Reply* r = place(task);
    if (r == nullptr) return nullptr;
    r->type = Reply::Type::array;
    r->elements.reserve(
        std::min<std::size_t>(static_cast<std::size_t>(std::max(elements, 0)), kMaxReserve));
    return r;
  } catch (...) {
    return nullptr;
  }
}

void* create_string(const redisReadTask* task, char* str, std::size_t len) noexcept {
  auto* limits = static_cast<Connection::Limits*>(task->privdata);
  if (limits != nullptr && len > limits->max_string) {
    limits->refused = true;
    return nullptr;
  }
  try {
    Reply* r = place(task);
    if (r == nullptr) return nullptr;
    r->type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::error
              : task->type == REDIS_REPLY_STATUS ? Reply::Type::status
                                                 : Reply::Type::string;
    r->str.assign(str, len);
    return r;
  } catch (...) {
    return nullptr;
  }
}

void* create_integer(const redisReadTask* task, long long value) noexcept {
  try {
    Reply* r = place(task);
    if (r == nullptr) return nullptr;
    r->type = Reply::Type::integer;
    r->integer = value;
    return r;
  } catch (...) {
    return nullptr;
  }
}

void* create_nil(const redisReadTask* task) noexcept {
  try {
    return place(task);  // Type::nil
  } catch (...) {
    return nullptr;
  }
}

// Called by hiredis only for the root (an unfinished reply when the reader fails or is freed).
void free_object(void* reply) noexcept { delete static_cast<Reply*>(reply); }

redisReplyObjectFunctions g_reply_fns{create_string, create_array, create_integer, create_nil,
                                      free_object};

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left.count());
}

// Points `ptrs`/`lens` at a command's arguments (hiredis wants parallel arrays); the buffers
// are the connection's, reused by every call.
void point_at(const Argv& argv, std::vector<const char*>& ptrs, std::vector<std::size_t>& lens) {
  ptrs.clear();
  lens.clear();
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
}

}  // namespace

Connection::Connection(const Endpoint& ep, const ConnectSettings& s)
    : ep_(ep),
      pid_(::getpid()),
      socket_timeout_(s.socket_timeout),
      max_value_bytes_(s.max_value_bytes == 0 ? 1 : s.max_value_bytes),
      rbuf_(std::make_unique<char[]>(kReadChunkBytes)) {
  const timeval ctv = to_timeval(s.connect_timeout);
  ctx_ = ep.unix_path.empty() ? redisConnectWithTimeout(ep.host.c_str(), ep.port, ctv)
                              : redisConnectUnixWithTimeout(ep.unix_path.c_str(), ctv);
  if (ctx_ == nullptr) {
    throw ConnectionFailure(Failure::connect,
                            "cannot connect to redis at " + ep.str() + ": out of memory");
  }
  if (ctx_->err != 0) {
    std::string why = ctx_->errstr;
    redisFree(ctx_);
    ctx_ = nullptr;
    throw ConnectionFailure(Failure::connect, "cannot connect to redis at " + ep.str() + ": " +
                                                  why + " (within socket_connect_timeout " +
                                                  std::to_string(s.connect_timeout.count()) +
                                                  " ms)");
  }
  redisSetTimeout(ctx_, to_timeval(s.socket_timeout));
  if (ep.unix_path.empty()) redisEnableKeepAlive(ctx_);
  bound_reader();
  if (s.tls) {
    try {
      start_tls(*s.tls, s.connect_timeout);
    } catch (...) {
      if (ssl_ != nullptr) SSL_free(ssl_);
      ssl_ = nullptr;
      redisFree(ctx_);
      ctx_ = nullptr;
      throw;
    }
  }
  // Handshake failures are connect failures: the pool never lends out a half-set-up connection.
  auto handshake = [&](const Argv& argv, const char* what) {
    Reply r;
    try {
      r = command(argv);
    } catch (const ConnectionFailure& e) {
      throw ConnectionFailure(Failure::connect, std::string(what) + " failed: " + e.what());
    }
    if (r.is_error()) {
      throw ConnectionFailure(Failure::connect,
                              "redis at " + ep.str() + " refused " + what + ": " + r.str);
    }
    return r;
  };
  try {
    if (!s.password.empty()) {
      if (s.username.empty()) {
        handshake({"AUTH", s.password}, "AUTH");
      } else {
        handshake({"AUTH", s.username, s.password}, "AUTH");
      }
    }
    if (s.db != 0) handshake({"SELECT", std::to_string(s.db)}, "SELECT");
    if (s.check_master) {
      Reply role = handshake({"ROLE"}, "ROLE");
      if (role.type != Reply::Type::array || role.elements.empty() ||
          role.elements[0].str != "master") {
        throw ConnectionFailure(
            Failure::connect, "redis at " + ep.str() + " is not a master (ROLE says " +
                                  (role.elements.empty() ? "nothing" : role.elements[0].str) + ")");
      }
    }
  } catch (...) {
    if (ssl_ != nullptr) SSL_free(ssl_);
    ssl_ = nullptr;
    redisFree(ctx_);
    ctx_ = nullptr;
    throw;
  }
}

Connection::Connection(Adopt, int fd, const ConnectSettings& s)
    : ep_{.host = "fd", .port = fd},
      pid_(::getpid()),
      socket_timeout_(s.socket_timeout),
      max_value_bytes_(s.max_value_bytes == 0 ? 1 : s.max_value_bytes),
      rbuf_(std::make_unique<char[]>(kReadChunkBytes)) {
  ctx_ = redisConnectFd(fd);
  if (ctx_ == nullptr || ctx_->err != 0) {
    if (ctx_ != nullptr) redisFree(ctx_);  // closes fd
    ctx_ = nullptr;
    throw ConnectionFailure(Failure::connect, "hiredis cannot take the socket");
  }
  redisSetTimeout(ctx_, to_timeval(s.socket_timeout));
  bound_reader();
}

std::unique_ptr<Connection> Connection::adopt(int fd, const ConnectSettings& s) {
  return std::unique_ptr<Connection>(new Connection(Adopt{}, fd, s));
}

void Connection::bound_reader() {
  ctx_->reader->fn = &g_reply_fns;
  ctx_->reader->privdata = &limits_;
}

Connection::~Connection() {
  if (ssl_ != nullptr) SSL_free(ssl_);  // before the socket closes; no close_notify (no wait)
  if (ctx_ != nullptr) redisFree(ctx_);
}

void Connection::fail() {
  broken_ = true;
  const int err = ctx_->err;
  std::string why = ctx_->errstr;
  const bool timed_out =
      err == REDIS_ERR_IO && (why.find("temporarily unavailable") != std::string::npos ||
                              why.find("timed out") != std::string::npos);
  if (timed_out) {
    throw ConnectionFailure(Failure::timeout, "redis at " + ep_.str() +
                                                  " did not take the command within " +
                                                  "socket_timeout (" +
                                                  std::to_string(socket_timeout_.count()) + " ms)");
  }
  if (why.empty()) why = "connection lost";
  throw ConnectionFailure(Failure::closed, "redis at " + ep_.str() + ": " + why);
}

void Connection::fail_with(Failure kind, const std::string& why) {
  broken_ = true;
  throw ConnectionFailure(kind, "redis at " + ep_.str() + ": " + why);
}

// Our own send loop rather than hiredis' redisBufferWrite: (1) its blocking write() waits
// SO_SNDTIMEO per write, so a server that reads a byte now and then would stretch a call
// forever — each send here gets only what is left of the call's deadline; (2) write() on a
// connection the server has reset raises SIGPIPE, which kills a program that (like most) does
// not ignore it — send(MSG_NOSIGNAL) returns EPIPE instead, a connection failure like any other.
void Connection::write_all(Clock::time_point deadline) {
  if (ssl_ != nullptr) {
    tls_write_all(deadline);
    return;
  }
  while (sdslen(ctx_->obuf) > 0) {
    const int left = remaining_ms(deadline);
    if (left <= 0) {
      fail_with(Failure::timeout, "did not take the command within socket_timeout (" +
                                      std::to_string(socket_timeout_.count()) + " ms)");
    }
    pollfd p{ctx_->fd, POLLOUT, 0};
    const int ready = ::poll(&p, 1, left);
    if (ready < 0) {
      if (errno == EINTR) continue;
      fail_with(Failure::closed, std::string("poll failed: ") + std::strerror(errno));
    }
    if (ready == 0) continue;  // the deadline check above ends it
    const ssize_t n = ::send(ctx_->fd, ctx_->obuf, sdslen(ctx_->obuf), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      fail_with(Failure::closed, std::string("write failed: ") + std::strerror(errno));
    }
    sdsrange(ctx_->obuf, static_cast<int>(n), -1);
  }
}

void* Connection::buffered_reply() {
  void* raw = nullptr;
  if (redisReaderGetReply(ctx_->reader, &raw) != REDIS_OK) {
    if (limits_.refused) {
      fail_with(Failure::protocol,
                "sent a reply (an array, or a value) larger than "
                "max_value_bytes (" +
                    std::to_string(max_value_bytes_) +
                    " bytes per value) allows; closed the connection");
    }
    fail_with(Failure::protocol, std::string("protocol error: ") + ctx_->reader->errstr);
  }
  return raw;
}

void Connection::check_pending() {
  const redisReader* r = ctx_->reader;
  const std::size_t pending = r->len - r->pos;  // the unfinished item starts at r->pos
  if (reply_bytes_ > reply_budget_ || pending > max_value_bytes_ + kMaxReplyLine) {
    fail_with(Failure::protocol, "sent a reply larger than max_value_bytes (" +
                                     std::to_string(max_value_bytes_) +
                                     " bytes per value); closed the connection");
  }
  // Every item begins with a line ("+OK", "-ERR ...", ":1", "$5"): an unfinished item with no
  // line end in its first kMaxReplyLine bytes is not Redis talking.
  if (pending > kMaxReplyLine && ::memmem(r->buf + r->pos, kMaxReplyLine, "\r\n", 2) == nullptr) {
    fail_with(Failure::protocol, "sent a reply line longer than " + std::to_string(kMaxReplyLine) +
                                     " bytes; closed the connection");
  }
}

void Connection::feed(std::size_t got) {
  if (redisReaderFeed(ctx_->reader, rbuf_.get(), got) != REDIS_OK) {
    fail_with(Failure::protocol, std::string("reader failed: ") + ctx_->reader->errstr);
  }
  received_any_ = true;
  reply_bytes_ += got;
}

bool Connection::read_some(Clock::time_point deadline) {
  if (ssl_ != nullptr) return tls_read_some(deadline);
  for (;;) {
    const int left = remaining_ms(deadline);
    if (left <= 0) return false;  // even if bytes keep coming: the deadline is the call's
    pollfd p{};
    p.fd = ctx_->fd;
    p.events = POLLIN;
    const int n = ::poll(&p, 1, left);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_with(Failure::closed, std::string("poll failed: ") + std::strerror(errno));
    }
    // Readable: read() returns what is there without blocking.
    const ssize_t got = ::read(ctx_->fd, rbuf_.get(), kReadChunkBytes);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      fail_with(Failure::closed, std::string(std::strerror(errno)) +
                                     (received_any_ ? ""
                                                    : " (if this port serves TLS, use "
                                                      "ssl=true or a rediss:// URL)"));
    }
    if (got == 0) {
      // A TLS port drops a client that speaks plain text without a word.
      fail_with(Failure::closed, received_any_ ? "Server closed the connection"
                                               : "Server closed the connection before any reply "
                                                 "(if this port serves TLS, use ssl=true or a "
                                                 "rediss:// URL)");
    }
    feed(static_cast<std::size_t>(got));
    return true;
  }
}

Reply Connection::read_one(Clock::time_point deadline, std::size_t args) {
  const std::size_t per = args == 0 ? 1 : args;
  reply_budget_ = max_value_bytes_ > (SIZE_MAX - kMaxReplyLine) / per
                      ? SIZE_MAX
                      : max_value_bytes_ * per + kMaxReplyLine;
  limits_.max_elements = reply_budget_ / 3;
  limits_.max_string = max_value_bytes_;
  limits_.refused = false;
  // Bytes already buffered (read with an earlier reply) count towards this one.
  reply_bytes_ = ctx_->reader->len - ctx_->reader->pos;
  for (;;) {
    if (void* raw = buffered_reply()) {
      const std::unique_ptr<Reply> owned(static_cast<Reply*>(raw));
      reply_bytes_ = 0;
      return std::move(*owned);
    }
    check_pending();
    if (!read_some(deadline)) {
      fail_with(Failure::timeout, "did not send its whole reply within socket_timeout (" +
                                      std::to_string(socket_timeout_.count()) + " ms)");
    }
  }
}

Reply Connection::command(const Argv& argv) {
  ensure_open();
  const auto deadline = Clock::now() + socket_timeout_;
  append(argv);
  write_all(deadline);
  return read_one(deadline, argv.size());
}

Reply Connection::command(std::string_view name, std::span<const std::string> args) {
  ensure_open();
  const auto deadline = Clock::now() + socket_timeout_;
  arg_ptrs_.clear();
  arg_lens_.clear();
  arg_ptrs_.push_back(name.data());
  arg_lens_.push_back(name.size());
  for (const auto& a : args) {
    arg_ptrs_.push_back(a.data());
    arg_lens_.push_back(a.size());
  }
  append_pointed();
  write_all(deadline);
  return read_one(deadline, arg_ptrs_.size());
}

std::vector<Reply> Connection::pipeline(const std::vector<Argv>& cmds) {
  std::vector<const Argv*> ptrs;
  ptrs.reserve(cmds.size());
  for (const auto& argv : cmds) ptrs.push_back(&argv);
  return pipeline(std::span<const Argv* const>(ptrs));
}

std::vector<Reply> Connection::pipeline(std::span<const Argv* const> cmds) {
  const auto deadline = Clock::now() + socket_timeout_;
  send_pipeline(cmds, deadline);
  return read_pipeline(cmds, deadline);
}

void Connection::send_pipeline(std::span<const Argv* const> cmds, Clock::time_point deadline) {
  for (const Argv* argv : cmds) append(*argv);
  flush(deadline);
}

std::vector<Reply> Connection::read_pipeline(std::span<const Argv* const> cmds,
                                             Clock::time_point deadline) {
  ensure_open();
  std::vector<Reply> out;
  out.reserve(cmds.size());
  for (const Argv* argv : cmds) out.push_back(read_one(deadline, argv->size()));
  return out;
}

void Connection::append(const Argv& argv) {
  ensure_open();
  point_at(argv, arg_ptrs_, arg_lens_);
  append_pointed();
}

void Connection::append_pointed() {
  if (redisAppendCommandArgv(ctx_, static_cast<int>(arg_ptrs_.size()), arg_ptrs_.data(),
                             arg_lens_.data()) != REDIS_OK) {
    fail();
  }
}

void Connection::ensure_open() const {
  if (broken_) throw ConnectionFailure(Failure::closed, "redis connection already failed");
}

void Connection::append_keys(std::string_view name, std::span<const std::string> keys,
                             std::span<const std::uint32_t> pick) {
  ensure_open();
  arg_ptrs_.clear();
  arg_lens_.clear();
  arg_ptrs_.push_back(name.data());
  arg_lens_.push_back(name.size());
  for (const std::uint32_t i : pick) {
    arg_ptrs_.push_back(keys[i].data());
    arg_lens_.push_back(keys[i].size());
  }
  append_pointed();
}

void Connection::flush(Clock::time_point deadline) {
  ensure_open();
  write_all(deadline);
}

Reply Connection::read_reply(Clock::time_point deadline, std::size_t args) {
  ensure_open();
  return read_one(deadline, args);
}

void Connection::abandon() noexcept { broken_ = true; }

void Connection::interrupt() noexcept {
  if (ctx_ != nullptr && ctx_->fd >= 0) (void)::shutdown(ctx_->fd, SHUT_RDWR);
}

void Connection::send(const Argv& argv) {
  append(argv);
  write_all(Clock::now() + socket_timeout_);
}

std::optional<Reply> Connection::read_push(milliseconds wait) {
  ensure_open();
  // A pushed message is one value: the same bounds as a one-argument reply. The budget spans
  // calls (a message may arrive over several waits); it restarts after each message.
  reply_budget_ = max_value_bytes_ + kMaxReplyLine;
  limits_.max_elements = reply_budget_ / 3;
  limits_.max_string = max_value_bytes_;
  limits_.refused = false;
  for (int round = 0; round < 2; ++round) {
    if (void* raw = buffered_reply()) {
      const std::unique_ptr<Reply> owned(static_cast<Reply*>(raw));
      reply_bytes_ = ctx_->reader->len - ctx_->reader->pos;
      return std::move(*owned);
    }
    check_pending();
    if (round == 1) break;
    if (!read_some(Clock::now() + wait)) return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace dogpile::redis_detail
