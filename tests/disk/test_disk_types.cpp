// The disk cache's vocabulary types as a user meets them: numbers that do not fit the requested
// type are errors (never narrowed values), errors name the key, every duration option takes
// `1.5s`, and `Bytes` keeps every byte it is given.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>

#include "disk_test_support.hpp"
#include "dogpile/backends/disk.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using disk_test::Point;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::DiskCache;
using dogpile::Key;
using dogpile::TypeMismatch;

TEST_CASE("a stored integer that does not fit the requested type is TypeMismatch", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  cache.set("big", std::int64_t{12345678901});
  cache.set("300", 300);
  cache.set("neg", -1);
  cache.set("two", 2);

  CHECK_THROWS_AS(cache.get<int>("big"), TypeMismatch);
  CHECK_THROWS_WITH(cache.get<int>("big"), Contains("'big'") && Contains("12345678901") &&
                                               Contains("32-bit signed") &&
                                               Contains("std::int64_t"));
  CHECK(cache.get<std::int64_t>("big") == 12345678901);
  CHECK(cache.get<long long>("big") == 12345678901);

  CHECK_THROWS_AS(cache.get<std::uint8_t>("300"), TypeMismatch);
  CHECK_THROWS_WITH(cache.get<std::uint8_t>("300"), Contains("'300'") && Contains("0 to 255"));
  CHECK_THROWS_AS(cache.get<std::int8_t>("300"), TypeMismatch);
  CHECK_THROWS_AS(cache.get<char>("300"), TypeMismatch);
  CHECK(cache.get<std::uint16_t>("300") == 300);
  CHECK(cache.get<std::int16_t>("300") == 300);

  CHECK_THROWS_AS(cache.get<unsigned>("neg"), TypeMismatch);
  CHECK_THROWS_AS(cache.get<std::uint64_t>("neg"), TypeMismatch);
  CHECK(cache.get<int>("neg") == -1);

  CHECK_THROWS_AS(cache.get<bool>("two"), TypeMismatch);
  cache.set("true", true);
  CHECK(cache.get<bool>("true") == true);

  // Every read path, not only get.
  CHECK_THROWS_AS(cache.get_item<int>("big"), TypeMismatch);
  std::vector<Key> keys{"300"};
  CHECK_THROWS_AS(cache.get_many<std::uint8_t>(keys), TypeMismatch);
  CHECK_THROWS_AS(cache.pop<std::uint8_t>("300"), TypeMismatch);
}

TEST_CASE("integer <-> floating point reads never narrow", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  constexpr std::int64_t two53 = std::int64_t{1} << 53;
  cache.set("2^53", two53);
  cache.set("2^53+1", two53 + 1);
  cache.set("2^24+1", std::int64_t{(1 << 24) + 1});
  cache.set("max", std::numeric_limits<std::int64_t>::max());
  cache.set("huge", 1e300);
  cache.set("tenth", 0.1);
  cache.set("pi", 3.0);

  CHECK(cache.get<double>("2^53") == 9007199254740992.0);
  CHECK_THROWS_AS(cache.get<double>("2^53+1"), TypeMismatch);
  CHECK_THROWS_WITH(cache.get<double>("2^53+1"), Contains("'2^53+1'") && Contains("exactly"));
  CHECK_THROWS_AS(cache.get<double>("max"), TypeMismatch);
  CHECK(cache.get<long double>("max") ==
        static_cast<long double>(std::numeric_limits<std::int64_t>::max()));
  CHECK_THROWS_AS(cache.get<float>("2^24+1"), TypeMismatch);
  CHECK(cache.get<double>("2^24+1") == 16777217.0);

  CHECK_THROWS_AS(cache.get<float>("huge"), TypeMismatch);
  CHECK_THROWS_WITH(cache.get<float>("huge"), Contains("'huge'") && Contains("1e+300"));
  CHECK(cache.get<double>("huge") == 1e300);
  CHECK(cache.get<float>("tenth") == 0.1f);  // rounding to float precision is a float read

  // A stored double is never read as an integer, not even an integral one.
  CHECK_THROWS_AS(cache.get<int>("pi"), TypeMismatch);
  CHECK_THROWS_WITH(cache.get<int>("pi"), Contains("'pi'") && Contains("a float"));
}

namespace {}  // namespace

TEST_CASE("CantDeserialize from get<T> names the key", "[disk]") {
  TempDir d;
  DiskCache cache(d.path);
  cache.set("point", Point{1, 2});
  CHECK(cache.get<Point>("point")->y == 2);
  cache.set("garbage", Bytes{"not json at all"});
  cache.set("wrong-shape", Bytes{"[1, 2]"});
  CHECK_THROWS_AS(cache.get<Point>("garbage"), dogpile::CantDeserialize);
  CHECK_THROWS_WITH(cache.get<Point>("garbage"), Contains("'garbage'"));
  CHECK_THROWS_WITH(cache.get<Point>("wrong-shape"), Contains("'wrong-shape'"));
}

TEST_CASE("every duration option takes 1.5s, 5s and 100ms", "[disk]") {
  TempDir d;
  dogpile::ManualClock clock;
  DiskCache cache(d.path, {.timeout = 0.5s, .clock = clock, .access_flush_interval = 0.25s});
  CHECK(cache.timeout() == 500ms);

  cache.set("a", 1, {.expire = 1.5s});
  cache.set("b", 1, {.expire = 5s});
  cache.set("c", 1, {.expire = 100ms});
  cache.set("d", 1, {.expire = std::chrono::duration<double>(0.25)});
  auto a = cache.get_item<int>("a");
  REQUIRE(a);
  REQUIRE(a->expire_time);
  CHECK(std::chrono::abs(*a->expire_time - (clock() + 1500ms)) < 1ms);
  auto c = cache.get_item<int>("c");
  REQUIRE(c);
  REQUIRE(c->expire_time);
  CHECK(std::chrono::abs(*c->expire_time - (clock() + 100ms)) < 1ms);
  clock.advance(1s);
  CHECK(cache.contains("a"));
  CHECK_FALSE(cache.contains("c"));
  CHECK_FALSE(cache.contains("d"));
  clock.advance(1s);
  CHECK_FALSE(cache.contains("a"));
  CHECK(cache.contains("b"));

  CHECK(cache.touch("b", 2.5s));
  clock.advance(2400ms);
  CHECK(cache.contains("b"));
  clock.advance(200ms);
  CHECK_FALSE(cache.contains("b"));

  cache.push(1, {.expire = 1.5s});
  auto pulled = cache.pull_item<int>();
  REQUIRE(pulled);
  REQUIRE(pulled->expire_time);
  CHECK(std::chrono::abs(*pulled->expire_time - (clock() + 1500ms)) < 1ms);

  auto twice = cache.memoize("twice", [](int x) { return 2 * x; }, {.expire = 1.5s, .lease = 2.5s});
  CHECK(twice(4) == 8);
  auto memo = cache.get_item<int>(twice.cache_key(4));
  REQUIRE(memo);
  REQUIRE(memo->expire_time);
  CHECK(std::chrono::abs(*memo->expire_time - (clock() + 1500ms)) < 1ms);

  dogpile::FanoutCache fan(d / "fan", {.shards = 2, .timeout = 0.01s});
  CHECK(fan.set("k", 1, {.expire = 1.5s}));
  CHECK(fan.touch("k", 0.5s));

  dogpile::DiskLockOptions lock{.lock_timeout = 1.5s, .lock_sleep = 0.05s};
  CHECK(lock.lock_timeout == 1500ms);
  CHECK(lock.lock_sleep == 50ms);
  dogpile::DiskBackendOptions backend{.directory = d / "backend", .expire = 1.5s};
  CHECK(backend.expire == std::optional<dogpile::Duration>(1500ms));

  // Rounded to the nearest millisecond, as documented.
  CHECK(dogpile::Duration(std::chrono::duration<double>(0.0016)) == 2ms);
  CHECK(dogpile::Duration(1min) == 60000ms);
}

TEST_CASE("Bytes keeps every byte of a string_view and of a literal", "[disk]") {
  const Bytes from_view{std::string_view("\x00\x01key", 5)};
  CHECK(from_view.data.size() == 5);
  CHECK(from_view.data == std::string("\x00\x01key", 5));
  const Bytes from_literal{"\x00\x01key"};
  CHECK(from_literal.data.size() == 5);
  CHECK(from_literal == from_view);
  CHECK(Bytes{""}.data.empty());
  CHECK(Bytes{std::string("ab\0c", 4)}.data.size() == 4);
  // A bare pointer has no length: refused at compile time rather than cut at the first NUL.
  STATIC_REQUIRE_FALSE(std::is_constructible_v<Bytes, const char*>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<Bytes, char*>);
  // Not implicit: text and bytes are different kinds on disk.
  STATIC_REQUIRE_FALSE(std::is_convertible_v<std::string, Bytes>);

  TempDir d;
  DiskCache cache(d.path);
  cache.set(Bytes{"\x00\x01key"}, Bytes{"\x00value"});
  CHECK(cache.get<Bytes>(Bytes{std::string_view("\x00\x01key", 5)}) ==
        Bytes{std::string_view("\x00value", 6)});
  CHECK_FALSE(cache.contains(Bytes{std::string_view("\x00\x01", 2)}));
}
