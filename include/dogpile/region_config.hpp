#pragma once
/// @file region_config.hpp
/// Configuration from flat key/value settings (dogpile's `configure_from_config`): the keys a
/// region reads under a prefix, dogpile's `coerce_string_conf`, and their validation. Unknown
/// keys under the prefix are refused with a "did you mean" (a misspelt `expiration_tme` must
/// not give a region that never expires).

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dogpile/region_options.hpp"

namespace dogpile {

/// dogpile's `coerce_string_conf` for one value: strings that look like ints, floats,
/// booleans or `None` become those; everything else stays as is (whitespace stripped).
nlohmann::json coerce_string_conf(const nlohmann::json& v);

/// What `configure_from_config` read: the backend name and the configure options.
struct RegionConfigSettings {
  std::string backend{};       ///< the value of the backend key
  ConfigureOptions options{};  ///< expiration, arguments, replace_existing_backend
};

/// Reads the settings under `prefix` from a flat JSON object: the keys `prefix` followed by
/// `backend` (required), `expiration_time` (seconds), `arguments.NAME` or
/// `replace_existing_backend`; string values are coerced as coerce_string_conf does.
/// Keys outside the prefix are ignored. @throws ValidationError for a missing backend, a bad
/// value, or an unknown key under the prefix (with a "did you mean").
RegionConfigSettings parse_region_config(const nlohmann::json& config, std::string_view prefix);

}  // namespace dogpile
