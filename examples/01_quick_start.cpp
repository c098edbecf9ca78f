// Quick start: a cache region with the dogpile lock, and a memoized function.
#include <dogpile/dogpile.hpp>

#include <iostream>
#include <string>

using namespace std::chrono_literals;

std::string load_user(int id) { return "user-" + std::to_string(id); }  // the slow call

int main() {
  dogpile::CacheRegion region = dogpile::make_region({.name = "users"});
  region.configure("memory", {.expiration_time = 10min});

  // One creator per key; concurrent callers get the cached (or, while it refreshes, stale) value.
  std::string v = region.get_or_create("user:1", [] { return load_user(1); });

  // Memoize a function: the key is "app.get_user|42".
  auto get_user = region.cache_on_arguments("app.get_user", load_user);
  std::string u = get_user(42);

  std::cout << v << " " << u << " cached=" << region.get<std::string>("app.get_user|42").has_value()
            << " hits=" << region.stats().hits << "\n";
  return v == "user-1" && u == "user-42" ? 0 : 1;
}
