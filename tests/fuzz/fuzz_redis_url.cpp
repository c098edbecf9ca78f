// libFuzzer target: arbitrary bytes as a Redis URL (redis-py's from_url syntax), through the
// parser the redis backends use (src/redis/url.cpp). Outcomes: a parsed URL whose port and db
// are in range, or ValidationError; nothing else may escape.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dogpile/error.hpp"
#include "fuzz_target.hpp"
#include "url.hpp"

DOGPILE_FUZZ_TARGET(redis_url) {
  const std::string_view url(reinterpret_cast<const char*>(data), size);
  try {
    const auto u = dogpile::redis_detail::parse_redis_url("redis", url);
    if (u.db < 0) __builtin_trap();
  } catch (const dogpile::ValidationError&) {
  }
  return 0;
}
