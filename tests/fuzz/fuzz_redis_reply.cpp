// libFuzzer target: arbitrary bytes as what a Redis server sends back, through the client layer
// the redis backends use (src/redis/connection.cpp: hiredis's reader with our bounds on lines,
// strings, array sizes and whole replies; src/redis/cluster.cpp: the MOVED/ASK target). The
// first byte picks the call (one command, a pipeline, a split pipeline, pub/sub reads); the rest
// is written to the other end of a socket pair, which is then shut, so every call ends.
// Outcomes: replies within the bounds, or ConnectionFailure; nothing else may escape, and
// nothing may crash, leak or hang.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "client.hpp"
#include "connection.hpp"
#include "fuzz_target.hpp"

namespace {

using dogpile::redis_detail::Argv;
using dogpile::redis_detail::ConnectionFailure;
using dogpile::redis_detail::Reply;

constexpr std::size_t kMaxValue = 64;  // max_value_bytes: small, so inputs can cross it

void check(const Reply& r) {
  if (r.type == Reply::Type::string && r.str.size() > kMaxValue) __builtin_trap();
  if (r.str.size() > dogpile::redis_detail::kMaxReplyLine) __builtin_trap();
  if (r.is_error() && (r.error_code() == "MOVED" || r.error_code() == "ASK")) {
    try {
      const auto ep = dogpile::redis_detail::redirect_target(r.str);
      if (ep.port < 1 || ep.port > 65535) __builtin_trap();
    } catch (const ConnectionFailure&) {
    }
  }
  for (const auto& e : r.elements) check(e);
}

}  // namespace

DOGPILE_FUZZ_TARGET(redis_reply) {
  if (size < 1) return 0;
  const unsigned mode = data[0] % 4;
  std::string_view server(reinterpret_cast<const char*>(data + 1), size - 1);
  std::array<int, 2> sv{};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv.data()) != 0) return 0;
  while (!server.empty()) {  // a few KiB: fits the socket buffer
    const ssize_t n = ::send(sv[1], server.data(), server.size(), MSG_NOSIGNAL);
    if (n <= 0) break;
    server.remove_prefix(static_cast<std::size_t>(n));
  }
  ::shutdown(sv[1], SHUT_WR);
  dogpile::redis_detail::ConnectSettings s;
  s.socket_timeout = std::chrono::milliseconds(500);
  s.max_value_bytes = kMaxValue;
  try {
    auto c = dogpile::redis_detail::Connection::adopt(sv[0], s);
    const Argv get{"GET", "k"};
    const Argv mget{"MGET", "a", "b", "c"};
    switch (mode) {
      case 0:
        check(c->command(get));
        break;
      case 1:
        for (const auto& r : c->pipeline(std::vector<Argv>{get, mget, get})) check(r);
        break;
      case 2: {
        const std::array<const Argv*, 2> cmds{&mget, &get};
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
        c->send_pipeline(cmds, deadline);
        for (const auto& r : c->read_pipeline(cmds, deadline)) check(r);
        break;
      }
      default:
        for (int i = 0; i < 3; ++i) {
          if (auto r = c->read_push(std::chrono::milliseconds(0))) check(*r);
        }
    }
  } catch (const ConnectionFailure&) {
  }
  ::close(sv[1]);
  return 0;
}
