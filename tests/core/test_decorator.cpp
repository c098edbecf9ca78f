// dogpile's test_decorator.py (reference/dogpile.md §5.5): DecoratorTest, KeyGenerationTest,
// CacheDecoratorTest, with a ManualClock instead of sleeps.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::ManualClock;
using Triple = std::tuple<int, int, int>;

namespace {

/// DecoratorTest's region: memory backend, expiration 0.25 s, manual clock.
struct DecoratorFixture {
  ManualClock clock;
  dogpile::CacheRegion reg;
  std::shared_ptr<int> counter = std::make_shared<int>(0);
  explicit DecoratorFixture(dogpile::RegionOptions ro = {}) {
    ro.clock = clock;
    reg = dogpile::make_region(std::move(ro));
    reg.configure("memory", {.expiration_time = 250ms});
  }
  /// `go(a, b)` returns (counter, a, b).
  auto go(std::string ns = "tests.cache.test_decorator:go",
          dogpile::DecoratorOptions<Triple> opts = {}) {
    return reg.cache_on_arguments(
        std::move(ns),
        [c = counter](int a, int b) {
          return Triple{++*c, a, b};
        },
        std::move(opts));
  }
  /// The multi form: `go(args...)` returns "<counter> <arg>" per argument, one counter per call.
  auto multi_go(std::string ns = "tests.cache.test_decorator:go",
                dogpile::DecoratorOptions<std::string> opts = {}) {
    return reg.cache_multi_on_arguments(
        std::move(ns),
        [c = counter](const std::vector<int>& args) {
          const int val = ++*c;
          std::vector<std::string> out;
          for (int a : args) out.push_back(std::to_string(val) + " " + std::to_string(a));
          return out;
        },
        std::move(opts));
  }
};

using OptS = std::optional<std::string>;
using VOptS = std::vector<OptS>;
using VS = std::vector<std::string>;

}  // namespace

// ---- DecoratorTest --------------------------------------------------------------------------

TEST_CASE("DecoratorTest: decorator", "[decorator]") {
  DecoratorFixture f;
  auto go = f.go();
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go(3, 4) == Triple{2, 3, 4});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  f.clock.advance(300ms);
  CHECK(go(1, 2) == Triple{3, 1, 2});
}

TEST_CASE("DecoratorTest: decorator_namespace", "[decorator]") {
  DecoratorFixture f;
  auto go = f.go("tests.cache.test_decorator:go|x");
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go(3, 4) == Triple{2, 3, 4});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go.key(1, 2) == "tests.cache.test_decorator:go|x|1 2");
  CHECK(dogpile_test::raw_present(f.reg, "tests.cache.test_decorator:go|x|1 2"));
  f.clock.advance(300ms);
  CHECK(go(1, 2) == Triple{3, 1, 2});
}

TEST_CASE("DecoratorTest: decorator_custom_expire", "[decorator]") {
  DecoratorFixture f;
  auto go = f.go("ns", {.expiration_time = 500ms});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go(3, 4) == Triple{2, 3, 4});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  f.clock.advance(300ms);
  CHECK(go(1, 2) == Triple{1, 1, 2});
  f.clock.advance(300ms);
  CHECK(go(1, 2) == Triple{3, 1, 2});
}

TEST_CASE("DecoratorTest: decorator_expire_callable", "[decorator]") {
  DecoratorFixture f;
  int evaluated = 0;
  auto go = f.go("ns", {.expiration_time = [&evaluated] {
                   ++evaluated;
                   return 500ms;
                 }});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go(3, 4) == Triple{2, 3, 4});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  f.clock.advance(300ms);
  CHECK(go(1, 2) == Triple{1, 1, 2});
  f.clock.advance(300ms);
  CHECK(go(1, 2) == Triple{3, 1, 2});
  CHECK(evaluated >= 5);  // evaluated on every call
}

TEST_CASE("DecoratorTest: decorator_expire_callable_zero", "[decorator]") {
  // A callable returning 0 regenerates on every call (dogpile: now - ct > 0 with a moving
  // wall clock). The clock ticks one microsecond per reading.
  ManualClock base;
  dogpile::Clock ticking = [base]() mutable {
    base.advance(1us);
    return base();
  };
  auto reg = dogpile::make_region({.clock = ticking});
  reg.configure("memory", {.expiration_time = 250ms});
  int n = 0;
  auto go = reg.cache_on_arguments("ns",
                                   [&n](int a, int b) {
                                     return Triple{++n, a, b};
                                   },
                                   {.expiration_time = [] { return 0s; }});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go(1, 2) == Triple{2, 1, 2});
  CHECK(go(1, 2) == Triple{3, 1, 2});

  SECTION("the same with the system clock") {
    auto sys = dogpile::make_region();
    sys.configure("memory");
    int m = 0;
    auto g = sys.cache_on_arguments("ns", [&m](int a) { return ++m + a; },
                                    {.expiration_time = [] { return 0s; }});
    CHECK(g(0) == 1);
    CHECK(g(0) == 2);
    CHECK(g(0) == 3);
  }
}

TEST_CASE("DecoratorTest: explicit_expire (invalidate)", "[decorator]") {
  DecoratorFixture f;
  auto go = f.go("ns", {.expiration_time = 1s});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go(3, 4) == Triple{2, 3, 4});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  go.invalidate(1, 2);
  CHECK(go(1, 2) == Triple{3, 1, 2});
}

TEST_CASE("DecoratorTest: explicit_set", "[decorator]") {
  DecoratorFixture f;
  auto go = f.go("ns", {.expiration_time = 1s});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  go.set(Triple{5, 0, 0}, 1, 2);
  CHECK(go(3, 4) == Triple{2, 3, 4});
  CHECK(go(1, 2) == Triple{5, 0, 0});
  go.invalidate(1, 2);
  CHECK(go(1, 2) == Triple{3, 1, 2});
  go.set(Triple{0, 0, 0}, 1, 3);
  CHECK(go(1, 3) == Triple{0, 0, 0});
}

TEST_CASE("DecoratorTest: explicit_get", "[decorator]") {
  DecoratorFixture f;
  auto go = f.go("ns", {.expiration_time = 1s});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go.get(1, 2) == Triple{1, 1, 2});
  CHECK_FALSE(go.get(2, 1));
  CHECK(go(2, 1) == Triple{2, 2, 1});
  CHECK(go.get(2, 1) == Triple{2, 2, 1});
  // get() uses the decorator's expiration (1 s), not the region's 0.25 s
  f.clock.advance(500ms);
  CHECK(go.get(2, 1) == Triple{2, 2, 1});
  f.clock.advance(600ms);
  CHECK_FALSE(go.get(2, 1));
}

TEST_CASE("DecoratorTest: explicit_get_multi", "[decorator][multi]") {
  DecoratorFixture f;
  auto go = f.multi_go("ns", {.expiration_time = 1s});
  CHECK(go(1, 2) == VS{"1 1", "1 2"});
  CHECK(go.get(1, 2) == VOptS{"1 1", "1 2"});
  CHECK(go.get(3, 1) == VOptS{std::nullopt, "1 1"});
  CHECK(go(3, 1) == VS{"2 3", "1 1"});
  CHECK(go.get(3, 1) == VOptS{"2 3", "1 1"});
}

TEST_CASE("DecoratorTest: explicit_set_multi", "[decorator][multi]") {
  DecoratorFixture f;
  auto go = f.multi_go("ns", {.expiration_time = 1s});
  CHECK(go(1, 2) == VS{"1 1", "1 2"});
  CHECK(go(1, 2) == VS{"1 1", "1 2"});
  go.set({{1, "1 5"}, {2, "1 6"}});
  CHECK(go(1, 2) == VS{"1 5", "1 6"});
}

TEST_CASE("DecoratorTest: explicit_refresh", "[decorator]") {
  DecoratorFixture f;
  auto go = f.go("ns", {.expiration_time = 1s});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go.refresh(1, 2) == Triple{2, 1, 2});
  CHECK(go(1, 2) == Triple{2, 1, 2});
  CHECK(go(1, 2) == Triple{2, 1, 2});
  CHECK(go.refresh(1, 2) == Triple{3, 1, 2});
  CHECK(go(1, 2) == Triple{3, 1, 2});
}

TEST_CASE("DecoratorTest: explicit_refresh_multi", "[decorator][multi]") {
  DecoratorFixture f;
  auto go = f.multi_go("ns", {.expiration_time = 1s});
  CHECK(go(1, 2) == VS{"1 1", "1 2"});
  CHECK(go(1, 2) == VS{"1 1", "1 2"});
  CHECK(go.refresh(1, 2) == VS{"2 1", "2 2"});
  CHECK(go(1, 2) == VS{"2 1", "2 2"});
  CHECK(go(1, 2) == VS{"2 1", "2 2"});
}

TEST_CASE("DecoratorTest: decorator_key_generator (first argument only)", "[decorator][keys]") {
  DecoratorFixture f;
  auto first_only = [](std::string_view, const std::vector<std::string>& args) {
    return "go_" + args.at(0);
  };
  auto go = f.go("ns", {.key_generator = first_only});
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(go(3, 4) == Triple{2, 3, 4});
  CHECK(go(1, 3) == Triple{1, 1, 2});  // same key "go_1"
  CHECK(go.key(1, 3) == "go_1");
  f.clock.advance(300ms);
  CHECK(go(1, 3) == Triple{3, 1, 3});
}

TEST_CASE("DecoratorTest: decorator_key_generator_multi (reversed order)", "[decorator][keys]") {
  DecoratorFixture f;
  auto reversed = [](std::string_view, const std::vector<std::string>& args) {
    std::vector<std::string> out;
    for (auto it = args.rbegin(); it != args.rend(); ++it) out.push_back("go" + *it);
    return out;
  };
  auto go = f.multi_go("ns", {.multi_key_generator = reversed});
  CHECK(go(1, 2) == VS{"1 1", "1 2"});
  CHECK(go.get(1, 2) == VOptS{"1 1", "1 2"});
  CHECK(go.get(3, 1) == VOptS{"1 2", std::nullopt});
  CHECK(go(3, 1) == VS{"1 2", "2 1"});
  CHECK(go.get(3, 1) == VOptS{"1 2", "2 1"});
}

TEST_CASE("DecoratorTest: region-wide key generators", "[decorator][keys]") {
  DecoratorFixture f({.function_key_generator =
                          [](std::string_view ns, const std::vector<std::string>& args) {
                            return std::string(ns) + "::" + dogpile::join_key("", args);
                          },
                      .function_multi_key_generator =
                          [](std::string_view ns, const std::vector<std::string>& args) {
                            std::vector<std::string> out;
                            for (const auto& a : args) out.push_back(std::string(ns) + "#" + a);
                            return out;
                          }});
  auto go = f.go("ns");
  CHECK(go.key(1, 2) == "ns::|1 2");
  CHECK(go(1, 2) == Triple{1, 1, 2});
  CHECK(dogpile_test::raw_present(f.reg, "ns::|1 2"));
  auto multi = f.multi_go("m");
  CHECK(multi.keys_for({4, 5}) == VS{"m#4", "m#5"});
  multi(4, 5);
  CHECK(dogpile_test::raw_present(f.reg, "m#5"));
  // a per-decorator generator wins over the region's
  auto own = f.go("ns", {.key_generator = [](std::string_view, const std::vector<std::string>&) {
                    return std::string("fixed");
                  }});
  CHECK(own.key(1, 2) == "fixed");
}

// ---- KeyGenerationTest ----------------------------------------------------------------------

TEST_CASE("KeyGenerationTest: exact key strings", "[keys]") {
  auto reg = dogpile::make_region();
  auto one =
      reg.cache_on_arguments("tests.cache.test_decorator:one", [](int a, int b) { return a + b; });
  CHECK(one.key(1, 2) == "tests.cache.test_decorator:one|1 2");
  CHECK(one.key(3, 4) == "tests.cache.test_decorator:one|3 4");
  CHECK(dogpile::make_key("myapp.tools:one", 3, 4) == "myapp.tools:one|3 4");
  CHECK(dogpile::make_key("myapp.tools:one|foo", 3, 4) == "myapp.tools:one|foo|3 4");
  CHECK(dogpile::make_key("ns") == "ns|");
  auto any = reg.cache_on_arguments(
      "ns", [](const std::optional<int>& a, bool b, double c) { return a.value_or(0) + b + c; });
  CHECK(any.key(std::optional<int>{}, true, 1.0) == "ns|None True 1.0");
  CHECK(dogpile::make_keys("tests.cache.test_decorator:generate|foo", 10, 2) ==
        VS{"tests.cache.test_decorator:generate|foo|10",
           "tests.cache.test_decorator:generate|foo|2"});
}

TEST_CASE("KeyGenerationTest: unicode keys are passed through", "[keys]") {
  auto reg = dogpile::make_region();
  reg.configure("memory");
  auto fn = reg.cache_on_arguments("tests.cache.test_decorator:one",
                                   [](const std::string& s) { return s.size(); });
  const std::string arg = "m\xc3\xa9il dr\xc3\xb4le";
  CHECK(fn.key(arg) == "tests.cache.test_decorator:one|m\xc3\xa9il dr\xc3\xb4le");
  CHECK(fn(arg) == arg.size());
  CHECK(dogpile_test::raw_present(reg, "tests.cache.test_decorator:one|m\xc3\xa9il dr\xc3\xb4le"));
}

TEST_CASE("KeyGenerationTest: sha1 mangler vectors", "[keys]") {
  CHECK(dogpile::sha1_mangle_key("some_key") == "53def077a4264bd3183d4eb21b1f56f883e1b572");
  CHECK(dogpile::sha1_mangle_key("tests.cache.test_decorator:one|1 2") ==
        "aead490a8ace2d69a00160f1fd8fd8a16552c24f");
  auto reg = dogpile::make_region({.key_mangler = dogpile::sha1_mangle_key});
  reg.configure("memory");
  auto one =
      reg.cache_on_arguments("tests.cache.test_decorator:one", [](int a, int b) { return a + b; });
  CHECK(one(1, 2) == 3);
  CHECK(dogpile_test::raw_present(reg, "aead490a8ace2d69a00160f1fd8fd8a16552c24f"));
  auto cond = dogpile::length_conditional_mangler(10, dogpile::sha1_mangle_key);
  CHECK(cond("short") == "short");
  CHECK(cond("some_key_long") == dogpile::sha1_mangle_key("some_key_long"));
  CHECK(cond("some_key12") == dogpile::sha1_mangle_key("some_key12"));  // >= length
}

// ---- CacheDecoratorTest ---------------------------------------------------------------------

TEST_CASE("CacheDecoratorTest: invalidate", "[decorator]") {
  auto reg = dogpile::make_region();
  reg.configure("memory");
  std::vector<int> canary;
  auto generate = reg.cache_on_arguments("ns", [&canary](int x, int y) {
    canary.push_back(x + y);
    return x + y;
  });
  CHECK(generate(1, 2) == 3);
  CHECK(generate(1, 2) == 3);
  CHECK(canary == std::vector<int>{3});
  generate.invalidate(1, 2);
  CHECK(generate(1, 2) == 3);
  CHECK(canary == std::vector<int>{3, 3});
}

TEST_CASE("CacheDecoratorTest: original is the undecorated function", "[decorator]") {
  auto reg = dogpile::make_region();
  reg.configure("memory");
  int calls = 0;
  auto generate = reg.cache_on_arguments("ns", [&calls](int x) {
    ++calls;
    return x * 2;
  });
  CHECK(generate(2) == 4);
  CHECK(generate(2) == 4);
  CHECK(calls == 1);
  CHECK(generate.original()(2) == 4);
  CHECK(generate.original()(2) == 4);
  CHECK(calls == 3);
  CHECK(generate.region() == reg);
}

TEST_CASE("CacheDecoratorTest: reentrant call with different namespaces", "[decorator]") {
  auto reg = dogpile::make_region();
  reg.configure("memory");
  auto bar = reg.cache_on_arguments("Bar.generate", [](int x) { return x * 2; });
  auto foo =
      reg.cache_on_arguments("Foo.generate", [bar](int x) { return bar(x) + bar(x + 1) + 1; });
  CHECK(foo(1) == 2 + 4 + 1);  // nested get_or_create under another key: no deadlock
  CHECK(foo(1) == 7);
  CHECK(bar(1) == 2);
}

TEST_CASE("CacheDecoratorTest: multi (creation order by key string)", "[decorator][multi]") {
  auto reg = dogpile::make_region();
  reg.configure("memory");
  int counter = 0;
  std::vector<std::vector<int>> calls;
  auto generate = reg.cache_multi_on_arguments(
      "tests.cache.test_decorator:generate", [&](const std::vector<int>& args) {
        calls.push_back(args);
        std::vector<std::string> out;
        for (int a : args) out.push_back(std::to_string(a) + " " + std::to_string(++counter));
        return out;
      });
  // keys sort as "...|10" < "...|2" < "...|8", so 10 is created first
  CHECK(generate(2, 8, 10) == VS{"2 2", "8 3", "10 1"});
  CHECK(calls == std::vector<std::vector<int>>{{10, 2, 8}});
  CHECK(generate(2, 9, 10) == VS{"2 2", "9 4", "10 1"});
  CHECK(calls.back() == std::vector<int>{9});
  generate.invalidate(2);
  CHECK(generate(2, 7, 10) == VS{"2 5", "7 6", "10 1"});
  generate.set({{7, "18"}, {10, "15"}});
  CHECK(generate(2, 7, 10) == VS{"2 5", "18", "15"});
  // duplicates keep their positions
  CHECK(generate(10, 10, 2) == VS{"15", "15", "2 5"});
  CHECK(generate() == VS{});
}

TEST_CASE("CacheDecoratorTest: multi namespace gives exact backend keys", "[decorator][multi]") {
  auto reg = dogpile::make_region();
  reg.configure("memory_serialized");
  auto generate = reg.cache_multi_on_arguments("tests.cache.test_decorator:generate|foo",
                                               [](const std::vector<int>& args) {
                                                 std::vector<int> out;
                                                 for (int a : args) out.push_back(a * 10);
                                                 return out;
                                               });
  CHECK(generate(10, 2) == std::vector<int>{100, 20});
  CHECK(dogpile_test::raw_present(reg, "tests.cache.test_decorator:generate|foo|10"));
  CHECK(dogpile_test::raw_present(reg, "tests.cache.test_decorator:generate|foo|2"));
  CHECK(generate.keys_for({10}) == VS{"tests.cache.test_decorator:generate|foo|10"});
}

TEST_CASE("CacheDecoratorTest: should_cache", "[decorator]") {
  auto reg = dogpile::make_region();
  reg.configure("memory");
  int n = 0;
  auto fn = reg.cache_on_arguments("ns", [&n](int) { return ++n; },
                                   {.should_cache = [](const int& v) { return v % 2 == 0; }});
  CHECK(fn(0) == 1);  // odd: not cached
  CHECK(fn(0) == 2);  // even: cached
  CHECK(fn(0) == 2);
  CHECK(fn.get(0) == 2);

  int m = 0;
  auto multi = reg.cache_multi_on_arguments("m",
                                            [&m](const std::vector<int>& args) {
                                              std::vector<int> out;
                                              for (std::size_t i = 0; i < args.size(); ++i)
                                                out.push_back(++m);
                                              return out;
                                            },
                                            {.should_cache = [](const int& v) { return v != 2; }});
  CHECK(multi(1, 2) == std::vector<int>{1, 2});
  CHECK(multi.get(1, 2) == std::vector<std::optional<int>>{1, std::nullopt});
  CHECK(multi(1, 2) == std::vector<int>{1, 3});
}

TEST_CASE("CacheDecoratorTest: free-function form dogpile::cache_on_arguments", "[decorator]") {
  ManualClock clock;
  auto reg = dogpile::make_region({.clock = clock});
  reg.configure("memory", {.expiration_time = 1min});
  int n = 0;
  auto fn = dogpile::cache_on_arguments(reg, "app.get_user", [&n](int id) {
    ++n;
    return "user" + std::to_string(id);
  });
  CHECK(fn.key(42) == "app.get_user|42");
  CHECK(fn(42) == "user42");
  CHECK(fn(42) == "user42");
  CHECK(n == 1);
  CHECK(reg.get<std::string>("app.get_user|42") == "user42");
  auto many =
      dogpile::cache_multi_on_arguments(reg, "app.get_users", [](const std::vector<int>& ids) {
        std::vector<std::string> out;
        for (int id : ids) out.push_back("u" + std::to_string(id));
        return out;
      });
  CHECK(many(1, 2) == VS{"u1", "u2"});
  CHECK(reg.get<std::string>("app.get_users|2") == "u2");
}

TEST_CASE("CacheDecoratorTest: a throwing function caches nothing", "[decorator]") {
  auto reg = dogpile::make_region();
  reg.configure("memory");
  int n = 0;
  auto fn = reg.cache_on_arguments("ns", [&n](int x) {
    if (++n == 1) throw std::runtime_error("first call fails");
    return x;
  });
  CHECK_THROWS_WITH(fn(5), "first call fails");
  CHECK_FALSE(fn.get(5));
  CHECK(fn(5) == 5);
  CHECK(fn.get(5) == 5);
}
