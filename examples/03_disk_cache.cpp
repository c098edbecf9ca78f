// The SQLite disk cache (python-diskcache's Cache, same on-disk format) on its own, and as the
// backend of a region whose dogpile lock spans processes.
#include <dogpile/backends/disk.hpp>
#include <dogpile/disk/cache.hpp>
#include <dogpile/disk/fanout.hpp>
#include <dogpile/dogpile.hpp>

#include <filesystem>
#include <iostream>
#include <string>

using namespace std::chrono_literals;

int main() {
  const auto dir = std::filesystem::temp_directory_path() / "dogpile-example-disk";
  std::filesystem::remove_all(dir);

  // A DiskCache: python-diskcache can open this directory too.
  dogpile::DiskCache cache(
      (dir / "cache").string(),
      {.size_limit = 64ull << 20, .eviction_policy = dogpile::EvictionPolicy::least_recently_used});
  cache.set("greeting", "hello", {.expire = 5min, .tag = "demo"});
  cache.incr("visits");
  cache.incr("visits");
  cache.push("job-1");
  cache.push("job-2");
  auto job = cache.pull<std::string>();
  std::cout << "get: " << cache.get<std::string>("greeting").value_or("?")
            << "  visits: " << cache.get<std::int64_t>("visits").value_or(0)
            << "  pulled: " << (job ? job->second : "none") << "  items: " << cache.size() << "\n";

  // Memoize with single-flight: concurrent misses (also in other processes) compute once.
  int computed = 0;
  auto square = cache.memoize("square", [&](int x) {
    ++computed;
    return x * x;
  });
  std::cout << "square(12) = " << square(12) << " = " << square(12) << " (computed " << computed
            << "x)\n";

  // A FanoutCache: shards that write in parallel; timeouts are a "not done" result.
  dogpile::FanoutCache fan((dir / "fanout").string(), {.shards = 4, .timeout = 10ms});
  bool stored = fan.set("k", std::string("v"));
  std::cout << "fanout set: " << (stored ? "stored" : "timed out")
            << "  get: " << fan.get<std::string>("k").value_or("?") << "\n";

  // A region on the disk backend: values outlive the process, and the dogpile lock is a lease
  // in the cache, so one creator runs per key across every process using the directory.
  dogpile::CacheRegion region = dogpile::make_region({.name = "reports"});
  region.configure(
      "disk", {.expiration_time = 10min, .arguments = {{"directory", (dir / "region").string()}}});
  int creations = 0;
  for (int i = 0; i < 3; ++i) {
    region.get_or_create("report:2026", [&] {
      ++creations;
      return std::string("expensive report");
    });
  }
  std::cout << "region: " << region.get<std::string>("report:2026").value_or("?") << " (created "
            << creations << "x for 3 calls)\n";

  const bool ok = computed == 1 && creations == 1 && stored;
  std::filesystem::remove_all(dir);
  return ok ? 0 : 1;
}
