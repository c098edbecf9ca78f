#pragma once
/// @file backend_arguments.hpp
/// Reading a backend's by-name `arguments` (a JSON object, as dogpile's `arguments` dict):
/// typed getters that throw `ValidationError` naming the backend and the argument, so every
/// backend reports a wrong type or value the same way. Internal to dogpile-cpp's backends.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/detail/did_you_mean.hpp"
#include "dogpile/error.hpp"

namespace dogpile::detail {

/// `what` with a "did you mean" when it is a backend's "is unknown (known: a, b, c)": the
/// closest known name, taken from that list, so every backend's list gives the hint.
inline std::string with_did_you_mean(const std::string& name, const std::string& what) {
  static constexpr std::string_view prefix = "is unknown (known: ";
  if (what.rfind(prefix, 0) != 0 || what.back() != ')') return what;
  std::vector<std::string> known;
  const std::string list = what.substr(prefix.size(), what.size() - prefix.size() - 1);
  for (std::size_t at = 0; at <= list.size();) {
    const auto comma = std::min(list.find(", ", at), list.size());
    known.push_back(list.substr(at, comma - at));
    at = comma + 2;
  }
  return "is unknown" + did_you_mean(name, known) +
         what.substr(std::string_view("is unknown").size());
}

/// Throws `ValidationError`: "<backend> backend: argument '<name>' <what>" (with a "did you
/// mean" for an "is unknown (known: …)" `what`).
[[noreturn]] inline void bad_argument(const char* backend, const std::string& name,
                                      const std::string& what) {
  throw_error<ValidationError>(std::string(backend) + " backend: argument '" + name + "' " +
                               with_did_you_mean(name, what));
}

/// Throws unless `arguments` is a JSON object (null counts as an empty one).
inline void require_object_arguments(const char* backend, const nlohmann::json& arguments) {
  if (!arguments.is_object() && !arguments.is_null()) {
    throw_error<ValidationError>(std::string(backend) +
                                 " backend: arguments must be a JSON object, got " +
                                 arguments.dump());
  }
}

/// An integer >= `min`.
inline std::int64_t int_arg(const char* backend, const std::string& name, const nlohmann::json& v,
                            std::int64_t min) {
  if (!v.is_number_integer()) bad_argument(backend, name, "must be an integer, got " + v.dump());
  const auto i = v.get<std::int64_t>();
  if (i < min) {
    bad_argument(backend, name, "must be >= " + std::to_string(min) + ", got " + v.dump());
  }
  return i;
}

/// A boolean (or 0/1, as Python's truthy config values).
inline bool bool_arg(const char* backend, const std::string& name, const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer() && (v.get<std::int64_t>() == 0 || v.get<std::int64_t>() == 1)) {
    return v.get<std::int64_t>() == 1;
  }
  bad_argument(backend, name, "must be a boolean, got " + v.dump());
}

/// A string.
inline std::string string_arg(const char* backend, const std::string& name,
                              const nlohmann::json& v) {
  if (!v.is_string()) bad_argument(backend, name, "must be a string, got " + v.dump());
  return v.get<std::string>();
}

/// A non-negative number of seconds (int or float, as dogpile's backends take them), rounded to
/// milliseconds.
inline std::chrono::milliseconds seconds_arg(const char* backend, const std::string& name,
                                             const nlohmann::json& v) {
  if (!v.is_number()) bad_argument(backend, name, "must be a number of seconds, got " + v.dump());
  const double s = v.get<double>();
  if (!std::isfinite(s) || s < 0 || s > 1e9) {
    bad_argument(backend, name, "must be a non-negative number of seconds, got " + v.dump());
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(s * 1000.0)));
}

}  // namespace dogpile::detail
