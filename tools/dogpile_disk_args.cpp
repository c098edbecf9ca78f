// dogpile-disk's command line (dogpile_disk_args.hpp).
#include "dogpile_disk_args.hpp"

#include <charconv>
#include <cmath>
#include <exception>
#include <stdexcept>
#include <string_view>

namespace dogpile_disk_cli {

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> pos;
  auto need = [&](int& i, const std::string& opt) -> std::string {
    if (i + 1 >= argc) throw UsageError{opt + " needs a value"};
    return argv[++i];
  };
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (only_positional || s.empty() || s[0] != '-' || s == "-") {
      pos.push_back(s);
    } else if (s == "--") {
      only_positional = true;
    } else if (s == "-h" || s == "--help") {
      a.help = true;
    } else if (s == "--version") {
      a.version = true;
    } else if (s == "--fix") {
      a.fix = true;
    } else if (s == "--raw") {
      a.raw = true;
    } else if (s == "--key-type") {
      a.key_type = need(i, s);
      a.key_type_given = true;
    } else if (s == "--value-type") {
      a.value_type = need(i, s);
    } else if (s == "--tag") {
      a.tag = need(i, s);
    } else if (s == "--expire") {
      const std::string v = need(i, s);
      try {
        std::size_t used = 0;
        a.expire = std::stod(v, &used);
        // std::stod reads "nan" and "inf" too: neither is a number of seconds.
        if (used != v.size() || !std::isfinite(*a.expire) || *a.expire < 0) {
          throw std::invalid_argument(v);
        }
      } catch (const std::exception&) {
        throw UsageError{"--expire needs a non-negative number of seconds, got '" + v + "'"};
      }
    } else {
      throw UsageError{"unknown option '" + s + "'"};
    }
  }
  if (a.help || a.version) return a;
  if (pos.size() < 2) throw UsageError{"expected DIR and COMMAND"};
  a.dir = pos[0];
  a.command = pos[1];
  a.positional.assign(pos.begin() + 2, pos.end());
  struct Arity {
    const char* name;
    std::size_t n;
  };
  static constexpr Arity kCommands[] = {{"stats", 0}, {"check", 0}, {"keys", 0},  {"get", 1},
                                        {"set", 2},   {"evict", 1}, {"erase", 1}, {"expire", 0},
                                        {"cull", 0},  {"clear", 0}};
  bool known = false;
  for (const auto& c : kCommands) {
    if (a.command == c.name) {
      known = true;
      if (a.positional.size() != c.n) {
        throw UsageError{"'" + a.command + "' takes " + std::to_string(c.n) + " argument(s), got " +
                         std::to_string(a.positional.size())};
      }
    }
  }
  if (!known) throw UsageError{"unknown command '" + a.command + "'"};
  if (a.fix && a.command != "check") throw UsageError{"--fix only applies to 'check'"};
  if (a.raw && a.command != "get") throw UsageError{"--raw only applies to 'get'"};
  if ((a.expire || a.tag) && a.command != "set") {
    throw UsageError{"--expire and --tag only apply to 'set'"};
  }
  for (const auto* t : {&a.key_type, &a.value_type}) {
    if (*t != "text" && *t != "int" && *t != "float" && *t != "bytes" && *t != "repr") {
      throw UsageError{"type must be text, int, float, bytes or repr, got '" + *t + "'"};
    }
  }
  return a;
}

// The inverse of Key::repr() (what `keys` prints): 'text' and b'bytes' with the escapes repr
// writes (\\, \', \n, \xhh; also \t, \r, \0), else an int, else a float.
std::optional<dogpile::Key::Variant> from_repr(const std::string& s) {
  auto unescape = [](std::string_view body, std::string& out) {
    for (std::size_t i = 0; i < body.size(); ++i) {
      if (body[i] != '\\') {
        out += body[i];
        continue;
      }
      if (++i >= body.size()) return false;
      switch (body[i]) {
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case 'x': {
          unsigned v = 0;
          if (i + 2 >= body.size()) return false;
          const auto [p, ec] = std::from_chars(body.data() + i + 1, body.data() + i + 3, v, 16);
          if (ec != std::errc() || p != body.data() + i + 3) return false;
          out += static_cast<char>(v);
          i += 2;
          break;
        }
        default:
          return false;
      }
    }
    return true;
  };
  const bool bytes = s.size() >= 3 && s[0] == 'b' && s[1] == '\'' && s.back() == '\'';
  const bool text = !bytes && s.size() >= 2 && s[0] == '\'' && s.back() == '\'';
  if (bytes || text) {
    std::string out;
    const std::string_view body(s.data() + (bytes ? 2 : 1), s.size() - (bytes ? 3 : 2));
    if (!unescape(body, out)) return std::nullopt;
    if (bytes) return dogpile::Key::Variant{dogpile::Bytes{std::move(out)}};
    return dogpile::Key::Variant{std::move(out)};
  }
  std::int64_t i = 0;
  if (auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), i);
      !s.empty() && ec == std::errc() && p == s.data() + s.size()) {
    return dogpile::Key::Variant{i};
  }
  double d = 0;
  if (auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
      !s.empty() && ec == std::errc() && p == s.data() + s.size()) {
    return dogpile::Key::Variant{d};
  }
  return std::nullopt;
}

dogpile::Key::Variant typed(const std::string& s, const std::string& type, const char* what) {
  if (type == "repr") {
    if (auto v = from_repr(s)) return std::move(*v);
    throw UsageError{std::string(what) + " " + s +
                     " is not a key as `keys` prints it ('text', b'bytes', 42, 1.5)"};
  }
  try {
    std::size_t used = 0;
    if (type == "int") {
      const long long v = std::stoll(s, &used);
      if (used == s.size()) return static_cast<std::int64_t>(v);
    } else if (type == "float") {
      const double v = std::stod(s, &used);
      if (used == s.size()) return v;
    } else if (type == "bytes") {
      return dogpile::Bytes{s};
    } else {
      return s;
    }
  } catch (const std::exception&) {
  }
  throw UsageError{std::string(what) + " '" + s + "' is not a valid " + type};
}

dogpile::Key make_key(const std::string& s, const Args& a) {
  return dogpile::Key(typed(s, a.key_type, "key"));
}

}  // namespace dogpile_disk_cli
