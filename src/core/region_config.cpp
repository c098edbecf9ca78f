// Configuration from flat settings (region_config.hpp), compiled once: it needs no template
// parameter, and parsing it in every file that includes a region cost compile time.

#include "dogpile/region_config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <system_error>
#include <utility>

#include "dogpile/detail/did_you_mean.hpp"
#include "dogpile/detail/json_text.hpp"
#include "dogpile/error.hpp"
#include "dogpile/expiration.hpp"

namespace dogpile {

namespace detail {
bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
std::string_view without_sign(std::string_view s) {
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) s.remove_prefix(1);
  return s;
}
/// dogpile's float pattern: `[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?`.
bool is_float_text(std::string_view s) {
  s = without_sign(s);
  const auto e = s.find_first_of("eE");
  std::string_view mant = s.substr(0, e);
  if (e != std::string_view::npos) {
    if (!all_digits(without_sign(s.substr(e + 1)))) return false;
  }
  const auto dot = mant.find('.');
  if (dot == std::string_view::npos) return all_digits(mant);
  const auto whole = mant.substr(0, dot);
  const auto frac = mant.substr(dot + 1);
  if (whole.empty() && frac.empty()) return false;
  return (whole.empty() || all_digits(whole)) && (frac.empty() || all_digits(frac));
}
double parse_double(std::string_view s) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  double d = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), d);
  if (r.ec == std::errc::result_out_of_range) {
    return s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
  }
  return d;
}
}  // namespace detail

/// dogpile's `coerce_string_conf` for one value: strings that look like ints, floats,
/// booleans or `None` become those; everything else stays as is (whitespace stripped).
nlohmann::json coerce_string_conf(const nlohmann::json& v) {
  if (!v.is_string()) return v;
  std::string_view s = v.get_ref<const std::string&>();
  const auto b = s.find_first_not_of(" \t\r\n");
  const auto e = s.find_last_not_of(" \t\r\n");
  s = b == std::string_view::npos ? std::string_view() : s.substr(b, e - b + 1);
  if (detail::all_digits(detail::without_sign(s))) {
    std::string_view digits = s[0] == '+' ? s.substr(1) : s;
    long long i = 0;
    const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), i);
    if (r.ec == std::errc()) return i;
    return detail::parse_double(s);  // Python ints are unbounded; ours become a double
  }
  if (detail::is_float_text(s)) return detail::parse_double(s);
  std::string lower(s);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true") return true;
  if (lower == "false") return false;
  if (s == "None") return nullptr;
  return std::string(s);
}

namespace detail {
/// `v` (seconds, int or float, or null) as an expiration: 0 to `max_expiration_seconds`, or
/// -1 for never (dogpile's sentinel). @throws ValidationError naming `key` for anything else
/// (another negative number, NaN, infinity, more than 100 years), before any conversion can
/// overflow.
Expiration expiration_from_json(const nlohmann::json& v, std::string_view key) {
  if (v.is_null()) return {};
  if (v.is_number()) {
    const double s = v.get<double>();  // exact for every integer that passes the range check
    if (s == -1) return never;
    if (!std::isfinite(s) || s < 0 || s > max_expiration_seconds) {
      throw_error<ValidationError>("'" + std::string(key) + "' must be 0 to " +
                                   std::to_string(static_cast<long long>(max_expiration_seconds)) +
                                   " seconds (100 years), or -1 for never; got " +
                                   detail::json_text(v));
    }
    if (v.is_number_integer()) return std::chrono::seconds(v.get<long long>());
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(s));
  }
  throw_error<ValidationError>("'" + std::string(key) + "' must be a number of seconds, got " +
                               detail::json_text(v));
}
}  // namespace detail

/// Reads the settings under `prefix` from a flat JSON object: the keys `prefix` followed by
/// `backend` (required), `expiration_time` (seconds), `arguments.NAME` or
/// `replace_existing_backend`; string values are coerced as coerce_string_conf does.
/// Keys outside the prefix are ignored. @throws ValidationError for a missing backend, a bad
/// value, or an unknown key under the prefix (with a "did you mean").
RegionConfigSettings parse_region_config(const nlohmann::json& config, std::string_view prefix) {
  if (!config.is_object()) {
    detail::throw_error<ValidationError>(
        "configure_from_config: config must be a JSON object, got " + detail::json_text(config));
  }
  static constexpr std::string_view kKnown[] = {"backend", "expiration_time",
                                                "replace_existing_backend", "arguments.<name>"};
  const std::string p(prefix);
  RegionConfigSettings out;
  bool have_backend = false;
  for (const auto& [k, raw] : config.items()) {
    if (k.compare(0, p.size(), p) != 0) continue;
    const nlohmann::json v = coerce_string_conf(raw);
    const std::string_view name = std::string_view(k).substr(p.size());
    if (name == "backend") {
      if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
        detail::throw_error<ValidationError>("'" + k + "' must be a backend name, got " +
                                             detail::json_text(v));
      }
      out.backend = v.get<std::string>();
      have_backend = true;
    } else if (name == "expiration_time") {
      out.options.expiration_time = detail::expiration_from_json(v, k);
    } else if (name == "replace_existing_backend") {
      if (!v.is_boolean()) {
        detail::throw_error<ValidationError>("'" + k + "' must be true or false, got " +
                                             detail::json_text(v));
      }
      out.options.replace_existing_backend = v.get<bool>();
    } else if (name.substr(0, 10) == "arguments." && name.size() > 10) {
      out.options.arguments[std::string(name.substr(10))] = v;
    } else if (name == "wrap") {
      detail::throw_error<ValidationError>(
          "'" + k +
          "': proxies cannot come from a config; pass them in ConfigureOptions::wrap to "
          "configure()");
    } else {
      std::string hint = detail::did_you_mean(name, kKnown);
      if (hint.empty() && name.find('.') == std::string_view::npos) {
        hint = "; backend arguments go under '" + p + "arguments.<name>'";
      }
      detail::throw_error<ValidationError>("configure_from_config: unknown setting '" + k + "'" +
                                           hint + " (known under '" + p +
                                           "': " + detail::join_names(kKnown) + ")");
    }
  }
  if (!have_backend) {
    detail::throw_error<ValidationError>("configure_from_config: missing '" + p + "backend'");
  }
  return out;
}

}  // namespace dogpile
