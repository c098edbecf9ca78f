// Hit rates of the bounded `memory` backend's eviction policies (tiny_lfu vs lru) against the
// offline optimum (Belady's MIN with bypass), replaying synthetic traces over a 1,000,000-key
// space at capacities of 1% and 5%. Not timed: it prints hit rates. Deterministic (fixed seeds).
//
// Traces (each `--requests` long, 4,000,000 by default):
//   zipf-0.9, zipf-0.99, zipf-1.0
//                       independent requests, Zipf(s) popularity over the 1M keys, ranks
//                       scattered over the key space by a fixed random permutation;
//   scan-polluted       blocks of 100,000 zipf-0.9 requests, each followed by a sequential scan
//                       of 50,000 consecutive keys (one third of all requests are scan keys);
//   zipf-0.99-shift     zipf-0.99 over one ranking for half the requests, then over another
//                       (popularity that changes: how fast the policy forgets).
// Replay: get_object; on a miss, set_object (the cache-aside pattern a region uses).
// Baselines on Zipf traces: top-C, the steady-state hit rate of keeping the C most popular
// keys (no cold misses), and top-C@trace, the same cache replayed over the trace itself (the
// first request of each key a miss, as for every online policy): the goal is tiny_lfu within
// 1.5 points of top-C@trace on zipf-0.99.
//
//   build-rel/bench/eviction_hit_rate [--requests N] [--shards N] [--seed N] [--only TRACE]
// --seed moves every trace's seed and the key ranking (another sample of the same workload:
// differences under ~0.2 pt between two settings need several seeds); --only runs one trace.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "dogpile/backends/memory.hpp"

namespace {

constexpr std::uint32_t kKeySpace = 1'000'000;

using Trace = std::vector<std::uint32_t>;

/// Zipf(s) over ranks 1..n, rank r mapped to key perm[r - 1].
class Zipf {
 public:
  Zipf(double s, const std::vector<std::uint32_t>& perm) : perm_(perm), cdf_(perm.size()) {
    double sum = 0;
    for (std::size_t r = 0; r < cdf_.size(); ++r) {
      sum += 1.0 / std::pow(static_cast<double>(r + 1), s);
      cdf_[r] = sum;
    }
    for (auto& c : cdf_) c /= sum;
  }
  std::uint32_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    const auto r = static_cast<std::size_t>(
        std::min<std::ptrdiff_t>(it - cdf_.begin(), static_cast<std::ptrdiff_t>(cdf_.size()) - 1));
    return perm_[r];
  }

 private:
  const std::vector<std::uint32_t>& perm_;
  std::vector<double> cdf_;
};

Trace zipf_trace(double s, std::size_t n, const std::vector<std::uint32_t>& perm,
                 std::uint64_t seed) {
  Zipf z(s, perm);
  std::mt19937_64 rng(seed);
  Trace t(n);
  for (auto& k : t) k = z(rng);
  return t;
}

Trace scan_trace(std::size_t n, const std::vector<std::uint32_t>& perm, std::uint64_t seed) {
  Zipf z(0.9, perm);
  std::mt19937_64 rng(seed);
  Trace t;
  t.reserve(n);
  std::uint32_t scan_start = 0;
  while (t.size() < n) {
    for (int i = 0; i < 100'000 && t.size() < n; ++i) t.push_back(z(rng));
    for (std::uint32_t i = 0; i < 50'000 && t.size() < n; ++i) {
      t.push_back((scan_start + i) % kKeySpace);
    }
    scan_start = (scan_start + 50'000) % kKeySpace;
  }
  return t;
}

/// Belady's MIN with bypass: on a miss, cache the key unless it is never used again or is
/// used later than every cached key; evict the cached key used farthest in the future.
double belady(const Trace& t, std::size_t capacity) {
  constexpr std::uint32_t kNever = std::numeric_limits<std::uint32_t>::max();
  std::vector<std::uint32_t> next(t.size());
  std::vector<std::uint32_t> last(kKeySpace, kNever);
  for (std::size_t i = t.size(); i-- > 0;) {
    next[i] = last[t[i]];
    last[t[i]] = static_cast<std::uint32_t>(i);
  }
  std::vector<std::uint32_t> cached_next(kKeySpace, kNever);  // kNever = not cached
  std::vector<bool> in_cache(kKeySpace, false);
  std::set<std::pair<std::uint32_t, std::uint32_t>> by_next;  // (next use, key)
  std::size_t hits = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const std::uint32_t k = t[i];
    if (in_cache[k]) {
      ++hits;
      by_next.erase({cached_next[k], k});
      if (next[i] == kNever) {
        in_cache[k] = false;
        continue;
      }
      cached_next[k] = next[i];
      by_next.insert({next[i], k});
      continue;
    }
    if (next[i] == kNever) continue;
    if (by_next.size() >= capacity) {
      auto far = std::prev(by_next.end());
      if (far->first <= next[i]) continue;  // bypass
      in_cache[far->second] = false;
      by_next.erase(far);
    }
    in_cache[k] = true;
    cached_next[k] = next[i];
    by_next.insert({next[i], k});
  }
  return static_cast<double>(hits) / static_cast<double>(t.size());
}

/// Steady-state hit rate of the best online policy for independent Zipf(s) requests: keep the
/// `capacity` most popular keys (cold misses not counted).
double zipf_top(double s, std::size_t capacity) {
  double top = 0;
  double all = 0;
  for (std::size_t r = 1; r <= kKeySpace; ++r) {
    const double p = 1.0 / std::pow(static_cast<double>(r), s);
    all += p;
    if (r <= capacity) top += p;
  }
  return top / all;
}

/// Hit rate over `t` of a cache that holds exactly the `capacity` most popular keys (the
/// first `capacity` ranks of `perm`) once each has been requested: cold misses counted.
double top_on_trace(const Trace& t, const std::vector<std::uint32_t>& perm, std::size_t capacity) {
  std::vector<bool> top(kKeySpace, false);
  std::vector<bool> seen(kKeySpace, false);
  for (std::size_t r = 0; r < capacity; ++r) top[perm[r]] = true;
  std::size_t hits = 0;
  for (const std::uint32_t k : t) {
    if (top[k] && seen[k]) ++hits;
    seen[k] = true;
  }
  return static_cast<double>(hits) / static_cast<double>(t.size());
}

double replay(const Trace& t, const std::vector<std::string>& keys, dogpile::MemoryOptions o,
              std::size_t* evictions) {
  dogpile::MemoryBackend b(o);
  auto payload = std::make_shared<const int>(0);
  std::size_t hits = 0;
  for (const std::uint32_t k : t) {
    if (b.get_object(keys[k])) {
      ++hits;
    } else {
      b.set_object(keys[k], dogpile::StoredObject{payload, typeid(int), {}, sizeof(int)});
    }
  }
  *evictions = b.evictions();
  if (b.size() > o.max_entries) {
    std::fprintf(stderr, "bound exceeded: %zu > %zu\n", b.size(), o.max_entries);
    std::exit(1);
  }
  return static_cast<double>(hits) / static_cast<double>(t.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t requests = 4'000'000;
  std::size_t shards = dogpile::MemoryOptions{}.shards;
  std::uint64_t seed = 0;
  const char* only = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--requests") == 0) {
      requests = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (std::strcmp(argv[i], "--shards") == 0) {
      shards = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (std::strcmp(argv[i], "--seed") == 0) {
      seed = 1000 * std::strtoull(argv[i + 1], nullptr, 10);  // traces' seeds stay apart
    } else if (std::strcmp(argv[i], "--only") == 0) {
      only = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: %s [--requests N] [--shards N] [--seed N] [--only TRACE]\n",
                   argv[0]);
      return 2;
    }
  }

  std::vector<std::string> keys;
  keys.reserve(kKeySpace);
  for (std::uint32_t i = 0; i < kKeySpace; ++i) keys.push_back("key:" + std::to_string(i));
  std::vector<std::uint32_t> perm(kKeySpace);
  std::iota(perm.begin(), perm.end(), 0U);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(42 + seed));

  struct Named {
    const char* name;
    Trace trace;
    double zipf_s;  // 0 = not a pure Zipf trace
  };
  std::vector<Named> traces;
  const auto wanted = [only](const char* name) {
    return only == nullptr || std::strcmp(only, name) == 0;
  };
  if (wanted("zipf-0.9"))
    traces.push_back({"zipf-0.9", zipf_trace(0.9, requests, perm, 1 + seed), 0.9});
  if (wanted("zipf-0.99"))
    traces.push_back({"zipf-0.99", zipf_trace(0.99, requests, perm, 4 + seed), 0.99});
  if (wanted("zipf-1.0"))
    traces.push_back({"zipf-1.0", zipf_trace(1.0, requests, perm, 2 + seed), 1.0});
  if (wanted("scan-polluted"))
    traces.push_back({"scan-polluted", scan_trace(requests, perm, 3 + seed), 0});
  if (wanted("zipf-0.99-shift")) {
    // Popularity that changes: zipf-0.99 over one ranking, then over another (how fast a
    // policy forgets; a longer frequency sample remembers the old favourites longer).
    std::vector<std::uint32_t> perm2(perm);
    std::shuffle(perm2.begin(), perm2.end(), std::mt19937_64(43 + seed));
    Trace t = zipf_trace(0.99, requests / 2, perm, 5 + seed);
    const Trace second = zipf_trace(0.99, requests - requests / 2, perm2, 6 + seed);
    t.insert(t.end(), second.begin(), second.end());
    traces.push_back({"zipf-0.99-shift", std::move(t), 0});
  }

  std::printf("key space %u, %zu requests per trace, memory backend shards=%zu\n", kKeySpace,
              requests, shards);
  std::printf(
      "OPT = Belady MIN with bypass (offline); top-C = keep the C most popular keys (best\n"
      "online policy for independent Zipf requests, steady state, no cold misses);\n"
      "top@trace = the same cache replayed over the trace (cold misses counted)\n");
  std::printf("%-16s %9s %9s %9s %10s %9s %9s %10s %11s %9s\n", "trace", "capacity", "OPT", "top-C",
              "top@trace", "tiny_lfu", "lru", "lfu-lru", "lfu-top@tr", "lfu/OPT");
  for (const auto& [name, trace, zipf_s] : traces) {
    for (const double fraction : {0.01, 0.05}) {
      const auto capacity = static_cast<std::size_t>(fraction * kKeySpace);
      std::size_t ev_lfu = 0;
      std::size_t ev_lru = 0;
      const double opt = belady(trace, capacity);
      const double lfu =
          replay(trace, keys,
                 dogpile::MemoryOptions{.shards = shards,
                                        .max_entries = capacity,
                                        .eviction = dogpile::MemoryEviction::tiny_lfu},
                 &ev_lfu);
      const double lru = replay(
          trace, keys,
          dogpile::MemoryOptions{
              .shards = shards, .max_entries = capacity, .eviction = dogpile::MemoryEviction::lru},
          &ev_lru);
      char top[16] = "-";
      char top_tr[16] = "-";
      char gap[16] = "-";
      if (zipf_s > 0) {
        const double on_trace = top_on_trace(trace, perm, capacity);
        std::snprintf(top, sizeof top, "%.2f%%", zipf_top(zipf_s, capacity) * 100);
        std::snprintf(top_tr, sizeof top_tr, "%.2f%%", on_trace * 100);
        std::snprintf(gap, sizeof gap, "%+.2fpt", (lfu - on_trace) * 100);
      }
      std::printf("%-16s %8.0f%% %8.2f%% %9s %10s %8.2f%% %8.2f%% %+8.2fpt %11s %9.2f\n", name,
                  fraction * 100, opt * 100, top, top_tr, lfu * 100, lru * 100, (lfu - lru) * 100,
                  gap, lfu / opt);
      std::fflush(stdout);
    }
  }
  return 0;
}
