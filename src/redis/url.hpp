// Redis URLs as redis-py's `from_url` reads them. Internal to dogpile::redis.
#pragma once

#include <string>
#include <string_view>

#include "connection.hpp"

namespace dogpile::redis_detail {

struct ParsedUrl {
  Endpoint endpoint{};
  int db = 0;
  std::string username{};
  std::string password{};
  bool tls = false;  // rediss://
};

/// `redis://[[user]:password@]host[:port][/db][?db=N]` (`rediss://`: the same over TLS) or
/// `unix://[[user]:password@]/path[?db=N]`; user and password are percent-decoded.
/// @throws ValidationError "<backend> backend: argument 'url' …" saying what is wrong.
ParsedUrl parse_redis_url(const char* backend, std::string_view url);

}  // namespace dogpile::redis_detail
