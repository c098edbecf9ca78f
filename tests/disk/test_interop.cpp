// On-disk compatibility with python-diskcache (Debian's python3-diskcache): each side reads what
// the other wrote, for int / float / str / bytes keys and values, file-stored values, queues and
// FanoutCache routing. The Python half is tests/disk/interop.py.
#include <stdio.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "disk_test_support.hpp"
#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"

using disk_test::big_bytes;
using disk_test::have_diskcache;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::DiskCache;
using dogpile::FanoutCache;
using dogpile::Key;

namespace {

using disk_test::PyResult;

PyResult python(const std::string& mode, const std::filesystem::path& dir) {
  return disk_test::run_python("interop.py", mode, dir);
}

std::string big_str() {
  std::string s;
  for (int i = 0; i < 40000; ++i) s += "\xc3\xa9";  // U+00E9
  return s;
}

void write_dataset(DiskCache& c) {
  c.set(1, 2);
  c.set(-7, "neg");
  c.set(1.5, 2.25);
  c.set("str",
        "text \xc3\xbc"
        "n\xc3\xaf"
        "code");
  c.set(Bytes{"bytes"}, Bytes{std::string("\x00\x01\xff", 3)});
  c.set("big-str", big_str());
  c.set("big-bytes", big_bytes());
  c.set("int64-max", INT64_MAX);
  c.set("empty-bytes", Bytes{});
  c.set("empty-str", "");
}

void verify_dataset(DiskCache& c) {
  CHECK(c.get<std::int64_t>(1) == 2);
  CHECK(c.get<std::string>(-7) == "neg");
  CHECK(c.get<double>(1.5) == 2.25);
  CHECK(c.get<std::string>("str") ==
        "text \xc3\xbc"
        "n\xc3\xaf"
        "code");
  auto b = c.get<dogpile::DiskValue>(Bytes{"bytes"});
  REQUIRE(b);
  CHECK(std::get<Bytes>(*b) == Bytes{std::string("\x00\x01\xff", 3)});
  auto s = c.get<dogpile::DiskValue>("big-str");
  REQUIRE(s);
  CHECK(std::get<std::string>(*s) == big_str());  // TEXT file, read back as text
  CHECK(c.file_path("big-str"));
  auto bb = c.get<dogpile::DiskValue>("big-bytes");
  REQUIRE(bb);
  CHECK(std::get<Bytes>(*bb) == big_bytes());  // BINARY file
  CHECK(c.file_path("big-bytes"));
  CHECK(c.get<std::int64_t>("int64-max") == INT64_MAX);
  CHECK(c.get<Bytes>("empty-bytes") == Bytes{});
  CHECK(c.get<std::string>("empty-str") == "");
}

}  // namespace

TEST_CASE("interop: C++ reads a cache python-diskcache wrote", "[disk][interop]") {
  if (!have_diskcache()) {
    FAIL("python3-diskcache is not installed (/usr/bin/python3 -c 'import diskcache')");
  }
  TempDir d;
  auto r = python("write-cache", d.path);
  REQUIRE(r.status == 0);
  DiskCache cache(d.path);
  verify_dataset(cache);
  try {
    (void)cache.get<std::string>("pickled");
    FAIL("a pickled value must not be readable");
  } catch (const dogpile::UnsupportedFormat& e) {
    CHECK(std::string(e.what()).find("'pickled'") != std::string::npos);
  }
  CHECK(cache.contains("pickled"));
  auto tagged = cache.get_item<std::string>("tagged");
  REQUIRE(tagged);
  CHECK(tagged->tag == Key("mytag"));
  CHECK(tagged->expire_time);
  CHECK(cache.pull<std::string>({.prefix = "jobs"})->second == "job1");
  CHECK(cache.pull<std::string>({.prefix = "jobs"})->second == "job2");
  // C++ writes into the Python-made database (Python's triggers) and stays consistent.
  cache.set("added-by-c++", Bytes{std::string(50000, 'z')});
  CHECK(cache.erase("big-bytes"));
  CHECK(cache.incr(1) == 3);
  CHECK(cache.check().empty());
  CHECK(cache.size() == 12);
}

TEST_CASE("interop: python-diskcache reads a cache C++ wrote", "[disk][interop]") {
  if (!have_diskcache()) FAIL("python3-diskcache is not installed");
  TempDir d;
  {
    DiskCache cache(d.path);
    write_dataset(cache);
    cache.set("tagged", "v", {.expire = std::chrono::hours(1), .tag = "mytag"});
    cache.set("codec", std::map<std::string, std::vector<int>>{{"a", {1, 2, 3}}});
  }
  auto r = python("read-cache", d.path);
  INFO(r.output);
  CHECK(r.status == 0);
}

TEST_CASE("interop: queues pushed from C++ are pulled by python in order", "[disk][interop]") {
  if (!have_diskcache()) FAIL("python3-diskcache is not installed");
  TempDir d;
  {
    DiskCache cache(d.path);
    cache.push("b");
    cache.push("c");
    cache.push("a", {.side = dogpile::Side::front});
  }
  auto r = python("pull-queue", d.path);
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK(r.output == "499999999999999=a,500000000000000=b,500000000000001=c\n");
}

TEST_CASE("interop: FanoutCache routing and values in both directions", "[disk][interop]") {
  if (!have_diskcache()) FAIL("python3-diskcache is not installed");
  auto check_data = [](FanoutCache& fan) {
    for (int i = 0; i < 50; ++i) {
      CHECK(fan.get<std::int64_t>(i) == i * i);
      CHECK(fan.get<std::string>("k" + std::to_string(i)) == "v" + std::to_string(i));
      CHECK(fan.get<Bytes>(Bytes{"b" + std::to_string(i)}) == Bytes{"bv" + std::to_string(i)});
      auto f = fan.get<dogpile::DiskValue>(i + 0.5);
      REQUIRE(f);
      CHECK(std::get<double>(*f) == static_cast<double>(i));
    }
    CHECK(fan.get<std::string>(-12345) == "negative");
    CHECK(fan.get<Bytes>("fanout-big") == big_bytes());
  };
  SECTION("python writes, C++ reads") {
    TempDir d;
    REQUIRE(python("write-fanout", d.path).status == 0);
    CHECK_THROWS_AS(FanoutCache(d.path, {.shards = 8}), dogpile::ValidationError);
    FanoutCache fan(d.path);  // shard count inferred from the directories
    CHECK(fan.shard_count() == 4);
    check_data(fan);
    CHECK(fan.size() == 202);
    CHECK(fan.check().empty());
  }
  SECTION("C++ writes, python reads") {
    TempDir d;
    {
      FanoutCache fan(d.path, {.shards = 4});
      for (int i = 0; i < 50; ++i) {
        REQUIRE(fan.set(i, i * i));
        REQUIRE(fan.set("k" + std::to_string(i), "v" + std::to_string(i)));
        REQUIRE(fan.set(Bytes{"b" + std::to_string(i)}, Bytes{"bv" + std::to_string(i)}));
        REQUIRE(fan.set(i + 0.5, static_cast<double>(i)));
      }
      REQUIRE(fan.set(-12345, "negative"));
      REQUIRE(fan.set("fanout-big", big_bytes()));
      check_data(fan);
    }
    auto r = python("read-fanout", d.path);
    INFO(r.output);
    CHECK(r.status == 0);
  }
}

TEST_CASE("interop: memoize keys a Python caller can compute", "[disk][interop][memoize]") {
  TempDir d;
  DiskCache cache(d.path);
  int calls = 0;
  auto greet = cache.memoize("greet", [&](const std::string& who, int n) {
    ++calls;
    return who + "!" + std::to_string(n);
  });
  CHECK(greet(std::string("Zo\xc3\xa9"), 2) == "Zo\xc3\xa9!2");  // stored by C++
  auto r = python("memoize-keys", d.path);
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output == "Zo\xc3\xa9!2\n");  // Python found C++'s result under its key
  auto square = cache.memoize("square", [&](int x) {
    ++calls;
    return x * x;
  });
  CHECK(square(12) == 1000);  // Python's result, found under the key Python computed
  CHECK(calls == 1);
}
