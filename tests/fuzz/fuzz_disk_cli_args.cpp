// libFuzzer target: the dogpile-disk tool's command line (tools/dogpile_disk_args.cpp). The
// bytes split at NULs are argv[1..]; parse_args, then what the commands do with the arguments
// before they touch a cache (KEY, VALUE and TAG converted as --key-type / --value-type say,
// --expire to a duration). Outcomes: a command line, or UsageError (the tool prints it with the
// usage text and exits 2); any other exception, a crash or UB is a bug. An accepted --expire is
// a finite, non-negative number of seconds.
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dogpile/duration.hpp"
#include "dogpile_disk_args.hpp"
#include "fuzz_target.hpp"

DOGPILE_FUZZ_TARGET(disk_cli_args) {
  std::vector<std::string> words{"dogpile-disk"};
  std::string cur;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      words.push_back(cur);
      cur.clear();
    } else {
      cur += static_cast<char>(data[i]);
    }
  }
  if (size != 0) words.push_back(cur);
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  try {
    const auto a = dogpile_disk_cli::parse_args(static_cast<int>(words.size()), argv.data());
    if (a.help || a.version) return 0;
    if (a.expire) {
      if (!std::isfinite(*a.expire) || *a.expire < 0) __builtin_trap();
      const dogpile::Duration d = std::chrono::duration<double>(*a.expire);
      if (d.count() < 0) __builtin_trap();
    }
    if (!a.positional.empty()) (void)dogpile_disk_cli::make_key(a.positional[0], a);
    if (a.command == "set") (void)dogpile_disk_cli::typed(a.positional[1], a.value_type, "value");
    if (a.tag) (void)dogpile_disk_cli::make_key(*a.tag, a);
    if (!a.positional.empty()) (void)dogpile_disk_cli::from_repr(a.positional[0]);
  } catch (const dogpile_disk_cli::UsageError& e) {
    if (e.message.empty()) __builtin_trap();
  }
  return 0;
}
