// Region hit path vs the floor: a mutex-guarded std::unordered_map doing the same lookup and
// expiry check. Also cache_on_arguments hits and codec round trips.
#include <dogpile/dogpile.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "support/ratio_reporter.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int kKeys = 1024;

const std::vector<std::string>& keys() {
  static const std::vector<std::string> k = [] {
    std::vector<std::string> v;
    for (int i = 0; i < kKeys; ++i) v.push_back("user:" + std::to_string(i));
    return v;
  }();
  return k;
}

// The floor: what a hand-written cache does on a hit — lock, find, check age, copy the value.
struct FloorCache {
  struct Entry {
    std::shared_ptr<const std::string> value;
    std::chrono::system_clock::time_point created;
  };
  std::mutex mutex;
  std::unordered_map<std::string, Entry> map;
  std::optional<std::string> get(const std::string& key, std::chrono::milliseconds ttl) {
    std::shared_ptr<const std::string> v;
    {
      std::lock_guard lk(mutex);
      auto it = map.find(key);
      if (it == map.end()) return std::nullopt;
      if (std::chrono::system_clock::now() - it->second.created > ttl) return std::nullopt;
      v = it->second.value;
    }
    return *v;
  }
};

FloorCache& floor_cache() {
  static FloorCache* c = [] {
    auto* f = new FloorCache;
    const auto now = std::chrono::system_clock::now();
    for (const auto& k : keys())
      f->map[k] = {std::make_shared<const std::string>("value of " + k), now};
    for (int i = 0; i < 64; ++i) {
      f->map["bench.add|" + std::to_string(i) + " 7"] = {std::make_shared<const std::string>("7"),
                                                         now};
    }
    return f;
  }();
  return *c;
}

dogpile::CacheRegion& region() {
  static dogpile::CacheRegion r = [] {
    auto reg = dogpile::make_region({.name = "bench"});
    reg.configure("memory", {.expiration_time = 10min});
    for (const auto& k : keys()) reg.set(k, std::string("value of " + k));
    return reg;
  }();
  return r;
}

void get_or_create_hit(benchmark::State& state) {
  auto& r = region();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7;
  for (auto _ : state) {
    const auto& k = keys()[i++ % kKeys];
    std::string v = r.get_or_create(k, [&] { return std::string("never"); });
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

void get_or_create_floor(benchmark::State& state) {
  auto& f = floor_cache();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7;
  for (auto _ : state) {
    const auto& k = keys()[i++ % kKeys];
    auto v = f.get(k, 10min);
    if (!v) v = "never";
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

int add(int a, int b) { return a + b; }

void decorator_hit(benchmark::State& state) {
  static auto cached_add = region().cache_on_arguments("bench.add", add);
  int i = 0;
  for (auto _ : state) {
    int v = cached_add(i & 63, 7);
    ++i;
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

void decorator_floor(benchmark::State& state) {
  // The floor for a memoized call: build the same key and look it up in the floor map.
  auto& f = floor_cache();
  int i = 0;
  for (auto _ : state) {
    std::string key = "bench.add|" + std::to_string(i & 63) + " 7";
    auto v = f.get(key, 10min);
    ++i;
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

struct Payload {
  int id = 7;
  std::string name = "a typical cached record";
  std::vector<double> scores{1.5, 2.5, 3.5, 4.5};
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Payload, id, name, scores)
};

void codec_roundtrip(benchmark::State& state, dogpile::Format format, dogpile::EnvelopeFormat env) {
  const Payload p;
  const dogpile::CodecOptions opts{.format = format, .envelope = env};
  for (auto _ : state) {
    std::string bytes = dogpile::encode_value(p, dogpile::Metadata{1700000000.5, 2, 0}, opts);
    auto u = dogpile::unpack_envelope(bytes);
    Payload q = dogpile::Codec<Payload>::decode(u.payload, format);
    benchmark::DoNotOptimize(q);
  }
  state.SetItemsProcessed(state.iterations());
}

void codec_floor(benchmark::State& state) {
  // The floor of a codec round trip: nlohmann JSON dump + parse of the payload alone.
  const Payload p;
  for (auto _ : state) {
    std::string s = nlohmann::json(p).dump();
    Payload q = nlohmann::json::parse(s).get<Payload>();
    benchmark::DoNotOptimize(q);
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(get_or_create_floor)->Name("hit/floor_mutex_map")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(get_or_create_hit)
    ->Name("hit/region_get_or_create")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(decorator_floor)->Name("decorated/floor_key_and_map")->Threads(1)->UseRealTime();
BENCHMARK(decorator_hit)->Name("decorated/cache_on_arguments")->Threads(1)->UseRealTime();
BENCHMARK(codec_floor)->Name("codec/floor_json")->UseRealTime();
BENCHMARK_CAPTURE(codec_roundtrip, json_dogpile, dogpile::Format::json,
                  dogpile::EnvelopeFormat::dogpile)
    ->Name("codec/json_dogpile_envelope")
    ->UseRealTime();
BENCHMARK_CAPTURE(codec_roundtrip, msgpack_compact, dogpile::Format::msgpack,
                  dogpile::EnvelopeFormat::compact)
    ->Name("codec/msgpack_compact_envelope")
    ->UseRealTime();
BENCHMARK_CAPTURE(codec_roundtrip, cbor_compact, dogpile::Format::cbor,
                  dogpile::EnvelopeFormat::compact)
    ->Name("codec/cbor_compact_envelope")
    ->UseRealTime();

int main(int argc, char** argv) { return dogpile::bench::run_with_ratios(argc, argv); }
