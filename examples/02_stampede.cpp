// A stampede on one expiring key: many threads ask for it at once, twice — first when it is
// missing (everyone waits for one creation), then when it has expired (one thread
// regenerates, everyone else gets the stale value immediately).
#include <dogpile/dogpile.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <latch>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
struct Round {
  long asked = 0, creations = 0, stale = 0;
  std::vector<double> latencies_us;
};

Round stampede(dogpile::CacheRegion& region, long generation, int threads) {
  std::atomic<long> creations{0}, stale{0};
  std::vector<double> lat(static_cast<std::size_t>(threads));
  std::latch start(threads);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      start.arrive_and_wait();
      const auto t0 = Clock::now();
      long v = region.get_or_create("report", [&] {
        creations.fetch_add(1);
        std::this_thread::sleep_for(50ms);  // the expensive computation
        return generation;
      });
      lat[static_cast<std::size_t>(i)] =
          std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (v != generation) stale.fetch_add(1);
    });
  }
  for (auto& t : pool) t.join();
  std::sort(lat.begin(), lat.end());
  return {threads, creations.load(), stale.load(), lat};
}

void print(const char* title, const Round& r) {
  auto pct = [&](double p) {
    return r
        .latencies_us[static_cast<std::size_t>(p * static_cast<double>(r.latencies_us.size() - 1))];
  };
  std::cout << title << ": asked=" << r.asked << " creations=" << r.creations
            << " stale=" << r.stale << "  latency us p50=" << pct(0.5) << " p90=" << pct(0.9)
            << " p99=" << pct(0.99) << " max=" << r.latencies_us.back() << "\n";
}
}  // namespace

int main() {
  dogpile::ManualClock clock;  // expiry is driven by this clock, not by sleeping
  dogpile::CacheRegion region = dogpile::make_region({.name = "stampede", .clock = clock});
  region.configure("memory", {.expiration_time = 1min});

  const int threads = 64;
  Round cold = stampede(region, 1, threads);
  print("missing key ", cold);
  clock.advance(2min);  // the value is now expired
  Round warm = stampede(region, 2, threads);
  print("expired key ", warm);
  const auto s = region.stats();
  std::cout << "region stats: hits=" << s.hits << " misses=" << s.misses
            << " stale_served=" << s.stale_served << " creations=" << s.creations
            << " lock_waits=" << s.lock_waits << "\n";
  // Exactly one creation per round, and every caller but the creator served stale in round 2.
  return cold.creations == 1 && warm.creations == 1 && warm.stale == threads - 1 ? 0 : 1;
}
