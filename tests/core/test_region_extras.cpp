// ProxyBackendTest, AsyncCreatorTest (reference/dogpile.md §5.4), the serializer suite (§5.6
// _GenericSerializerTestSuite on memory_serialized), bad input, backend-error policy,
// statistics and the listener, and shared invalidation across two regions.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::ManualClock;
using dogpile_test::CountingProxy;
using dogpile_test::FailingProxy;

// ---- ProxyBackendTest -----------------------------------------------------------------------

namespace {
/// dogpile's NeverSetProxy: never stores one particular key.
class NeverSetProxy : public dogpile::ProxyBackend {
 public:
  explicit NeverSetProxy(std::string never) : never_(std::move(never)) {}

 protected:
  void do_set(std::string_view key, std::string_view value) override {
    if (key != never_) ProxyBackend::do_set(key, value);
  }
  void do_set_object(std::string_view key, dogpile::StoredObject obj) override {
    if (key != never_) ProxyBackend::do_set_object(key, std::move(obj));
  }

 private:
  std::string never_;
};
}  // namespace

TEST_CASE("ProxyBackendTest: counters through two stacked proxies", "[proxy]") {
  for (const char* backend : {"memory", "memory_serialized"}) {
    CAPTURE(backend);
    auto getter = std::make_shared<CountingProxy>();
    auto setter = std::make_shared<CountingProxy>();
    auto r = dogpile::make_region();
    r.configure(backend, {.wrap = {setter, getter}});  // setter outermost
    CHECK(r.backend() == setter);
    CHECK(setter->proxied() == getter);
    for (int i = 0; i < 10; ++i) r.set(std::to_string(i), i);
    CHECK(setter->sets == 10);
    CHECK(getter->sets == 10);
    CHECK(setter->gets == 0);
    CHECK(getter->gets == 0);
    for (int i = 0; i < 10; ++i) CHECK(r.get<int>(std::to_string(i)) == i);
    CHECK(setter->gets == 10);
    CHECK(getter->gets == 10);
    // not overridden: still forwarded
    r.erase("3");
    CHECK_FALSE(r.get<int>("3"));
  }
}

TEST_CASE("ProxyBackendTest: proxy instances carry independent state", "[proxy]") {
  auto p1 = std::make_shared<CountingProxy>();
  auto p2 = std::make_shared<CountingProxy>();
  auto r1 = dogpile::make_region();
  auto r2 = dogpile::make_region();
  r1.configure("memory", {.wrap = {p1}});
  r2.configure("memory", {.wrap = {p2}});
  r1.set("a", 1);
  r1.set("b", 2);
  r2.set("a", 1);
  CHECK(p1->sets == 2);
  CHECK(p2->sets == 1);
}

TEST_CASE("ProxyBackendTest: a proxy with constructor arguments (NeverSetProxy(5))", "[proxy]") {
  auto r = dogpile::make_region();
  r.configure("memory", {.wrap = {std::make_shared<NeverSetProxy>("5")}});
  for (int i = 0; i < 10; ++i) r.set(std::to_string(i), i);
  for (int i = 0; i < 10; ++i) {
    if (i == 5) {
      CHECK_FALSE(r.get<int>("5"));
    } else {
      CHECK(r.get<int>(std::to_string(i)) == i);
    }
  }
}

TEST_CASE("ProxyBackendTest: actual_backend unwraps the proxies", "[proxy]") {
  auto real = std::make_shared<dogpile::MemoryBackend>();
  auto outer = std::make_shared<CountingProxy>();
  auto inner = std::make_shared<dogpile::ProxyBackend>();
  auto r = dogpile::make_region();
  r.configure(real, {.wrap = {outer, inner}});
  CHECK(r.actual_backend() == real);
  CHECK(r.backend() == outer);
  CHECK(inner->proxied() == real);
  CHECK(r.actual_backend()->stores_objects());  // forwarded through the proxies
}

TEST_CASE("ProxyBackendTest: a null proxy is rejected", "[proxy]") {
  auto r = dogpile::make_region();
  CHECK_THROWS_AS(r.configure("memory", {.wrap = {nullptr}}), dogpile::ValidationError);
  CHECK_THROWS_AS(r.configure(std::shared_ptr<dogpile::CacheBackend>{}), dogpile::ValidationError);
}

// ---- AsyncCreatorTest -----------------------------------------------------------------------

namespace {
struct RecordingRunner {
  struct Call {
    std::string key;
    std::function<void()> job;
    dogpile::MutexHandle handle;
  };
  std::shared_ptr<std::vector<Call>> calls = std::make_shared<std::vector<Call>>();
  RecordingRunner() = default;
  RecordingRunner(const RecordingRunner&) = delete;
  RecordingRunner& operator=(const RecordingRunner&) = delete;
  // A recorded job holds the region, whose options hold this runner: break the cycle.
  ~RecordingRunner() { calls->clear(); }
  dogpile::AsyncCreationRunner runner() {
    return [c = calls](std::string key, std::function<void()> job, dogpile::MutexHandle h) {
      c->push_back({std::move(key), std::move(job), std::move(h)});
    };
  }
};
}  // namespace

TEST_CASE("AsyncCreatorTest: get_or_create after expiry uses the runner once", "[async]") {
  ManualClock clock;
  RecordingRunner rec;
  auto r = dogpile::make_region({.async_creation_runner = rec.runner(), .clock = clock});
  r.configure("memory", {.expiration_time = 1s});
  int n = 0;
  auto creator = [&n] { return "some value " + std::to_string(++n); };
  CHECK(r.get_or_create("some key", creator) == "some value 1");  // first fill: synchronous
  CHECK(rec.calls->empty());
  clock.advance(2s);
  CHECK(r.get_or_create("some key", creator) == "some value 1");  // stale, runner called
  REQUIRE(rec.calls->size() == 1);
  auto& call = rec.calls->front();
  CHECK(call.key == "some key");  // the unmangled key
  CHECK(call.handle.owns());      // the dogpile lock of the key, owned by the runner now
  CHECK(r.key_is_locked("some key"));
  CHECK(n == 1);
  // while the runner holds the lock, others get the stale value and no second runner call
  CHECK(r.get_or_create("some key", creator) == "some value 1");
  CHECK(rec.calls->size() == 1);
  call.job();
  call.handle.release();
  CHECK_FALSE(r.key_is_locked("some key"));
  CHECK(n == 2);
  CHECK(r.get_or_create("some key", creator) == "some value 2");
}

TEST_CASE("AsyncCreatorTest: the runner gets the unmangled key", "[async]") {
  ManualClock clock;
  RecordingRunner rec;
  auto r = dogpile::make_region({.key_mangler = dogpile::sha1_mangle_key,
                                 .async_creation_runner = rec.runner(),
                                 .clock = clock});
  r.configure("memory", {.expiration_time = 1s});
  r.get_or_create("some key", [] { return 1; });
  clock.advance(2s);
  r.get_or_create("some key", [] { return 2; });
  REQUIRE(rec.calls->size() == 1);
  CHECK(rec.calls->front().key == "some key");
  CHECK(rec.calls->front().handle.owns());
  CHECK(r.key_is_locked("some key"));  // the lock of the mangled key is the one held
}

TEST_CASE("AsyncCreatorTest: decorator plus soft invalidate", "[async]") {
  ManualClock clock;
  RecordingRunner rec;
  auto r = dogpile::make_region({.async_creation_runner = rec.runner(), .clock = clock});
  r.configure("memory", {.expiration_time = 10s});
  int n = 0;
  auto go = r.cache_on_arguments("tests.cache.test_region:go", [&n](int a, int b) {
    ++n;
    return a + b + n * 100;
  });
  CHECK(go(1, 2) == 103);
  clock.advance(1s);
  r.invalidate({.hard = false});
  CHECK(go(1, 2) == 103);  // stale
  REQUIRE(rec.calls->size() == 1);
  CHECK(rec.calls->front().key == "tests.cache.test_region:go|1 2");
  rec.calls->front().job();
  rec.calls->front().handle.release();
  CHECK(go(1, 2) == 203);
}

TEST_CASE("AsyncCreatorTest: no value means synchronous creation, not the runner", "[async]") {
  RecordingRunner rec;
  auto r = dogpile::make_region({.async_creation_runner = rec.runner()});
  r.configure("memory", {.expiration_time = 1s});
  CHECK(r.get_or_create("k", [] { return 7; }) == 7);
  CHECK(rec.calls->empty());
  r.invalidate();  // hard: also synchronous
  CHECK(r.get_or_create("k", [] { return 8; }) == 8);
  CHECK(rec.calls->empty());
}

TEST_CASE("AsyncCreatorTest: thread_pool_runner releases from another thread", "[async]") {
  ManualClock clock;
  auto r = dogpile::make_region(
      {.async_creation_runner = dogpile::thread_pool_runner(2), .clock = clock});
  r.configure("memory_serialized", {.expiration_time = 1s});
  std::atomic<int> n{0};
  auto creator = [&n] { return ++n; };
  CHECK(r.get_or_create("k", creator) == 1);
  clock.advance(2s);
  CHECK(r.get_or_create("k", creator) == 1);  // stale, creation on the pool
  REQUIRE(dogpile_test::wait_until([&] { return !r.key_is_locked("k") && n.load() == 2; }));
  CHECK(r.get_or_create("k", creator) == 2);
  CHECK(r.stats().creations == 2);
}

TEST_CASE("thread_pool_runner rejects 0 threads", "[async]") {
  CHECK_THROWS_AS(dogpile::thread_pool_runner(0), dogpile::ValidationError);
}

// ---- serializer suite -----------------------------------------------------------------------

TEST_CASE("Serializer: corrupt envelope bytes are a miss, never a crash", "[serializer]") {
  ManualClock clock;
  auto backend = std::make_shared<dogpile::MemorySerializedBackend>();
  auto r = dogpile::make_region({.clock = clock});
  r.configure(backend);
  const std::vector<std::string> corrupt = {
      "",
      "no separator",
      "|",
      "{not json|1",
      "[1,2]|1",
      "{\"v\": 2}|1",                 // no ct
      "{\"ct\": \"x\", \"v\": 2}|1",  // ct not a number
      "{\"ct\": 1700000000.0, \"v\": 2}|not json",
      "{\"ct\": 1700000000.0, \"v\": 2}|",
      "{\"ct\": 1700000000.0, \"v\": 2, \"z\": 1}|short",
      "{\"ct\": 1700000000.0, \"v\": 2, \"z\": 1}|\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
      "{\"ct\": 1700000000.0, \"v\": 2, \"z\": 1}|\x05\0\0\0\0\0\0\0garbage",
      std::string("\xDC"
                  "P\x02\x00",
                  4),  // truncated compact envelope
      std::string("\xDC"
                  "P\x02\x01",
                  4) +
          std::string(16, '\0') + "not zlib",
  };
  for (const auto& bytes : corrupt) {
    CAPTURE(bytes);
    backend->set("k", bytes);
    CHECK_FALSE(r.get<int>("k"));
    CHECK(r.get_multi<int>({"k"}) == std::vector<std::optional<int>>{std::nullopt});
    CHECK_FALSE(r.get_value_metadata<int>("k"));
    CHECK(r.get_or_create("k", [] { return 42; }) == 42);  // regenerated and stored
    CHECK(r.get<int>("k") == 42);
    backend->set("k2", bytes);
    CHECK(r.get_or_create_multi<int>({"k2"}, [](std::span<const std::string> ks) {
      return std::vector<int>(ks.size(), 7);
    }) == std::vector<int>{7});
  }
}

TEST_CASE("Serializer: wrong value type on the memory backend is TypeMismatch", "[serializer]") {
  auto r = dogpile::make_region();
  r.configure("memory");
  r.set("k", 1);
  CHECK_THROWS_AS(r.get<std::string>("k"), dogpile::TypeMismatch);
  CHECK_THROWS_AS(r.get_multi<std::string>({"k"}), dogpile::TypeMismatch);
  CHECK_THROWS_AS(r.get_or_create("k", [] { return std::string("x"); }), dogpile::TypeMismatch);
  CHECK(r.get<int>("k") == 1);
}

TEST_CASE("Serializer: wrong value type on a byte backend is a miss", "[serializer]") {
  auto r = dogpile::make_region();
  r.configure("memory_serialized");
  r.set("k", std::string("text"));
  CHECK_FALSE(r.get<int>("k"));  // "text" is not JSON: CantDeserialize -> miss
}

TEST_CASE("Serializer: the stored bytes are dogpile's envelope plus the JSON payload",
          "[serializer]") {
  ManualClock clock;  // 1,700,000,000 s
  auto backend = std::make_shared<dogpile::MemorySerializedBackend>();
  auto r = dogpile::make_region({.clock = clock});
  r.configure(backend);
  const std::vector<int> value = {1, 2, 3};
  r.set("k", value);
  auto raw = backend->get("k");
  REQUIRE(raw);
  const auto bar = raw->find('|');
  REQUIRE(bar != std::string::npos);
  CHECK(raw->substr(0, bar) == R"({"ct": 1700000000.0, "v": 2})");
  CHECK(raw->substr(bar + 1) == nlohmann::json(value).dump());
  CHECK(r.get<std::vector<int>>("k") == value);
  // strings pass through unchanged, even with a '|' inside
  r.set("s", std::string("a|b"));
  CHECK(backend->get("s") == std::string(R"({"ct": 1700000000.0, "v": 2}|a|b)"));
  CHECK(r.get<std::string>("s") == "a|b");
  // a Python dogpile.cache writer's bytes are read back
  backend->set("py", R"({"ct": 1700000000.5, "v": 2}|{"a": [1, 2]})");
  auto py = r.get_value_metadata<nlohmann::json>("py");
  REQUIRE(py);
  CHECK(py->payload == nlohmann::json{{"a", {1, 2}}});
  CHECK(py->metadata.ct == 1700000000.5);
}

TEST_CASE("Serializer: version != 2 is a miss for get_or_create but returned by get",
          "[serializer]") {
  ManualClock clock;
  auto backend = std::make_shared<dogpile::MemorySerializedBackend>();
  auto r = dogpile::make_region({.clock = clock});
  r.configure(backend);
  backend->set("k", R"({"ct": 1700000000.0, "v": 1}|5)");
  CHECK(r.get<int>("k") == 5);
  int calls = 0;
  CHECK(r.get_or_create("k", [&] {
    ++calls;
    return 6;
  }) == 6);
  CHECK(calls == 1);
  CHECK(r.get<int>("k") == 6);
  backend->set("m", R"({"ct": 1700000000.0, "v": 3}|5)");
  CHECK(r.get_or_create_multi<int>({"m"}, [](std::span<const std::string> ks) {
    return std::vector<int>(ks.size(), 9);
  }) == std::vector<int>{9});
}

// ---- bad input --------------------------------------------------------------------------------

TEST_CASE("Bad input: unknown backend, bad options, reconfiguration", "[errors]") {
  auto r = dogpile::make_region();
  CHECK_THROWS_AS(r.configure("nonexistent"), dogpile::PluginNotFound);
  CHECK_THROWS_WITH(r.configure("nonexistent"),
                    Catch::StartsWith("no cache backend named 'nonexistent'"));
  CHECK_THROWS_WITH(dogpile::make_backend("nope"),
                    Catch::StartsWith("no cache backend named 'nope'"));
  CHECK_THROWS_WITH(dogpile::make_backend("memroy"), Catch::Contains("did you mean 'memory'?"));
  CHECK_THROWS_AS(r.configure("memory", {.arguments = {{"shards", 0}}}), dogpile::ValidationError);
  CHECK_THROWS_WITH(r.configure("memory", {.arguments = {{"bogus", 1}}}), Catch::Contains("bogus"));
  CHECK_THROWS_WITH(r.configure("memory", {.arguments = {{"max_entires", 1}}}),
                    Catch::Contains("unknown option 'max_entires'; did you mean 'max_entries'?"));
  CHECK_THROWS_AS(r.configure("memory", {.arguments = nlohmann::json::array({1})}),
                  dogpile::ValidationError);
  CHECK_FALSE(r.is_configured());
  CHECK_THROWS_AS(r.get<int>("k"), dogpile::RegionNotConfigured);
  r.configure("memory");
  CHECK_THROWS_AS(r.configure("memory"), dogpile::RegionAlreadyConfigured);
  r.set("k", 1);
  r.configure("memory_serialized", {.replace_existing_backend = true});
  CHECK_FALSE(r.get<int>("k"));
  r.set("k", 2);
  CHECK(r.get<int>("k") == 2);
}

TEST_CASE("Bad input: configure_from_config string coercion and errors", "[errors][config]") {
  auto r = dogpile::make_region();
  r.configure_from_config({{"app.backend", " memory "},
                           {"app.expiration_time", " 30 "},
                           {"app.arguments.shards", "4"},
                           {"app.arguments.max_entries", "0"}},
                          "app.");
  CHECK(r.expiration_time().resolve() == std::optional<std::chrono::milliseconds>(30s));
  auto mem = std::dynamic_pointer_cast<dogpile::MemoryBackend>(r.actual_backend());
  REQUIRE(mem);
  CHECK(mem->options().shards == 4);
  r.configure_from_config({{"app.backend", "memory_serialized"},
                           {"app.expiration_time", "1.5"},
                           {"app.replace_existing_backend", "true"}},
                          "app.");
  CHECK(r.expiration_time().resolve() == std::optional<std::chrono::milliseconds>(1500ms));
  CHECK_THROWS_AS(r.configure_from_config({{"app.backend", "memory"}}, "app."),
                  dogpile::RegionAlreadyConfigured);
  auto r2 = dogpile::make_region();
  CHECK_THROWS_AS(r2.configure_from_config(
                      {{"app.backend", "memory"}, {"app.expiration_time", "one hour"}}, "app."),
                  dogpile::ValidationError);
  CHECK_THROWS_AS(r2.configure_from_config({{"app.backend", "nope"}}, "app."),
                  dogpile::PluginNotFound);
  CHECK_THROWS_AS(r2.configure_from_config({{"app.backend", 5}}, "app."), dogpile::ValidationError);
  CHECK_THROWS_AS(r2.configure_from_config(nlohmann::json::array(), "app."),
                  dogpile::ValidationError);
  CHECK_THROWS_AS(
      r2.configure_from_config({{"app.backend", "memory"}, {"app.arguments.shards", "x"}}, "app."),
      dogpile::ValidationError);
}

// ---- backend errors ---------------------------------------------------------------------------

TEST_CASE("on_backend_error: treat_as_miss keeps the app up", "[errors][backend_error]") {
  for (const char* backend : {"memory", "memory_serialized"}) {
    CAPTURE(backend);
    auto failing = std::make_shared<FailingProxy>();
    std::vector<std::string> seen;
    std::mutex seen_m;
    auto r = dogpile::make_region(
        {.on_backend_error = dogpile::treat_as_miss([&](const std::exception& e) {
           std::lock_guard lk(seen_m);
           seen.emplace_back(e.what());
         })});
    r.configure(backend, {.wrap = {failing}});
    int calls = 0;
    auto creator = [&] { return ++calls; };
    CHECK(r.get_or_create("k", creator) == 1);  // read fails -> miss; write fails -> dropped
    CHECK(r.get_or_create("k", creator) == 2);  // nothing was stored
    CHECK_FALSE(r.get<int>("k"));
    r.set("k", 5);
    r.erase("k");
    CHECK(r.get_multi<int>({"a", "b"}) == std::vector<std::optional<int>>(2));
    CHECK(r.get_or_create_multi<int>({"a", "b"}, [](std::span<const std::string> ks) {
      return std::vector<int>(ks.size(), 3);
    }) == std::vector<int>{3, 3});
    CHECK(r.stats().backend_errors >= 6);
    CHECK(seen.size() == r.stats().backend_errors);
    CHECK(seen.front() == "an unnamed region: get key 'k': backend is down");
    // the backend comes back
    failing->failing = false;
    CHECK(r.get_or_create("k", creator) == 3);
    CHECK(r.get_or_create("k", creator) == 3);
  }
}

TEST_CASE("on_backend_error: propagate (default) rethrows, callback still called",
          "[errors][backend_error]") {
  auto failing = std::make_shared<FailingProxy>();
  int callbacks = 0;
  auto r =
      dogpile::make_region({.on_backend_error = {dogpile::BackendErrorPolicy::Kind::propagate,
                                                 [&](const std::exception&) { ++callbacks; }}});
  r.configure("memory", {.wrap = {failing}});
  int calls = 0;
  CHECK_THROWS_AS(r.get_or_create("k",
                                  [&] {
                                    ++calls;
                                    return 1;
                                  }),
                  dogpile::BackendError);
  CHECK(calls == 0);
  CHECK_THROWS_AS(r.get<int>("k"), dogpile::BackendError);
  CHECK_THROWS_AS(r.set("k", 1), dogpile::BackendError);
  CHECK(callbacks == 3);
  CHECK(r.stats().backend_errors == 3);
  CHECK_FALSE(r.key_is_locked("k"));  // the failed call released the lock

  auto plain = dogpile::make_region();
  plain.configure("memory", {.wrap = {failing}});
  CHECK_THROWS_WITH(plain.get<int>("k"), "an unnamed region: get key 'k': backend is down");
}

TEST_CASE("listener: a backend_error event carries the exception", "[errors][backend_error]") {
  auto failing = std::make_shared<FailingProxy>();
  std::vector<std::string> messages;
  std::vector<std::string> keys;
  std::vector<std::exception_ptr> kept;
  int without_error = 0;
  auto r =
      dogpile::make_region({.on_backend_error = dogpile::treat_as_miss(),
                            .listener = [&](const dogpile::RegionEvent& e) {
                              if (e.kind != dogpile::RegionEvent::Kind::backend_error) {
                                if (e.error == nullptr) ++without_error;
                                return;
                              }
                              REQUIRE(e.error != nullptr);
                              CHECK(dynamic_cast<const dogpile::BackendError*>(e.error) != nullptr);
                              messages.emplace_back(e.error->what());
                              keys.emplace_back(e.key);
                              REQUIRE(e.exception != nullptr);  // owned: kept past the call
                              kept.push_back(e.exception);
                            }});
  r.configure("memory", {.wrap = {failing}});
  CHECK_FALSE(r.get<int>("k"));
  r.set("k", 1);
  REQUIRE(messages.size() == 2);
  CHECK(messages[0] == "an unnamed region: get key 'k': backend is down");
  CHECK(messages[1] == "an unnamed region: set key 'k': backend is down");
  CHECK(keys == std::vector<std::string>{"k", "k"});
  CHECK_THROWS_WITH(std::rethrow_exception(kept[1]),
                    "an unnamed region: set key 'k': backend is down");
  CHECK(without_error >= 1);  // the miss: no error attached
}

TEST_CASE("on_backend_error: a write failing after creation releases the lock",
          "[errors][backend_error]") {
  auto failing = std::make_shared<FailingProxy>();
  failing->failing = false;
  auto r = dogpile::make_region();
  r.configure("memory_serialized", {.wrap = {failing}});
  int calls = 0;
  auto creator = [&] {
    ++calls;
    failing->failing = true;  // the backend dies while we create
    return 1;
  };
  CHECK_THROWS_AS(r.get_or_create("k", creator), dogpile::BackendError);
  CHECK(calls == 1);
  CHECK_FALSE(r.key_is_locked("k"));
}

// ---- creator exceptions -----------------------------------------------------------------------

TEST_CASE("A creator exception propagates, nothing is cached, the lock is released", "[errors]") {
  ManualClock clock;
  auto r = dogpile::make_region({.clock = clock});
  r.configure("memory", {.expiration_time = 1s});
  CHECK_THROWS_WITH(r.get_or_create("k", []() -> int { throw std::runtime_error("boom"); }),
                    "boom");
  CHECK_FALSE(r.key_is_locked("k"));
  CHECK_FALSE(r.get<int>("k"));
  r.set("k", 1);
  clock.advance(2s);  // expired: the stale path's winner also releases on throw
  CHECK_THROWS_WITH(r.get_or_create("k", []() -> int { throw std::runtime_error("boom2"); }),
                    "boom2");
  CHECK_FALSE(r.key_is_locked("k"));
  CHECK_THROWS_WITH(
      r.get_or_create_multi<int>({"a", "b"},
                                 [](std::span<const std::string>) -> std::vector<int> {
                                   throw std::runtime_error("multi boom");
                                 }),
      "multi boom");
  CHECK_FALSE(r.key_is_locked("a"));
  CHECK_FALSE(r.key_is_locked("b"));
  CHECK_THROWS_AS(r.get_or_create_multi<int>(
                      {"a", "b"}, [](std::span<const std::string>) { return std::vector<int>{1}; }),
                  dogpile::ValidationError);  // wrong number of values
  CHECK_FALSE(r.key_is_locked("a"));
}

// ---- statistics and the listener --------------------------------------------------------------

TEST_CASE("Stats: hits, misses, stale served, creations, lock waits; listener events", "[stats]") {
  ManualClock clock;
  std::mutex m;
  std::vector<std::pair<dogpile::RegionEvent::Kind, std::string>> events;
  auto r = dogpile::make_region({.clock = clock, .listener = [&](const dogpile::RegionEvent& e) {
                                   std::lock_guard lk(m);
                                   events.emplace_back(e.kind, std::string(e.key));
                                 }});
  r.configure("memory", {.expiration_time = 1s});
  using K = dogpile::RegionEvent::Kind;

  CHECK(r.get_or_create("a", [] { return 1; }) == 1);
  auto s = r.stats();
  CHECK(s.creations == 1);
  CHECK(s.misses == 1);
  CHECK(s.hits == 0);
  CHECK(r.get_or_create("a", [] { return 2; }) == 1);
  CHECK(r.get<int>("a") == 1);
  CHECK_FALSE(r.get<int>("zz"));
  s = r.stats();
  CHECK(s.hits == 2);
  CHECK(s.misses == 2);

  clock.advance(2s);
  auto mtx = r.mutex_for("a");
  REQUIRE(mtx->acquire(false));
  CHECK(r.get_or_create("a", [] { return 3; }) == 1);  // stale served
  CHECK(r.stats().stale_served == 1);
  mtx->release();

  s = r.stats();
  CHECK(s.creations == 1);
  CHECK(s.lock_waits == 0);
  r.reset_stats();
  s = r.stats();
  CHECK(s.hits == 0);
  CHECK(s.creations == 0);

  std::lock_guard lk(m);
  REQUIRE(events.size() >= 4);
  CHECK(events[0] == std::make_pair(K::miss, std::string("a")));
  CHECK(events[1] == std::make_pair(K::created, std::string("a")));
  CHECK(events[2] == std::make_pair(K::hit, std::string("a")));
  bool saw_stale = false;
  for (const auto& e : events) saw_stale = saw_stale || e.first == K::stale_served;
  CHECK(saw_stale);
}

TEST_CASE("Stats: per-thread counters add up; get_multi counts every key once", "[stats]") {
  ManualClock clock;
  std::atomic<int> listened_hits{0};
  for (bool listen : {false, true}) {
    dogpile::RegionOptions o{.clock = clock};
    if (listen) {
      o.listener = [&](const dogpile::RegionEvent& e) {
        if (e.kind == dogpile::RegionEvent::Kind::hit) ++listened_hits;
      };
    }
    auto r = dogpile::make_region(std::move(o));
    r.configure("memory_serialized", {.expiration_time = 10s});
    r.set("a", std::string("1"));
    r.set("b", std::string("2"));
    clock.advance(5s);
    r.set("fresh", std::string("3"));
    clock.advance(6s);  // a and b expired, fresh not
    // 20 threads (more than the counter shards), 50 reads each.
    std::atomic<int> wrong{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 20; ++t) {
      ts.emplace_back([&] {
        for (int i = 0; i < 50; ++i) {
          auto v = r.get_multi<std::string>({"a", "fresh", "none", "b"});
          if (v != std::vector<std::optional<std::string>>{std::nullopt, "3", std::nullopt,
                                                           std::nullopt}) {
            ++wrong;
          }
          if (r.get<std::string>("fresh") != "3") ++wrong;
        }
      });
    }
    for (auto& t : ts) t.join();
    CHECK(wrong == 0);
    const auto s = r.stats();
    CHECK(s.hits == 20 * 50 * 2);
    CHECK(s.misses == 20 * 50 * 3);
    // ignore_expiration returns the expired ones too.
    CHECK(r.get_multi<std::string>({"a", "b"}, {.ignore_expiration = true}) ==
          std::vector<std::optional<std::string>>{"1", "2"});
    r.reset_stats();
    CHECK(r.stats().hits == 0);
    CHECK(r.stats().misses == 0);
  }
  CHECK(listened_hits == 20 * 50 * 2 + 2);
}

TEST_CASE("Stats: a blocked caller counts one lock wait", "[stats]") {
  auto proxy = std::make_shared<dogpile_test::WaitCountingProxy>();
  std::atomic<int> waited_events{0};
  auto r = dogpile::make_region({.listener = [&](const dogpile::RegionEvent& e) {
    if (e.kind == dogpile::RegionEvent::Kind::lock_wait) ++waited_events;
  }});
  r.configure("memory", {.wrap = {proxy}});
  auto m = r.mutex_for("k");
  REQUIRE(m->acquire(false));
  std::atomic<int> result{0};
  std::thread waiter([&] { result = r.get_or_create("k", [] { return 9; }); });
  REQUIRE(dogpile_test::wait_until([&] { return proxy->waits->load() == 1; }));
  r.set("k", 8);  // the holder "created" it
  m->release();
  waiter.join();
  CHECK(result == 8);  // the waiter re-read and took the holder's value
  const auto s = r.stats();
  CHECK(s.creations == 0);
  CHECK(s.lock_waits == 1);
  CHECK(s.lock_wait_time.count() > 0);
  CHECK(waited_events == 1);
}

TEST_CASE("Stats: lock_timeout makes a waiter give up with TimeoutError", "[stats][timeout]") {
  auto r = dogpile::make_region({.lock_timeout = 20ms});
  r.configure("memory");
  auto m = r.mutex_for("k");
  REQUIRE(m->acquire(false));
  int calls = 0;
  std::string what;
  try {
    (void)r.get_or_create("k", [&] {
      ++calls;
      return 1;
    });
  } catch (const dogpile::TimeoutError& e) {
    what = e.what();
  }
  // The region names itself, the operation and the key here too.
  CHECK(what == "an unnamed region: get_or_create key 'k': timed out waiting for the dogpile lock");
  CHECK(calls == 0);
  CHECK(r.stats().lock_waits == 1);
  CHECK_THROWS_AS(
      r.get_or_create_multi<int>(
          {"k"}, [](std::span<const std::string> ks) { return std::vector<int>(ks.size(), 1); }),
      dogpile::TimeoutError);
  m->release();
  CHECK(r.get_or_create("k", [] { return 2; }) == 2);
}

// ---- stale policy and early refresh through the region ---------------------------------------

TEST_CASE("Region: stale_policy block and serve_stale_for", "[region][stale_policy]") {
  ManualClock clock;
  SECTION("block: an expired value is never served while someone regenerates") {
    auto r = dogpile::make_region(
        {.stale_policy = dogpile::block, .lock_timeout = 20ms, .clock = clock});
    r.configure("memory", {.expiration_time = 1s});
    r.set("k", 1);
    clock.advance(2s);
    auto m = r.mutex_for("k");
    REQUIRE(m->acquire(false));
    CHECK_THROWS_AS(r.get_or_create("k", [] { return 2; }), dogpile::TimeoutError);
    m->release();
    CHECK(r.get_or_create("k", [] { return 2; }) == 2);
  }
  SECTION("serve_stale_for: within the bound stale is served, beyond it callers wait") {
    auto r = dogpile::make_region(
        {.stale_policy = dogpile::serve_stale_for(10s), .lock_timeout = 20ms, .clock = clock});
    r.configure("memory", {.expiration_time = 1s});
    r.set("k", 1);
    clock.advance(5s);
    auto m = r.mutex_for("k");
    REQUIRE(m->acquire(false));
    CHECK(r.get_or_create("k", [] { return 2; }) == 1);
    clock.advance(10s);
    CHECK_THROWS_AS(r.get_or_create("k", [] { return 2; }), dogpile::TimeoutError);
    m->release();
    CHECK(r.get_or_create("k", [] { return 3; }) == 3);
  }
}

TEST_CASE("Region: early_refresh regenerates a hot key before it expires", "[region][xfetch]") {
  ManualClock clock;
  auto r = dogpile::make_region({.early_refresh = dogpile::EarlyRefresh{1e12}, .clock = clock});
  r.configure("memory", {.expiration_time = 10s});
  int n = 0;
  auto creator = [&] { return ++n; };
  CHECK(r.get_or_create("k", creator) == 1);
  clock.advance(9s);
  CHECK(r.get_or_create("k", creator) == 2);  // refreshed before expiry
  auto off = dogpile::make_region({.early_refresh = dogpile::EarlyRefresh{0.0}, .clock = clock});
  off.configure("memory", {.expiration_time = 10s});
  int m = 0;
  off.get_or_create("k", [&] { return ++m; });
  clock.advance(9999ms);
  for (int i = 0; i < 100; ++i) off.get_or_create("k", [&] { return ++m; });
  CHECK(m == 1);
}

// ---- shared invalidation ----------------------------------------------------------------------

TEST_CASE("shared_invalidation: two regions on one backend see each other's invalidate",
          "[invalidate][shared]") {
  ManualClock clock;
  auto backend = std::make_shared<dogpile::MemorySerializedBackend>();
  dogpile::InvalidationMode shared = dogpile::shared_invalidation;
  auto a = dogpile::make_region({.name = "users", .invalidation = shared, .clock = clock});
  auto b = dogpile::make_region({.name = "users", .invalidation = shared, .clock = clock});
  a.configure(backend, {.expiration_time = 1h});
  b.configure(backend, {.expiration_time = 1h});
  a.set("k", 1);
  CHECK(b.get<int>("k") == 1);  // b polls now: nothing invalidated
  clock.advance(500ms);
  a.invalidate();
  CHECK_FALSE(a.get<int>("k"));  // seen at once by the invalidating region
  CHECK(b.get<int>("k") == 1);   // b has not re-polled yet (poll interval 1 s)
  clock.advance(600ms);
  CHECK_FALSE(b.get<int>("k"));  // after the poll interval
  int calls = 0;
  CHECK(b.get_or_create("k", [&] { return 10 + ++calls; }) == 11);
  CHECK(a.get<int>("k") == 11);  // created after the invalidation: valid everywhere

  SECTION("soft invalidation travels too") {
    clock.advance(1s);
    b.invalidate({.hard = false});
    clock.advance(2s);
    auto m = a.mutex_for("k");
    REQUIRE(m->acquire(false));
    CHECK(a.get_or_create("k", [] { return 99; }) == 11);  // soft: stale served
    m->release();
    CHECK(a.get_or_create("k", [] { return 99; }) == 99);
  }
  SECTION("a region with another name is not affected") {
    auto other = dogpile::make_region({.name = "orders", .invalidation = shared, .clock = clock});
    other.configure(backend, {.expiration_time = 1h});
    other.set("o", 1);
    clock.advance(1s);
    a.invalidate();
    clock.advance(2s);
    CHECK(other.get<int>("o") == 1);
  }
}

TEST_CASE("shared_invalidation: works on the object-storing memory backend too",
          "[invalidate][shared]") {
  ManualClock clock;
  auto backend = std::make_shared<dogpile::MemoryBackend>();
  auto a = dogpile::make_region(
      {.name = "n", .invalidation = dogpile::shared_invalidation, .clock = clock});
  auto b = dogpile::make_region(
      {.name = "n", .invalidation = dogpile::shared_invalidation, .clock = clock});
  a.configure(backend);
  b.configure(backend);
  a.set("k", std::string("v"));
  clock.advance(10ms);
  a.invalidate();
  clock.advance(2s);
  CHECK_FALSE(b.get<std::string>("k"));
}

TEST_CASE("Region: stale_policy applies to get_or_create_multi too", "[region][stale_policy]") {
  ManualClock clock;
  auto ones = [](std::span<const std::string> ks) { return std::vector<int>(ks.size(), 2); };
  SECTION("block: an expired key being regenerated elsewhere is waited for, not served") {
    auto r = dogpile::make_region(
        {.stale_policy = dogpile::block, .lock_timeout = 20ms, .clock = clock});
    r.configure("memory", {.expiration_time = 1s});
    r.set_multi<int>({{"a", 1}, {"b", 1}});
    clock.advance(2s);
    auto m = r.mutex_for("b");
    REQUIRE(m->acquire(false));
    CHECK_THROWS_AS(r.get_or_create_multi<int>({"a", "b"}, ones), dogpile::TimeoutError);
    CHECK_FALSE(r.key_is_locked("a"));  // released on the way out
    m->release();
    CHECK(r.get_or_create_multi<int>({"a", "b"}, ones) == std::vector<int>{2, 2});
    CHECK(r.stats().stale_served == 0);
  }
  SECTION("block: after waiting, a value the holder refreshed is taken, not re-created") {
    auto proxy = std::make_shared<dogpile_test::WaitCountingProxy>();
    auto r = dogpile::make_region({.stale_policy = dogpile::block, .clock = clock});
    r.configure("memory", {.expiration_time = 1s, .wrap = {proxy}});
    r.set("a", 1);
    clock.advance(2s);
    auto m = r.mutex_for("a");
    REQUIRE(m->acquire(false));
    std::vector<int> got;
    int calls = 0;
    std::thread t([&] {
      got = r.get_or_create_multi<int>({"a"}, [&](std::span<const std::string> ks) {
        ++calls;
        return std::vector<int>(ks.size(), 3);
      });
    });
    const bool waited = dogpile_test::wait_until([&] { return proxy->waits->load() == 1; }, 5s);
    r.set("a", 5);  // the holder refreshed it
    m->release();
    t.join();
    CHECK(waited);
    CHECK(got == std::vector<int>{5});
    CHECK(calls == 0);
  }
  SECTION("serve_stale_for: within the bound stale is served") {
    auto r = dogpile::make_region(
        {.stale_policy = dogpile::serve_stale_for(10s), .lock_timeout = 20ms, .clock = clock});
    r.configure("memory", {.expiration_time = 1s});
    r.set("a", 1);
    clock.advance(5s);
    auto m = r.mutex_for("a");
    REQUIRE(m->acquire(false));
    CHECK(r.get_or_create_multi<int>({"a"}, ones) == std::vector<int>{1});
    clock.advance(10s);
    CHECK_THROWS_AS(r.get_or_create_multi<int>({"a"}, ones), dogpile::TimeoutError);
    m->release();
  }
}

TEST_CASE("Region: stale_policy block with an async runner waits for a fresh value",
          "[region][stale_policy][async]") {
  ManualClock clock;
  std::vector<std::string> runner_keys;
  auto r = dogpile::make_region(
      {.async_creation_runner =
           [&](std::string key, std::function<void()> job, dogpile::MutexHandle) {
             runner_keys.push_back(key);
             job();
           },
       .stale_policy = dogpile::block,
       .clock = clock});
  r.configure("memory", {.expiration_time = 1s});
  r.set("k", 1);
  clock.advance(2s);
  CHECK(r.get_or_create("k", [] { return 2; }) == 2);
  CHECK(runner_keys.empty());
}

TEST_CASE("on_backend_error: treat_as_miss also covers shared invalidation's backend reads",
          "[errors][backend_error][shared]") {
  ManualClock clock;
  auto failing = std::make_shared<FailingProxy>();
  failing->failing = false;
  int errors = 0;
  auto r = dogpile::make_region(
      {.name = "n",
       .on_backend_error = dogpile::treat_as_miss([&](const std::exception&) { ++errors; }),
       .invalidation = dogpile::shared_invalidation,
       .clock = clock});
  r.configure("memory_serialized", {.expiration_time = 1h, .wrap = {failing}});
  CHECK(r.get_or_create("k", [] { return 1; }) == 1);
  failing->failing = true;
  clock.advance(2s);  // the next invalidation poll hits the dead backend
  int calls = 0;
  CHECK_NOTHROW(r.get_or_create("k2", [&] { return ++calls; }));
  CHECK(calls == 1);
  CHECK_NOTHROW(r.get<int>("k"));
  failing->failing = false;
  clock.advance(2s);
  CHECK(r.get<int>("k") == 1);
}

TEST_CASE("AsyncCreatorTest: the region may be dropped while a pool job runs", "[async]") {
  // The job keeps the region alive; when it finishes it can be the last owner of the region
  // and so of the thread pool, whose destructor then runs on a pool thread.
  ManualClock clock;
  std::atomic<bool> go{false};
  std::atomic<bool> done{false};
  {
    auto r = dogpile::make_region(
        {.async_creation_runner = dogpile::thread_pool_runner(2), .clock = clock});
    r.configure("memory", {.expiration_time = 1s});
    r.set("k", 0);
    clock.advance(2s);
    CHECK(r.get_or_create("k", [&] {
      dogpile_test::wait_until([&] { return go.load(); });
      done = true;
      return 1;
    }) == 0);
  }  // the last handle outside the pool is gone
  go = true;
  CHECK(dogpile_test::wait_until([&] { return done.load(); }));
}
