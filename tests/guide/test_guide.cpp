// The snippets of docs/regions.md. Every region between `// [guide:<name>]` and
// `// [/guide:<name>]` is copied verbatim (leading indentation aside) into the guide after
// `<!-- snippet: <name> -->`; `guide_in_sync` checks that the two agree, and this file checks
// that the snippets compile and do what the guide says. Assertions come after the marked
// regions, not inside them.
#include <dogpile/dogpile.hpp>

#if DOGPILE_GUIDE_DISK
#include <dogpile/backends/disk.hpp>
#endif

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include <nlohmann/json.hpp>

using namespace std::chrono_literals;

// [guide:user_type]
struct User {
  int id = 0;
  std::string name;
  bool operator==(const User&) const = default;
};
// JSON conversion: what byte backends (memory_serialized, disk, redis, ...) need.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(User, id, name)
// [/guide:user_type]

namespace {

User load_user(int id) { return User{id, "user-" + std::to_string(id)}; }

// A proxy whose dogpile lock always loses its lease under the creator (as a disk or Redis lock
// does when the creator outlives lock_timeout): release() throws LockError.
class LeaseLostMutex final : public dogpile::CacheMutex {
 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> /*timeout*/) override {
    held_ = true;
    return true;
  }
  void do_release() override {
    held_ = false;
    throw dogpile::LockError("lease expired");
  }
  [[nodiscard]] bool do_locked() const override { return held_; }

 private:
  std::atomic<bool> held_{false};
};
class LeaseLosingProxy final : public dogpile::ProxyBackend {
 protected:
  std::shared_ptr<dogpile::CacheMutex> do_get_mutex(std::string_view /*key*/) override {
    return std::make_shared<LeaseLostMutex>();
  }
};
std::shared_ptr<dogpile::ProxyBackend> lease_that_expires_under_the_creator() {
  return std::make_shared<LeaseLosingProxy>();
}

template <class F>
bool eventually(F&& done) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

// [guide:down_backend]
// A byte backend whose server is down: every call throws ConnectionError (a BackendError).
class DownBackend final : public dogpile::CacheBackend {
 public:
  DownBackend() : CacheBackend("down") {}

 protected:
  std::optional<std::string> do_get(std::string_view /*key*/) override { fail(); }
  void do_set(std::string_view /*key*/, std::string_view /*value*/) override { fail(); }
  void do_erase(std::string_view /*key*/) override { fail(); }

 private:
  [[noreturn]] static void fail() { throw dogpile::ConnectionError("down: connection refused"); }
};
// [/guide:down_backend]

// [guide:map_backend]
// A byte backend needs three hooks. Its key rules are checked by CacheBackend's public calls:
// here keys over 250 bytes or with spaces/control bytes are replaced by their SHA-1 hex.
class MapBackend final : public dogpile::CacheBackend {
 public:
  MapBackend()
      : CacheBackend("map",
                     {.max_length = 250, .no_spaces_or_control = true, .mangle_bad_keys = true}) {}

 protected:
  std::optional<std::string> do_get(std::string_view key) override {
    std::lock_guard lk(mutex_);
    auto it = data_.find(key);
    if (it == data_.end()) return std::nullopt;
    return it->second;
  }
  void do_set(std::string_view key, std::string_view value) override {
    std::lock_guard lk(mutex_);
    data_.insert_or_assign(std::string(key), std::string(value));
  }
  void do_erase(std::string_view key) override {
    std::lock_guard lk(mutex_);
    data_.erase(std::string(key));
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::string, std::less<>> data_;
};
// [/guide:map_backend]

// [guide:custom_invalidation_type]
// Invalidation by generation number, e.g. read from your own configuration service.
class GenerationInvalidation final : public dogpile::RegionInvalidationStrategy {
 public:
  explicit GenerationInvalidation(dogpile::Clock clock) : clock_(std::move(clock)) {}
  void invalidate(bool /*hard*/) override { since_ = clock_().time_since_epoch().count(); }
  [[nodiscard]] bool is_invalidated(dogpile::TimePoint created) const override {
    return created.time_since_epoch().count() < since_.load();
  }
  [[nodiscard]] bool was_hard_invalidated() const override { return since_.load() != 0; }
  [[nodiscard]] bool was_soft_invalidated() const override { return false; }

 private:
  dogpile::Clock clock_;
  std::atomic<dogpile::TimePoint::rep> since_{0};
};
// [/guide:custom_invalidation_type]

// [guide:types_without_codec]
struct Connection {  // no to_json/from_json: fine on `memory`, refused by byte backends
  int fd = -1;
};

struct Blob {  // a type that owns heap memory the default weigher cannot see
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
};
// Found by argument-dependent lookup; counts what a Blob costs in `memory`'s max_bytes.
inline std::size_t dogpile_weight(const Blob& b) { return sizeof(Blob) + b.size; }
// [/guide:types_without_codec]

TEST_CASE("guide: configure", "[guide]") {
  // [guide:configure]
  dogpile::CacheRegion region = dogpile::make_region({.name = "users"});
  region.configure("memory", {.expiration_time = 10min,
                              .arguments = {{"max_entries", 100'000}, {"eviction", "lru"}}});

  // The same with a backend object (options struct instead of JSON arguments):
  dogpile::CacheRegion other = dogpile::make_region({.name = "sessions"});
  auto memory = std::make_shared<dogpile::MemoryBackend>(
      dogpile::MemoryOptions{.max_entries = 100'000, .eviction = dogpile::MemoryEviction::lru});
  other.configure(memory, {.expiration_time = 10min});
  // [/guide:configure]
  CHECK(region.is_configured());
  CHECK(region.backend()->name() == "memory");
  CHECK(other.actual_backend() == memory);
  CHECK(memory->options().max_entries == 100'000);
}

TEST_CASE("guide: backend arguments", "[guide]") {
  // [guide:backend_arguments]
  auto bytes = dogpile::make_region();
  bytes.configure("memory_serialized", {.arguments = {{"shards", 4}, {"max_bytes", 64 << 20}}});

  auto off = dogpile::make_region();
  off.configure("dogpile.cache.null");  // the dogpile.cache.<name> alias works too
  // [/guide:backend_arguments]
  bytes.set("k", "v");
  CHECK(bytes.get<std::string>("k") == "v");
  off.set("k", "v");
  CHECK_FALSE(off.get<std::string>("k"));
}

TEST_CASE("guide: get set erase", "[guide]") {
  auto region = dogpile::make_region();
  region.configure("memory", {.expiration_time = 10min});
  // [guide:basic]
  region.set("user:1", User{1, "Ada"});
  std::optional<User> u = region.get<User>("user:1");  // std::nullopt on a miss
  region.set("greeting", "hello");                     // a string literal is stored as std::string

  region.set_multi<User>({{"user:2", User{2, "Grace"}}, {"user:3", User{3, "Edsger"}}});
  std::vector<std::optional<User>> many = region.get_multi<User>({"user:2", "user:3", "user:4"});

  auto meta = region.get_value_metadata<User>("user:1");  // value + creation time
  // meta->payload, meta->cached_time(), meta->age()

  region.erase("user:1");  // dogpile's delete(); erasing a missing key is fine
  region.erase_multi({"user:2", "user:3"});
  // [/guide:basic]
  CHECK(u == User{1, "Ada"});
  CHECK(region.get<std::string>("greeting") == "hello");
  REQUIRE(many.size() == 3);
  CHECK(many[0] == User{2, "Grace"});
  CHECK(many[1] == User{3, "Edsger"});
  CHECK_FALSE(many[2]);
  REQUIRE(meta);
  CHECK(meta->payload == User{1, "Ada"});
  CHECK(meta->age() >= 0s);
  CHECK_FALSE(region.get<User>("user:1"));
  CHECK_FALSE(region.get<User>("user:2"));
  CHECK_FALSE(region.get<User>("user:3"));
}

TEST_CASE("guide: get_or_create", "[guide]") {
  auto region = dogpile::make_region();
  region.configure("memory", {.expiration_time = 10min});
  // [guide:get_or_create]
  User a = region.get_or_create("user:1", [] { return load_user(1); });        // T deduced
  User b = region.get_or_create<User>("user:2", [] { return load_user(2); });  // T given
  std::string s = region.get_or_create("motd", [] { return "hello"; });        // std::string

  // Per call: another expiration, and whether to keep the result.
  User c = region.get_or_create(
      "user:3", [] { return load_user(3); },
      {.expiration_time = 1min, .should_cache = [](const User& u) { return !u.name.empty(); }});
  // [/guide:get_or_create]
  CHECK(a == load_user(1));
  CHECK(b == load_user(2));
  CHECK(s == "hello");
  CHECK(region.get<std::string>("motd") == "hello");
  CHECK(c == load_user(3));
  CHECK(region.get<User>("user:3") == load_user(3));
}

TEST_CASE("guide: should_cache", "[guide]") {
  auto region = dogpile::make_region();
  region.configure("memory", {.expiration_time = 10min});
  // [guide:should_cache]
  auto fetch_price = [] { return -1; };  // -1: the upstream service had no answer
  int price = region.get_or_create("price:42", fetch_price,
                                   {.should_cache = [](const int& p) { return p >= 0; }});
  // price == -1 is returned, but not stored: the next call asks upstream again.
  // [/guide:should_cache]
  CHECK(price == -1);
  CHECK_FALSE(region.get<int>("price:42"));
}

TEST_CASE("guide: get_or_create_multi", "[guide]") {
  auto region = dogpile::make_region();
  region.configure("memory", {.expiration_time = 10min});
  region.set("user:2", load_user(2));
  // [guide:get_or_create_multi]
  // One read for all keys; one creator call for the keys that need a value (sorted).
  std::vector<std::string> asked_for;
  auto load_many = [&](std::span<const std::string> keys) {
    std::vector<User> out;
    for (const auto& k : keys) {
      asked_for.push_back(k);
      out.push_back(load_user(std::stoi(k.substr(5))));
    }
    return out;
  };
  std::vector<User> users =
      region.get_or_create_multi<User>({"user:3", "user:1", "user:2"}, load_many);
  // users are in the order asked; asked_for == {"user:1", "user:3"} ("user:2" was cached)
  // [/guide:get_or_create_multi]
  CHECK(users == std::vector<User>{load_user(3), load_user(1), load_user(2)});
  CHECK(asked_for == std::vector<std::string>{"user:1", "user:3"});
}

TEST_CASE("guide: expiration", "[guide]") {
  // [guide:expiration]
  dogpile::ManualClock clock;  // time stands still until the test moves it
  auto region = dogpile::make_region({.clock = clock});
  region.configure("memory", {.expiration_time = 10min});  // the region's default

  region.set("a", 1);
  clock.advance(11min);
  bool expired = !region.get<int>("a");                                               // true
  bool kept = region.get<int>("a", {.expiration_time = dogpile::never}).has_value();  // true
  bool raw = region.get<int>("a", {.ignore_expiration = true}).has_value();           // true

  // Per call: a duration, dogpile::never, or a callable evaluated on every call.
  int v = region.get_or_create("b", [] { return 2; }, {.expiration_time = dogpile::never});
  auto until_midnight = [] { return 3h; };  // e.g. computed from the wall clock
  int w = region.get_or_create("c", [] { return 3; }, {.expiration_time = until_midnight});
  // [/guide:expiration]
  CHECK(expired);
  CHECK(kept);
  CHECK(raw);
  CHECK(v == 2);
  CHECK(w == 3);
  clock.advance(2h);
  CHECK(region.get<int>("c", {.expiration_time = until_midnight}) == 3);
  clock.advance(2h);
  CHECK_FALSE(region.get<int>("c", {.expiration_time = until_midnight}));
  CHECK(region.get<int>("b", {.expiration_time = dogpile::never}) == 2);
}

TEST_CASE("guide: dogpile lock", "[guide]") {
  dogpile::ManualClock clock;
  auto region = dogpile::make_region({.clock = clock});
  region.configure("memory", {.expiration_time = 1min});
  // [guide:dogpile_lock]
  region.set("report", "v1");
  clock.advance(2min);  // "v1" is now expired, but still present

  // Another caller is regenerating it: we hold its dogpile lock here to show what others see.
  auto lock = region.mutex_for("report");
  lock->acquire(false);
  std::string seen = region.get_or_create("report", [] { return "v2"; });  // "v1", at once
  lock->release();

  std::string fresh = region.get_or_create("report", [] { return "v2"; });  // "v2": we won
  // [/guide:dogpile_lock]
  CHECK(seen == "v1");
  CHECK(fresh == "v2");
  CHECK(region.stats().stale_served == 1);
  CHECK(region.stats().creations == 1);
}

TEST_CASE("guide: stale policies", "[guide]") {
  // [guide:stale_policy]
  dogpile::ManualClock clock;
  auto region = dogpile::make_region({.stale_policy = dogpile::serve_stale_for(30s),
                                      .lock_timeout = 50ms,  // cap on waiting for a creator
                                      .clock = clock});
  region.configure("memory", {.expiration_time = 1min});
  region.set("report", "v1");

  auto lock = region.mutex_for("report");  // someone else is regenerating "report"
  lock->acquire(false);
  clock.advance(80s);  // 20 s past expiry: within 30 s, so the stale value is served
  std::string a = region.get_or_create("report", [] { return "v2"; });  // "v1"
  clock.advance(20s);      // 40 s past expiry: callers wait for the creator (here: 50 ms, then
  bool timed_out = false;  // TimeoutError, since the other creator never finishes)
  try {
    region.get_or_create("report", [] { return "v2"; });
  } catch (const dogpile::TimeoutError&) {
    timed_out = true;
  }
  lock->release();
  // [/guide:stale_policy]
  CHECK(a == "v1");
  CHECK(timed_out);
  CHECK(region.get_or_create("report", [] { return "v2"; }) == "v2");

  auto blocking = dogpile::make_region({.stale_policy = dogpile::block, .lock_timeout = 10ms});
  blocking.configure("memory", {.expiration_time = dogpile::never});
  CHECK(blocking.get_or_create("k", [] { return 1; }) == 1);
}

TEST_CASE("guide: early refresh", "[guide]") {
  // [guide:early_refresh]
  auto region = dogpile::make_region({.early_refresh = dogpile::EarlyRefresh{.beta = 1.0}});
  region.configure("memory", {.expiration_time = 10min});
  // A hit close to expiry sometimes regenerates (one caller, without waiting for anyone);
  // the closer to expiry and the slower the creator was, the likelier.
  std::string v = region.get_or_create("hot", [] { return "value"; });
  // [/guide:early_refresh]
  CHECK(v == "value");
  CHECK(region.get_or_create("hot", [] { return "other"; }) == "value");  // fresh: 10 min left
}

TEST_CASE("guide: async creation", "[guide]") {
  // [guide:async]
  dogpile::ManualClock clock;
  auto region = dogpile::make_region(
      {.async_creation_runner = dogpile::thread_pool_runner(2), .clock = clock});
  region.configure("memory", {.expiration_time = 1min});
  region.set("report", "v1");
  clock.advance(2min);
  // Expired: this caller wins the lock, hands the creator to the pool and returns "v1" at once.
  std::string now = region.get_or_create("report", [] { return "v2"; });
  // [/guide:async]
  CHECK(now == "v1");
  CHECK(eventually([&] { return region.get<std::string>("report") == "v2"; }));
  CHECK(eventually([&] { return !region.key_is_locked("report"); }));
}

TEST_CASE("guide: backend errors", "[guide]") {
  // [guide:backend_errors]
  std::vector<std::string> errors;
  auto region = dogpile::make_region(
      {.on_backend_error = dogpile::treat_as_miss([&](const std::exception& e) {  // must not throw
         errors.emplace_back(e.what());
       })});
  region.configure(std::make_shared<DownBackend>());
  std::string v = region.get_or_create("k", [] { return "computed"; });  // the app stays up
  // v == "computed"; errors holds "an unnamed region: get key 'k': down: connection refused"
  // (read, re-read, write)
  // [/guide:backend_errors]
  CHECK(v == "computed");
  CHECK_FALSE(errors.empty());
  CHECK(errors.front() == "an unnamed region: get key 'k': down: connection refused");
  CHECK(region.stats().backend_errors == errors.size());

  auto strict = dogpile::make_region();  // propagate (the default)
  strict.configure(std::make_shared<DownBackend>());
  CHECK_THROWS_AS(strict.get<std::string>("k"), dogpile::BackendError);
}

TEST_CASE("guide: backend error types", "[guide]") {
  std::string what, region_name, op, key;
  std::vector<std::string> lines;
  // [guide:backend_error_types]
  auto region = dogpile::make_region({.name = "users"});
  region.configure(std::make_shared<DownBackend>());
  try {
    region.get<std::string>("user:1");
  } catch (const dogpile::ConnectionError& e) {  // TimeoutError, ReplyError, ClusterDownError…
    what = e.what();           // "region 'users': get key 'user:1': down: connection refused"
    region_name = e.region();  // "users"; e.operation() == "get", e.key() == "user:1",
    op = e.operation();        // e.detail() == "down: connection refused"
    key = e.key();
  }
  // Warnings that are not errors (ignored arguments, lost leases, reconnects, failovers):
  dogpile::Logger previous =
      dogpile::set_logger([&](dogpile::LogLevel level, std::string_view message) {
        // (not thread-safe: a test)
        if (level == dogpile::LogLevel::warning) lines.emplace_back(message);
      });
  // [/guide:backend_error_types]
  dogpile::set_logger(std::move(previous));
  CHECK(what == "region 'users': get key 'user:1': down: connection refused");
  CHECK(region_name == "users");
  CHECK(op == "get");
  CHECK(key == "user:1");
}

TEST_CASE("guide: lost lease", "[guide]") {
  // [guide:lock_lost]
  int lost = 0;
  std::vector<std::string> reported;
  auto region = dogpile::make_region(
      {.on_backend_error = dogpile::treat_as_miss([&](const std::exception& e) {
         if (dynamic_cast<const dogpile::LockError*>(&e) != nullptr)
           reported.emplace_back(e.what());
       }),
       .listener = [&](const dogpile::RegionEvent& e) {
         if (e.kind == dogpile::RegionEvent::Kind::lock_lost) ++lost;
       }});
  // A lock whose lease runs out while the creator works (a test helper of this guide).
  region.configure("memory", {.wrap = {lease_that_expires_under_the_creator()}});
  std::string v = region.get_or_create("report", [] { return "slow result"; });
  // v == "slow result" (stored); lost == 1, stats().locks_lost == 1, reported has one message
  // [/guide:lock_lost]
  CHECK(v == "slow result");
  CHECK(region.get<std::string>("report") == "slow result");
  CHECK(lost == 1);
  CHECK(region.stats().locks_lost == 1);
  REQUIRE(reported.size() == 1);
  CHECK(reported[0].find("lost its lease") != std::string::npos);
}

TEST_CASE("guide: stats and listener", "[guide]") {
  // [guide:stats]
  std::atomic<int> waits{0};
  auto region = dogpile::make_region({.listener = [&](const dogpile::RegionEvent& e) {
    // Called on the calling thread for every event: keep it fast and thread-safe.
    if (e.kind == dogpile::RegionEvent::Kind::lock_wait) ++waits;
  }});
  region.configure("memory");
  region.get_or_create("k", [] { return 1; });  // a miss and a creation
  region.get_or_create("k", [] { return 1; });  // a hit
  dogpile::RegionStats s = region.stats();      // s.hits, s.misses, s.creations, s.stale_served,
                                                // s.lock_waits, s.lock_wait_time,
                                                // s.backend_errors, s.locks_lost
  region.reset_stats();
  // [/guide:stats]
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.creations == 1);
  CHECK(waits == 0);
  CHECK(region.stats().hits == 0);
}

TEST_CASE("guide: invalidation", "[guide]") {
  // [guide:invalidation]
  dogpile::ManualClock clock;
  auto region = dogpile::make_region({.clock = clock});
  region.configure("memory", {.expiration_time = 10min});
  region.set("a", 1);
  clock.advance(1s);

  region.invalidate();  // hard: everything created before now is a miss
  bool gone = !region.get<int>("a");
  int a = region.get_or_create("a", [] { return 2; });  // 2: callers wait for one creation

  clock.advance(1s);
  region.invalidate({.hard = false});  // soft: everything created before now is expired
  auto lock = region.mutex_for("a");   // while someone regenerates it ...
  lock->acquire(false);
  int stale = region.get_or_create("a", [] { return 3; });  // ... others get 2 at once
  lock->release();
  // [/guide:invalidation]
  CHECK(gone);
  CHECK(a == 2);
  CHECK(stale == 2);
  CHECK(region.get_or_create("a", [] { return 3; }) == 3);
}

TEST_CASE("guide: shared invalidation", "[guide]") {
  dogpile::ManualClock clock;
  // [guide:shared_invalidation]
  // Two regions on one backend stand for two processes sharing a Redis server or a disk cache.
  auto backend = std::make_shared<dogpile::MemorySerializedBackend>();
  auto here = dogpile::make_region(
      {.name = "users", .invalidation = dogpile::shared_invalidation, .clock = clock});
  auto there = dogpile::make_region(
      {.name = "users", .invalidation = dogpile::shared_invalidation, .clock = clock});
  here.configure(backend, {.expiration_time = 10min});
  there.configure(backend, {.expiration_time = 10min});

  here.set("user:1", User{1, "Ada"});
  clock.advance(1s);
  here.invalidate();  // stored under "_dogpile_invalidation:users" in the backend
  clock.advance(1s);  // the other region re-reads it at most once per poll (1 s)
  bool gone_there = !there.get<User>("user:1").has_value();  // true
  // [/guide:shared_invalidation]
  CHECK(gone_there);
  CHECK(backend->get("_dogpile_invalidation:users").has_value());
}

TEST_CASE("guide: custom invalidation", "[guide]") {
  dogpile::ManualClock clock;
  // [guide:custom_invalidation]
  auto region = dogpile::make_region({.clock = clock});
  auto strategy = std::make_shared<GenerationInvalidation>(clock);
  region.configure("memory", {.expiration_time = 10min, .region_invalidator = strategy});
  // or, for every configure of this region:
  //   make_region({.invalidation = {.kind = dogpile::InvalidationMode::Kind::custom,
  //                                 .strategy = strategy}})
  // [/guide:custom_invalidation]
  region.set("a", 1);
  clock.advance(1s);
  region.invalidate();
  CHECK_FALSE(region.get<int>("a"));

  auto other = dogpile::make_region(
      {.invalidation = {.kind = dogpile::InvalidationMode::Kind::custom, .strategy = strategy},
       .clock = clock});
  other.configure("memory");
  other.set("b", 1);
  CHECK(other.get<int>("b") == 1);
}

TEST_CASE("guide: configure_from_config", "[guide]") {
  // [guide:config]
  // Flat keys, as read from an .ini or environment; strings are coerced like dogpile's
  // coerce_string_conf ("600" -> 600, "true" -> true, "None" -> null).
  nlohmann::json config = {{"cache.users.backend", "memory"},
                           {"cache.users.expiration_time", "600"},
                           {"cache.users.arguments.max_entries", "10000"},
                           {"cache.sessions.backend", "null"}};  // another prefix: ignored
  auto region = dogpile::make_region({.name = "users"});
  region.configure_from_config(config, "cache.users.");

  // A typo is an error, not a region that silently never expires:
  auto typo = dogpile::make_region();
  std::string message;
  try {
    typo.configure_from_config({{"cache.x.backend", "memory"}, {"cache.x.expiration_tme", 600}},
                               "cache.x.");
  } catch (const dogpile::ValidationError& e) {
    message = e.what();  // "... unknown setting 'cache.x.expiration_tme'; did you mean
  }                      //  'expiration_time'? ..."
  // [/guide:config]
  CHECK(region.expiration_time().resolve() == std::optional<std::chrono::milliseconds>(600s));
  CHECK(message.find("did you mean 'expiration_time'") != std::string::npos);
  CHECK_FALSE(typo.is_configured());
  CHECK(dogpile::coerce_string_conf("600") == 600);
  CHECK(dogpile::coerce_string_conf("true") == true);
  CHECK(dogpile::coerce_string_conf("None").is_null());
}

TEST_CASE("guide: key manglers", "[guide]") {
  // [guide:manglers]
  auto hashed = dogpile::make_region({.key_mangler = dogpile::sha1_mangle_key});
  hashed.configure("memory");
  std::string k = hashed.mangle("some_key");  // "53def077a4264bd3183d4eb21b1f56f883e1b572"

  // Only keys of 250 bytes or more are hashed (memcached's limit):
  auto long_only = dogpile::make_region(
      {.key_mangler = dogpile::length_conditional_mangler(250, dogpile::sha1_mangle_key)});
  // [/guide:manglers]
  CHECK(k == "53def077a4264bd3183d4eb21b1f56f883e1b572");
  CHECK(long_only.mangle("short") == "short");
  CHECK(long_only.mangle(std::string(300, 'x')).size() == 40);
  hashed.set("some_key", 1);
  CHECK(hashed.backend()->get_object("53def077a4264bd3183d4eb21b1f56f883e1b572").has_value());
}

TEST_CASE("guide: writing and registering a backend", "[guide]") {
  // [guide:register_backend]
  dogpile::register_backend(
      "map", [](const nlohmann::json& /*arguments*/) { return std::make_shared<MapBackend>(); });
  auto region = dogpile::make_region();
  region.configure("map");
  region.set("a key with spaces", "v");  // stored under sha1("a key with spaces")
  // [/guide:register_backend]
  CHECK(region.get<std::string>("a key with spaces") == "v");
  CHECK(region.backend()->storage_key("a key with spaces") ==
        dogpile::sha1_mangle_key("a key with spaces"));
  CHECK(region.backend()->storage_key("plain") == "plain");
}

TEST_CASE("guide: cache_on_arguments", "[guide]") {
  auto region = dogpile::make_region();
  region.configure("memory", {.expiration_time = 10min});
  // [guide:decorator]
  int calls = 0;
  auto load = [&calls](int id) {
    ++calls;
    return load_user(id);
  };
  auto get_user = region.cache_on_arguments("app.get_user", load, {.expiration_time = 10min});
  User u = get_user(42);  // key "app.get_user|42"; created once, under the dogpile lock
  get_user(42);           // a hit: calls == 1

  get_user.set(User{42, "Alan"}, 42);             // the value first, then the arguments
  std::optional<User> cached = get_user.get(42);  // {42, "Alan"}
  User fresh = get_user.refresh(42);              // calls the function, stores the result
  get_user.invalidate(42);                        // removes the entry
  User direct = get_user.original()(42);          // the undecorated function
  std::string key = get_user.key(42);             // "app.get_user|42"
  // [/guide:decorator]
  CHECK(u == load_user(42));
  CHECK(cached == User{42, "Alan"});
  CHECK(fresh == load_user(42));
  CHECK(direct == load_user(42));
  CHECK(key == "app.get_user|42");
  CHECK(calls == 3);
  CHECK_FALSE(region.get<User>("app.get_user|42"));
}

TEST_CASE("guide: key generators", "[guide]") {
  auto region = dogpile::make_region();
  region.configure("memory");
  // [guide:key_generator]
  // Arguments reach a generator already converted by dogpile::to_key_string.
  auto by_colon = [](std::string_view ns, const std::vector<std::string>& args) {
    std::string key(ns);
    for (const auto& a : args) key += ":" + a;
    return key;
  };
  auto area = region.cache_on_arguments("geo.area", [](double w, double h) { return w * h; },
                                        {.key_generator = by_colon});
  double a = area(2.0, 3.5);  // key "geo.area:2.0:3.5"
  // For every decorator of a region: make_region({.function_key_generator = by_colon})
  // [/guide:key_generator]
  CHECK(a == 7.0);
  CHECK(area.key(2.0, 3.5) == "geo.area:2.0:3.5");
  CHECK(region.get<double>("geo.area:2.0:3.5") == 7.0);
}

TEST_CASE("guide: cache_multi_on_arguments", "[guide]") {
  auto region = dogpile::make_region();
  region.configure("memory", {.expiration_time = 10min});
  // [guide:decorator_multi]
  std::vector<int> loaded;
  auto get_users =
      region.cache_multi_on_arguments("app.get_users", [&loaded](const std::vector<int>& ids) {
        std::vector<User> out;
        for (int id : ids) {
          loaded.push_back(id);
          out.push_back(load_user(id));
        }
        return out;
      });
  std::vector<User> first = get_users(1, 2);    // keys "app.get_users|1", "app.get_users|2"
  std::vector<User> more = get_users(1, 2, 3);  // the function is called with {3} only
  get_users.invalidate(1);                      // also: set, get, refresh, original
  // [/guide:decorator_multi]
  CHECK(first == std::vector<User>{load_user(1), load_user(2)});
  CHECK(more == std::vector<User>{load_user(1), load_user(2), load_user(3)});
  CHECK(loaded == std::vector<int>{1, 2, 3});
  CHECK_FALSE(region.get<User>("app.get_users|1"));
  CHECK(region.get<User>("app.get_users|2") == load_user(2));
}

TEST_CASE("guide: codecs", "[guide]") {
  // [guide:codec]
  auto json = dogpile::make_region();  // JSON payload, dogpile.cache's envelope (the defaults)
  json.configure("memory_serialized");
  json.set("user:1", User{1, "Ada"});
  std::optional<std::string> raw = json.backend()->get("user:1");
  // *raw == R"({"ct": 1700000000.123456, "v": 2}|{"id":1,"name":"Ada"})"

  auto compact = dogpile::make_region({.codec = {.format = dogpile::Format::msgpack,
                                                 .envelope = dogpile::EnvelopeFormat::compact,
                                                 .compress_threshold = 4096}});  // zlib above
  compact.configure("memory_serialized");
  compact.set("user:1", User{1, "Ada"});
  std::optional<User> u = compact.get<User>("user:1");
  // [/guide:codec]
  REQUIRE(raw);
  CHECK(raw->rfind("{\"ct\": ", 0) == 0);
  CHECK(raw->find("\"v\": 2}|{\"id\":1,\"name\":\"Ada\"}") != std::string::npos);
  CHECK(u == User{1, "Ada"});
  CHECK(compact.backend()->get("user:1")->rfind("\xDCP", 0) == 0);
}

TEST_CASE("guide: types without a codec", "[guide]") {
  // [guide:no_codec]
  auto live = dogpile::make_region();
  live.configure("memory");  // keeps the object itself: no codec needed
  live.set("conn", std::make_shared<Connection>(Connection{7}));
  auto conn = live.get<std::shared_ptr<Connection>>("conn");  // the same shared_ptr

  auto bytes = dogpile::make_region();
  bytes.configure("memory_serialized");  // keeps bytes: Connection has no codec
  std::string message;
  try {
    bytes.set("conn", Connection{7});
  } catch (const dogpile::Error& e) {
    message = e.what();  // "cannot store a Connection in the 'memory_serialized' backend: ...
  }                      //  define to_json/from_json ... or specialize dogpile::Codec<...>"
  // [/guide:no_codec]
  REQUIRE(conn);
  CHECK((*conn)->fd == 7);
  CHECK(message.find("Connection") != std::string::npos);
  CHECK(message.find("to_json") != std::string::npos);
}

TEST_CASE("guide: max_bytes and weighers", "[guide]") {
  // [guide:weigher]
  auto memory = std::make_shared<dogpile::MemoryBackend>(
      dogpile::MemoryOptions{.max_bytes = 1 << 20});  // 1 MiB, weighing what values own
  auto region = dogpile::make_region();
  region.configure(memory);
  for (int i = 0; i < 1000; ++i) {
    region.set("page:" + std::to_string(i), std::string(10 * 1024, 'x'));  // 10 KiB each
  }
  // memory->bytes() <= 1 MiB: about 100 pages are kept, the rest were evicted

  // Blob's weight comes from its dogpile_weight() (or specialize dogpile::Weigher<Blob>):
  region.set("blob", std::make_shared<Blob>(Blob{std::make_unique<char[]>(4096), 4096}));
  // [/guide:weigher]
  CHECK(memory->bytes() <= std::size_t{1} << 20);
  CHECK(memory->size() < 110);
  CHECK(memory->size() > 80);
  CHECK(dogpile::weigh(Blob{nullptr, 4096}) == sizeof(Blob) + 4096);
  CHECK(dogpile::weigh(std::make_shared<Blob>(Blob{nullptr, 4096})) >= 4096);
}

TEST_CASE("guide: errors", "[guide]") {
  // [guide:errors]
  auto region = dogpile::make_region({.name = "users"});
  region.configure("memory");
  region.set("n", 1);
  std::string first, second;
  try {
    region.configure("memory");  // a second configure
  } catch (const dogpile::RegionAlreadyConfigured& e) {
    first = e.what();  // "region 'users' is already configured with the 'memory' backend; to
  }                    //  replace it, pass .replace_existing_backend = true in ConfigureOptions"
  try {
    region.get<std::string>("n");  // `memory` holds an int
  } catch (const dogpile::TypeMismatch& e) {
    second = e.what();  // "cache key 'n' holds a int, not the requested std::string"
  } catch (const dogpile::Error& e) {
    // every dogpile-cpp exception derives from dogpile::Error (a std::runtime_error)
  }
  // [/guide:errors]
  CHECK(first.find(".replace_existing_backend = true") != std::string::npos);
  CHECK(second.find("std::string") != std::string::npos);

  // The guide's error table, row by row.
  auto fresh = dogpile::make_region({.name = "fresh"});
  CHECK_THROWS_AS(fresh.get<int>("k"), dogpile::RegionNotConfigured);
  CHECK_THROWS_AS(region.configure("memory"), dogpile::RegionAlreadyConfigured);
  CHECK_THROWS_AS(region.configure("memroy", {.replace_existing_backend = true}),
                  dogpile::PluginNotFound);
  CHECK_THROWS_AS(region.configure("memory", {.arguments = {{"max_entires", 10}},
                                              .replace_existing_backend = true}),
                  dogpile::ValidationError);
  CHECK_THROWS_AS(region.get<std::string>("n"), dogpile::TypeMismatch);

  auto bytes = dogpile::make_region();
  bytes.configure("memory_serialized");
  bytes.set("user", User{1, "Ada"});
  CHECK_THROWS_AS(bytes.get<int>("user"), dogpile::TypeMismatch);       // an object is not an int
  CHECK(bytes.get<std::string>("user") == R"({"id":1,"name":"Ada"})");  // strings read bytes
  CHECK(bytes.get<std::vector<std::uint8_t>>("user").has_value());
  bytes.backend()->set("garbage", "not an envelope");
  CHECK_FALSE(bytes.get<User>("garbage"));  // undecodable: a miss
  bytes.set("big", 300);
  CHECK_THROWS_AS(bytes.get<std::uint8_t>("big"), dogpile::TypeMismatch);  // never narrowed
  CHECK_THROWS_AS(dogpile::make_region().get_or_create("k", [] { return 1; }),
                  dogpile::RegionNotConfigured);
}

#if DOGPILE_GUIDE_DISK
TEST_CASE("guide: disk backend", "[guide]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("dogpile-guide-disk-" + std::to_string(std::random_device{}()));
  std::filesystem::remove_all(dir);
  // [guide:disk]
  auto region = dogpile::make_region({.name = "reports"});
  region.configure("disk", {.expiration_time = 10min,
                            .arguments = {{"directory", dir.string()},
                                          {"size_limit", 1 << 30},
                                          {"lock_timeout", 60}}});  // lease of the lock, seconds
  std::string r = region.get_or_create("report:1", [] { return "big report"; });
  // [/guide:disk]
  CHECK(r == "big report");
  CHECK(region.get<std::string>("report:1") == "big report");
  std::filesystem::remove_all(dir);
}
#endif
