// dogpile::query: a cached query hit against (1) the floor "plain region.get of the same rows"
// (the rows already in the region under a fixed key: what a hand-written cache-aside costs) and
// (2) the uncached SQLite query of the same rows through the same driver and mapper (the
// speed-up). Backends: `memory` (live objects), `memory_serialized` (codec bytes, as Redis
// or memcached would store them) and, when the redis component is built, `redis` on a
// redis-server the test harness starts (a hit is one round trip there: the generation and the
// rows in one MGET). Rows: 1 user (`one`) and 20 users (`all`). The `read` family
// isolates the region read of a hit (generation + entry, one get_multi) from the key derivation.
#include <dogpile/dogpile.hpp>
#include <dogpile/query.hpp>
#include <dogpile/query/sqlite.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/ratio_reporter.hpp"

#ifdef DOGPILE_BENCH_QUERY_REDIS
#include <dogpile/backends/redis.hpp>

#include "support/servers.hpp"
#endif

namespace dq = dogpile::query;

namespace {

struct User {
  std::int64_t id = 0;
  std::string name;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(User, id, name)
};
User to_user(const dq::Row& r) { return {r.get<std::int64_t>(0), r.get<std::string>(1)}; }

const char* const kOne = "SELECT id, name FROM users WHERE id = ?";
const char* const kMany = "SELECT id, name FROM users WHERE id BETWEEN ? AND ? ORDER BY id";

dq::SqliteDatabase& db() {
  static dq::SqliteDatabase* d = [] {
    const auto path = std::filesystem::temp_directory_path() / "dogpile-query-bench.db";
    std::filesystem::remove(path);
    auto* out = new dq::SqliteDatabase(dq::SqliteDatabase::open(path.string()));
    out->exec_script("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)");
    for (int i = 1; i <= 1000; ++i) {
      const std::vector<dq::Value> p = {std::int64_t{i}, "user number " + std::to_string(i)};
      out->execute("INSERT INTO users VALUES (?, ?)", p);
    }
    return out;
  }();
  return *d;
}

// Backend kinds (the first benchmark argument): 0 memory, 1 memory_serialized, 2 redis.
dogpile::CacheRegion& region(int kind) {
  static auto objects = [] {
    auto r = dogpile::make_region();
    r.configure("memory", {.expiration_time = std::chrono::minutes(10)});
    return r;
  }();
  static auto bytes = [] {
    auto r = dogpile::make_region();
    r.configure("memory_serialized", {.expiration_time = std::chrono::minutes(10)});
    return r;
  }();
#ifdef DOGPILE_BENCH_QUERY_REDIS
  if (kind == 2) {
    static dogpile::test::RedisServer server;
    static auto redis = [] {
      auto r = dogpile::make_region();
      r.configure(std::make_shared<dogpile::RedisBackend>(
                      dogpile::RedisOptions{.host = "127.0.0.1", .port = server.port()}),
                  {.expiration_time = std::chrono::minutes(10)});
      return r;
    }();
    return redis;
  }
#endif
  return kind == 1 ? bytes : objects;
}

std::vector<User> uncached(bool many) {
  std::vector<User> rows;
  const std::vector<dq::Value> p1 = {std::int64_t{7}};
  const std::vector<dq::Value> p2 = {std::int64_t{100}, std::int64_t{119}};
  db().execute(many ? kMany : kOne, many ? std::span<const dq::Value>(p2) : p1,
               [&](const dq::Row& r) { rows.push_back(to_user(r)); });
  return rows;
}

// Floor: region.get of the rows under a fixed key (stored once).
void floor_region_get(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const bool many = state.range(1) != 0;
  auto& r = region(kind);
  const std::string key = many ? "plain:users:100-119" : "plain:user:7";
  r.set(key, uncached(many));
  for (auto _ : state) {
    auto rows = r.get<std::vector<User>>(key);
    benchmark::DoNotOptimize(rows);
  }
  state.SetItemsProcessed(state.iterations());
}

void cached_query(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const bool many = state.range(1) != 0;
  dq::QueryCache cache(region(kind));
  // Warm: the database and the entry exist before the timing (a hit is what is measured).
  if (many) {
    cache.all(db(), "bench", kMany, {100, 119}, to_user);
  } else {
    cache.one(db(), "bench", kOne, {7}, to_user);
  }
  for (auto _ : state) {
    if (many) {
      auto rows = cache.all(db(), "bench", kMany, {100, 119}, to_user);
      benchmark::DoNotOptimize(rows);
    } else {
      auto row = cache.one(db(), "bench", kOne, {7}, to_user);
      benchmark::DoNotOptimize(row);
    }
  }
  state.SetItemsProcessed(state.iterations());
}

// The region read a hit makes, alone: the namespace's generation and the entry in one
// get_multi_cached (no key derivation, no lock): what one round trip for two values costs
// against `floor_region_get`'s one value.
void two_key_read(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const bool many = state.range(1) != 0;
  dq::QueryCache cache(region(kind));
  const std::string key =
      many ? cache.key("bench", kMany, {100, 119}) : cache.key_one("bench", kOne, {7});
  if (many) {
    cache.all(db(), "bench", kMany, {100, 119}, to_user);
  } else {
    cache.one(db(), "bench", kOne, {7}, to_user);
  }
  const auto& r = cache.region();
  for (auto _ : state) {
    auto got = r.get_multi_cached<std::string, dq::detail::Entry<User>>(
        {dq::QueryCache::gen_key("bench"), key}, 1, {.ignore_expiration = true});
    benchmark::DoNotOptimize(got);
  }
  state.SetItemsProcessed(state.iterations());
}

void uncached_sqlite(benchmark::State& state) {
  const bool many = state.range(1) != 0;
  for (auto _ : state) {
    auto rows = uncached(many);
    benchmark::DoNotOptimize(rows);
  }
  state.SetItemsProcessed(state.iterations());
}

// Args: {backend kind, 20 rows}.
void args(benchmark::internal::Benchmark* b) {
#ifdef DOGPILE_BENCH_QUERY_REDIS
  for (int s : {0, 1, 2}) {
#else
  for (int s : {0, 1}) {
#endif
    for (int m : {0, 1}) b->Args({s, m});
  }
}

}  // namespace

BENCHMARK(floor_region_get)->Name("hit/floor_region_get")->Apply(args)->UseRealTime();
BENCHMARK(cached_query)->Name("hit/query_cache")->Apply(args)->UseRealTime();
// Where the hit's time goes: the floor again, against the two-value read alone.
BENCHMARK(floor_region_get)->Name("read/floor_region_get")->Apply(args)->UseRealTime();
BENCHMARK(two_key_read)->Name("read/gen_and_entry")->Apply(args)->UseRealTime();
// The speed-up family: here the uncached query is the floor, so "x floor" < 1 is the speed-up.
BENCHMARK(uncached_sqlite)->Name("vs_sqlite/floor_uncached_sqlite")->Apply(args)->UseRealTime();
BENCHMARK(cached_query)->Name("vs_sqlite/query_cache")->Apply(args)->UseRealTime();

int main(int argc, char** argv) { return dogpile::bench::run_with_ratios(argc, argv); }
