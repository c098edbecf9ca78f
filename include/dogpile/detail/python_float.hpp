#pragma once
// Python's float repr, for keys (`str(1.5)`) and for the dogpile envelope's `"ct"` (what
// Python's json.dumps writes), without instantiating a JSON serializer in every translation unit.

#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <string>
#include <string_view>
#include <system_error>

namespace dogpile::detail {

// ---- Python's float repr (shortest round trip, `repr()` switch to exponent form) -------------

/// Appends `value` as Python's `repr(float)` / `str(float)` writes it: shortest digits that
/// round-trip (std::to_chars), positional for 1e-4 <= |x| < 1e16, else `1e+16` / `1.5e-05`.
template <std::floating_point F>
void append_python_float(std::string& out, F value) {
  if (std::isnan(value)) {
    out += "nan";
    return;
  }
  if (std::signbit(value)) {
    out.push_back('-');
    value = -value;
  }
  if (std::isinf(value)) {
    out += "inf";
    return;
  }
  std::array<char, 128> buf{};
  auto res =
      std::to_chars(buf.data(), buf.data() + buf.size(), value, std::chars_format::scientific);
  std::string_view sci(buf.data(), static_cast<std::size_t>(res.ptr - buf.data()));
  const std::size_t epos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, epos)) {
    if (c != '.') digits.push_back(c);
  }
  int exp10 = 0;
  std::string_view e = sci.substr(epos + 2);  // skip "e" and the sign
  std::from_chars(e.data(), e.data() + e.size(), exp10);
  if (sci[epos + 1] == '-') exp10 = -exp10;
  // Python's `decpt`: value = 0.DIGITS * 10^decpt.
  const int decpt = exp10 + 1;
  const int ndigits = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out.push_back(digits[0]);
    if (ndigits > 1) {
      out.push_back('.');
      out.append(digits, 1);
    }
    out.push_back('e');
    out.push_back(exp10 < 0 ? '-' : '+');
    const int mag = exp10 < 0 ? -exp10 : exp10;
    if (mag < 10) out.push_back('0');
    out += std::to_string(mag);
  } else if (decpt <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-decpt), '0');
    out += digits;
  } else if (decpt >= ndigits) {
    out += digits;
    out.append(static_cast<std::size_t>(decpt - ndigits), '0');
    out += ".0";
  } else {
    out.append(digits, 0, static_cast<std::size_t>(decpt));
    out.push_back('.');
    out.append(digits, static_cast<std::size_t>(decpt));
  }
}

}  // namespace dogpile::detail
