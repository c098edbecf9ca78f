// Hit path of the in-process `memory` backend against its floor: a mutex-guarded
// std::unordered_map<std::string, std::shared_ptr<const T>> looked up with the caller's
// std::string (neither side allocates on a hit). 10,000 keys, every get hits, keys drawn from a
// fixed random sequence; 1 and 2 threads. The backends are called through `CacheBackend&` (the
// virtual hook), as a region does. The table at the end gives each variant's cost per op as a
// multiple of the floor's.
//
//   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DDOGPILE_BUILD_BENCH=ON
//   cmake --build build-rel --target memory_backend_bench && build-rel/bench/memory_backend_bench
//
// `memory_backend_bench --footprint` instead prints the heap bytes per entry (glibc's
// mallinfo2(), in use after filling minus before) of 1,000,000 entries of 16-byte keys and
// 32-byte std::string values: in a std::unordered_map<std::string, std::string> (the floor),
// and through `region.set` in a region over `memory`, unbounded and bounded (W-TinyLFU and LRU,
// `max_entries` = 2,000,000 so that nothing is evicted), same run.

#include <benchmark/benchmark.h>
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dogpile/backends/memory.hpp"
#include "dogpile/region.hpp"
#include "support/ratio_reporter.hpp"

namespace {

constexpr std::size_t kKeys = 10'000;
constexpr std::size_t kSequence = 1 << 16;

struct Value {
  std::string text = std::string(64, 'v');
  std::int64_t id = 0;
};

// Keys, values and the access sequence, shared by every subject: the floor and the backends
// hold the very same value objects, so they differ only in their containers.
struct Workload {
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<const Value>> values;
  std::vector<std::uint32_t> sequence;  // indexes into keys
  Workload() {
    keys.reserve(kKeys);
    for (std::size_t i = 0; i < kKeys; ++i) {
      keys.push_back("user:profile:" + std::to_string(i));
      values.push_back(std::make_shared<const Value>());
    }
    std::mt19937 rng(12345);
    sequence.resize(kSequence);
    for (auto& s : sequence) s = static_cast<std::uint32_t>(rng() % kKeys);
  }
};
const Workload& workload() {
  static const Workload w;
  return w;
}

// ---- the floor: the plain map, default hash, looked up with the caller's std::string ---------
class MutexMap {
 public:
  std::shared_ptr<const Value> get(const std::string& key) {
    std::lock_guard lk(mutex_);
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second;
  }
  void set(const std::string& key, std::shared_ptr<const Value> v) {
    std::lock_guard lk(mutex_);
    map_[key] = std::move(v);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const Value>> map_;
};

MutexMap& floor_map() {
  static MutexMap* m = [] {
    auto* mm = new MutexMap;
    const auto& w = workload();
    for (std::size_t i = 0; i < kKeys; ++i) mm->set(w.keys[i], w.values[i]);
    return mm;
  }();
  return *m;
}

// ---- the subjects ----------------------------------------------------------------------------
dogpile::CacheBackend& backend(const dogpile::MemoryOptions& o, int slot) {
  static std::shared_ptr<dogpile::CacheBackend> made[4];
  static std::once_flag once[4];
  std::call_once(once[slot], [&] {
    auto b = std::make_shared<dogpile::MemoryBackend>(o);
    const auto& w = workload();
    for (std::size_t i = 0; i < kKeys; ++i) {
      b->set_object(w.keys[i],
                    dogpile::StoredObject{w.values[i], typeid(Value), {}, sizeof(Value) + 64});
    }
    made[slot] = b;
  });
  return *made[slot];
}

void BM_floor(benchmark::State& state) {
  const auto& w = workload();
  auto& m = floor_map();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    auto v = m.get(w.keys[w.sequence[i++ & (kSequence - 1)]]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

void run_backend(benchmark::State& state, dogpile::CacheBackend& b) {
  const auto& w = workload();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  std::size_t misses = 0;
  for (auto _ : state) {
    auto v = b.get_object(w.keys[w.sequence[i++ & (kSequence - 1)]]);
    misses += v ? 0 : 1;
    benchmark::DoNotOptimize(v);
  }
  if (misses != 0) state.SkipWithError("unexpected miss");
  state.SetItemsProcessed(state.iterations());
}

void BM_unbounded(benchmark::State& state) {
  run_backend(state, backend(dogpile::MemoryOptions{}, 0));
}
void BM_tiny_lfu(benchmark::State& state) {
  run_backend(state, backend(dogpile::MemoryOptions{.max_entries = 2 * kKeys}, 1));
}
void BM_lru(benchmark::State& state) {
  run_backend(state, backend(dogpile::MemoryOptions{.max_entries = 2 * kKeys,
                                                    .eviction = dogpile::MemoryEviction::lru},
                             2));
}
void BM_single_shard_tiny_lfu(benchmark::State& state) {
  run_backend(state, backend(dogpile::MemoryOptions{.shards = 1, .max_entries = 2 * kKeys}, 3));
}

// Overwrites of present keys (the write a region makes after a creator ran): the old value is
// unlinked and freed, through the epoch in an unbounded shard (detail/epoch.hpp).
void BM_floor_replace(benchmark::State& state) {
  const auto& w = workload();
  auto& m = floor_map();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    const std::uint32_t k = w.sequence[i++ & (kSequence - 1)];
    m.set(w.keys[k], w.values[k]);
  }
  state.SetItemsProcessed(state.iterations());
}
void run_replace(benchmark::State& state, dogpile::CacheBackend& b) {
  const auto& w = workload();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    const std::uint32_t k = w.sequence[i++ & (kSequence - 1)];
    b.set_object(w.keys[k], dogpile::StoredObject{w.values[k], typeid(Value), {}, 64});
  }
  state.SetItemsProcessed(state.iterations());
}
void BM_unbounded_replace(benchmark::State& state) {
  run_replace(state, backend(dogpile::MemoryOptions{}, 0));
}
void BM_tiny_lfu_replace(benchmark::State& state) {
  run_replace(state, backend(dogpile::MemoryOptions{.max_entries = 2 * kKeys}, 1));
}

}  // namespace

BENCHMARK(BM_floor_replace)
    ->Name("replace/floor_mutex_unordered_map")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_unbounded_replace)
    ->Name("replace/memory_unbounded")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_tiny_lfu_replace)
    ->Name("replace/memory_tiny_lfu")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_floor)
    ->Name("get_hit/floor_mutex_unordered_map")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_unbounded)->Name("get_hit/memory_unbounded")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_tiny_lfu)->Name("get_hit/memory_tiny_lfu")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_lru)->Name("get_hit/memory_lru")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_single_shard_tiny_lfu)
    ->Name("get_hit/memory_tiny_lfu_1shard")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

namespace {

// ---- footprint -------------------------------------------------------------------------------
constexpr std::size_t kFootprintEntries = 1'000'000;

std::size_t heap_in_use() {
  malloc_trim(0);
  return mallinfo2().uordblks;
}

std::string footprint_key(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "key:%012zu", i);  // 16 bytes
  return buf;
}
std::string footprint_value(std::size_t i) {
  return std::string(32, static_cast<char>('a' + i % 26));
}

double floor_footprint() {
  const std::size_t before = heap_in_use();
  auto* m = new std::unordered_map<std::string, std::string>;
  for (std::size_t i = 0; i < kFootprintEntries; ++i)
    m->emplace(footprint_key(i), footprint_value(i));
  const std::size_t after = heap_in_use();
  delete m;
  return static_cast<double>(after - before) / kFootprintEntries;
}

double region_footprint(const nlohmann::json& args) {
  const std::size_t before = heap_in_use();
  double per_entry = 0;
  {
    auto r = dogpile::make_region({.name = "footprint"});
    r.configure("memory", {.arguments = args});
    for (std::size_t i = 0; i < kFootprintEntries; ++i) r.set(footprint_key(i), footprint_value(i));
    const std::size_t after = heap_in_use();
    per_entry = static_cast<double>(after - before) / kFootprintEntries;
    if (!r.get<std::string>(footprint_key(7))) std::fprintf(stderr, "footprint: lost an entry\n");
  }
  return per_entry;
}

int run_footprint() {
  const double floor = floor_footprint();
  const nlohmann::json bounded = {{"max_entries", 2 * kFootprintEntries}};
  const nlohmann::json lru = {{"max_entries", 2 * kFootprintEntries}, {"eviction", "lru"}};
  const double unbounded_b = region_footprint(nlohmann::json::object());
  const double tiny_b = region_footprint(bounded);
  const double lru_b = region_footprint(lru);
  std::printf("heap bytes per entry, %zu entries (16-byte keys, 32-byte string values)\n",
              kFootprintEntries);
  std::printf("%-40s %8.1f B  %5.2fx\n", "floor: unordered_map<string, string>", floor, 1.0);
  std::printf("%-40s %8.1f B  %5.2fx\n", "region on memory, unbounded", unbounded_b,
              unbounded_b / floor);
  std::printf("%-40s %8.1f B  %5.2fx\n", "region on memory, tiny_lfu", tiny_b, tiny_b / floor);
  std::printf("%-40s %8.1f B  %5.2fx\n", "region on memory, lru", lru_b, lru_b / floor);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--footprint") == 0) return run_footprint();
  }
  return dogpile::bench::run_with_ratios(argc, argv);
}
