// The `redis` backend's near cache (an in-process L1 kept coherent by CLIENT TRACKING) against
// the `memory` backend, in the same run, on a redis-server the test harness starts
// (tests/support/servers.hpp).
//
// Families (ratio table at the end, see support/ratio_reporter.hpp; lower is better):
//   near_hit/...          region.get<std::string> of a 200-byte value served from L1 vs the same
//                         region.get on a region over `memory` (the goal: <= 1.2x)
//   near_hit_bounded/...  the same L1 hit vs region.get on a `memory` backend bounded like L1
//                         (max_bytes, W-TinyLFU): what is left once both pay the eviction policy
//   near_backend_hit/...  the backends alone (no region, no envelope): RedisBackend::get from L1
//                         vs MemoryBackend::get
//   near_miss/...         the same get with no near cache (a round trip) vs from L1: how much a
//                         hit saves
// Then (unless --invalidation_trials=0) the invalidation latency: a second RedisBackend without
// a near cache (another client, as another process would be) overwrites a key the reader holds
// in L1; measured from the writer's set() returning to the reader's first get() that returns the
// new value (the reader polls get() on another thread: every poll before the invalidation is an
// L1 hit on the old value). p50 / p99 / p99.9 / max over --invalidation_trials (default 10,000).
//
// Run (Release): ./bench/redis_near_bench --benchmark_repetitions=5
//   --benchmark_enable_random_interleaving=true
#include <dogpile/backends/redis.hpp>
#include <dogpile/dogpile.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/ratio_reporter.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;

namespace {

constexpr std::size_t kValueBytes = 200;

struct Env {
  std::unique_ptr<dogpile::test::RedisServer> server;
  std::shared_ptr<dogpile::RedisBackend> near;   // near cache on
  std::shared_ptr<dogpile::RedisBackend> plain;  // near cache off
  std::shared_ptr<dogpile::CacheBackend> memory;
  std::shared_ptr<dogpile::CacheBackend> memory_bounded;
  dogpile::CacheRegion near_region = dogpile::make_region({.name = "near"});
  dogpile::CacheRegion plain_region = dogpile::make_region({.name = "plain"});
  dogpile::CacheRegion memory_region = dogpile::make_region({.name = "memory"});
  dogpile::CacheRegion bounded_region = dogpile::make_region({.name = "memory_bounded"});
  std::string key = "bench:user:profile:42";
  std::string value = std::string(kValueBytes, 'v');
};
std::unique_ptr<Env> env;

dogpile::RedisOptions options(int port, bool near) {
  dogpile::RedisOptions o{.host = "127.0.0.1", .port = port};
  if (near) o.near_cache = {.max_bytes = std::size_t{64} << 20, .max_staleness = 1s};
  return o;
}

void setup() {
  env = std::make_unique<Env>();
  Env& e = *env;
  e.server = std::make_unique<dogpile::test::RedisServer>();
  e.near = std::make_shared<dogpile::RedisBackend>(options(e.server->port(), true));
  e.plain = std::make_shared<dogpile::RedisBackend>(options(e.server->port(), false));
  e.memory = dogpile::make_backend("memory", nlohmann::json::object());
  e.memory_bounded = dogpile::make_backend("memory", {{"max_bytes", std::size_t{64} << 20}});
  e.near_region.configure(e.near, {.expiration_time = 10min});
  e.plain_region.configure(e.plain, {.expiration_time = 10min});
  e.memory_region.configure(e.memory, {.expiration_time = 10min});
  e.bounded_region.configure(e.memory_bounded, {.expiration_time = 10min});
  e.plain_region.set(e.key, e.value);
  e.memory_region.set(e.key, e.value);
  e.bounded_region.set(e.key, e.value);
  // Wait until tracking is up and the key is in L1 (the first reads fill it).
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (e.near->near_cache_stats().l1_hits == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("the near cache never served a hit (tracking: " +
                               std::to_string(e.near->near_cache_stats().tracking) + ")");
    }
    (void)e.near_region.get<std::string>(e.key);
    std::this_thread::sleep_for(1ms);
  }
  std::printf("redis-server on port %d; %zu-byte string values\n", e.server->port(), kValueBytes);
}

template <dogpile::CacheRegion Env::*Region>
void region_get(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    auto v = (e.*Region).get<std::string>(e.key);
    if (!v) {
      state.SkipWithError("region get missed");
      break;
    }
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

template <class B, std::shared_ptr<B> Env::*Backend>
void backend_get(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    auto v = (e.*Backend)->get(e.key);
    if (!v) {
      state.SkipWithError("backend get missed");
      break;
    }
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

void register_benchmarks() {
  benchmark::RegisterBenchmark("near_hit/floor_memory_region_get", region_get<&Env::memory_region>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("near_hit/near_region_get", region_get<&Env::near_region>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("near_hit_bounded/floor_bounded_memory_region_get",
                               region_get<&Env::bounded_region>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("near_hit_bounded/near_region_get", region_get<&Env::near_region>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("near_backend_hit/floor_memory_backend_get",
                               backend_get<dogpile::CacheBackend, &Env::memory>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("near_backend_hit/near_backend_get",
                               backend_get<dogpile::RedisBackend, &Env::near>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("near_miss/floor_near_region_get", region_get<&Env::near_region>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("near_miss/no_near_cache_region_get", region_get<&Env::plain_region>)
      ->UseRealTime();
}

double percentile(std::vector<double>& v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// See the file comment. Backends only (no region): the value is the raw stored bytes.
void invalidation_latency(int trials) {
  Env& e = *env;
  const std::string key = "bench:near:invalidate";
  e.plain->set(key, "v0");
  std::atomic<long> want{-1};  // version the reader waits for; -1 = idle, -2 = stop
  std::atomic<bool> seen{false};
  std::thread reader([&] {
    for (;;) {
      const long w = want.load(std::memory_order_acquire);
      if (w == -2) return;
      if (w < 0 || seen.load(std::memory_order_relaxed)) {
        (void)e.near->get(key);  // keep the key in L1 while idle
        std::this_thread::yield();
        continue;
      }
      if (e.near->get(key) == "v" + std::to_string(w)) seen.store(true, std::memory_order_release);
      // Polls, but gives way: with two spinning threads on a 2-core machine the subscriber
      // thread and redis-server would wait for the scheduler's tick (4 ms at HZ=250), and the
      // tail would measure that, not the invalidation.
      std::this_thread::yield();
    }
  });
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(trials));
  const auto hits0 = e.near->near_cache_stats().l1_hits;
  for (int i = 1; i <= trials; ++i) {
    // The reader holds the previous version in L1 before the write.
    while (e.near->get(key) != "v" + std::to_string(i - 1)) {
    }
    (void)e.near->get(key);
    seen.store(false, std::memory_order_relaxed);
    want.store(i, std::memory_order_release);
    e.plain->set(key, "v" + std::to_string(i));
    const auto t0 = std::chrono::steady_clock::now();
    while (!seen.load(std::memory_order_acquire)) {
      std::this_thread::yield();
    }
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    want.store(-1, std::memory_order_release);
  }
  want.store(-2);
  reader.join();
  const auto st = e.near->near_cache_stats();
  std::printf(
      "\ninvalidation latency over %d overwrites by another client (us, from its set() returning "
      "to the reader's first get() of the new value):\n  p50 %.1f  p99 %.1f  p99.9 %.1f  max "
      "%.1f\n  (L1 hits meanwhile: %llu; invalidations: %llu; flushes: %llu, last: '%s')\n",
      trials, percentile(us, 0.5), percentile(us, 0.99), percentile(us, 0.999), percentile(us, 1.0),
      static_cast<unsigned long long>(st.l1_hits - hits0),
      static_cast<unsigned long long>(st.invalidations),
      static_cast<unsigned long long>(st.flushes), st.last_flush_reason.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int trials = 10'000;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.rfind("--invalidation_trials=", 0) == 0) {
      trials = std::atoi(argv[i] + std::strlen("--invalidation_trials="));
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  try {
    setup();
    register_benchmarks();
    const int rc = dogpile::bench::run_with_ratios(n, args.data());
    if (rc != 0) return rc;
    if (trials > 0) invalidation_latency(trials);
    env.reset();  // clients first, then the server and its temporary directory
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "redis_near_bench: %s\n", ex.what());
    return 1;
  }
  return 0;
}
