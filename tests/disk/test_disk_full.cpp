// A full disk: a small tmpfs mounted for the test (the tests run as root; a mount that fails is
// a test failure, never a skip). The failing write says the disk is full, and nothing stored
// before is lost.
#include <sys/mount.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
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
