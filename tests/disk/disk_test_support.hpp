#pragma once
// Shared helpers of the disk cache tests.

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dogpile/disk/types.hpp"

namespace disk_test {

/// A fresh temporary directory, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dogpile-disk-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::filesystem::path operator/(const std::string& p) const { return path / p; }
};

/// Every file (relative path) under `dir`, sorted.
inline std::vector<std::string> listing(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    out.push_back(std::filesystem::relative(e.path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// Value files (`*.val`) under `dir`.
inline std::size_t value_files(const std::filesystem::path& dir) {
  std::size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".val") ++n;
  }
  return n;
}

/// Forks `n` children running `fn(i)`; returns their exit codes (99 = exception, -1 = killed).
/// A child never returns into Catch2.
inline std::vector<int> run_children(int n, const std::function<int(int)>& fn) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 99;
      try {
        code = fn(i);
      } catch (...) {  // NOLINT(bugprone-empty-catch): reported through the exit code
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t pid : pids) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    codes.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  }
  return codes;
}

/// What a Python helper script printed (stdout and stderr) and its exit status.
struct PyResult {
  int status = -1;
  std::string output;
};

/// Runs `/usr/bin/python3 tests/disk/<script> [ARGS] MODE DIR` (Debian's python3-diskcache;
/// the `python3` on PATH may lack it). `args` (e.g. a file the script reads) come first.
inline PyResult run_python(const std::string& script, const std::string& mode,
                           const std::filesystem::path& dir, const std::string& args = "") {
  std::string cmd = "/usr/bin/python3 " DOGPILE_DISK_TEST_DIR "/" + script + " " +
                    (args.empty() ? "" : args + " ") + mode + " '" + dir.string() + "' 2>&1";
  PyResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

/// A user type stored through nlohmann's to_json/from_json (the JSON value paths).
struct Point {
  int x = 0;
  int y = 0;
  friend bool operator==(const Point&, const Point&) = default;
};
inline void to_json(nlohmann::json& j, const Point& p) { j = {{"x", p.x}, {"y", p.y}}; }
inline void from_json(const nlohmann::json& j, Point& p) {
  p.x = j.at("x").get<int>();
  p.y = j.at("y").get<int>();
}

/// 51,200 bytes holding every byte value: big enough to be stored in a value file (the same
/// bytes as interop_persistent.py's).
inline dogpile::Bytes big_bytes() {
  std::string s;
  for (int r = 0; r < 200; ++r) {
    for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
  }
  return dogpile::Bytes{s};
}

/// Whether Debian's python3-diskcache can be imported by /usr/bin/python3.
inline bool have_diskcache() {
  static const bool ok = std::system("/usr/bin/python3 -c 'import diskcache' >/dev/null 2>&1") == 0;
  return ok;
}

}  // namespace disk_test
