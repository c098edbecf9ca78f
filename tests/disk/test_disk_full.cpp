// A full disk: a small tmpfs mounted for the test (the tests run as root; a mount that fails is
// a test failure, never a skip). The failing write says the disk is full, and nothing stored
// before is lost.
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include "disk_test_support.hpp"
#include "dogpile/disk/cache.hpp"

using disk_test::TempDir;
using dogpile::DiskCache;

namespace {

// A 1 MiB tmpfs on a fresh directory, unmounted on destruction.
struct SmallDisk {
  TempDir dir;
  SmallDisk() {
    INFO(
        "mount -t tmpfs -o size=1m (needs root, as the test suite runs): " << std::strerror(errno));
    REQUIRE(::mount("tmpfs", dir.path.c_str(), "tmpfs", 0, "size=1m") == 0);
  }
  ~SmallDisk() { ::umount2(dir.path.c_str(), MNT_DETACH); }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
};

std::string full_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const dogpile::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("a full disk is reported as a full disk, and stored values survive", "[disk][full]") {
  SmallDisk disk;
  {
    // Inline values (in the database): SQLite runs out of space.
    DiskCache cache(disk.dir.path / "db", {.disk_min_file_size = 1 << 20});
    cache.set("first", std::string(1000, 'a'));
    std::string msg;
    for (int i = 0; i < 200 && msg.empty(); ++i) {
      try {
        cache.set("k" + std::to_string(i), std::string(50'000, 'x'));
      } catch (const dogpile::Error& e) {
        msg = e.what();
      }
    }
    INFO(msg);
    CHECK(msg.find("disk is full") != std::string::npos);
    CHECK(msg.find("cannot rollback") == std::string::npos);
    CHECK(cache.get<std::string>("first") == std::string(1000, 'a'));
  }
  // Opening while the disk is full: it opens, or says the disk is full.
  const auto reopen = full_message([&] {
    DiskCache again(disk.dir.path / "db", {.disk_min_file_size = 1 << 20});
    if (again.get<std::string>("first") != std::string(1000, 'a')) throw dogpile::Error("lost");
  });
  CHECK((reopen == "(no error)" || reopen.find("disk is full") != std::string::npos));
  {
    // Values in files, on another small disk: the file write runs out of space.
    SmallDisk other;
    DiskCache files(other.dir.path / "files", {.disk_min_file_size = 1});
    const auto msg = full_message([&] {
      for (int i = 0; i < 100; ++i) files.set("f" + std::to_string(i), std::string(100'000, 'y'));
    });
    INFO(msg);
    CHECK(msg.find("disk is full") != std::string::npos);
  }
}

TEST_CASE("read_only opens a WAL cache on a read-only mount", "[disk][readonly]") {
  SmallDisk disk;
  const auto dir = disk.dir.path / "c";
  {
    DiskCache cache(dir);
    cache.set("k", std::string("v"));
    cache.set("big", std::string(100'000, 'b'));  // a value file too
  }
  INFO("remount read-only: " << std::strerror(errno));
  REQUIRE(::mount(nullptr, disk.dir.path.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) == 0);
  DiskCache ro(dir, {.read_only = true});
  CHECK(ro.get<std::string>("k") == std::optional<std::string>("v"));
  CHECK(ro.get<std::string>("big") == std::optional<std::string>(std::string(100'000, 'b')));
  CHECK(ro.size() == 2);
  CHECK_THROWS_AS(ro.set("k", std::string("w")), dogpile::Error);
}

TEST_CASE("read_only opens a WAL cache without write permission", "[disk][readonly]") {
  TempDir d;
  const auto dir = d.path / "c";
  {
    DiskCache cache(dir);
    cache.set("k", std::string("v"));
  }
  std::filesystem::permissions(
      d.path, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                  std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                  std::filesystem::perms::others_exec);
  // A child that gives up root (user nobody) may read but not write the directory.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 1;
    try {
      if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
        ::_exit(2);
      }
      DiskCache ro(dir, {.read_only = true});
      code = ro.get<std::string>("k") == std::optional<std::string>("v") ? 0 : 3;
    } catch (...) {
      code = 4;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
