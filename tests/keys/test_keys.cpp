// to_key_string, the function key generators and the key manglers, against golden vectors
// computed with CPython 3.11 (str(), repr(), hashlib.sha1).
#include <catch2/catch.hpp>

#include <array>
#include <bit>
#include <charconv>
#include <cstdint>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "dogpile/keys.hpp"

namespace app {
struct UserId {
  int id;
};
// Found by argument-dependent lookup.
std::string to_key_string(const UserId& u) { return "user-" + std::to_string(u.id); }

struct Point {
  int x;
  int y;
};
std::ostream& operator<<(std::ostream& os, const Point& p) { return os << p.x << ':' << p.y; }

// Both: the ADL customization wins over operator<<.
struct Both {};
std::string to_key_string(const Both& /*unused*/) { return "adl"; }
std::ostream& operator<<(std::ostream& os, const Both& /*unused*/) { return os << "stream"; }

enum class Color : std::uint8_t { red = 1, blue = 200 };
enum Plain { plain_a = -3 };

struct NoKey {};
}  // namespace app

using dogpile::to_key_string;

static_assert(dogpile::KeyStringable<int>);
static_assert(dogpile::KeyStringable<std::vector<std::optional<std::string>>>);
static_assert(dogpile::KeyStringable<app::UserId>);
static_assert(dogpile::KeyStringable<app::Point>);
static_assert(!dogpile::KeyStringable<app::NoKey>);
static_assert(!dogpile::KeyStringable<std::vector<app::NoKey>>);
static_assert(!dogpile::KeyStringable<std::tuple<int, app::NoKey>>);

TEST_CASE("integers are decimal", "[keys]") {
  CHECK(to_key_string(0) == "0");
  CHECK(to_key_string(42) == "42");
  CHECK(to_key_string(-7) == "-7");
  CHECK(to_key_string(std::numeric_limits<std::int64_t>::min()) == "-9223372036854775808");
  CHECK(to_key_string(std::numeric_limits<std::uint64_t>::max()) == "18446744073709551615");
  CHECK(to_key_string(static_cast<std::int8_t>(-5)) == "-5");  // signed char is a number
  CHECK(to_key_string(static_cast<std::uint8_t>(250)) == "250");
  CHECK(to_key_string(static_cast<short>(300)) == "300");
}

TEST_CASE("bool and None are Python's", "[keys]") {
  CHECK(to_key_string(true) == "True");
  CHECK(to_key_string(false) == "False");
  CHECK(to_key_string(std::nullopt) == "None");
  CHECK(to_key_string(nullptr) == "None");
  CHECK(to_key_string(std::optional<int>{}) == "None");
  CHECK(to_key_string(std::optional<int>{5}) == "5");
  CHECK(to_key_string(std::optional<std::string>{"x"}) == "x");
}

TEST_CASE("floating point is Python's str(float)", "[keys]") {
  // (IEEE-754 bits as hex little endian, CPython repr) pairs.
  struct Golden {
    double value;
    std::string_view python;
  };
  const Golden golden[] = {
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1.0, "1.0"},
      {0.1, "0.1"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1.5, "1.5"},
      {-2.25, "-2.25"},
      {100.0, "100.0"},
      {1e15, "1000000000000000.0"},
      {1e16, "1e+16"},
      {1.5e16, "1.5e+16"},
      {123456789012345678.0, "1.2345678901234568e+17"},
      {1e-4, "0.0001"},
      {1e-5, "1e-05"},
      {1.5e-7, "1.5e-07"},
      {0.00012, "0.00012"},
      {1e100, "1e+100"},
      {1e-100, "1e-100"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {3.141592653589793, "3.141592653589793"},
      {2.5e-05, "2.5e-05"},
      {1e22, "1e+22"},
      {12345.678, "12345.678"},
      {9007199254740993.0, "9007199254740992.0"},
      {0.001, "0.001"},
  };
  for (const auto& g : golden) {
    INFO(g.python);
    CHECK(to_key_string(g.value) == g.python);
  }
  CHECK(to_key_string(std::numeric_limits<double>::infinity()) == "inf");
  CHECK(to_key_string(-std::numeric_limits<double>::infinity()) == "-inf");
  CHECK(to_key_string(std::numeric_limits<double>::quiet_NaN()) == "nan");
  CHECK(to_key_string(0.1f) == "0.1");  // shortest round trip of the float itself
  CHECK(to_key_string(2.0f) == "2.0");
}

TEST_CASE("floating point output round-trips for random doubles", "[keys]") {
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    const auto d = std::bit_cast<double>(rng());
    if (!std::isfinite(d)) continue;
    const std::string s = to_key_string(d);
    double back = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), back);
    INFO(s);
    REQUIRE(res.ec == std::errc{});
    REQUIRE(res.ptr == s.data() + s.size());
    REQUIRE(std::bit_cast<std::uint64_t>(back) == std::bit_cast<std::uint64_t>(d));
    // Python always shows a '.' or an exponent.
    REQUIRE(s.find_first_of(".e") != std::string::npos);
  }
}

TEST_CASE("strings are verbatim at the top level", "[keys]") {
  CHECK(to_key_string("abc") == "abc");
  const char* p = "ptr";
  CHECK(to_key_string(p) == "ptr");
  const char* null_p = nullptr;
  CHECK(to_key_string(null_p) == "None");
  CHECK(to_key_string(std::string("it's")) == "it's");
  CHECK(to_key_string(std::string_view("sv")) == "sv");
  CHECK(to_key_string('c') == "c");
  CHECK(to_key_string(std::string("")).empty());
}

TEST_CASE("enums are their underlying integer", "[keys]") {
  CHECK(to_key_string(app::Color::red) == "1");
  CHECK(to_key_string(app::Color::blue) == "200");
  CHECK(to_key_string(app::plain_a) == "-3");
}

TEST_CASE("tuples and containers are Python-like, elements as repr", "[keys]") {
  CHECK(to_key_string(std::tuple<int>{1}) == "(1,)");
  CHECK(to_key_string(std::tuple<>{}) == "()");
  CHECK(to_key_string(std::pair<int, std::string>{1, "a"}) == "(1, 'a')");
  CHECK(to_key_string(std::vector<int>{1, 2}) == "[1, 2]");
  CHECK(to_key_string(std::vector<int>{}) == "[]");
  CHECK(to_key_string(std::list<double>{1.0, 0.5}) == "[1.0, 0.5]");
  CHECK(to_key_string(std::array<int, 3>{1, 2, 3}) == "[1, 2, 3]");
  CHECK(to_key_string(std::map<std::string, int>{{"a", 1}}) == "{'a': 1}");
  CHECK(to_key_string(std::map<int, int>{}) == "{}");
  CHECK(to_key_string(std::set<int>{2, 1}) == "{1, 2}");
  CHECK(to_key_string(std::set<int>{}) == "set()");
  CHECK(to_key_string(std::vector<std::optional<bool>>{std::nullopt, true}) == "[None, True]");
  CHECK(to_key_string(std::vector<std::vector<int>>{{1}, {2, 3}}) == "[[1], [2, 3]]");
  CHECK(to_key_string(std::tuple<std::vector<int>, char>{{1}, 'x'}) == "([1], 'x')");
  // Python repr quoting: CPython gives "it's", 'a"b\'c', 'x\ny\x01\\'.
  CHECK(to_key_string(std::vector<std::string>{"it's"}) == "[\"it's\"]");
  CHECK(to_key_string(std::vector<std::string>{"a\"b'c"}) == "['a\"b\\'c']");
  CHECK(to_key_string(std::vector<std::string>{"x\ny\x01\\"}) == "['x\\ny\\x01\\\\']");
}

TEST_CASE("user types: ADL to_key_string, then operator<<", "[keys]") {
  CHECK(to_key_string(app::UserId{7}) == "user-7");
  CHECK(to_key_string(app::Point{1, 2}) == "1:2");
  CHECK(to_key_string(app::Both{}) == "adl");
  CHECK(to_key_string(std::vector<app::UserId>{{1}, {2}}) == "[user-1, user-2]");
}

TEST_CASE("make_key is namespace|args joined by spaces", "[keys]") {
  CHECK(dogpile::make_key("app.get_user", 42) == "app.get_user|42");
  CHECK(dogpile::make_key("tests.cache.test_decorator:one", 1, 2) ==
        "tests.cache.test_decorator:one|1 2");
  CHECK(dogpile::make_key("ns") == "ns|");
  CHECK(dogpile::make_key("ns", "a b", 1.0, true, std::nullopt) == "ns|a b 1.0 True None");
  const auto gen = dogpile::function_key_generator("app.f");
  CHECK(gen(1, "x") == "app.f|1 x");
  CHECK(gen() == "app.f|");
  const std::vector<std::string> parts{"1", "2"};
  CHECK(dogpile::join_key("ns", parts) == "ns|1 2");
  CHECK(dogpile::join_key("ns", {}) == "ns|");
}

TEST_CASE("multi key generator gives one key per argument", "[keys]") {
  CHECK(dogpile::make_keys("app.get_users", 1, 2, 3) ==
        std::vector<std::string>{"app.get_users|1", "app.get_users|2", "app.get_users|3"});
  CHECK(dogpile::make_keys("ns").empty());
  const auto gen = dogpile::function_multi_key_generator("m");
  CHECK(gen("a", 2.5) == std::vector<std::string>{"m|a", "m|2.5"});
}

TEST_CASE("sha1_mangle_key equals Python hashlib", "[keys]") {
  CHECK(dogpile::sha1_mangle_key("some_key") == "53def077a4264bd3183d4eb21b1f56f883e1b572");
  CHECK(dogpile::sha1_mangle_key("tests.cache.test_decorator:one|1 2") ==
        "aead490a8ace2d69a00160f1fd8fd8a16552c24f");
  CHECK(dogpile::sha1_mangle_key("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK(dogpile::sha1_mangle_key(std::string(300, 'x')) ==
        "02fd68253071f895718c8d41f7ff665abe1a6290");
  // A KeyMangler is a std::function: the plain function converts.
  const dogpile::KeyMangler m = dogpile::sha1_mangle_key;
  CHECK(m("some_key") == "53def077a4264bd3183d4eb21b1f56f883e1b572");
}

TEST_CASE("length_conditional_mangler mangles only keys of at least `length` bytes", "[keys]") {
  const auto m = dogpile::length_conditional_mangler(10, dogpile::sha1_mangle_key);
  CHECK(m("short") == "short");
  CHECK(m("123456789") == "123456789");                              // 9 < 10: unchanged
  CHECK(m("1234567890") == dogpile::sha1_mangle_key("1234567890"));  // 10 >= 10: mangled
  CHECK(m(std::string(300, 'x')) == "02fd68253071f895718c8d41f7ff665abe1a6290");
  CHECK_THROWS_AS(dogpile::length_conditional_mangler(10, nullptr), dogpile::ValidationError);
  const auto upper = dogpile::length_conditional_mangler(
      0, [](std::string_view k) { return std::string(k) + "!"; });
  CHECK(upper("") == "!");  // length 0: every key is mangled
}

TEST_CASE("type-erased default generators match make_key/make_keys", "[keys]") {
  const dogpile::FunctionKeyGenerator gen = dogpile::default_key_generator;
  const std::vector<std::string> args{dogpile::to_key_string(1), dogpile::to_key_string("a b")};
  CHECK(gen("ns", args) == dogpile::make_key("ns", 1, "a b"));
  CHECK(gen("ns", {}) == "ns|");
  const dogpile::FunctionMultiKeyGenerator multi = dogpile::default_multi_key_generator;
  CHECK(multi("ns", args) == dogpile::make_keys("ns", 1, "a b"));
  CHECK(multi("ns", {}).empty());
}
