// dogpile::Key helpers and EvictionPolicy names.
#include <cstdio>
#include <string>

#include "dogpile/disk/types.hpp"

namespace dogpile {

namespace {
void append_escaped(std::string& out, const std::string& s, bool bytes) {
  for (const char c : s) {
    const auto ch = static_cast<unsigned char>(c);
    if (ch == '\\' || ch == '\'') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch < 0x20 || ch == 0x7F || (bytes && ch >= 0x80)) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    } else {
      out += static_cast<char>(ch);
    }
  }
}
}  // namespace

std::string Key::repr() const {
  switch (v_.index()) {
    case 0:
      return std::to_string(std::get<0>(v_));
    case 1: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", std::get<1>(v_));
      return buf;
    }
    case 2: {
      std::string out = "'";
      append_escaped(out, std::get<2>(v_), false);
      return out + "'";
    }
    default: {
      std::string out = "b'";
      append_escaped(out, std::get<3>(v_).data, true);
      return out + "'";
    }
  }
}

std::string_view to_string(EvictionPolicy p) noexcept {
  switch (p) {
    case EvictionPolicy::least_recently_used:
      return "least-recently-used";
    case EvictionPolicy::least_frequently_used:
      return "least-frequently-used";
    case EvictionPolicy::none:
      return "none";
    case EvictionPolicy::least_recently_stored:
      break;
  }
  return "least-recently-stored";
}

EvictionPolicy eviction_policy_from_string(std::string_view name) {
  for (auto p : {EvictionPolicy::least_recently_stored, EvictionPolicy::least_recently_used,
                 EvictionPolicy::least_frequently_used, EvictionPolicy::none}) {
    if (to_string(p) == name) return p;
  }
  detail::throw_error<ValidationError>("eviction_policy: unknown policy '" + std::string(name) +
                                       "' (expected least-recently-stored, least-recently-used, "
                                       "least-frequently-used or none)");
}

}  // namespace dogpile
