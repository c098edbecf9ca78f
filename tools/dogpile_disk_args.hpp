// dogpile-disk's command line: the options, the checks of their combinations, and the typed
// KEY / VALUE / TAG arguments. Apart from the tool's main so that the argument parsing can be
// called with any argv (tests/fuzz/fuzz_disk_cli_args.cpp).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dogpile/disk/types.hpp"

namespace dogpile_disk_cli {

/// A command line the tool refuses: the message is printed with the usage text (exit 2).
struct UsageError {
  std::string message;
};

/// A parsed command line.
struct Args {
  std::filesystem::path dir;
  std::string command;
  std::vector<std::string> positional;
  std::string key_type = "text";
  bool key_type_given = false;  // no: get/erase also try KEY as the repr `keys` prints
  std::string value_type = "text";
  std::optional<double> expire;
  std::optional<std::string> tag;
  bool fix = false;
  bool help = false;
  bool version = false;
  bool raw = false;
};

/// Parses argv (argv[0] is the program). With --help or --version nothing else is checked.
/// @throws UsageError for anything else that is not a valid command line; nothing else but
/// std::bad_alloc.
Args parse_args(int argc, char** argv);

/// The inverse of Key::repr() (what `keys` prints): 'text' and b'bytes' with the escapes repr
/// writes, else an int, else a float; nullopt when `s` is none of these.
std::optional<dogpile::Key::Variant> from_repr(const std::string& s);

/// `s` as a key or value of `type` (text, int, float, bytes, repr). @throws UsageError naming
/// `what` when it does not convert.
dogpile::Key::Variant typed(const std::string& s, const std::string& type, const char* what);

/// KEY (or TAG) as --key-type says. @throws UsageError.
dogpile::Key make_key(const std::string& s, const Args& a);

}  // namespace dogpile_disk_cli
