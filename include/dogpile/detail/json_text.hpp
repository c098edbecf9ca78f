#pragma once
// A JSON value as a short text for error messages ("got 0", "got \"abc\"", "got an array"),
// without instantiating nlohmann's serializer; compiled in dogpile::core (src/core/json_text.cpp).

#include <string>

#include <nlohmann/json.hpp>

namespace dogpile::detail {

/// `v` as a short text: scalars as themselves (strings quoted), containers by kind and size.
std::string json_text(const nlohmann::json& v);

}  // namespace dogpile::detail
