// The consumer program shared by the find_package / add_subdirectory / FetchContent tests. It
// compiles against the installed public headers only, links through the exported targets, and
// uses the SPEC's names as written there (§2-§4; §6 with the disk component, §5 with redis),
// checking that it sees dogpile's behaviour. Exit code = the first failed check.
#include <dogpile/dogpile.hpp>
#ifdef DOGPILE_CONSUMER_DISK
#include <dogpile/all.hpp>
#include <dogpile/backends/disk.hpp>
#include <dogpile/disk/cache.hpp>
#include <dogpile/disk/deque.hpp>
#include <dogpile/disk/fanout.hpp>
#include <dogpile/disk/index.hpp>

#include <filesystem>
#endif
#ifdef DOGPILE_CONSUMER_REDIS
#include <dogpile/backends/redis.hpp>
#endif

#ifdef DOGPILE_CONSUMER_QUERY
#include <dogpile/query.hpp>
#include <dogpile/query/sqlite.hpp>
#endif

#ifdef DOGPILE_CONSUMER_MEMCACHED_DBM
#include <dogpile/backends/dbm.hpp>
#include <dogpile/backends/memcached.hpp>

#include <filesystem>
#endif

#include <iostream>
#include <span>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {
struct User {
  int id = 0;
  std::string name;
  bool valid = true;
};
void to_json(nlohmann::json& j, const User& u) { j = {{"id", u.id}, {"name", u.name}}; }
void from_json(const nlohmann::json& j, User& u) {
  u.id = j.at("id").get<int>();
  u.name = j.at("name").get<std::string>();
}

// A type a user already has, with no JSON support: fine on `memory`.
struct Connection {
  int fd = 0;
};

int loads = 0;
User load_user(int id) {
  ++loads;
  return {id, "user" + std::to_string(id)};
}
std::vector<User> load_users(const std::vector<int>& ids) {
  std::vector<User> out;
  for (int id : ids) out.push_back(load_user(id));
  return out;
}

int failed = 0;
void check(bool ok, int code, const char* what) {
  if (!ok && failed == 0) {
    std::cerr << "consumer check " << code << " failed: " << what << "\n";
    failed = code;
  }
}
}  // namespace

int main() {
  dogpile::ManualClock clock;
  // §2 regions, by name, with the JSON-codec byte backend and a SHA-1 key mangler.
  dogpile::CacheRegion region = dogpile::make_region(
      {.name = "users",
       .key_mangler = dogpile::length_conditional_mangler(16, dogpile::sha1_mangle_key),
       .codec = {.compress_threshold = 64},
       .clock = clock});
  region.configure("dogpile.cache.memory_serialized", {.expiration_time = 10min});

  User u = region.get_or_create("user:1", [] { return load_user(1); });
  User w = region.get_or_create(
      "user:1", [] { return load_user(1); },
      {.expiration_time = 5min, .should_cache = [](const User& x) { return x.valid; }});
  check(u.name == "user1" && w.name == "user1" && loads == 1, 1, "get_or_create creates once");
  clock.advance(11min);  // expired: the next call regenerates
  region.get_or_create("user:1", [] { return load_user(1); });
  check(loads == 2, 2, "an expired value is regenerated");

  region.set("user:2", User{2, "two"});
  std::optional<User> g = region.get<User>("user:2");
  auto many = region.get_multi<User>({"user:2", "missing"});
  region.set_multi<User>({{"a", User{3, "a"}}, {"b", User{4, "b"}}});
  auto meta = region.get_value_metadata<User>("user:2");
  check(g && g->name == "two" && many[0] && !many[1] && meta && meta->age() == 0s, 3,
        "get/get_multi/metadata");
  std::vector<User> vs =
      region.get_or_create_multi<User>({"m1", "m2", "m1"}, [](std::span<const std::string> keys) {
        std::vector<User> out;
        for (const auto& k : keys) out.push_back({0, k});
        return out;
      });
  check(vs.size() == 3 && vs[0].name == "m1" && vs[2].name == "m1", 4, "get_or_create_multi");
  region.erase("user:2");
  region.erase_multi({"a", "b"});
  check(!region.get<User>("user:2") && !region.key_is_locked("user:1"), 5, "erase / key_is_locked");
  clock.advance(1s);  // invalidation applies to values created strictly before it
  region.invalidate({.hard = false});
  region.invalidate();
  check(!region.get<User>("user:1"), 6, "hard invalidation");

  // §3 decorators.
  clock.advance(1s);
  auto get_user = region.cache_on_arguments("app.get_user", load_user, {.expiration_time = 10min});
  const int before = loads;
  User a = get_user(42);
  User b = get_user(42);
  get_user.set(User{42, "set"}, 42);
  std::optional<User> got = get_user.get(42);
  get_user.invalidate(42);
  User fresh = get_user.refresh(42);
  get_user.original()(42);
  check(a.name == "user42" && b.name == "user42" && got && got->name == "set" &&
            fresh.name == "user42" && loads == before + 3,
        7, "cache_on_arguments");
  auto get_users = dogpile::cache_multi_on_arguments(region, "app.get_users", load_users);
  std::vector<User> us = get_users(1, 2, 3);
  check(us.size() == 3 && us[1].id == 2, 8, "cache_multi_on_arguments");
  const auto stats = region.stats();
  check(stats.hits > 0 && stats.creations > 0, 9, "stats");

  // Errors have one root.
  try {
    dogpile::make_region().configure("no-such-backend");
    check(false, 10, "PluginNotFound");
  } catch (const dogpile::Error&) {
  }

  // Real C++ types: a non-serializable type on `memory`, max_bytes that weighs what strings own,
  // and errors that say what to do.
  {
    auto live = dogpile::make_region({.name = "live"});
    live.configure("memory");
    auto conn = std::make_shared<Connection>(Connection{3});
    check(live.get_or_create("conn", [&] { return conn; }) == conn, 40, "shared_ptr on memory");
    check(live.get_or_create("lit", [] { return "text"; }) == "text", 41, "literal as string");
    bool said = false;
    try {
      live.configure("memory");
    } catch (const dogpile::RegionAlreadyConfigured& e) {
      said = std::string(e.what()).find(".replace_existing_backend = true") != std::string::npos;
    }
    check(said, 42, "RegionAlreadyConfigured says what to do");
    auto bytes = dogpile::make_region();
    bytes.configure("memory_serialized");
    said = false;
    try {
      bytes.set("c", Connection{});
    } catch (const dogpile::Error& e) {
      said = std::string(e.what()).find("Connection") != std::string::npos;
    }
    check(said, 43, "no codec on a byte backend names the type");
    auto bounded = std::make_shared<dogpile::MemoryBackend>(
        dogpile::MemoryOptions{.shards = 1, .max_bytes = 1 << 20});
    auto small = dogpile::make_region();
    small.configure(bounded);
    // (Appended, not "k" + std::to_string(i): gcc 12 at -O3 reports that as a -Wrestrict
    // overlap inside libstdc++, a known false positive that -Werror would turn into an error.)
    for (int i = 0; i < 1000; ++i) {
      std::string key = "k";
      key += std::to_string(i);
      small.set(key, std::string(10240, 'v'));
    }
    check(bounded->bytes() <= (1u << 20) && bounded->size() <= 102, 44, "max_bytes weighs strings");
  }
#ifdef DOGPILE_CONSUMER_DISK
  // §6 disk cache and the disk region backend.
  const auto dir = std::filesystem::temp_directory_path() / "dogpile-consumer-disk";
  std::filesystem::remove_all(dir);
  {
    dogpile::DiskCache cache((dir / "cache").string(),
                             {.size_limit = 1ull << 30,
                              .eviction_policy = dogpile::EvictionPolicy::least_recently_used});
    cache.set("k", "v", {.expire = 5s, .tag = "data"});
    std::optional<std::string> v = cache.get<std::string>("k");
    bool added = cache.add("k", std::string("other"));
    std::int64_t n = cache.incr("hits");
    cache.decr("hits", 5);
    auto p = cache.pop<std::string>("k");
    bool gone = cache.erase("k");
    bool touched = cache.touch("k", 10s);
    check(v == "v" && !added && n == 1 && p == "v" && !gone && !touched && !cache.contains("k"), 20,
          "DiskCache basics");
    auto key = cache.push("job");
    cache.push("urgent", {.side = dogpile::Side::front});
    std::optional<std::pair<dogpile::Key, std::string>> job = cache.pull<std::string>();
    check(job && job->second == "urgent", 21, "push/pull");
    (void)key;
    cache.peek<std::string>();
    cache.peekitem<std::string>();
    {
      auto tx = cache.transact();
      cache.set("in-tx", std::int64_t{1});
    }
    auto fib = cache.memoize("fib", [](int x) { return x * 2; }, {.expire = 1min, .tag = "fib"});
    check(fib(21) == 42 && fib(21) == 42, 22, "memoize");
    auto [hits, misses] = cache.stats();
    (void)hits;
    (void)misses;
    check(cache.size() > 0 && cache.volume() > 0, 23, "size/volume");
    cache.expire();
    cache.evict("data");
    cache.cull();
    auto warnings = cache.check(/*fix=*/true);
    check(warnings.empty(), 24, "check");
    cache.clear();
    dogpile::FanoutCache fan((dir / "fan").string(), {.shards = 8, .timeout = 10ms});
    fan.set("f", std::string("x"));
    check(fan.get<std::string>("f") == "x", 25, "FanoutCache");
    // §6 Deque and Index, with a user type through its Codec.
    dogpile::Deque<User> queue((dir / "deque").string(), {.maxlen = 2});
    queue.append(load_user(1));
    queue.appendleft(load_user(2));
    queue.append(load_user(3));  // maxlen 2: user 2 at the front goes
    dogpile::Index<std::int64_t> index((dir / "index").string());
    index.set("a", 1);
    index.set("b", 2);
    check(queue.size() == 2 && queue.popleft().id == 1 && queue.peek().id == 3 &&
              index.at("a") == 1 && index.popitem().first == dogpile::Key("b"),
          28, "Deque/Index");
  }
  dogpile::CacheRegion disk_region = dogpile::make_region({.name = "disk"});
  disk_region.configure(
      "disk", {.expiration_time = 10min, .arguments = {{"directory", (dir / "region").string()}}});
  check(disk_region.get_or_create("k", [] { return std::string("v"); }) == "v" &&
            disk_region.get<std::string>("k") == "v",
        26, "disk region backend");
  // A config-driven program: every backend of the installation by one call.
  dogpile::register_all_backends();
  dogpile::CacheRegion from_config = dogpile::make_region({.name = "config"});
  from_config.configure_from_config({{"cache.backend", "fanout"},
                                     {"cache.expiration_time", "600"},
                                     {"cache.arguments.directory", (dir / "cfg").string()},
                                     {"cache.arguments.shards", "2"}},
                                    "cache.");
  check(from_config.get_or_create("k", [] { return 7; }) == 7, 27, "register_all_backends");
  std::filesystem::remove_all(dir);
  std::cout << "disk ";
#endif
#ifdef DOGPILE_CONSUMER_MEMCACHED_DBM
  // §5 dbm and memcached, configured by name with dogpile's argument names.
  {
    const auto dbm_dir = std::filesystem::temp_directory_path() / "dogpile-consumer-dbm";
    std::filesystem::remove_all(dbm_dir);
    std::filesystem::create_directories(dbm_dir);
    dogpile::CacheRegion dbm_region = dogpile::make_region({.name = "dbm"});
    dbm_region.configure(
        "dogpile.cache.dbm",
        {.expiration_time = 10min, .arguments = {{"filename", (dbm_dir / "cache.dbm").string()}}});
    check(dbm_region.get_or_create("k", [] { return std::string("v"); }) == "v" &&
              dbm_region.get<std::string>("k") == "v",
          30, "dbm region backend");
    std::filesystem::remove_all(dbm_dir);
    // Nothing listens on port 1: the call fails at once with BackendError, it does not hang.
    dogpile::CacheRegion mc = dogpile::make_region({.name = "mc"});
    mc.configure("memcached", {.arguments = {{"url", "127.0.0.1:1"},
                                             {"distributed_lock", true},
                                             {"lock_timeout", 30},
                                             {"socket_timeout", 1}}});
    bool failed_fast = false;
    try {
      (void)mc.get<std::string>("k");
    } catch (const dogpile::BackendError&) {
      failed_fast = true;
    }
    check(failed_fast, 31, "memcached backend reports a dead server");
    std::cout << "memcached dbm ";
  }
#endif
#ifdef DOGPILE_CONSUMER_REDIS
  // §5 the Redis backends, configured by name with dogpile's argument names. Constructing a
  // backend never dials; nothing listens on port 1, so a call fails at once with BackendError.
  {
    dogpile::CacheRegion users = dogpile::make_region({.name = "redis"});
    users.configure("redis", {.expiration_time = 10min,
                              .arguments = {{"url", "redis://127.0.0.1:1/0"},
                                            {"distributed_lock", true},
                                            {"lock_timeout", 30},
                                            {"socket_timeout", 1},
                                            {"socket_connect_timeout", 0.5},
                                            {"thread_local_lock", false}}});
    bool failed_fast = false;
    try {
      (void)users.get<User>("user:1");
    } catch (const dogpile::BackendError&) {
      failed_fast = true;
    }
    check(failed_fast, 50, "redis backend reports a dead server as BackendError");
    // treat_as_miss keeps serving: the creator runs, the lock degrades to in-process exclusion.
    int errors = 0;
    dogpile::CacheRegion serving = dogpile::make_region(
        {.name = "serving",
         .on_backend_error = dogpile::treat_as_miss([&](const std::exception&) { ++errors; })});
    serving.configure("dogpile.cache.redis", {.arguments = {{"port", 1},
                                                            {"host", "127.0.0.1"},
                                                            {"distributed_lock", true},
                                                            {"socket_connect_timeout", 0.5}}});
    check(
        serving.get_or_create("user:1", [] { return load_user(1); }).name == "user1" && errors > 0,
        51, "treat_as_miss serves without Redis");
    // The sentinel and cluster names are registered; their clients dial at the first call.
    // (A list of [host, port] pairs needs json::array: {{"h", 1}} would be the object {"h": 1}.)
    dogpile::make_region().configure(
        "redis_sentinel",
        {.arguments = {
             {"sentinels", nlohmann::json::array({nlohmann::json::array({"127.0.0.1", 1})})},
             {"service_name", "mymaster"}}});
    dogpile::make_region().configure(
        "redis_cluster", {.arguments = {{"startup_nodes", {"127.0.0.1:1", "127.0.0.1:2"}}}});
    auto direct = std::make_shared<dogpile::RedisBackend>(
        dogpile::RedisOptions{.host = "127.0.0.1", .port = 1, .distributed_lock = true});
    check(direct->lock_key("k") == "_lockk", 52, "dogpile's lock key");
    bool rejected = false;
    try {
      dogpile::make_region().configure("redis", {.arguments = {{"lock_prefix", "bad prefix!"}}});
    } catch (const dogpile::ValidationError&) {
      rejected = true;
    }
    check(rejected, 53, "a bad lock_prefix is a ValidationError");
  }
  std::cout << "redis ";
#endif
#ifdef DOGPILE_CONSUMER_QUERY
  // §6b a cached query on an in-memory SQLite database: the second call is a hit.
  {
    auto db = dogpile::query::SqliteDatabase::open(":memory:");
    db.exec_script("CREATE TABLE t(id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'ed');");
    dogpile::CacheRegion qr = dogpile::make_region({.name = "query"});
    qr.configure("memory_serialized");
    dogpile::query::QueryCache cache(qr);
    auto name = [](const dogpile::query::Row& r) { return r.get<std::string>(0); };
    const auto first = cache.one(db, "t", "SELECT name FROM t WHERE id = ?", {1}, name);
    db.execute("UPDATE t SET name = 'edward'");
    const auto second = cache.one(db, "t", "SELECT name FROM t WHERE id = ?", {1}, name);
    check(first == "ed" && second == "ed", 60, "query component: a cached query");
    std::cout << "query ";
  }
#endif
  if (failed != 0) return failed;
  std::cout << "consumer ok\n";
  return 0;
}
