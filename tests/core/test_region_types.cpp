// The region with real C++ types (issue "The region for real C++ types"): codecs only where
// bytes are stored, weighed memory bounds, the value type first, configure_from_config's
// unknown keys, error messages that say what to do, wrong-type reads, lost leases reported
// instead of thrown, and the backend base (key rules, wrapped client errors).

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "dogpile/detail/memory_store.hpp"  // ObjectSlot::kInline
#include "dogpile/dogpile.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using Catch::Contains;

namespace app {
// Types a user already has: none of them can be turned into JSON.
struct Connection {
  int fd = 0;
};
struct Plain {
  int id = 0;
  std::string name;
  bool operator==(const Plain&) const = default;
};
// A type with JSON support.
struct User {
  int id = 0;
  std::string name;
  bool operator==(const User&) const = default;
};
inline void to_json(nlohmann::json& j, const User& u) { j = {{"id", u.id}, {"name", u.name}}; }
inline void from_json(const nlohmann::json& j, User& u) {
  j.at("id").get_to(u.id);
  j.at("name").get_to(u.name);
}
// A type with its own weight, found by ADL.
struct Blob {
  std::size_t bytes = 0;
};
inline std::size_t dogpile_weight(const Blob& b) { return sizeof(Blob) + b.bytes; }
}  // namespace app

static_assert(!dogpile::HasCodec<app::Plain>);
static_assert(!dogpile::HasCodec<std::shared_ptr<app::Connection>>);
static_assert(dogpile::HasCodec<app::User>);
static_assert(dogpile::HasCodec<std::string>);
static_assert(dogpile::HasCodec<nlohmann::json>);

// ---- 1. a type without a codec -------------------------------------------------------------

TEST_CASE("types without a codec are cached on memory", "[types]") {
  auto r = dogpile::make_region({.name = "objects"});
  r.configure("memory");
  auto conn = std::make_shared<app::Connection>(app::Connection{7});
  int calls = 0;
  auto got = r.get_or_create("conn", [&] {
    ++calls;
    return conn;
  });
  CHECK(got == conn);  // the very same object: no copy through bytes
  CHECK(r.get_or_create("conn", [&] {
    ++calls;
    return conn;
  }) == conn);
  CHECK(calls == 1);

  r.set("plain", app::Plain{1, "p"});
  CHECK(r.get<app::Plain>("plain") == app::Plain{1, "p"});
  r.set("opt", std::optional<app::Plain>(app::Plain{2, "q"}));
  CHECK(r.get<std::optional<app::Plain>>("opt")->value().name == "q");
  r.set_multi<app::Plain>({{"a", {3, "a"}}, {"b", {4, "b"}}});
  CHECK(
      r.get_multi<app::Plain>({"a", "b", "c"}) ==
      std::vector<std::optional<app::Plain>>{app::Plain{3, "a"}, app::Plain{4, "b"}, std::nullopt});

  // and through the decorators
  int loads = 0;
  auto load = r.cache_on_arguments("app.load", [&](int id) {
    ++loads;
    return app::Plain{id, "x"};
  });
  CHECK(load(5) == app::Plain{5, "x"});
  CHECK(load(5) == app::Plain{5, "x"});
  CHECK(loads == 1);
}

TEST_CASE("a type without a codec on a byte backend is an Error that says what to do", "[types]") {
  auto r = dogpile::make_region({.name = "bytes"});
  r.configure("memory_serialized");
  try {
    r.set("plain", app::Plain{1, "p"});
    FAIL("no exception");
  } catch (const dogpile::Error& e) {
    const std::string m = e.what();
    CHECK_THAT(m, Contains("app::Plain") && Contains("'memory_serialized' backend") &&
                      Contains("to_json/from_json") && Contains("dogpile::Codec<app::Plain>"));
  }
  CHECK_THROWS_WITH(r.get<app::Plain>("plain"), Contains("app::Plain"));
  int calls = 0;
  CHECK_THROWS_AS(r.get_or_create("p2",
                                  [&] {
                                    ++calls;
                                    return app::Plain{};
                                  }),
                  dogpile::Error);
  CHECK(calls == 0);  // the read fails before anything is created
  // A JSON-convertible type on the same region works.
  r.set("u", app::User{1, "ann"});
  CHECK(r.get<app::User>("u") == app::User{1, "ann"});
}

// ---- 2. max_bytes weighs what values own -----------------------------------------------------

TEST_CASE("max_bytes on memory holds for 10 KiB strings", "[types][weigher]") {
  constexpr std::size_t kLimit = 1 << 20;
  auto backend = std::make_shared<dogpile::MemoryBackend>(dogpile::MemoryOptions{
      .shards = 1, .max_bytes = kLimit, .eviction = dogpile::MemoryEviction::lru});
  auto r = dogpile::make_region();
  r.configure(backend);
  const std::string value(10 * 1024, 'v');
  for (int i = 0; i < 1000; ++i) r.set("key" + std::to_string(i), value);
  // What the values own is counted: at most 1 MiB / 10 KiB of them fit, and the bound is
  // used, not left empty (within a few percent).
  const double fit = static_cast<double>(kLimit) / (10 * 1024);
  CHECK(backend->bytes() <= kLimit);
  CHECK(static_cast<double>(backend->size()) <= fit);
  CHECK(static_cast<double>(backend->size()) >= fit * 0.95);
  std::size_t owned = 0;
  for (int i = 0; i < 1000; ++i) {
    if (auto v = r.get<std::string>("key" + std::to_string(i))) owned += v->capacity();
  }
  CHECK(owned <= kLimit);
}

TEST_CASE("the default weigher counts owned memory; users weigh their own types", "[weigher]") {
  const std::string big(1000, 'x');
  CHECK(dogpile::weigh(big) >= 1000 + sizeof(std::string));
  CHECK(dogpile::weigh(std::string("short")) == sizeof(std::string));  // in-object buffer
  CHECK(dogpile::weigh(std::vector<std::uint8_t>(5000)) >= 5000);
  CHECK(dogpile::weigh(std::vector<std::string>(3, big)) >= 3000);
  CHECK(dogpile::weigh(std::map<int, std::string>{{1, big}, {2, big}}) >= 2000);
  CHECK(dogpile::weigh(std::optional<std::string>(big)) >= 1000);
  CHECK(dogpile::weigh(std::make_shared<std::string>(big)) >= 1000);
  CHECK(dogpile::weigh(std::pair<std::string, int>{big, 1}) >= 1000);
  CHECK(dogpile::weigh(app::Blob{1 << 20}) == sizeof(app::Blob) + (1 << 20));  // ADL hook
  CHECK(dogpile::weigh(42) == sizeof(int));

  auto backend = std::make_shared<dogpile::MemoryBackend>(
      dogpile::MemoryOptions{.shards = 1, .max_bytes = 4 << 20});
  auto r = dogpile::make_region();
  r.configure(backend);
  for (int i = 0; i < 10; ++i) r.set("blob" + std::to_string(i), app::Blob{1 << 20});
  CHECK(backend->bytes() <= (4u << 20));
  CHECK(backend->size() <= 4);
}

// ---- 3. the value type first; string literals ------------------------------------------------

TEST_CASE("get_or_create: string literals become std::string; the value type comes first",
          "[types]") {
  auto r = dogpile::make_region();
  r.configure("memory");
  auto s = r.get_or_create("k", [] { return "hello"; });
  static_assert(std::is_same_v<decltype(s), std::string>);
  CHECK(s == "hello");
  CHECK(r.get<std::string>("k") == "hello");

  app::User u = r.get_or_create<app::User>("u", [] { return app::User{1, "ann"}; });
  CHECK(u.name == "ann");
  // the explicit type converts the creator's result
  auto l = r.get_or_create<long>("n", [] { return 5; });
  static_assert(std::is_same_v<decltype(l), long>);
  CHECK(r.get<long>("n") == 5);
  auto w = r.get_or_create<std::string>(
      "w", [] { return "lit"; }, {.should_cache = [](const std::string& v) { return !v.empty(); }});
  CHECK(w == "lit");

  auto greet = r.cache_on_arguments("greet", [](int) { return "hi"; });
  static_assert(std::is_same_v<decltype(greet(1)), std::string>);
  CHECK(greet(1) == "hi");
}

// ---- 5. configure_from_config ------------------------------------------------------------------

TEST_CASE("configure_from_config refuses unknown keys with a did-you-mean", "[config]") {
  auto r = dogpile::make_region({.name = "cfg"});
  const nlohmann::json typo = {{"cache.local.backend", "memory"},
                               {"cache.local.expiration_tme", "30"},
                               {"cache.other.whatever", 1}};
  CHECK_THROWS_AS(r.configure_from_config(typo, "cache.local."), dogpile::ValidationError);
  CHECK_THROWS_WITH(
      r.configure_from_config(typo, "cache.local."),
      Contains("'cache.local.expiration_tme'") && Contains("did you mean 'expiration_time'?"));
  CHECK_FALSE(r.is_configured());
  CHECK_THROWS_WITH(
      r.configure_from_config({{"cache.local.backend", "memory"}, {"cache.local.url", "x"}},
                              "cache.local."),
      Contains("arguments.<name>"));
  CHECK_THROWS_WITH(
      r.configure_from_config({{"cache.local.backend", "memory"}, {"cache.local.wrap", "x"}},
                              "cache.local."),
      Contains("ConfigureOptions::wrap"));
  CHECK_THROWS_WITH(r.configure_from_config({{"cache.local.backend", "memory"},
                                             {"cache.local.expiration_time", "soon"}},
                                            "cache.local."),
                    Contains("number of seconds"));
  r.configure_from_config({{"cache.local.backend", "memory"},
                           {"cache.local.expiration_time", " 30 "},
                           {"cache.local.arguments.max_entries", "10"},
                           {"cache.other.whatever", 1}},
                          "cache.local.");
  CHECK(r.is_configured());
  CHECK(r.expiration_time().resolve() == std::chrono::milliseconds(30s));
}

TEST_CASE("coerce_string_conf matches dogpile's patterns", "[config]") {
  using dogpile::coerce_string_conf;
  CHECK(coerce_string_conf("-1") == -1);
  CHECK(coerce_string_conf("+1") == 1);
  CHECK(coerce_string_conf("0.1") == 0.1);
  CHECK(coerce_string_conf("-3.14e-10") == -3.14e-10);
  CHECK(coerce_string_conf(".5") == 0.5);
  CHECK(coerce_string_conf("5.") == 5.0);
  CHECK(coerce_string_conf("1e5") == 1e5);
  CHECK(coerce_string_conf("TRUE") == true);
  CHECK(coerce_string_conf("false") == false);
  CHECK(coerce_string_conf("None").is_null());
  CHECK(coerce_string_conf("none") == "none");
  CHECK(coerce_string_conf(".") == ".");
  CHECK(coerce_string_conf("1e") == "1e");
  CHECK(coerce_string_conf("1.2.3") == "1.2.3");
  CHECK(coerce_string_conf("99999999999999999999").is_number_float());
  CHECK(coerce_string_conf(" x ") == "x");
}

// ---- 6. error messages in C++ words ------------------------------------------------------------

TEST_CASE("errors name the region, the backend and the types, and say what to do", "[errors]") {
  auto r = dogpile::make_region({.name = "users"});
  CHECK_THROWS_WITH(r.get<int>("k"),
                    Contains("region 'users' has no backend yet") && Contains("region.configure("));
  r.configure("memory");
  CHECK_THROWS_WITH(r.configure("null"),
                    Contains("region 'users' is already configured with the 'memory' backend") &&
                        Contains(".replace_existing_backend = true"));
  auto r2 = dogpile::make_region();
  CHECK_THROWS_WITH(r2.configure("memroy"),
                    Contains("did you mean 'memory'?") && Contains("registered: "));
  CHECK_THROWS_WITH(r2.configure("redis"), Contains("dogpile::redis") &&
                                               Contains("dogpile/backends/redis.hpp") &&
                                               Contains("register_all_backends()"));
  r.set("k", std::string("text"));
  CHECK_THROWS_AS(r.get<int>("k"), dogpile::TypeMismatch);
  CHECK_THROWS_WITH(r.get<int>("k"), Contains("holds a std::string, not the requested int"));
}

// Wrong-type reads: the same error (TypeMismatch) on every backend, for a value that exists but
// is not a T; see docs/regions.md.
TEST_CASE("wrong-type reads are TypeMismatch on memory and on byte backends", "[errors]") {
  for (const char* name : {"memory", "memory_serialized"}) {
    CAPTURE(name);
    auto r = dogpile::make_region();
    r.configure(name);
    r.set("user", app::User{1, "ann"});
    CHECK_THROWS_AS(r.get<int>("user"), dogpile::TypeMismatch);
    CHECK_THROWS_AS(r.get_or_create("user", [] { return 1; }), dogpile::TypeMismatch);
    r.set("n", 300);
    CHECK_THROWS_AS(r.get<std::uint8_t>("n"), dogpile::TypeMismatch);
    CHECK(r.get<int>("n") == 300);
  }
}

// ---- 8. a lease lost under a creator is reported, not thrown -----------------------------------

namespace {
/// A lease mutex whose lease "runs out" while held when `lose` is set: release then throws
/// LockError, as a lease lock that found another owner does.
class LosingMutex : public dogpile::CacheMutex {
 public:
  std::atomic<bool> lose{true};

 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> /*timeout*/) override {
    return !held_.exchange(true);
  }
  void do_release() override {
    held_ = false;
    if (lose) throw dogpile::LockError("lease expired before release");
  }
  [[nodiscard]] bool do_locked() const override { return held_; }

 private:
  std::atomic<bool> held_{false};
};
class LosingBackend : public dogpile::ProxyBackend {
 protected:
  std::shared_ptr<dogpile::CacheMutex> do_get_mutex(std::string_view /*key*/) override {
    return std::make_shared<LosingMutex>();  // the region keeps one per key while in use
  }
};
}  // namespace

TEST_CASE("a lease lost before release reaches the stats, listener and callback, not the caller",
          "[lease]") {
  std::atomic<int> events{0};
  std::vector<std::string> errors;
  auto proxy = std::make_shared<LosingBackend>();
  auto r =
      dogpile::make_region({.name = "slow",
                            .on_backend_error = dogpile::treat_as_miss(
                                [&](const std::exception& e) { errors.emplace_back(e.what()); }),
                            .listener = [&](const dogpile::RegionEvent& e) {
                              if (e.kind == dogpile::RegionEvent::Kind::lock_lost) ++events;
                            }});
  r.configure("memory", {.wrap = {proxy}});
  CHECK(r.get_or_create("k", [] { return 42; }) == 42);
  CHECK(r.get<int>("k") == 42);  // stored
  CHECK(r.stats().locks_lost == 1);
  CHECK(events == 1);
  REQUIRE(errors.size() == 1);
  CHECK_THAT(errors[0],
             Contains("region 'slow'") && Contains("key 'k'") && Contains("lock_timeout"));
  // the multi path reports the same way
  auto vs = r.get_or_create_multi<int>(
      {"a", "b"}, [](std::span<const std::string> ks) { return std::vector<int>(ks.size(), 7); });
  CHECK(vs == std::vector<int>{7, 7});
  CHECK(r.stats().locks_lost == 3);
  // and the async path: the runner's release is reported too
  dogpile::ManualClock clock;
  auto ra =
      dogpile::make_region({.async_creation_runner =
                                [](std::string, std::function<void()> job, dogpile::MutexHandle h) {
                                  job();
                                  h.release();  // would throw LockError unwrapped
                                },
                            .clock = clock});
  auto proxy2 = std::make_shared<LosingBackend>();
  ra.configure("memory", {.expiration_time = 1s, .wrap = {proxy2}});
  CHECK(ra.get_or_create("k", [] { return 1; }) == 1);
  clock.advance(2s);
  CHECK(ra.get_or_create("k", [] { return 2; }) == 1);  // stale; the runner created 2
  CHECK(ra.get<int>("k", {.ignore_expiration = true}) == 2);
  CHECK(ra.stats().locks_lost == 2);
}

// ---- 8b. a distributed lock's failure names the region, "lock" and the key ---------------------

namespace {
/// A distributed mutex whose server is down: acquire and release throw ConnectionError.
class DownLockMutex : public dogpile::CacheMutex {
 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> /*timeout*/) override {
    throw dogpile::ConnectionError("lock server down");
  }
  void do_release() override { throw dogpile::ConnectionError("lock server down"); }
  [[nodiscard]] bool do_locked() const override { return false; }
};
/// A proxy whose key "b" has the down lock, and whose get_mutex fails for key "c".
class DownLockBackend : public dogpile::ProxyBackend {
 protected:
  std::shared_ptr<dogpile::CacheMutex> do_get_mutex(std::string_view key) override {
    if (key == "c") throw dogpile::ConnectionError("lock server unreachable");
    if (key == "b") return std::make_shared<DownLockMutex>();
    return nullptr;  // the region's in-process mutex
  }
};
}  // namespace

TEST_CASE("a distributed lock's failure names the region, the operation and the key",
          "[lock][errors]") {
  SECTION("treat_as_miss: reported with its context, the creator still runs") {
    std::vector<std::string> errors;
    std::vector<std::string> event_keys;
    auto r =
        dogpile::make_region({.name = "users",
                              .on_backend_error = dogpile::treat_as_miss(
                                  [&](const std::exception& e) { errors.emplace_back(e.what()); }),
                              .listener = [&](const dogpile::RegionEvent& e) {
                                if (e.kind != dogpile::RegionEvent::Kind::backend_error) return;
                                event_keys.emplace_back(e.key);
                                REQUIRE(e.exception);
                                try {
                                  std::rethrow_exception(e.exception);
                                } catch (const dogpile::ConnectionError& ce) {
                                  CHECK(ce.region() == "users");
                                  CHECK(ce.operation() == "lock");
                                }
                              }});
    r.configure("memory", {.wrap = {std::make_shared<DownLockBackend>()}});
    CHECK(r.get_or_create("b", [] { return 1; }) == 1);
    CHECK(r.get_or_create("c", [] { return 2; }) == 2);
    r.erase("b");  // so the multi call takes b's lock too
    CHECK(r.get_or_create_multi<int>({"a", "b"}, [](std::span<const std::string> ks) {
      return std::vector<int>(ks.size(), 3);
    }) == std::vector<int>{3, 3});
    REQUIRE(errors.size() == 3);
    CHECK(errors[0] == "region 'users': lock key 'b': lock server down");
    CHECK(errors[2] == "region 'users': lock key 'b': lock server down");
    CHECK(std::count(errors.begin(), errors.end(),
                     "region 'users': lock key 'c': lock server unreachable") == 1);
    CHECK(std::count(event_keys.begin(), event_keys.end(), "b") == 2);
    CHECK(std::count(event_keys.begin(), event_keys.end(), "c") == 1);
  }
  SECTION("propagate: get_or_create_multi's lock failure names the key whose lock failed") {
    auto r = dogpile::make_region({.name = "users"});
    r.configure("memory", {.wrap = {std::make_shared<DownLockBackend>()}});
    auto create = [](std::span<const std::string> ks) { return std::vector<int>(ks.size(), 7); };
    std::string what, op, key;
    try {
      (void)r.get_or_create_multi<int>({"a", "b"}, create);
    } catch (const dogpile::ConnectionError& e) {
      what = e.what();
      op = e.operation();
      key = e.key();
    }
    CHECK(what == "region 'users': lock key 'b': lock server down");
    CHECK(op == "lock");
    CHECK(key == "b");
    CHECK_THROWS_WITH(r.get_or_create_multi<int>({"c"}, create),
                      "region 'users': lock key 'c': lock server unreachable");
    CHECK_FALSE(r.get<int>("a"));  // nothing was created
  }
}

// ---- 9. get_or_create_multi follows the same decision table
// --------------------------------------

TEST_CASE("get_or_create_multi refreshes early like get_or_create", "[multi]") {
  dogpile::ManualClock clock;
  // XFetch is probabilistic: refresh when -delta*beta*log(U) >= remaining. The creator takes
  // ~50 ns in Release, so beta must be huge for "always" (1e15: failure odds ~1e-7 per key).
  auto r =
      dogpile::make_region({.early_refresh = dogpile::EarlyRefresh{.beta = 1e15}, .clock = clock});
  r.configure("memory", {.expiration_time = 10s});
  int calls = 0;
  auto create = [&](std::span<const std::string> ks) {
    ++calls;
    return std::vector<int>(ks.size(), calls);
  };
  CHECK(r.get_or_create_multi<int>({"a", "b"}, create) == std::vector<int>{1, 1});
  clock.advance(5s);  // fresh, but a huge beta wants it refreshed
  CHECK(r.get_or_create_multi<int>({"a", "b"}, create) == std::vector<int>{2, 2});
  CHECK(calls == 2);
}

TEST_CASE("get_or_create_multi honours lock_timeout through the shared decision table", "[multi]") {
  auto r = dogpile::make_region({.lock_timeout = 50ms});
  r.configure("memory");
  auto m = r.mutex_for("a");
  REQUIRE(m->acquire(false));
  CHECK_THROWS_AS(
      r.get_or_create_multi<int>(
          {"a"}, [](std::span<const std::string> ks) { return std::vector<int>(ks.size()); }),
      dogpile::TimeoutError);
  m->release();
  CHECK(r.stats().lock_waits == 1);
}

// ---- the backend base: key rules and wrapped client errors
// ---------------------------------------

namespace {
class RuleBackend : public dogpile::CacheBackend {
 public:
  explicit RuleBackend(bool mangle)
      : CacheBackend("rules",
                     {.max_length = 16, .no_spaces_or_control = true, .mangle_bad_keys = mangle}) {}
  std::map<std::string, std::string> data;

 protected:
  std::optional<std::string> do_get(std::string_view key) override {
    auto it = data.find(std::string(key));
    if (it == data.end()) return std::nullopt;
    return it->second;
  }
  void do_set(std::string_view key, std::string_view value) override {
    data[std::string(key)] = value;
  }
  void do_erase(std::string_view key) override { data.erase(std::string(key)); }
};
class ThrowingBackend : public dogpile::CacheBackend {
 public:
  ThrowingBackend() : CacheBackend("flaky") {}

 protected:
  std::optional<std::string> do_get(std::string_view /*key*/) override {
    throw std::runtime_error("connection reset by peer");
  }
  void do_set(std::string_view /*key*/, std::string_view /*value*/) override {
    throw std::runtime_error("connection reset by peer");
  }
  void do_erase(std::string_view /*key*/) override {}
};
}  // namespace

TEST_CASE("backend key rules: refuse or mangle, checked once for every backend", "[backend]") {
  RuleBackend refuse(false);
  refuse.set("short", "v");
  CHECK(refuse.get("short") == "v");
  CHECK_THROWS_AS(refuse.set("a key with spaces", "v"), dogpile::ValidationError);
  CHECK_THROWS_WITH(refuse.get(std::string(40, 'k')),
                    Contains("rules backend cannot take the key") && Contains("too long") &&
                        Contains("key_mangler"));
  CHECK_THROWS_AS(refuse.get(std::string("ctl\x01", 4)), dogpile::ValidationError);
  CHECK(refuse.data.size() == 1);  // nothing bad reached the storage

  RuleBackend mangle(true);
  const std::string long_key(40, 'k');
  mangle.set(long_key, "v");
  CHECK(mangle.get(long_key) == "v");
  REQUIRE(mangle.data.size() == 1);
  CHECK(mangle.data.begin()->first == dogpile::sha1_mangle_key(long_key));
  const std::vector<std::string> keys{"ok", "has space"};
  mangle.set_multi(std::vector<dogpile::BytesItem>{{"ok", "1"}, {"has space", "2"}});
  CHECK(mangle.get_multi(keys) == std::vector<std::optional<std::string>>{"1", "2"});
  CHECK(mangle.data.count("has space") == 0);
  mangle.erase_multi(keys);
  CHECK(mangle.data.size() == 1);
}

TEST_CASE("a client library's exception becomes BackendError naming the backend", "[backend]") {
  auto b = std::make_shared<ThrowingBackend>();
  CHECK_THROWS_AS(b->get("k"), dogpile::BackendError);
  CHECK_THROWS_WITH(b->get("k"), "flaky backend failed: connection reset by peer");
  int errors = 0;
  auto r = dogpile::make_region(
      {.on_backend_error = dogpile::treat_as_miss([&](const std::exception&) { ++errors; })});
  r.configure(b);
  CHECK(r.get_or_create("k", [] { return 3; }) == 3);  // the app stays up
  // the read, the re-read under the lock, and the write
  CHECK(errors == 3);
  CHECK(r.stats().backend_errors == 3);
}

// Duration saturates instead of overflowing (issue 18): a configured 1e17 s was undefined
// behaviour (a double out of int64 range converted), caught by UBSan in the asan preset and by
// the compiler in these constant expressions.
TEST_CASE("Duration: out-of-range durations saturate, NaN is zero, rounding is half-even",
          "[duration]") {
  using std::chrono::duration;
  using std::chrono::milliseconds;
  using D = dogpile::Duration;
  static_assert(D(duration<double>(1e17)) == milliseconds::max());
  static_assert(D(duration<double>(-1e17)) == milliseconds::min());
  static_assert(D(std::chrono::hours::max()) == milliseconds::max());
  static_assert(D(duration<double, std::milli>(2.5)) == milliseconds(2));
  static_assert(D(duration<double, std::milli>(-3.5)) == milliseconds(-4));
  // At run time too (the values come from configuration).
  volatile double huge = 1e17;
  volatile double nan = std::numeric_limits<double>::quiet_NaN();
  volatile double inf = std::numeric_limits<double>::infinity();
  CHECK(D(duration<double>(huge)) == milliseconds::max());
  CHECK(D(duration<double>(-huge)) == milliseconds::min());
  CHECK(D(duration<double>(inf)) == milliseconds::max());
  CHECK(D(duration<double>(nan)) == milliseconds(0));
  CHECK(D(duration<double>(0.0016)) == milliseconds(2));
  CHECK(D(duration<double, std::milli>(1.6 - huge * 0)) == milliseconds(2));
  CHECK(D(std::chrono::microseconds(2500)) == milliseconds(2));
}

namespace {
// Bigger than the memory backend's inline buffer: kept behind a shared_ptr.
struct LargeValue {
  std::string text;
  std::array<std::int64_t, 8> numbers{};
  bool operator==(const LargeValue&) const = default;
};
}  // namespace

TEST_CASE("memory keeps small values inline and large ones shared, with and without a proxy",
          "[memory][inline]") {
  static_assert(sizeof(LargeValue) > dogpile::detail::ObjectSlot::kInline);
  for (const bool proxied : {false, true}) {
    CAPTURE(proxied);
    auto r = dogpile::make_region();
    dogpile::ConfigureOptions o;
    if (proxied) o.wrap = {std::make_shared<dogpile::ProxyBackend>()};
    r.configure("memory", o);
    const std::string small(40, 's');
    const LargeValue large{std::string(50, 'l'), {1, 2, 3, 4, 5, 6, 7, 8}};
    r.set("s", small);
    r.set("l", large);
    r.set_multi<std::string>({{"s1", "one"}, {"s2", std::string(64, 'x')}});
    r.set_multi<LargeValue>({{"l1", large}});
    CHECK(r.get<std::string>("s") == small);
    CHECK(r.get<LargeValue>("l") == large);
    CHECK(r.get_multi<std::string>({"s1", "s2", "nope"}) ==
          std::vector<std::optional<std::string>>{"one", std::string(64, 'x'), std::nullopt});
    CHECK(r.get_multi<LargeValue>({"l1", "l"}) ==
          std::vector<std::optional<LargeValue>>{large, large});
    CHECK(r.get_or_create("s", [] { return std::string("new"); }) == small);
    CHECK_THROWS_AS(r.get<LargeValue>("s"), dogpile::TypeMismatch);
    CHECK_THROWS_AS(r.get_multi<std::string>({"s", "l"}), dogpile::TypeMismatch);
    // The backend still hands out shared objects to direct callers.
    auto obj = r.actual_backend()->get_object("s");
    REQUIRE(obj);
    CHECK(*static_cast<const std::string*>(obj->payload.get()) == small);
  }
}
