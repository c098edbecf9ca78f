// The `dbm` region backend: the conformance suite, the file-wide reentrant flock lock across
// processes and threads, the kept-open handle, faults (corrupt file, missing directory, read-only
// file) and interop with Python dogpile.cache's dbm backend.
#include <fcntl.h>
#include <gdbm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/backends/dbm.hpp"
#include "dogpile/region.hpp"

#include "backends/conformance.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using dogpile::DbmBackend;
using dogpile::DbmOptions;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "dogpile-dbm-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::string file(const std::string& name) const { return (path / name).string(); }
};

using ::dogpile_conformance::run_children;

std::shared_ptr<dogpile::CacheBackend> dbm_at(const std::string& file) {
  return dogpile::make_backend("dbm", {{"filename", file}});
}

// Runs the Python dogpile.cache side (tests/support/dogpile_interop.py); returns its stdout.
std::string python(const std::string& file, const std::vector<std::string>& args) {
  const nlohmann::json spec = {{"name", "dogpile.cache.dbm"}, {"arguments", {{"filename", file}}}};
  auto quote = [](const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string cmd = "/usr/bin/python3 " DOGPILE_INTEROP_PY " " + quote(spec.dump());
  for (const auto& a : args) cmd += " " + quote(a);
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("popen failed: " + cmd);
  std::string out;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  // No Catch2 assertion here: this also runs on helper threads (Catch2 is not thread-safe).
  if (::pclose(p) != 0) throw std::runtime_error("failed: " + cmd + "\n" + out);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

const fs::path& conformance_file(const char* kind) {
  static TempDir dir;
  static const fs::path locked = dir.path / "conformance.dbm";
  static const fs::path unlocked = dir.path / "conformance-nolock.dbm";
  return std::string_view(kind) == "locked" ? locked : unlocked;
}

}  // namespace

// The dogpile lock is a file lock held until released (not a lease): the suite's lease cases
// check is_lease() and its killed-holder case expects the lock back as soon as the holder dies.
DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE("dbm",
                                        [] { return dbm_at(conformance_file("locked").string()); })
DOGPILE_MAX_VALUE_BYTES_CONFORMANCE("dbm", [](std::size_t max) {
  return dogpile::make_backend(
      "dbm", {{"filename", conformance_file("locked").string()}, {"max_value_bytes", max}});
})
// dogpile_lockfile=false: the region's in-process mutex; keep_open=false: dogpile's
// open-per-call behaviour.
DOGPILE_BACKEND_CONFORMANCE("dbm no dogpile lockfile", [] {
  return dogpile::make_backend("dogpile.cache.dbm",
                               {{"filename", conformance_file("unlocked").string()},
                                {"dogpile_lockfile", false},
                                {"keep_open", false}});
})

TEST_CASE("dbm: registered by name; arguments validated by name", "[dbm]") {
  TempDir d;
  CHECK(dogpile::is_backend_registered("dbm"));
  CHECK(dogpile::is_backend_registered("dogpile.cache.dbm"));
  CHECK_THROWS_WITH(dogpile::make_backend("dbm", nlohmann::json::object()),
                    Catch::Contains("filename") && Catch::Contains("required"));
  CHECK_THROWS_AS(dogpile::make_backend("dbm", {{"filename", 3}}), dogpile::ValidationError);
  CHECK_THROWS_WITH(dogpile::make_backend("dbm", {{"filename", d.file("a")}, {"rw_lockfile", 1}}),
                    Catch::Contains("rw_lockfile"));
  CHECK_THROWS_WITH(
      dogpile::make_backend("dbm", {{"filename", d.file("a")}, {"dogpile_lockfile", true}}),
      Catch::Contains("dogpile_lockfile"));
  CHECK_THROWS_WITH(dogpile::make_backend("dbm", {{"filename", d.file("a")}, {"keep_open", "no"}}),
                    Catch::Contains("keep_open"));
  CHECK_THROWS_WITH(dogpile::make_backend("dbm", {{"filename", d.file("a")}, {"bogus", 1}}),
                    Catch::Contains("bogus"));
  CHECK_THROWS_WITH(dogpile::make_backend("dbm", {{"filename", d.file("a")}, {"keep_opn", true}}),
                    Catch::Contains("argument 'keep_opn' is unknown; did you mean 'keep_open'?"));
  CHECK_THROWS_AS(DbmBackend(DbmOptions{}), dogpile::ValidationError);

  auto b = dbm_at(d.file("a.dbm"));
  auto* dbm = dynamic_cast<DbmBackend*>(b.get());
  REQUIRE(dbm != nullptr);
  CHECK(dbm->options().rw_lockfile == fs::path(d.file("a.dbm.rw.lock")));
  CHECK(dbm->options().dogpile_lockfile == fs::path(d.file("a.dbm.dogpile.lock")));
  CHECK(fs::exists(d.file("a.dbm")));
  auto m = b->get_mutex("k");
  REQUIRE(m);
  CHECK_FALSE(m->is_lease());

  auto custom = dogpile::make_backend(
      "dbm",
      {{"filename", d.file("b.dbm")}, {"rw_lockfile", d.file("rw")}, {"dogpile_lockfile", false}});
  CHECK(custom->get_mutex("k") == nullptr);
  custom->set("k", "v");
  CHECK(fs::exists(d.file("rw")));

  // rw_lockfile=false: GDBM's own lock, a handle per call (dogpile's behaviour without one).
  auto unlocked =
      dogpile::make_backend("dbm", {{"filename", d.file("c.dbm")}, {"rw_lockfile", false}});
  auto* du = dynamic_cast<DbmBackend*>(unlocked.get());
  unlocked->set("k", "v");
  CHECK(unlocked->get("k") == std::string("v"));
  CHECK(unlocked->get_multi(std::vector<std::string>{"k", "x"}) ==
        std::vector<std::optional<std::string>>{"v", std::nullopt});
  unlocked->erase("k");
  CHECK_FALSE(unlocked->get("k"));
  CHECK(du->opens() >= 5);
  CHECK_FALSE(fs::exists(d.file("c.dbm.rw.lock")));
}

TEST_CASE("dbm: the file is GDBM's format, readable by the C library and Python's dbm.gnu",
          "[dbm][python]") {
  TempDir d;
  const auto file = d.file("raw.dbm");
  auto b = dbm_at(file);
  b->set("key one", std::string("bin\0ary", 7));
  // The C library, a separate handle.
  GDBM_FILE g = gdbm_open(file.c_str(), 0, GDBM_READER | GDBM_NOLOCK, 0, nullptr);
  REQUIRE(g != nullptr);
  char k[] = "key one";
  datum v = gdbm_fetch(g, datum{k, 7});
  REQUIRE(v.dptr != nullptr);
  CHECK(std::string(v.dptr, static_cast<std::size_t>(v.dsize)) == std::string("bin\0ary", 7));
  std::free(v.dptr);
  gdbm_close(g);
  // Python's dbm.gnu writes; this backend's kept handle sees it.
  const std::string cmd =
      "/usr/bin/python3 -c 'import dbm.gnu,sys; d=dbm.gnu.open(sys.argv[1],\"w\"); "
      "d[b\"from python\"]=b\"hello\"; d.close()' " +
      file;
  REQUIRE(std::system(cmd.c_str()) == 0);
  CHECK(b->get("from python") == std::string("hello"));
}

TEST_CASE(
    "dbm: the handle stays open while only this backend writes, and is reopened after "
    "another writer",
    "[dbm]") {
  TempDir d;
  const auto file = d.file("keep.dbm");
  auto a = dbm_at(file);
  auto* da = dynamic_cast<DbmBackend*>(a.get());
  const auto opened = da->opens();
  for (int i = 0; i < 200; ++i) {
    a->set("k" + std::to_string(i), std::to_string(i));
    CHECK(a->get("k" + std::to_string(i)) == std::to_string(i));
  }
  CHECK(da->opens() == opened);  // no reopen: nobody else wrote
  // Another dogpile-cpp writer (another backend object = another process's view).
  auto b = dbm_at(file);
  b->set("k1", "from b");
  CHECK(a->get("k1") == std::string("from b"));
  CHECK(da->opens() == opened + 1);
  b->erase("k2");
  CHECK_FALSE(a->get("k2"));
  // A writer that knows nothing of the generation counter (Python's dbm.gnu), right after our
  // own write: the same clock tick must not hide it.
  a->set("k3", "ours");
  const std::string cmd =
      "/usr/bin/python3 -c 'import dbm.gnu,sys; d=dbm.gnu.open(sys.argv[1],\"w\"); "
      "d[b\"k3\"]=b\"theirs\"; d.close()' " +
      file;
  REQUIRE(std::system(cmd.c_str()) == 0);
  CHECK(a->get("k3") == std::string("theirs"));
  // keep_open=false: dogpile's open per call.
  auto c = dogpile::make_backend("dbm", {{"filename", file}, {"keep_open", false}});
  auto* dc = dynamic_cast<DbmBackend*>(c.get());
  const auto before = dc->opens();
  CHECK(c->get("k3") == std::string("theirs"));
  CHECK(c->get("k3") == std::string("theirs"));
  CHECK(dc->opens() == before + 2);
}

TEST_CASE("dbm lock: reentrant across keys per thread, exclusive between threads", "[dbm][lock]") {
  TempDir d;
  auto b = dbm_at(d.file("lock.dbm"));
  auto foo = b->get_mutex("foo");
  auto bar = b->get_mutex("bar");
  auto foo2 = b->get_mutex("foo");
  REQUIRE(foo->acquire());
  CHECK(foo->locked());
  CHECK(bar->acquire(false));         // same thread, another key: reentrant
  CHECK_FALSE(foo2->acquire(false));  // same key again: the file lock is taken
  std::atomic<bool> other_got{false};
  std::thread t([&] {
    auto baz = b->get_mutex("baz");
    other_got = baz->try_acquire_for(100ms);  // another thread: excluded
    if (other_got) baz->release();
  });
  t.join();
  CHECK_FALSE(other_got);
  bar->release();
  foo->release();
  CHECK_FALSE(foo->locked());
  std::thread t2([&] {
    auto baz = b->get_mutex("baz");
    other_got = baz->try_acquire_for(1s);
    if (other_got) baz->release();
  });
  t2.join();
  CHECK(other_got);
  CHECK_THROWS_AS(foo->release(), dogpile::LockError);
}

TEST_CASE("dbm lock: 3 processes x 8 threads on one missing key -> exactly one creation",
          "[dbm][lock][fork]") {
  TempDir d;
  const auto file = d.file("stampede.dbm");
  dbm_at(file);  // create it before the children race
  struct Shared {
    std::atomic<int> creations{0};
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
  };
  ::dogpile_conformance::SharedMemory<Shared> shared;
  const int ok = run_children(
      3,
      [&](int) {
        auto region = dogpile::make_region({.name = "stampede"});
        region.configure("dbm", {.arguments = {{"filename", file}}});
        shared->ready.fetch_add(1);
        while (!shared->go.load()) std::this_thread::sleep_for(1ms);
        std::atomic<int> good{0};
        ::dogpile_conformance::run_threads(8, [&](int) {
          const auto v = region.get_or_create("the-key", [&] {
            shared->creations.fetch_add(1);
            std::this_thread::sleep_for(300ms);
            return std::string("created once");
          });
          if (v == "created once") ++good;
        });
        return good == 8;
      },
      [&] {
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (shared->ready.load() < 3 && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(1ms);
        }
        shared->go = true;
      });
  CHECK(ok == 3);
  CHECK(shared->creations.load() == 1);
}

TEST_CASE("dbm lock: a SIGKILLed holder frees the lock at once", "[dbm][lock][fork]") {
  TempDir d;
  const auto file = d.file("kill.dbm");
  auto b = dbm_at(file);
  std::array<int, 2> p{};
  REQUIRE(::pipe(p.data()) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(p[0]);
    try {
      auto cb = dbm_at(file);
      auto region = dogpile::make_region({.name = "killed"});
      region.configure(cb);
      region.get_or_create("k", [&] {
        if (::write(p[1], "1", 1) != 1) ::_exit(2);
        for (;;) ::pause();  // mid-creation, holding the lock, until killed
        return std::string("never");
      });
    } catch (...) {
    }
    ::_exit(1);
  }
  ::close(p[1]);
  char c = 0;
  REQUIRE(::read(p[0], &c, 1) == 1);
  ::close(p[0]);
  auto m = b->get_mutex("k");
  CHECK_FALSE(m->acquire(false));  // the child is creating
  CHECK(m->locked());
  REQUIRE(::kill(pid, SIGKILL) == 0);
  ::dogpile_conformance::wait_child(pid);
  CHECK(m->acquire(false));  // immediately: the kernel dropped the flock with the process
  m->release();
  // And a region regenerates right away.
  auto region = dogpile::make_region({.name = "after"});
  region.configure(b);
  CHECK(region.get_or_create("k", [] { return std::string("regenerated"); }) == "regenerated");
}

TEST_CASE("dbm: 4 processes writing and reading concurrently lose nothing and tear nothing",
          "[dbm][fork]") {
  TempDir d;
  const auto file = d.file("concurrent.dbm");
  dbm_at(file);
  constexpr int kProcs = 4;
  constexpr int kKeys = 150;
  auto value_of = [](int p, int i) {
    return std::string(static_cast<std::size_t>(50 + (i * 37) % 900), static_cast<char>('a' + p)) +
           ":" + std::to_string(p) + ":" + std::to_string(i);
  };
  const int ok = run_children(kProcs, [&](int p) {
    auto b = dbm_at(file);
    bool good = true;
    for (int i = 0; i < kKeys; ++i) {
      b->set("p" + std::to_string(p) + "_" + std::to_string(i), value_of(p, i));
      // Read another process's key: absent or exactly its value, never torn.
      const int q = (p + 1 + i) % kProcs;
      const int j = i / 2;
      const auto v = b->get("p" + std::to_string(q) + "_" + std::to_string(j));
      if (v && *v != value_of(q, j)) good = false;
      if (i % 10 == 0) {
        b->set_multi(
            std::vector<dogpile::BytesItem>{{"multi" + std::to_string(p), std::to_string(i)}});
      }
    }
    return good;
  });
  CHECK(ok == kProcs);
  auto b = dbm_at(file);
  int missing = 0;
  for (int p = 0; p < kProcs; ++p) {
    for (int i = 0; i < kKeys; ++i) {
      if (b->get("p" + std::to_string(p) + "_" + std::to_string(i)) != value_of(p, i)) ++missing;
    }
  }
  CHECK(missing == 0);
}

TEST_CASE("dbm: a corrupt file is a BackendError naming it, and is left as it was", "[dbm]") {
  TempDir d;
  const auto file = d.file("corrupt.dbm");
  {
    std::ofstream f(file, std::ios::binary);
    f << std::string(4096, 'x');
  }
  auto make = [&] { return dbm_at(file); };
  CHECK_THROWS_AS(make(), dogpile::BackendError);
  CHECK_THROWS_WITH(make(), Catch::Contains(file) && Catch::Contains("corrupt"));
  CHECK(fs::file_size(file) == 4096);  // not overwritten

  // A valid file truncated under a live backend: its calls fail cleanly, naming the file.
  const auto file2 = d.file("truncated.dbm");
  auto b = dbm_at(file2);
  for (int i = 0; i < 100; ++i) b->set("k" + std::to_string(i), std::string(500, 'v'));
  fs::resize_file(file2, 100);
  auto fresh = [&] { return dbm_at(file2); };
  CHECK_THROWS_WITH(fresh(), Catch::Contains(file2));
  CHECK_THROWS_AS(b->get("k1"), dogpile::BackendError);
}

TEST_CASE("dbm: a missing directory is a BackendError naming the file", "[dbm]") {
  TempDir d;
  const auto file = d.file("no/such/dir/x.dbm");
  CHECK_THROWS_AS(dbm_at(file), dogpile::BackendError);
  CHECK_THROWS_WITH(dbm_at(file), Catch::Contains("no/such/dir"));
}

TEST_CASE("dbm: a read-only file is readable; writes fail naming the file", "[dbm]") {
  TempDir d;
  const auto file = d.file("ro.dbm");
  {
    auto b = dbm_at(file);
    b->set("k", "stored");
  }
  // Lock files stay writable (as a shared cache directory would have them); the data is not.
  ::chmod(file.c_str(), 0444);
  ::chmod((file + ".rw.lock").c_str(), 0666);
  ::chmod((file + ".dogpile.lock").c_str(), 0666);
  ::chmod(d.path.c_str(), 0755);
  // Root ignores file modes: check as an unprivileged user, in a child.
  const int ok = run_children(1, [&](int) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return false;
    auto b = dbm_at(file);
    if (b->get("k") != std::string("stored")) return false;
    try {
      b->set("k", "new");
      return false;
    } catch (const dogpile::BackendError& e) {
      if (std::string(e.what()).find(file) == std::string::npos) return false;
    }
    return b->get("k") == std::string("stored");
  });
  CHECK(ok == 1);
}

namespace {
unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}
}  // namespace

TEST_CASE("dbm private_cache: files 0600 whatever the umask; an open file is refused, named",
          "[dbm][permissions]") {
  for (const mode_t mask : {mode_t{022}, mode_t{0}}) {
    TempDir d;
    const auto priv = d.file("private.dbm");
    const auto open = d.file("open.dbm");
    const mode_t old = ::umask(mask);
    {
      auto b = dogpile::make_backend("dbm", {{"filename", priv}, {"private_cache", true}});
      b->set("k", "v");
      REQUIRE(b->get_mutex("k") != nullptr);
      b->get_mutex("k")->acquire();  // creates the dogpile lock file
      auto plain = dbm_at(open);
      plain->set("k", "v");
      plain->get_mutex("k")->acquire();
    }
    ::umask(old);
    INFO("umask " << mask);
    for (const auto& f : {priv, priv + ".rw.lock", priv + ".dogpile.lock"}) {
      CHECK(mode_of(f) == 0600);
    }
    // Without it the umask applies (GDBM's file and the lock files: 0666 less the umask).
    CHECK(mode_of(open) == (0666 & ~mask));
    CHECK(mode_of(open + ".rw.lock") == (0666 & ~mask));
    // The private cache reopens fine; the open one is refused under private_cache, naming the
    // file and its mode, and stays as it was.
    CHECK(dogpile::make_backend("dbm", {{"filename", priv}, {"private_cache", true}})->get("k") ==
          std::string("v"));
    const std::string mode = mask == 0 ? "0666" : "0644";
    CHECK_THROWS_AS(dogpile::make_backend("dbm", {{"filename", open}, {"private_cache", true}}),
                    dogpile::BackendError);
    CHECK_THROWS_WITH(
        dogpile::make_backend("dbm", {{"filename", open}, {"private_cache", true}}),
        Catch::Contains(open) && Catch::Contains(mode) && Catch::Contains("private_cache"));
    CHECK(mode_of(open) == (0666 & ~mask));
    CHECK(dbm_at(open)->get("k") == std::string("v"));
  }
  // Only one file of three open is enough to refuse.
  TempDir d;
  const auto f = d.file("lockopen.dbm");
  dogpile::make_backend("dbm", {{"filename", f}, {"private_cache", true}})->set("k", "v");
  ::chmod((f + ".rw.lock").c_str(), 0660);
  CHECK_THROWS_WITH(dogpile::make_backend("dbm", {{"filename", f}, {"private_cache", true}}),
                    Catch::Contains(f + ".rw.lock") && Catch::Contains("0660"));
  CHECK_THROWS_WITH(dogpile::make_backend("dbm", {{"filename", f}, {"private_cache", "yes"}}),
                    Catch::Contains("private_cache") && Catch::Contains("boolean"));
}

TEST_CASE("dbm: Python dogpile.cache and dogpile-cpp read each other's values", "[dbm][python]") {
  TempDir d;
  const auto file = d.file("interop.dbm");
  auto region = dogpile::make_region({.name = "interop"});
  region.configure("dbm", {.arguments = {{"filename", file}}});

  region.set("from_cpp", std::map<std::string, int>{{"a", 1}, {"b", 2}});
  CHECK(python(file, {"get", "from_cpp"}) == R"({"a": 1, "b": 2})");

  python(file, {"set", "from_py", R"({"x": [1, 2, 3]})"});
  const auto got = region.get<std::map<std::string, std::vector<int>>>("from_py");
  REQUIRE(got);
  CHECK(got->at("x") == std::vector<int>{1, 2, 3});
  CHECK(python(file, {"get", "absent"}) == "NO_VALUE");
}

TEST_CASE("dbm: a Python creator holding the lock makes a C++ caller wait for its value",
          "[dbm][python][lock]") {
  TempDir d;
  const auto file = d.file("pylock.dbm");
  const auto marker = d.file("creating");
  auto region = dogpile::make_region({.name = "pylock"});
  region.configure("dbm", {.arguments = {{"filename", file}}});
  std::string py_error;
  std::thread py([&] {
    try {
      python(file, {"hold", "k", R"({"made": "by python"})", marker, "1.0"});
    } catch (const std::exception& e) {
      py_error = e.what();
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!fs::exists(marker) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(fs::exists(marker));
  bool cpp_created = false;
  const auto v = region.get_or_create("k", [&] {
    cpp_created = true;
    return std::map<std::string, std::string>{{"made", "by c++"}};
  });
  py.join();
  CHECK(py_error.empty());
  CHECK_FALSE(cpp_created);
  CHECK(v.at("made") == "by python");
}

TEST_CASE("dbm: Python and C++ writing the same file at once: the kept handle never goes stale",
          "[dbm][python]") {
  TempDir d;
  const auto file = d.file("both.dbm");
  auto region = dogpile::make_region({.name = "both"});
  region.configure("dbm", {.arguments = {{"filename", file}}});
  region.set("start", 0);  // the file exists before Python opens it
  // Python dogpile.cache (its own rw lock, its own open per call) writes 300 keys while this
  // process writes and reads 300 others through one kept-open handle.
  const std::string script =
      "import json,sys\n"
      "from dogpile.cache import make_region\n"
      "r=make_region(serializer=lambda v: json.dumps(v).encode(),deserializer=json.loads)\n"
      "r.configure('dogpile.cache.dbm',arguments={'filename':sys.argv[1]})\n"
      "for i in range(300): r.set('py%d' % i, i)\n"
      "bad=[i for i in range(300) if r.get('cpp%d' % i) != i]\n"
      "print(len(bad))\n";
  const std::string py = d.file("writer.py");
  {
    std::ofstream f(py);
    f << script;
  }
  std::string py_out;
  std::string py_error;
  std::atomic<bool> py_done{false};
  std::thread t([&] {
    try {
      std::FILE* p = ::popen(("/usr/bin/python3 " + py + " " + file).c_str(), "r");
      if (p == nullptr) throw std::runtime_error("popen");
      std::array<char, 256> buf{};
      std::size_t n = 0;
      while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) py_out.append(buf.data(), n);
      if (::pclose(p) != 0) py_error = "python failed: " + py_out;
    } catch (const std::exception& e) {
      py_error = e.what();
    }
    py_done = true;
  });
  // Keep writing and reading until Python is done, so the two really overlap.
  int wrong = 0;
  int rounds = 0;
  for (int i = 0; !py_done.load() || i < 300; ++i) {
    const int k = i % 300;
    region.set("cpp" + std::to_string(k), k);
    if (region.get<int>("cpp" + std::to_string(k)) != k) ++wrong;
    rounds = i;
  }
  INFO("C++ calls while Python ran: " << rounds);
  t.join();
  REQUIRE(py_error.empty());
  CHECK(wrong == 0);
  int missing = 0;
  for (int i = 0; i < 300; ++i) {
    if (region.get<int>("py" + std::to_string(i)) != i) ++missing;
  }
  CHECK(missing == 0);
  // Python checked the C++ keys after its own writes; C++ writes may have finished later, so
  // check again now that both are done.
  const std::string check =
      "/usr/bin/python3 -c \"import json,sys; from dogpile.cache import make_region; "
      "r=make_region(serializer=lambda v: json.dumps(v).encode(),deserializer=json.loads); "
      "r.configure('dogpile.cache.dbm',arguments={'filename':sys.argv[1]}); "
      "sys.exit(sum(r.get('cpp%d' % i) != i for i in range(300)))\" " +
      file;
  CHECK(std::system(check.c_str()) == 0);
}
