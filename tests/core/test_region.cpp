// dogpile's RegionTest (reference/dogpile.md §5.4), every case in order, run on the memory
// backend, the serialized memory backend, through a pass-through ProxyBackend
// (ProxyRegionTest) and with a custom invalidation strategy (CustomInvalidationStrategyTest).
// dogpile sleeps between steps; here a ManualClock moves instead.
#include <catch2/catch.hpp>

#include <chrono>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::ConfigureOptions;
using dogpile::CreateOptions;
using dogpile::GetOptions;
using dogpile::RegionOptions;
using dogpile_test::CustomInvalidation;
using dogpile_test::PlainMemory;
using dogpile_test::SerializedMemory;
using dogpile_test::TestRegion;
using dogpile_test::ThroughProxy;

#define REGION_CONFIGS PlainMemory, SerializedMemory, ThroughProxy, CustomInvalidation

namespace {
nlohmann::json& last_mock_args() {
  static nlohmann::json args;
  return args;
}
void register_mock() {
  dogpile::register_backend("mock", [](const nlohmann::json& a) {
    last_mock_args() = a;
    return std::make_shared<dogpile::MemoryBackend>();
  });
}
auto counting_creator(int& n) {
  return [&n] { return "some value " + std::to_string(++n); };
}
auto counting_multi_creator(int& n) {
  return [&n](std::span<const std::string> keys) {
    std::vector<std::string> out;
    for (const auto& k : keys) out.push_back("some value " + k + " " + std::to_string(++n));
    return out;
  };
}
}  // namespace

TEST_CASE("RegionTest: set_name", "[region]") {
  auto r = dogpile::make_region({.name = "myregion"});
  CHECK(r.name() == "myregion");
}

TEST_CASE("RegionTest: instance_from_dict / configure_from_config", "[region][config]") {
  register_mock();
  nlohmann::json config = {{"myregion.backend", "mock"},
                           {"myregion.expiration_time", 300},
                           {"myregion.arguments.url", "127.0.0.1"},
                           {"other.backend", "memory"}};
  auto r = dogpile::make_region();
  r.configure_from_config(config, "myregion.");
  CHECK(last_mock_args() == nlohmann::json{{"url", "127.0.0.1"}});
  CHECK(r.expiration_time().resolve() == std::optional<std::chrono::milliseconds>(300s));
  CHECK(r.is_configured());
}

TEST_CASE("RegionTest: instance_from_config_string (coerce_string_conf)", "[region][config]") {
  register_mock();
  // What an ini file gives: every value is a string.
  nlohmann::json config = {{"myregion.backend", "mock"},
                           {"myregion.expiration_time", "600"},
                           {"myregion.arguments.dogpile_lockfile", "false"},
                           {"myregion.arguments.xyz", "None"},
                           {"myregion.arguments.url", "127.0.0.1"}};
  auto r = dogpile::make_region();
  r.configure_from_config(config, "myregion.");
  CHECK(last_mock_args() ==
        nlohmann::json{{"dogpile_lockfile", false}, {"xyz", nullptr}, {"url", "127.0.0.1"}});
  CHECK(r.expiration_time().resolve() == std::optional<std::chrono::milliseconds>(600s));
}

TEST_CASE("RegionTest: datetime expiration time (timedelta 1 day 8 h)", "[region][config]") {
  auto r = dogpile::make_region();
  r.configure("memory", {.expiration_time = std::chrono::days(1) + std::chrono::hours(8)});
  CHECK(r.expiration_time().resolve() == std::optional<std::chrono::milliseconds>(115200s));
}

TEST_CASE("RegionTest: reject invalid expiration time ('one hour')", "[region][config]") {
  auto r = dogpile::make_region();
  CHECK_THROWS_AS(
      r.configure_from_config(
          {{"myregion.backend", "memory"}, {"myregion.expiration_time", "one hour"}}, "myregion."),
      dogpile::ValidationError);
  CHECK_FALSE(r.is_configured());
  CHECK_THROWS_AS(r.configure_from_config({{"myregion.expiration_time", 5}}, "myregion."),
                  dogpile::ValidationError);  // no backend
}

TEST_CASE("RegionTest: expiration times out of range are a ValidationError, never UB",
          "[region][config][hostile]") {
  using dogpile::ValidationError;
  auto configure = [](const nlohmann::json& seconds) {
    auto r = dogpile::make_region();
    r.configure_from_config({{"myregion.backend", "memory"}, {"myregion.expiration_time", seconds}},
                            "myregion.");
    return r.expiration_time();
  };
  // 1e17 s overflowed the conversion to milliseconds; inf/NaN arrive via "1e999" and friends.
  for (const nlohmann::json& bad :
       {nlohmann::json(1e17), nlohmann::json(100000000000000000LL), nlohmann::json("1e17"),
        nlohmann::json("1e999"), nlohmann::json("-1e999"), nlohmann::json(-5), nlohmann::json(-0.5),
        nlohmann::json(4e9), nlohmann::json(-9223372036854775807LL)}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH(configure(bad),
                      Catch::Contains("myregion.expiration_time") && Catch::Contains("100 years"));
  }
  CHECK_FALSE(configure(-1).resolve());  // dogpile's sentinel: never
  CHECK_FALSE(configure("-1").resolve());
  CHECK(configure(0).resolve() == std::optional<std::chrono::milliseconds>(0s));
  CHECK(configure(1.5).resolve() == std::optional<std::chrono::milliseconds>(1500ms));
  CHECK(configure(3'000'000'000LL).resolve() ==
        std::optional<std::chrono::milliseconds>(3'000'000'000s));

  // The C++ Expiration: a duration beyond 100 years (or NaN) is refused; negative is never.
  CHECK_THROWS_AS(dogpile::Expiration(std::chrono::duration<double>(1e17)), ValidationError);
  CHECK_THROWS_AS(
      dogpile::Expiration(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())),
      ValidationError);
  CHECK_THROWS_AS(dogpile::Expiration(std::chrono::hours(std::numeric_limits<int>::max())),
                  ValidationError);
  CHECK_THROWS_AS(dogpile::Expiration(std::chrono::years(101)), ValidationError);
  CHECK(dogpile::Expiration(std::chrono::years(100)).resolve() ==
        std::optional<std::chrono::milliseconds>(std::chrono::years(100)));
  CHECK_FALSE(dogpile::Expiration(std::chrono::duration<double>(-1e300)).resolve());
  CHECK_FALSE(
      dogpile::Expiration(std::chrono::duration<double>(-std::numeric_limits<double>::infinity()))
          .resolve());
  auto r = dogpile::make_region();
  CHECK_THROWS_AS(
      r.configure("memory", {.expiration_time = std::chrono::seconds(100'000'000'000'000'000LL)}),
      ValidationError);
}

TEST_CASE("RegionTest: a shared invalidation time out of range is ignored, never UB",
          "[region][invalidate][hostile]") {
  auto backend = dogpile::make_backend("memory_serialized");
  dogpile::ManualClock clock;
  const auto created = clock() - 1s;
  backend->set("inv", std::to_string(dogpile::to_unix_seconds(clock())) + " hard");
  CHECK(dogpile::SharedInvalidationStrategy(backend, "inv", 0ms, clock).is_invalidated(created));
  // Clamped instead, 1e10 would invalidate every value until 2100.
  for (const char* bad : {"1e10 hard", "-1e10 hard", "1e300 soft", "nan hard"}) {
    CAPTURE(bad);
    backend->set("inv", bad);
    dogpile::SharedInvalidationStrategy s(backend, "inv", 0ms, clock);
    CHECK_FALSE(s.is_invalidated(created));
    CHECK_FALSE(s.was_hard_invalidated());
  }
}

TEST_CASE("RegionTest: key_mangler argument", "[region]") {
  auto r = dogpile::make_region(
      {.key_mangler = [](std::string_view k) { return "HI!" + std::string(k); }});
  CHECK(r.mangle("some key") == "HI!some key");
  auto plain = dogpile::make_region();
  CHECK(plain.mangle("some key") == "some key");  // none by default
}

TEMPLATE_TEST_CASE("RegionTest: key_mangler_impl", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t(
      {}, {.key_mangler = [](std::string_view k) { return "HI!" + std::string(k); }});
  auto& reg = t.region;
  reg.set("some key", "some value");
  CHECK(dogpile_test::raw_present(reg, "HI!some key"));
  CHECK_FALSE(dogpile_test::raw_present(reg, "some key"));
  CHECK(reg.template get<std::string>("some key") == "some value");
  CHECK(reg.get_or_create("some key", [] { return std::string("some new value"); }) ==
        "some value");
  reg.erase("some key");
  CHECK_FALSE(reg.template get<std::string>("some key"));
  CHECK_FALSE(dogpile_test::raw_present(reg, "HI!some key"));
}

TEMPLATE_TEST_CASE("RegionTest: dupe_config raises RegionAlreadyConfigured", "[region]",
                   REGION_CONFIGS) {
  TestRegion<TestType> t;
  CHECK_THROWS_AS(t.region.configure("memory"), dogpile::RegionAlreadyConfigured);
  CHECK_THROWS_WITH(t.region.configure("memory"),
                    Catch::Contains("pass .replace_existing_backend = true"));
  CHECK_THROWS_AS(t.region.configure(std::make_shared<dogpile::MemoryBackend>()),
                  dogpile::RegionAlreadyConfigured);
}

TEMPLATE_TEST_CASE("RegionTest: replace_backend_config", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto before = t.region.actual_backend();
  t.region.set("k", "v");
  auto replacement = std::make_shared<dogpile::MemoryBackend>();
  t.region.configure(replacement, {.replace_existing_backend = true});
  CHECK(t.region.actual_backend() == replacement);
  CHECK(t.region.backend() == replacement);
  CHECK(t.region.actual_backend() != before);
  CHECK_FALSE(t.region.template get<std::string>("k"));  // values are not carried over
}

TEMPLATE_TEST_CASE("RegionTest: replace_backend_config with a custom key mangler", "[region]",
                   REGION_CONFIGS) {
  TestRegion<TestType> t(
      {}, {.key_mangler = [](std::string_view k) { return "HI!" + std::string(k); }});
  TestType::configure(t.region, {.replace_existing_backend = true}, t.clock);
  CHECK(t.region.mangle("x") == "HI!x");  // the custom mangler survives
  t.region.set("some key", "v");
  CHECK(dogpile_test::raw_present(t.region, "HI!some key"));
}

TEST_CASE("RegionTest: nothing_is_configured", "[region]") {
  auto r = dogpile::make_region();
  CHECK_FALSE(r.is_configured());
  CHECK_THROWS_AS(r.backend(), dogpile::RegionNotConfigured);
  CHECK_THROWS_WITH(r.backend(), Catch::Contains("has no backend yet: call region.configure("));
  CHECK_THROWS_AS(r.get<int>("x"), dogpile::RegionNotConfigured);
  CHECK_THROWS_AS(r.get_or_create("x", [] { return 1; }), dogpile::RegionNotConfigured);
  CHECK_THROWS_AS(r.set("x", 1), dogpile::RegionNotConfigured);
  CHECK_THROWS_AS(r.erase("x"), dogpile::RegionNotConfigured);
  CHECK_THROWS_AS(r.invalidate(), dogpile::RegionNotConfigured);
  // decorating before configure is fine; calling is not
  auto f = r.cache_on_arguments("ns", [](int x) { return x; });
  CHECK_THROWS_AS(f(1), dogpile::RegionNotConfigured);
}

TEST_CASE("RegionTest: bad_backend raises PluginNotFound", "[region]") {
  auto r = dogpile::make_region();
  CHECK_THROWS_AS(r.configure("fake.fake.fake"), dogpile::PluginNotFound);
  CHECK_THROWS_WITH(r.configure("fake.fake.fake"),
                    Catch::StartsWith("no cache backend named 'fake.fake.fake'") &&
                        Catch::Contains("registered: ") && Catch::Contains("memory"));
  CHECK_FALSE(r.is_configured());
  // the dogpile.cache. alias resolves
  r.configure("dogpile.cache.memory");
  CHECK(r.is_configured());
}

TEMPLATE_TEST_CASE("RegionTest: set_get_value", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  t.region.set("some key", "some value");
  CHECK(t.region.template get<std::string>("some key") == "some value");
}

TEMPLATE_TEST_CASE("RegionTest: set_get_nothing", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  CHECK_FALSE(t.region.template get<std::string>("some key"));
  CHECK_FALSE(t.region.template get<std::string>("some key", {.expiration_time = 10s}));
  t.region.invalidate();
  CHECK_FALSE(t.region.template get<std::string>("some key"));
}

TEMPLATE_TEST_CASE("RegionTest: creator", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  CHECK(t.region.get_or_create("some key", [] { return std::string("some value"); }) ==
        "some value");
  CHECK_FALSE(t.region.key_is_locked("some key"));
}

TEMPLATE_TEST_CASE("RegionTest: multi_creator", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto creator = [](std::span<const std::string> keys) {
    std::vector<std::string> out;
    for (const auto& k : keys) out.push_back("some value " + k);
    return out;
  };
  CHECK(t.region.template get_or_create_multi<std::string>({"k3", "k2", "k5"}, creator) ==
        std::vector<std::string>{"some value k3", "some value k2", "some value k5"});
}

TEMPLATE_TEST_CASE("RegionTest: remove (delete is idempotent)", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  t.region.set("some key", "some value");
  t.region.erase("some key");
  t.region.erase("some key");
  CHECK_FALSE(t.region.template get<std::string>("some key"));
}

TEMPLATE_TEST_CASE("RegionTest: expire", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 1s});
  auto& reg = t.region;
  int n = 0;
  auto creator = counting_creator(n);
  CHECK(reg.get_or_create("some key", creator) == "some value 1");
  t.clock.advance(2s);
  CHECK_FALSE(reg.template get<std::string>("some key"));
  CHECK(reg.template get<std::string>("some key", {.ignore_expiration = true}) == "some value 1");
  CHECK(reg.get_or_create("some key", creator, {.expiration_time = dogpile::never}) ==
        "some value 1");
  CHECK(reg.get_or_create("some key", creator, {.expiration_time = -1s}) == "some value 1");
  CHECK(reg.get_or_create("some key", creator) == "some value 2");
  CHECK(reg.template get<std::string>("some key") == "some value 2");
}

TEMPLATE_TEST_CASE("RegionTest: expire_multi", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 1s});
  auto& reg = t.region;
  int n = 0;
  auto creator = counting_multi_creator(n);
  // created in sorted key order: k2, k3, k5
  CHECK(reg.template get_or_create_multi<std::string>({"k3", "k2", "k5"}, creator) ==
        std::vector<std::string>{"some value k3 2", "some value k2 1", "some value k5 3"});
  t.clock.advance(2s);
  CHECK_FALSE(reg.template get<std::string>("k2"));
  CHECK(reg.template get<std::string>("k2", {.ignore_expiration = true}) == "some value k2 1");
  CHECK(reg.template get_or_create_multi<std::string>({"k3", "k2"}, creator,
                                                      {.expiration_time = dogpile::never}) ==
        std::vector<std::string>{"some value k3 2", "some value k2 1"});
  CHECK(reg.template get_or_create_multi<std::string>({"k3", "k2"}, creator) ==
        std::vector<std::string>{"some value k3 5", "some value k2 4"});
  CHECK(reg.template get<std::string>("k2") == "some value k2 4");
}

TEMPLATE_TEST_CASE("RegionTest: expire_on_get", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 500ms});
  t.region.set("some key", "some value");
  CHECK(t.region.template get<std::string>("some key") == "some value");
  t.clock.advance(500ms);  // strict '>': exactly the expiration time is still fresh
  CHECK(t.region.template get<std::string>("some key") == "some value");
  t.clock.advance(500ms);
  CHECK_FALSE(t.region.template get<std::string>("some key"));
}

TEMPLATE_TEST_CASE("RegionTest: ignore_expire_on_get", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 500ms});
  t.region.set("some key", "some value");
  CHECK(t.region.template get<std::string>("some key") == "some value");
  t.clock.advance(1s);
  CHECK(t.region.template get<std::string>("some key", {.ignore_expiration = true}) ==
        "some value");
}

TEMPLATE_TEST_CASE("RegionTest: override_expire_on_get", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 500ms});
  t.region.set("some key", "some value");
  CHECK(t.region.template get<std::string>("some key") == "some value");
  t.clock.advance(1s);
  CHECK(t.region.template get<std::string>("some key", {.expiration_time = 5s}) == "some value");
  CHECK_FALSE(t.region.template get<std::string>("some key"));
}

TEMPLATE_TEST_CASE("RegionTest: expire_override", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 5s});
  auto& reg = t.region;
  int n = 0;
  auto creator = counting_creator(n);
  CHECK(reg.get_or_create("some key", creator, {.expiration_time = 1s}) == "some value 1");
  t.clock.advance(2s);
  CHECK(reg.template get<std::string>("some key") == "some value 1");  // region's 5 s
  CHECK(reg.get_or_create("some key", creator, {.expiration_time = 1s}) == "some value 2");
  CHECK(reg.template get<std::string>("some key") == "some value 2");
}

TEMPLATE_TEST_CASE("RegionTest: hard_invalidate_get", "[region][invalidate]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  t.region.set("some key", "some value");
  t.clock.advance(100ms);
  t.region.invalidate();
  CHECK_FALSE(t.region.template get<std::string>("some key"));
  CHECK(t.region.template get<std::string>("some key", {.ignore_expiration = true}) ==
        "some value");
  CHECK_FALSE(t.region.template get_value_metadata<std::string>("some key"));
  CHECK(t.region.template get_multi<std::string>({"some key"}) ==
        std::vector<std::optional<std::string>>{std::nullopt});
}

TEMPLATE_TEST_CASE("RegionTest: hard_invalidate_get_or_create", "[region][invalidate]",
                   REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto& reg = t.region;
  int n = 0;
  auto creator = counting_creator(n);
  CHECK(reg.get_or_create("some key", creator) == "some value 1");
  t.clock.advance(100ms);
  reg.invalidate();
  CHECK(reg.get_or_create("some key", creator) == "some value 2");
  CHECK(reg.get_or_create("some key", creator) == "some value 2");
  t.clock.advance(100ms);
  reg.invalidate();
  CHECK(reg.get_or_create("some key", creator) == "some value 3");
  CHECK(reg.get_or_create("some key", creator) == "some value 3");
}

TEMPLATE_TEST_CASE("RegionTest: hard_invalidate, value created in the same tick survives",
                   "[region][invalidate]", REGION_CONFIGS) {
  // invalidate() at time T marks values created strictly before T; a value created at T
  // itself (no clock movement, as in dogpile's test without a sleep) must stay valid even
  // after its creation time went through the envelope's float seconds.
  TestRegion<TestType> t;
  auto& reg = t.region;
  int n = 0;
  auto creator = counting_creator(n);
  for (int i = 0; i < 50; ++i) {
    t.clock.advance(std::chrono::microseconds(1000 + 7 * i));
    reg.invalidate();
    const std::string v = reg.get_or_create("some key", creator);
    CHECK(reg.get_or_create("some key", creator) == v);
  }
  CHECK(n == 50);
}

TEMPLATE_TEST_CASE("RegionTest: hard_invalidate_get_or_create_multi", "[region][invalidate]",
                   REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto& reg = t.region;
  int n = 0;
  auto creator = counting_multi_creator(n);
  using V = std::vector<std::string>;
  CHECK(reg.template get_or_create_multi<std::string>({"k1", "k2"}, creator) ==
        V{"some value k1 1", "some value k2 2"});
  t.clock.advance(100ms);
  reg.invalidate();
  CHECK(reg.template get_or_create_multi<std::string>({"k1", "k2"}, creator) ==
        V{"some value k1 3", "some value k2 4"});
  CHECK(reg.template get_or_create_multi<std::string>({"k1", "k2"}, creator) ==
        V{"some value k1 3", "some value k2 4"});
  t.clock.advance(100ms);
  reg.invalidate();
  CHECK(reg.template get_or_create_multi<std::string>({"k1", "k2"}, creator) ==
        V{"some value k1 5", "some value k2 6"});
  CHECK(reg.template get_or_create_multi<std::string>({"k1", "k2"}, creator) ==
        V{"some value k1 5", "some value k2 6"});
}

TEMPLATE_TEST_CASE("RegionTest: soft_invalidate_get", "[region][invalidate]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 1s});
  t.region.set("some key", "some value");
  t.clock.advance(100ms);
  t.region.invalidate({.hard = false});
  CHECK_FALSE(t.region.template get<std::string>("some key"));
}

TEMPLATE_TEST_CASE("RegionTest: soft_invalidate_get_or_create", "[region][invalidate]",
                   REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 1s});
  auto& reg = t.region;
  int n = 0;
  auto creator = counting_creator(n);
  CHECK(reg.get_or_create("some key", creator) == "some value 1");
  t.clock.advance(100ms);
  reg.invalidate({.hard = false});
  CHECK(reg.get_or_create("some key", creator) == "some value 2");
  CHECK(reg.get_or_create("some key", creator) == "some value 2");
}

TEMPLATE_TEST_CASE("RegionTest: soft_invalidate serves stale while one regenerates",
                   "[region][invalidate]", REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 1s});
  auto& reg = t.region;
  reg.set("some key", "old");
  t.clock.advance(100ms);
  reg.invalidate({.hard = false});
  auto m = reg.mutex_for("some key");
  REQUIRE(m->acquire(false));  // someone else is regenerating
  CHECK(reg.get_or_create("some key", [] { return std::string("new"); }) == "old");
  m->release();
  CHECK(reg.get_or_create("some key", [] { return std::string("new"); }) == "new");
}

TEMPLATE_TEST_CASE("RegionTest: soft_invalidate_get_or_create_multi", "[region][invalidate]",
                   REGION_CONFIGS) {
  TestRegion<TestType> t({.expiration_time = 5s});
  auto& reg = t.region;
  std::vector<int> values = {1, 2, 3};
  auto creator = [&](std::span<const std::string> keys) {
    const int v = values.front();
    values.erase(values.begin());
    return std::vector<int>(keys.size(), v);
  };
  CHECK(reg.template get_or_create_multi<int>({"1", "2"}, creator) == std::vector<int>{1, 1});
  t.clock.advance(100ms);
  reg.invalidate({.hard = false});
  CHECK(reg.template get_or_create_multi<int>({"1", "2"}, creator) == std::vector<int>{2, 2});
}

TEMPLATE_TEST_CASE("RegionTest: soft_invalidate_requires_expire_time_get", "[region][invalidate]",
                   REGION_CONFIGS) {
  TestRegion<TestType> t;
  t.region.invalidate({.hard = false});
  auto creator = [] { return std::string("x"); };
  CHECK_THROWS_WITH(t.region.get_or_create("some key", creator),
                    "Non-None expiration time required for soft invalidation");
  CHECK_THROWS_AS(t.region.get_or_create("some key", creator), dogpile::Error);
}

TEMPLATE_TEST_CASE("RegionTest: soft_invalidate_requires_expire_time_get_multi",
                   "[region][invalidate]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  t.region.invalidate({.hard = false});
  auto creator = [](std::span<const std::string> keys) {
    return std::vector<std::string>(keys.size(), "x");
  };
  CHECK_THROWS_AS(t.region.template get_or_create_multi<std::string>({"k1", "k2"}, creator),
                  dogpile::Error);
  CHECK_THROWS_WITH(t.region.template get_or_create_multi<std::string>({"k1", "k2"}, creator),
                    "Non-None expiration time required for soft invalidation");
}

TEMPLATE_TEST_CASE("RegionTest: should_cache_fn", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto& reg = t.region;
  int n = 0;
  auto creator = [&] { return ++n; };
  auto should = [](const int& v) { return v == 1 || v == 3; };
  const GetOptions raw{.ignore_expiration = true};
  CHECK(reg.get_or_create("some key", creator, {.should_cache = should}) == 1);
  CHECK(reg.template get<int>("some key", raw) == 1);
  t.clock.advance(100ms);
  reg.invalidate();
  CHECK(reg.get_or_create("some key", creator, {.should_cache = should}) == 2);
  CHECK(reg.template get<int>("some key", raw) == 1);  // 2 was not cached
  t.clock.advance(100ms);
  reg.invalidate();
  CHECK(reg.get_or_create("some key", creator, {.should_cache = should}) == 3);
  CHECK(reg.template get<int>("some key", raw) == 3);
}

TEMPLATE_TEST_CASE("RegionTest: should_cache_fn_multi", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto& reg = t.region;
  int n = 0;
  auto creator = [&](std::span<const std::string> keys) {
    std::vector<int> out;
    for (std::size_t i = 0; i < keys.size(); ++i) out.push_back(++n);
    return out;
  };
  auto should = [](const int& v) { return v == 1 || v == 4; };
  const GetOptions raw{.ignore_expiration = true};
  CHECK(reg.template get_or_create_multi<int>({"1", "2"}, creator, {.should_cache = should}) ==
        std::vector<int>{1, 2});
  CHECK(reg.template get<int>("1", raw) == 1);
  CHECK_FALSE(reg.template get<int>("2", raw));
  t.clock.advance(100ms);
  reg.invalidate();
  CHECK(reg.template get_or_create_multi<int>({"1", "2"}, creator, {.should_cache = should}) ==
        std::vector<int>{3, 4});
  CHECK(reg.template get<int>("1", raw) == 1);
  CHECK(reg.template get<int>("2", raw) == 4);
}

TEMPLATE_TEST_CASE("RegionTest: set_multi / get_multi / delete_multi", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto& reg = t.region;
  reg.template set_multi<std::string>({{"key1", "value1"}, {"key2", "value2"}});
  using V = std::vector<std::optional<std::string>>;
  CHECK(reg.template get_multi<std::string>({"key1", "key2", "key3"}) ==
        V{"value1", "value2", std::nullopt});
  CHECK(reg.template get_multi<std::string>({}).empty());
  reg.template set_multi<std::string>({});  // no-op
  reg.erase_multi({"key1", "key3"});
  CHECK(reg.template get_multi<std::string>({"key1", "key2", "key3"}) ==
        V{std::nullopt, "value2", std::nullopt});
  reg.erase_multi({});
  // set_multi shares one creation time
  auto m1 = reg.template get_value_metadata<std::string>("key2");
  REQUIRE(m1);
  CHECK(m1->cached_time() == t.clock());
}

TEMPLATE_TEST_CASE("RegionTest: get_value_metadata", "[region]", REGION_CONFIGS) {
  TestRegion<TestType> t;
  auto& reg = t.region;
  t.clock.set(dogpile::from_unix_seconds(100));
  reg.set("some key", "some value");
  t.clock.set(dogpile::from_unix_seconds(105));
  auto meta = reg.template get_value_metadata<std::string>("some key");
  REQUIRE(meta);
  CHECK(meta->payload == "some value");
  CHECK(meta->cached_time() == dogpile::from_unix_seconds(100));
  CHECK(meta->metadata.ct == 100.0);
  CHECK(meta->metadata.v == 2);
  CHECK(meta->age().count() == Approx(5.0));
  CHECK_FALSE(reg.template get_value_metadata<std::string>("nope"));
  CHECK_FALSE(reg.template get_value_metadata<std::string>("some key", {.expiration_time = 4s}));
  auto ign = reg.template get_value_metadata<std::string>(
      "some key", {.expiration_time = 4s, .ignore_expiration = true});
  REQUIRE(ign);
  CHECK(ign->payload == "some value");
}

TEMPLATE_TEST_CASE("RegionTest: custom strategy is the one consulted", "[region][invalidate]",
                   CustomInvalidation) {
  TestRegion<TestType> t;
  // The strategy object is reachable through a fresh configure with a known instance.
  auto strategy = std::make_shared<dogpile_test::SplitInvalidationStrategy>(t.clock);
  t.region.configure("memory", {.replace_existing_backend = true, .region_invalidator = strategy});
  t.region.set("k", "v");
  t.clock.advance(1s);
  t.region.invalidate();
  CHECK(strategy->invalidate_calls == 1);
  CHECK(strategy->was_hard_invalidated());
  CHECK_FALSE(t.region.template get<std::string>("k"));
}
