// libFuzzer target: arbitrary bytes as a JSON configuration (dogpile's configure_from_config
// input, a flat object such as {"cache.backend": "memory", "cache.expiration_time": "60"}),
// read by parse_region_config and then applied to a region on the `memory` backend (the
// backend name is forced to "memory" so no input opens files or sockets). Outcomes: a
// configured region, or ValidationError / another dogpile::Error; never a crash or UB (a
// huge expiration_time was UB before issue 18).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dogpile/dogpile.hpp"
#include "fuzz_target.hpp"

DOGPILE_FUZZ_TARGET(region_config) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return 0;
  try {
    auto settings = dogpile::parse_region_config(config, "cache.");
    (void)settings;
    if (config.is_object()) config["cache.backend"] = "memory";
    auto region = dogpile::make_region();
    region.configure_from_config(config, "cache.");
    region.set("k", 1);
    (void)region.get<int>("k");
  } catch (const dogpile::Error&) {
  }
  return 0;
}
