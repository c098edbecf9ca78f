// hiredis 0.14.1's blocking API behind `Connection`: the only file that sees redisContext and
// redisReply.
#include "connection.hpp"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/time.h>
#include <unistd.h>

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

Reply convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::nil;
  }
  return out;
}

struct ReplyDeleter {
  void operator()(void* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<void, ReplyDeleter>;

// hiredis wants parallel arrays of pointers and lengths. One object can be refilled for each
// command of a pipeline (its buffers are reused).
struct RawArgv {
  RawArgv() = default;
  explicit RawArgv(const Argv& argv) { assign(argv); }
  void assign(const Argv& argv) {
    ptrs.clear();
    lens.clear();
    ptrs.reserve(argv.size());
    lens.reserve(argv.size());
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
  }
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
};

}  // namespace

Connection::Connection(const Endpoint& ep, const ConnectSettings& s) : ep_(ep), pid_(::getpid()) {
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
    redisFree(ctx_);
    ctx_ = nullptr;
    throw;
  }
}

Connection::~Connection() {
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
    throw ConnectionFailure(Failure::timeout,
                            "redis at " + ep_.str() + " did not answer within socket_timeout");
  }
  if (why.empty()) why = "connection lost";
  throw ConnectionFailure(Failure::closed, "redis at " + ep_.str() + ": " + why);
}

Reply Connection::read_one() {
  void* raw = nullptr;
  if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) fail();
  ReplyPtr owned(raw);
  return convert(static_cast<const redisReply*>(raw));
}

Reply Connection::command(const Argv& argv) {
  if (broken_) throw ConnectionFailure(Failure::closed, "redis connection already failed");
  RawArgv raw(argv);
  if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), raw.ptrs.data(),
                             raw.lens.data()) != REDIS_OK) {
    fail();
  }
  return read_one();
}

std::vector<Reply> Connection::pipeline(const std::vector<Argv>& cmds) {
  std::vector<const Argv*> ptrs;
  ptrs.reserve(cmds.size());
  for (const auto& argv : cmds) ptrs.push_back(&argv);
  return pipeline(std::span<const Argv* const>(ptrs));
}

std::vector<Reply> Connection::pipeline(std::span<const Argv* const> cmds) {
  if (broken_) throw ConnectionFailure(Failure::closed, "redis connection already failed");
  RawArgv raw;
  for (const Argv* argv : cmds) {
    raw.assign(*argv);
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv->size()), raw.ptrs.data(),
                               raw.lens.data()) != REDIS_OK) {
      fail();
    }
  }
  std::vector<Reply> out;
  out.reserve(cmds.size());
  for (std::size_t i = 0; i < cmds.size(); ++i) out.push_back(read_one());
  return out;
}

void Connection::send(const Argv& argv) {
  if (broken_) throw ConnectionFailure(Failure::closed, "redis connection already failed");
  RawArgv raw(argv);
  if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), raw.ptrs.data(),
                             raw.lens.data()) != REDIS_OK) {
    fail();
  }
  int done = 0;
  while (done == 0) {
    if (redisBufferWrite(ctx_, &done) != REDIS_OK) fail();
  }
}

std::optional<Reply> Connection::read_push(milliseconds wait) {
  if (broken_) throw ConnectionFailure(Failure::closed, "redis connection already failed");
  for (int round = 0; round < 2; ++round) {
    void* raw = nullptr;
    if (redisReaderGetReply(ctx_->reader, &raw) != REDIS_OK) fail();
    if (raw != nullptr) {
      ReplyPtr owned(raw);
      return convert(static_cast<const redisReply*>(raw));
    }
    if (round == 1) break;
    pollfd p{};
    p.fd = ctx_->fd;
    p.events = POLLIN;
    const int n = ::poll(&p, 1, static_cast<int>(wait.count()));
    if (n == 0) return std::nullopt;
    if (n < 0) return std::nullopt;  // EINTR: the caller loops
    if (redisBufferRead(ctx_) != REDIS_OK) fail();
  }
  return std::nullopt;
}

}  // namespace dogpile::redis_detail
