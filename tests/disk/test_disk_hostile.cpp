// A tampered cache directory (issue 18): a `filename` column naming a file outside the cache, a
// value file or a hex directory replaced by a symlink, a Settings counter of the wrong type.
// Whatever the database says, nothing outside the cache directory is read, written or deleted.
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "disk_test_support.hpp"
#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::DiskCache;
using dogpile::DiskValue;
using dogpile::Key;
using K = dogpile::CheckWarning::Kind;

namespace {

void sql(const fs::path& dir, const std::string& statement) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((dir / "cache.db").c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, statement.c_str(), nullptr, nullptr, &err);
  INFO(statement << ": " << (err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}

enum class Attack { dotdot, absolute, symlinked_file, symlinked_leaf_dir, symlinked_top_dir };

const char* name_of(Attack a) {
  switch (a) {
    case Attack::dotdot:
      return "filename ../outside/...";
    case Attack::absolute:
      return "absolute filename";
    case Attack::symlinked_file:
      return "value file replaced by a symlink";
    case Attack::symlinked_leaf_dir:
      return "ab/cd replaced by a symlink";
    case Attack::symlinked_top_dir:
      return "ab replaced by a symlink";
  }
  return "?";
}

const std::string kSecret = "SECRET outside the cache";

/// A cache at root/cache with one file-stored row "k" (tag "t", expiring in 1 h), and an outside
/// file that the tampered row names, directly or through a planted symlink.
struct Scene {
  TempDir root;
  fs::path dir = root / "cache";
  fs::path outside = root / "outside";
  fs::path secret;  // the outside file that must survive unread
  std::unique_ptr<DiskCache> cache;

  explicit Scene(Attack a) {
    dogpile::DiskCacheOptions o;
    o.sqlite_synchronous = 0;  // no fsync: these tests are about names, not durability
    cache = std::make_unique<DiskCache>(dir, o);
    REQUIRE(cache->set("k", Bytes{std::string(40000, 'v')}, {1h, Key("t")}));
    REQUIRE(cache->set("other", 1));
    auto full = cache->file_path("k");
    REQUIRE(full);
    const std::string rel = fs::relative(*full, dir).string();  // ab/cd/<hex>.val
    const std::string leaf = rel.substr(6);
    switch (a) {
      case Attack::dotdot:
        secret = outside / "sub" / "secret.txt";
        spit(secret, kSecret);
        sql(dir, "UPDATE Cache SET filename = '../outside/sub/secret.txt' WHERE key = 'k'");
        break;
      case Attack::absolute:
        secret = outside / "sub" / "secret.txt";
        spit(secret, kSecret);
        sql(dir, "UPDATE Cache SET filename = '" + secret.string() + "' WHERE key = 'k'");
        break;
      case Attack::symlinked_file:
        secret = outside / "sub" / "secret.txt";
        spit(secret, kSecret);
        fs::remove(*full);
        fs::create_symlink(secret, *full);
        break;
      case Attack::symlinked_leaf_dir:
        secret = outside / "sub" / leaf;
        spit(secret, kSecret);
        fs::remove_all(full->parent_path());
        fs::create_directory_symlink(secret.parent_path(), full->parent_path());
        break;
      case Attack::symlinked_top_dir:
        secret = outside / "sub" / rel.substr(3, 2) / leaf;
        spit(secret, kSecret);
        fs::remove_all(full->parent_path().parent_path());
        fs::create_directory_symlink(outside / "sub", full->parent_path().parent_path());
        break;
    }
  }

  /// The outside file and its directory are there, untouched.
  void outside_intact() const {
    CHECK(fs::is_directory(secret.parent_path()));
    CHECK(fs::is_regular_file(secret));
    CHECK(slurp(secret) == kSecret);
  }
};

}  // namespace

TEST_CASE("a tampered filename or a planted symlink never reaches outside the cache",
          "[disk][hostile]") {
  const Attack attack = GENERATE(Attack::dotdot, Attack::absolute, Attack::symlinked_file,
                                 Attack::symlinked_leaf_dir, Attack::symlinked_top_dir);
  INFO(name_of(attack));

  using Op = std::function<void(Scene&)>;
  const std::vector<std::pair<const char*, Op>> ops = {
      {"get: a miss",
       [](Scene& s) {
         CHECK_FALSE(s.cache->get<Bytes>("k"));
         CHECK_FALSE(s.cache->get_item<Bytes>("k"));
       }},
      {"read: no stream", [](Scene& s) { CHECK(s.cache->read("k") == nullptr); }},
      {"file_path: none", [](Scene& s) { CHECK_FALSE(s.cache->file_path("k")); }},
      {"pop: a miss, the row goes",
       [](Scene& s) {
         CHECK_FALSE(s.cache->pop<Bytes>("k"));
         CHECK_FALSE(s.cache->contains("k"));
       }},
      {"erase", [](Scene& s) { CHECK(s.cache->erase("k")); }},
      {"set overwrites",
       [](Scene& s) {
         CHECK(s.cache->set("k", 7));
         CHECK(s.cache->get<int>("k") == 7);
       }},
      {"set overwrites with a new file",
       [](Scene& s) {
         // A new value file may land in a symlinked hex directory's name: refused, or written
         // inside; never through the symlink.
         try {
           s.cache->set("k", Bytes{std::string(50000, 'n')});
           CHECK(s.cache->get<Bytes>("k")->data == std::string(50000, 'n'));
         } catch (const dogpile::BackendError& e) {
           CHECK(std::string(e.what()).find("not a directory of this cache") != std::string::npos);
         }
       }},
      {"clear", [](Scene& s) { CHECK(s.cache->clear() == 2); }},
      {"expire",
       [](Scene& s) { CHECK(s.cache->expire(std::chrono::system_clock::now() + 2h) == 1); }},
      {"cull",
       [](Scene& s) {
         s.cache->reset("size_limit", DiskValue{std::int64_t{0}});
         CHECK(s.cache->cull() >= 1);
         CHECK_FALSE(s.cache->contains("k"));
         s.cache->reset("size_limit", DiskValue{std::int64_t{1} << 30});
       }},
      {"evict", [](Scene& s) { CHECK(s.cache->evict(Key("t")) == 1); }},
      {"check reports; check(fix) repairs inside only",
       [](Scene& s) {
         auto found = s.cache->check();
         CHECK(std::any_of(found.begin(), found.end(),
                           [](const auto& w) { return w.kind == K::bad_filename; }));
         s.cache->check(true);
         CHECK(s.cache->check().empty());
         CHECK_FALSE(s.cache->contains("k"));
         CHECK(s.cache->get<int>("other") == 1);
         // No symlink is left in the directory.
         for (const auto& e : fs::recursive_directory_iterator(s.dir)) {
           CHECK_FALSE(e.is_symlink());
         }
       }},
  };
  for (const auto& [what, op] : ops) {
    INFO(what);
    Scene s(attack);
    op(s);
    s.outside_intact();
    // The cache goes on working, and whatever is left of it is removed inside only.
    CHECK(s.cache->set("after", 2));
    CHECK(s.cache->get<int>("after") == 2);
    s.cache->clear();
    s.cache.reset();
    s.outside_intact();
  }
}

TEST_CASE("only names of the cache's own value-file layout are used", "[disk][hostile]") {
  using dogpile::DiskCache;
  TempDir d;
  DiskCache cache(d.path);
  REQUIRE(cache.set("k", Bytes{std::string(40000, 'v')}));
  auto full = cache.file_path("k");
  REQUIRE(full);
  const std::string rel = fs::relative(*full, d.path).string();
  // Our own layout (the same as python-diskcache 5.x: hex[:2]/hex[2:4]/hex[4:32].val).
  REQUIRE(rel.size() == 38);
  // A file of a foreign name, even inside the directory, is not read.
  for (const std::string& bad :
       {std::string("ab/cd/x.val"), "AB/CD/" + rel.substr(6), rel + "/", "./" + rel,
        rel.substr(0, 5) + "/../" + rel.substr(0, 5) + "/" + rel.substr(6),
        std::string("cache.db")}) {
    INFO(bad);
    sql(d.path, "UPDATE Cache SET filename = '" + bad + "' WHERE key = 'k'");
    CHECK_FALSE(cache.get<Bytes>("k"));
  }
  sql(d.path, "UPDATE Cache SET filename = '" + rel + "' WHERE key = 'k'");
  CHECK(cache.get<Bytes>("k")->data.size() == 40000);
}

TEST_CASE("a FIFO planted as a value file is a miss, not a hang", "[disk][hostile]") {
  TempDir d;
  DiskCache cache(d.path);
  REQUIRE(cache.set("k", Bytes{std::string(40000, 'v')}));
  auto full = cache.file_path("k");
  REQUIRE(full);
  fs::remove(*full);
  REQUIRE(::mkfifo(full->c_str(), 0600) == 0);
  CHECK_FALSE(cache.get<Bytes>("k"));
  CHECK(cache.read("k") == nullptr);
  auto found = cache.check(true);
  CHECK(std::any_of(found.begin(), found.end(),
                    [](const auto& w) { return w.kind == K::bad_filename; }));
  CHECK(cache.check().empty());
}

TEST_CASE("a Settings counter of the wrong type is recomputed at open, a clear error after",
          "[disk][hostile][settings]") {
  TempDir d;
  {
    DiskCache cache(d.path);
    cache.set("a", 1);
    cache.set("b", Bytes{std::string(40000, 'x')});
  }
  const std::string bad =
      GENERATE(std::string("'abc'"), std::string("x'00ff'"), std::string("-5"), std::string("1.5"));
  const std::string name = GENERATE(std::string("count"), std::string("size"), std::string("hits"),
                                    std::string("misses"));
  INFO(name << " = " << bad);
  sql(d.path, "UPDATE Settings SET value = " + bad + " WHERE key = '" + name + "'");

  SECTION("read-only: a DatabaseError naming the setting") {
    dogpile::DiskCacheOptions o;
    o.read_only = true;
    try {
      DiskCache ro(d.path, o);
      FAIL("opened");
    } catch (const dogpile::DatabaseError& e) {
      CHECK(std::string(e.what()).find(name) != std::string::npos);
    }
  }
  SECTION("writable: reported and recomputed") {
    DiskCache cache(d.path);
    REQUIRE(cache.setting_problems().size() == 1);
    CHECK(cache.setting_problems()[0].find(name) != std::string::npos);
    CHECK(cache.size() == 2);
    CHECK(cache.check().empty());
    CHECK(cache.get<int>("a") == 1);
    // Tampered again while open: the readers of the counter throw a dogpile error naming it.
    sql(d.path, "UPDATE Settings SET value = " + bad + " WHERE key = '" + name + "'");
    if (name == "count") {
      CHECK_THROWS_AS(cache.size(), dogpile::DatabaseError);
    }
    if (name == "hits" || name == "misses") {
      CHECK_THROWS_AS(cache.stats(), dogpile::DatabaseError);
    }
    if (name == "count" || name == "size") {
      auto found = cache.check(true);
      CHECK(found.size() == 1);
      CHECK(cache.check().empty());
    }
  }
}

TEST_CASE("a Settings row whose sqlite_ name is not a bare pragma name is refused, never run",
          "[disk][hostile][settings]") {
  TempDir d;
  { DiskCache cache(d.path); }
  // Without the check this row would run PRAGMA temp_store_directory='<elsewhere>' at open.
  const fs::path elsewhere = d.path / "elsewhere";
  fs::create_directory(elsewhere);
  sql(d.path, "INSERT INTO Settings (key, value) VALUES ('sqlite_temp_store_directory=''" +
                  elsewhere.string() + "''--', 1)");
  try {
    DiskCache cache(d.path);
    FAIL("opened");
  } catch (const dogpile::ValidationError& e) {
    CHECK(std::string(e.what()).find("not a pragma name") != std::string::npos);
  }
}

// ---- private_cache (issue 19 §4) -----------------------------------------------------------

namespace {

/// Sets the process umask for a scope (tests run on one thread).
struct Umask {
  mode_t old;
  explicit Umask(mode_t m) : old(::umask(m)) {}
  ~Umask() { ::umask(old); }
  Umask(const Umask&) = delete;
  Umask& operator=(const Umask&) = delete;
};

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

/// The value file, its two hex directories, and the cache's own files, with their modes.
void check_modes(const fs::path& dir, const fs::path& value_file, unsigned dir_mode,
                 unsigned file_mode, unsigned db_mode) {
  INFO(dir.string());
  CHECK(mode_of(dir) == dir_mode);
  CHECK(mode_of(value_file) == file_mode);
  CHECK(mode_of(value_file.parent_path()) == dir_mode);
  CHECK(mode_of(value_file.parent_path().parent_path()) == dir_mode);
  for (const char* f : {"cache.db", "cache.db-wal", "cache.db-shm"}) {
    INFO(f);
    CHECK(mode_of(dir / f) == db_mode);
  }
}

}  // namespace

TEST_CASE(
    "private_cache: 0700 directories and 0600 files whatever the umask; the default "
    "follows the umask",
    "[disk][private]") {
  const mode_t mask = GENERATE(mode_t{022}, mode_t{002});
  INFO("umask " << mask);
  TempDir root;
  Umask um(mask);
  const Bytes big{std::string(40000, 'v')};
  {
    // Default: as python-diskcache (os.makedirs 0777, open 'xb' 0666, SQLite 0644).
    DiskCache cache(root / "default");
    REQUIRE(cache.set("k", big));
    check_modes(root / "default", *cache.file_path("k"), 0777 & ~mask, 0666 & ~mask, 0644 & ~mask);
  }
  dogpile::DiskCacheOptions o;
  o.private_cache = true;
  {
    DiskCache cache(root / "private", o);
    REQUIRE(cache.set("k", big));
    std::istringstream in(std::string(50000, 's'));
    REQUIRE(cache.set_stream("s", in));
    check_modes(root / "private", *cache.file_path("k"), 0700, 0600, 0600);
    check_modes(root / "private", *cache.file_path("s"), 0700, 0600, 0600);
  }
  {
    // Reopened: accepted (its mode is its own), still private.
    DiskCache again(root / "private", o);
    CHECK(again.get<Bytes>("k") == big);
  }
  dogpile::FanoutCacheOptions fo;
  fo.private_cache = true;
  fo.shards = 2;
  {
    dogpile::FanoutCache fan(root / "fanout", fo);
    REQUIRE(fan.set("k", big));
    CHECK(mode_of(root / "fanout") == 0700);
    CHECK(mode_of(root / "fanout" / "dogpile-fanout.json") == 0600);
    CHECK(mode_of(root / "fanout" / "dogpile-fanout.lock") == 0600);
    for (std::size_t i = 0; i < 2; ++i) {
      const fs::path shard = fan.shard(i).directory();
      CHECK(mode_of(shard) == 0700);
      CHECK(mode_of(shard / "cache.db") == 0600);
    }
    const std::size_t i = fan.shard_index("k");
    check_modes(fan.shard(i).directory(), *fan.shard(i).file_path("k"), 0700, 0600, 0600);
  }
}

TEST_CASE("private_cache refuses an existing directory others can read or write",
          "[disk][private]") {
  TempDir root;
  dogpile::DiskCacheOptions o;
  o.private_cache = true;
  dogpile::FanoutCacheOptions fo;
  fo.private_cache = true;
  for (unsigned mode : {0755u, 0750u, 0720u, 0702u, 0777u}) {
    char m[8];
    std::snprintf(m, sizeof m, "%04o", mode);
    INFO(m);
    const fs::path dir = root / m;
    fs::create_directory(dir);
    REQUIRE(::chmod(dir.c_str(), mode) == 0);
    for (int fanout = 0; fanout < 2; ++fanout) {
      try {
        if (fanout) {
          dogpile::FanoutCache fan(dir, fo);
        } else {
          DiskCache cache(dir, o);
        }
        FAIL("opened");
      } catch (const dogpile::DatabaseError& e) {
        CHECK_THAT(e.what(), Catch::Contains(dir.string()) && Catch::Contains(m));
      }
    }
    CHECK_FALSE(fs::exists(dir / "cache.db"));  // refused before anything was created
  }
  // Traversal alone (0711) reveals no names; 0700 is private.
  for (unsigned mode : {0700u, 0711u}) {
    const fs::path dir = root / ("ok" + std::to_string(mode));
    fs::create_directory(dir);
    REQUIRE(::chmod(dir.c_str(), mode) == 0);
    DiskCache cache(dir, o);
    CHECK(cache.set("k", 1));
  }
}

// max_value_bytes bounds a stored value *before* it is read (issue 18): a value file by its
// size, an inline value by SQLite's length limit. A planted file of 64 GiB (sparse)
// would otherwise be reserved and read whole (std::bad_alloc or the machine's memory), and a
// planted 8 MiB inline blob returned.
TEST_CASE("max_value_bytes refuses a planted large value before reading it", "[disk][hostile]") {
  TempDir root;
  const fs::path dir = root / "cache";
  dogpile::DiskCacheOptions o;
  o.sqlite_synchronous = 0;
  o.max_value_bytes = std::size_t{1} << 20;
  DiskCache cache(dir, o);
  REQUIRE(cache.set("file", Bytes{std::string(40000, 'v')}));
  REQUIRE(cache.set("inline", Bytes{std::string(100, 'i')}));
  REQUIRE(cache.set("other", 7));

  SECTION("a value file grown to 64 GiB") {
    auto full = cache.file_path("file");
    REQUIRE(full);
    fs::resize_file(*full, std::uintmax_t{64} << 30);  // sparse: no disk taken
    CHECK_THROWS_AS(cache.get<Bytes>("file"), dogpile::ValueTooLargeError);
    CHECK_THROWS_WITH(cache.get<Bytes>("file"),
                      Catch::Contains("max_value_bytes") && Catch::Contains("'file'"));
    auto stream = cache.read("file");  // streaming takes no memory: still allowed
    REQUIRE(stream);
    char head[4] = {};
    stream->read(head, 4);
    CHECK(std::string(head, 4) == "vvvv");
    auto warnings = cache.check();  // the file's size no longer matches its row
    REQUIRE(warnings.size() == 1);
    CHECK_THAT(warnings[0].message, Catch::Contains("size"));
  }
  SECTION("an inline blob of 8 MiB") {
    sql(dir, "UPDATE Cache SET value = zeroblob(8388608) WHERE key = 'inline'");
    CHECK_THROWS_AS(cache.get<Bytes>("inline"), dogpile::ValueTooLargeError);
    CHECK_THROWS_AS(cache.pop<Bytes>("inline"), dogpile::ValueTooLargeError);
    CHECK(cache.erase("inline"));  // and the way out works
    CHECK_FALSE(cache.get<Bytes>("inline"));
    REQUIRE(cache.set("inline", Bytes{std::string(100, 'i')}));
    CHECK(cache.check().empty());
  }
  // Other keys still read, and the cache's count is unchanged.
  CHECK(cache.get<std::int64_t>("other") == 7);
  CHECK(cache.size() == 3);

  // Writes over the bound are refused with the way out; set_stream writes any size.
  CHECK_THROWS_WITH(cache.set("big", Bytes{std::string(std::size_t{2} << 20, 'b')}),
                    Catch::Contains("max_value_bytes") && Catch::Contains("set_stream"));
  std::istringstream in(std::string(std::size_t{2} << 20, 's'));
  REQUIRE(cache.set_stream("streamed", in));
  CHECK_THROWS_AS(cache.get<std::string>("streamed"), dogpile::ValueTooLargeError);
  CHECK(cache.read("streamed"));
  CHECK_THROWS_WITH(DiskCache(root / "zero",
                              [] {
                                dogpile::DiskCacheOptions z;
                                z.max_value_bytes = 0;
                                return z;
                              }()),
                    Catch::Contains("max_value_bytes"));
}
