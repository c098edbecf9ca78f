// `region.get` hits on the `memory` backend against the containers a user would otherwise
// reach for, in the same run: tbb::concurrent_hash_map (find under an accessor, copy the value
// out) and a mutex-guarded std::unordered_map<std::string, std::string> (find, copy). 16-byte
// keys, 32-byte std::string values, 1,000 and 100,000 keys, every get hits, keys drawn from a
// fixed random sequence; 1 and 2 threads. Every variant copies the value out (a region returns
// a value, not a reference), so each one allocates the same 32-byte string per hit.
//
//   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DDOGPILE_BUILD_BENCH=ON
//   cmake --build build-rel --target region_hit_bench && build-rel/bench/region_hit_bench
// (built only when CMake finds TBB: Debian's libtbb-dev, a bench-only dependency)
//
// Deterministic counts, where the timings cannot resolve a difference (at 100,000 keys the
// machine's shared caches move every variant by ±50%): `--loop=VARIANT,KEYS,OPS` fills that
// variant (tbb, mutex, unbounded or tiny_lfu) with KEYS keys, then runs OPS hits on one thread
// inside `hit_loop` and exits. Under callgrind with a simulated cache, the collected totals
// divided by OPS are instructions and cache misses per hit (docs/benchmarks.md):
//   valgrind --tool=callgrind --cache-sim=yes --D1=32768,8,64 --LL=524288,8,64
//            --toggle-collect='*hit_loop*'
//            build-rel/bench/region_hit_bench --loop=tiny_lfu,100000,200000

#include <benchmark/benchmark.h>
#include <tbb/concurrent_hash_map.h>

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dogpile/region.hpp"
#include "support/ratio_reporter.hpp"

namespace {

constexpr std::size_t kSequence = 1 << 16;

struct Workload {
  std::vector<std::string> keys;
  std::vector<std::string> values;
  std::vector<std::uint32_t> sequence;  // indexes into keys
  explicit Workload(std::size_t n) {
    char buf[32];
    for (std::size_t i = 0; i < n; ++i) {
      std::snprintf(buf, sizeof buf, "key:%012zu", i);  // 16 bytes
      keys.emplace_back(buf);
      values.emplace_back(32, static_cast<char>('a' + i % 26));
    }
    std::mt19937 rng(12345);
    sequence.resize(kSequence);
    for (auto& s : sequence) s = static_cast<std::uint32_t>(rng() % n);
  }
};
const Workload& workload(std::size_t n) {
  static const Workload small(1'000);
  static const Workload large(100'000);
  return n == 1'000 ? small : large;
}

using TbbMap = tbb::concurrent_hash_map<std::string, std::string>;
TbbMap& tbb_map(std::size_t n) {
  static TbbMap* maps[2] = {nullptr, nullptr};
  static std::once_flag once[2];
  const int slot = n == 1'000 ? 0 : 1;
  std::call_once(once[slot], [&] {
    auto* m = new TbbMap;
    const auto& w = workload(n);
    for (std::size_t i = 0; i < w.keys.size(); ++i) m->insert({w.keys[i], w.values[i]});
    maps[slot] = m;
  });
  return *maps[slot];
}

struct MutexMap {
  std::mutex mutex;
  std::unordered_map<std::string, std::string> map;
};
MutexMap& mutex_map(std::size_t n) {
  static MutexMap* maps[2] = {nullptr, nullptr};
  static std::once_flag once[2];
  const int slot = n == 1'000 ? 0 : 1;
  std::call_once(once[slot], [&] {
    auto* m = new MutexMap;
    const auto& w = workload(n);
    for (std::size_t i = 0; i < w.keys.size(); ++i) m->map.emplace(w.keys[i], w.values[i]);
    maps[slot] = m;
  });
  return *maps[slot];
}

dogpile::CacheRegion& region(std::size_t n, bool bounded) {
  static dogpile::CacheRegion* regions[4] = {};
  static std::once_flag once[4];
  const int slot = (n == 1'000 ? 0 : 1) + (bounded ? 2 : 0);
  std::call_once(once[slot], [&] {
    auto* r = new dogpile::CacheRegion(dogpile::make_region({.name = "bench"}));
    nlohmann::json args = nlohmann::json::object();
    if (bounded) args["max_entries"] = 2 * n;
    r->configure("memory", {.arguments = args});
    const auto& w = workload(n);
    for (std::size_t i = 0; i < w.keys.size(); ++i) r->set(w.keys[i], w.values[i]);
    regions[slot] = r;
  });
  return *regions[slot];
}

void BM_tbb(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto& w = workload(n);
  auto& m = tbb_map(n);
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    TbbMap::const_accessor a;
    std::optional<std::string> v;
    if (m.find(a, w.keys[w.sequence[i++ & (kSequence - 1)]])) v = a->second;
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_mutex_map(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto& w = workload(n);
  auto& m = mutex_map(n);
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    std::optional<std::string> v;
    {
      std::lock_guard lk(m.mutex);
      auto it = m.map.find(w.keys[w.sequence[i++ & (kSequence - 1)]]);
      if (it != m.map.end()) v = it->second;
    }
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

template <bool Bounded>
void BM_region(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto& w = workload(n);
  auto& r = region(n, Bounded);
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  std::size_t misses = 0;
  for (auto _ : state) {
    auto v = r.get<std::string>(w.keys[w.sequence[i++ & (kSequence - 1)]]);
    misses += v ? 0 : 1;
    benchmark::DoNotOptimize(v);
  }
  if (misses != 0) state.SkipWithError("unexpected miss");
  state.SetItemsProcessed(state.iterations());
}

// The body of every benchmark above, one thread, OPS times, for callgrind (see the top).
template <class Get>
[[gnu::noinline]] std::size_t hit_loop(const Workload& w, std::size_t ops, Get&& get) {
  std::size_t hits = 0;
  for (std::size_t i = 0; i < ops; ++i) {
    std::optional<std::string> v = get(w.keys[w.sequence[i & (kSequence - 1)]]);
    hits += v ? 1 : 0;
    benchmark::DoNotOptimize(v);
  }
  return hits;
}

// `--loop=VARIANT,KEYS,OPS`: 0 when every one of the OPS reads hit; 2 for bad arguments.
int run_loop(const std::string& spec) {
  char variant[16] = {};
  std::size_t n = 0;
  std::size_t ops = 0;
  if (std::sscanf(spec.c_str(), "%15[a-z_],%zu,%zu", variant, &n, &ops) != 3 ||
      (n != 1'000 && n != 100'000)) {
    std::fprintf(stderr,
                 "--loop=VARIANT,KEYS,OPS: VARIANT tbb|mutex|unbounded|tiny_lfu, "
                 "KEYS 1000 or 100000\n");
    return 2;
  }
  const auto& w = workload(n);
  const std::string v = variant;
  std::size_t hits = 0;
  if (v == "tbb") {
    auto& m = tbb_map(n);
    hits = hit_loop(w, ops, [&](const std::string& k) {
      TbbMap::const_accessor a;
      return m.find(a, k) ? std::optional<std::string>(a->second) : std::nullopt;
    });
  } else if (v == "mutex") {
    auto& m = mutex_map(n);
    hits = hit_loop(w, ops, [&](const std::string& k) {
      std::lock_guard lk(m.mutex);
      auto it = m.map.find(k);
      return it != m.map.end() ? std::optional<std::string>(it->second) : std::nullopt;
    });
  } else if (v == "unbounded" || v == "tiny_lfu") {
    auto& r = region(n, v == "tiny_lfu");
    hits = hit_loop(w, ops, [&](const std::string& k) { return r.get<std::string>(k); });
  } else {
    std::fprintf(stderr, "--loop: unknown variant '%s'\n", variant);
    return 2;
  }
  std::printf("%s, %zu keys: %zu of %zu reads hit\n", variant, n, hits, ops);
  return hits == ops ? 0 : 1;
}

void register_all() {
  for (std::int64_t n : {1'000, 100'000}) {
    const std::string fam = "region_hit_" + std::to_string(n) + "/";
    for (int t : {1, 2}) {
      benchmark::RegisterBenchmark((fam + "floor_tbb_concurrent_hash_map").c_str(), BM_tbb)
          ->Arg(n)
          ->Threads(t)
          ->UseRealTime();
      benchmark::RegisterBenchmark((fam + "mutex_unordered_map").c_str(), BM_mutex_map)
          ->Arg(n)
          ->Threads(t)
          ->UseRealTime();
      benchmark::RegisterBenchmark((fam + "region_memory_unbounded").c_str(), BM_region<false>)
          ->Arg(n)
          ->Threads(t)
          ->UseRealTime();
      benchmark::RegisterBenchmark((fam + "region_memory_tiny_lfu").c_str(), BM_region<true>)
          ->Arg(n)
          ->Threads(t)
          ->UseRealTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]).starts_with("--loop=")) return run_loop(argv[1] + 7);
  register_all();
  return dogpile::bench::run_with_ratios(argc, argv);
}
