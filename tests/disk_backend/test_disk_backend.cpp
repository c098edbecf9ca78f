// The `disk` and `fanout` region backends: arguments, byte storage (read back by DiskCache and
// by python-diskcache), the lease lock (ownership, expiry, exclusion across processes) and a
// cross-process get_or_create stampede with exactly one creation.
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
#include <functional>
#include <latch>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/backends/disk.hpp"
#include "dogpile/region.hpp"

// Not behind __has_include: the disk backends must run the conformance suite.
#include "backends/conformance.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using dogpile::DiskBackend;
using dogpile::DiskBackendOptions;
using dogpile::FanoutBackend;
using dogpile::FanoutBackendOptions;

namespace {

// A fresh temporary directory, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "dogpile-disk-backend-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::string str() const { return path.string(); }
};

// Runs `body` in `n` forked children (child index passed in) and returns how many exited 0.
// Children never return into Catch2: they _exit with 0 on success, 1 on failure/exception.
int run_children(int n, const std::function<bool(int)>& body) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 1;
      try {
        code = body(i) ? 0 : 1;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", i, e.what());
      } catch (...) {
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  int ok = 0;
  for (const pid_t pid : pids) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++ok;
  }
  return ok;
}

std::string python() { return "/usr/bin/python3"; }

}  // namespace

namespace {
// One directory per backend kind for the whole run: the suite's factory is called several times
// and its backends must share storage (keys are unique per run).
const fs::path& conformance_dir(const char* kind) {
  static TempDir disk_dir;
  static TempDir fanout_dir;
  return std::string_view(kind) == "disk" ? disk_dir.path : fanout_dir.path;
}
}  // namespace

// A 2 s lease (renewed every ~0.7 s): the lease cases wait a few leases, and a renewal would
// have to stall for over 1.3 s to lose a lock.
DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE("disk", [] {
  return dogpile::make_backend(
      "disk", {{"directory", conformance_dir("disk").string()}, {"lock_timeout", 2}});
})
DOGPILE_DISTRIBUTED_BACKEND_CONFORMANCE("fanout", [] {
  return dogpile::make_backend(
      "fanout",
      {{"directory", conformance_dir("fanout").string()}, {"shards", 4}, {"lock_timeout", 2}});
})
DOGPILE_MAX_VALUE_BYTES_CONFORMANCE("disk", [](std::size_t max) {
  return dogpile::make_backend(
      "disk", {{"directory", conformance_dir("disk").string()}, {"max_value_bytes", max}});
})
DOGPILE_MAX_VALUE_BYTES_CONFORMANCE("fanout", [](std::size_t max) {
  return dogpile::make_backend(
      "fanout",
      {{"directory", conformance_dir("fanout").string()}, {"shards", 4}, {"max_value_bytes", max}});
})

// Native TTL (`expire`, seconds): the same directories, values stored with a 0.3 s lifetime.
DOGPILE_BACKEND_TTL_CONFORMANCE("disk", std::chrono::milliseconds(300), [] {
  return dogpile::make_backend("disk",
                               {{"directory", conformance_dir("disk").string()}, {"expire", 0.3}});
})
DOGPILE_BACKEND_TTL_CONFORMANCE("fanout", std::chrono::milliseconds(300), [] {
  return dogpile::make_backend(
      "fanout",
      {{"directory", conformance_dir("fanout").string()}, {"shards", 4}, {"expire", 0.3}});
})

TEST_CASE("disk backends are registered by name and validate their arguments", "[disk_backend]") {
  TempDir d;
  CHECK(dogpile::is_backend_registered("disk"));
  CHECK(dogpile::is_backend_registered("fanout"));
  CHECK(dogpile::is_backend_registered("dogpile.cache.disk"));

  CHECK_THROWS_AS(dogpile::make_backend("disk", nlohmann::json::object()),
                  dogpile::ValidationError);
  CHECK_THROWS_WITH(dogpile::make_backend("disk", nlohmann::json::object()),
                    Catch::Contains("directory"));
  CHECK_THROWS_AS(dogpile::make_backend("fanout", {{"shards", 2}}), dogpile::ValidationError);
  CHECK_THROWS_WITH(dogpile::make_backend("disk", {{"directory", d.str()}, {"bogus", 1}}),
                    Catch::Contains("bogus"));
  CHECK_THROWS_WITH(dogpile::make_backend("disk", {{"directory", d.str()}, {"size_limt", 1}}),
                    Catch::Contains("argument 'size_limt' is unknown; did you mean 'size_limit'? "
                                    "(known: directory, "));
  CHECK_THROWS_WITH(dogpile::make_backend("disk", {{"directory", d.str()}, {"size_limit", "x"}}),
                    Catch::Contains("size_limit"));
  CHECK_THROWS_WITH(
      dogpile::make_backend("disk", {{"directory", d.str()}, {"eviction_policy", "random"}}),
      Catch::Contains("eviction_policy"));
  CHECK_THROWS_WITH(dogpile::make_backend("disk", {{"directory", d.str()}, {"timeout", -1}}),
                    Catch::Contains("timeout"));
  CHECK_THROWS_WITH(dogpile::make_backend("disk", {{"directory", d.str()}, {"shards", 4}}),
                    Catch::Contains("shards"));
  CHECK_THROWS_WITH(dogpile::make_backend("fanout", {{"directory", d.str() + "/f"}, {"shards", 0}}),
                    Catch::Contains("shards"));
  CHECK_THROWS_AS(DiskBackend(DiskBackendOptions{}), dogpile::ValidationError);

  auto b = dogpile::make_backend("disk", {{"directory", d.str() + "/d"},
                                          {"size_limit", 1 << 20},
                                          {"eviction_policy", "least_recently_used"},
                                          {"timeout", 2.5},
                                          {"lock_timeout", 10},
                                          {"lock_sleep", 0.05}});
  auto* disk = dynamic_cast<DiskBackend*>(b.get());
  REQUIRE(disk != nullptr);
  CHECK(disk->options().cache.timeout == 2500ms);
  CHECK(disk->options().lock.lock_timeout == 10s);
  CHECK(disk->options().lock.lock_sleep == 50ms);
  CHECK(disk->cache().settings().size_limit == (1u << 20));
  CHECK(disk->cache().settings().eviction_policy == dogpile::EvictionPolicy::least_recently_used);
  CHECK(b->get_mutex("k")->is_lease());

  auto f =
      dogpile::make_backend("dogpile.cache.fanout", {{"directory", d.str() + "/f"}, {"shards", 3}});
  auto* fan = dynamic_cast<FanoutBackend*>(f.get());
  REQUIRE(fan != nullptr);
  CHECK(fan->cache().shard_count() == 3);
  CHECK(fan->options().cache.timeout == 1s);
}

TEST_CASE("disk backends take hot_cache_bytes and a serializer by name", "[disk_backend]") {
  TempDir d;
  for (const char* kind : {"disk", "fanout"}) {
    const std::string dir = d.str() + "/" + kind;
    auto b = dogpile::make_backend(
        kind, {{"directory", dir}, {"hot_cache_bytes", 1 << 20}, {"serializer", "zlib"}});
    const std::string big(4000, 'v');  // over ZlibSerializer's 1 KiB threshold
    b->set("k", big);
    auto got = b->get("k");
    REQUIRE(got.has_value());
    CHECK(*got == big);
    CHECK(*b->get("k") == big);  // the second read: from the hot cache
    if (auto* disk = dynamic_cast<DiskBackend*>(b.get())) {
      CHECK(disk->cache().hot_cache_stats().hits >= 1);
      CHECK(disk->options().cache.hot_cache_bytes == (1u << 20));
      // Stored compressed: a cache without the serializer sees the compressed bytes.
      auto raw = dogpile::DiskCache(dir).get<dogpile::Bytes>("k");
      REQUIRE(raw);
      CHECK(raw->data.size() < big.size());
    }
  }
  CHECK_THROWS_WITH(
      dogpile::make_backend("disk", {{"directory", d.str() + "/x"}, {"serializer", "json"}}),
      Catch::Contains("serializer"));
  CHECK_THROWS_WITH(
      dogpile::make_backend("disk", {{"directory", d.str() + "/x"}, {"hot_cache_bytes", -1}}),
      Catch::Contains("hot_cache_bytes"));
}

// The zlib serializer inflates at most max_value_bytes (issue 18): a value another writer stored
// compressed that inflates past it is refused (CantDeserialize), not inflated whole.
TEST_CASE("disk backends: the zlib serializer is bounded by max_value_bytes", "[disk_backend]") {
  TempDir d;
  for (const char* kind : {"disk", "fanout"}) {
    CAPTURE(kind);
    const std::string dir = d.str() + "/" + kind;
    auto roomy = dogpile::make_backend(kind, {{"directory", dir}, {"serializer", "zlib"}});
    auto small = dogpile::make_backend(
        kind, {{"directory", dir}, {"serializer", "zlib"}, {"max_value_bytes", 4096}});
    const std::string big(16384, 'v');
    roomy->set("k", big);
    CHECK(roomy->get("k") == big);
    CHECK_THROWS_AS(small->get("k"), dogpile::CantDeserialize);
    small->set("fits", std::string(2048, 'w'));
    CHECK(small->get("fits") == std::string(2048, 'w'));
  }
}

TEST_CASE("disk backends take private_cache", "[disk_backend]") {
  TempDir d;
  auto mode_of = [](const fs::path& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 07777;
  };
  for (const char* kind : {"disk", "fanout"}) {
    INFO(kind);
    const std::string dir = d.str() + "/" + kind;
    auto b = dogpile::make_backend(kind, {{"directory", dir}, {"private_cache", true}});
    b->set("k", std::string(40000, 'v'));  // a value file
    CHECK(mode_of(dir) == 0700);
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      INFO(e.path().string());
      CHECK(mode_of(e.path()) == (e.is_directory() ? 0700u : 0600u));
    }
    // An existing directory others can read is refused, naming it and its mode.
    const std::string open_dir = d.str() + "/open-" + kind;
    fs::create_directory(open_dir);
    REQUIRE(::chmod(open_dir.c_str(), 0755) == 0);
    CHECK_THROWS_WITH(
        dogpile::make_backend(kind, {{"directory", open_dir}, {"private_cache", true}}),
        Catch::Contains(open_dir) && Catch::Contains("0755"));
  }
  CHECK_THROWS_WITH(
      dogpile::make_backend("disk", {{"directory", d.str() + "/x"}, {"private_cache", "yes"}}),
      Catch::Contains("private_cache"));
}

TEST_CASE("disk backends store bytes as BLOBs", "[disk_backend]") {
  TempDir d;
  std::vector<std::shared_ptr<dogpile::CacheBackend>> backends{
      dogpile::make_backend("disk", {{"directory", d.str() + "/d"}}),
      dogpile::make_backend("fanout", {{"directory", d.str() + "/f"}, {"shards", 4}})};
  const std::string bin("a\0b\xff", 4);
  for (auto& b : backends) {
    CHECK_FALSE(b->get("k").has_value());
    b->set("k", bin);
    REQUIRE(b->get("k").has_value());
    CHECK(*b->get("k") == bin);
    b->set("k", "v2");
    CHECK(b->get("k") == std::optional<std::string>("v2"));
    b->erase("k");
    b->erase("k");  // missing is fine
    CHECK_FALSE(b->get("k").has_value());

    std::vector<dogpile::BytesItem> items;
    std::vector<std::string> keys;
    for (int i = 0; i < 20; ++i) {
      items.emplace_back("m" + std::to_string(i), std::string(static_cast<std::size_t>(i), 'x'));
      keys.push_back("m" + std::to_string(i));
    }
    b->set_multi(items);
    keys.push_back("absent");
    auto got = b->get_multi(keys);
    REQUIRE(got.size() == 21);
    for (int i = 0; i < 20; ++i) {
      REQUIRE(got[static_cast<std::size_t>(i)].has_value());
      CHECK(*got[static_cast<std::size_t>(i)] == std::string(static_cast<std::size_t>(i), 'x'));
    }
    CHECK_FALSE(got[20].has_value());
    b->erase_multi(keys);
    for (const auto& v : b->get_multi(keys)) CHECK_FALSE(v.has_value());
  }

  // The value is a BLOB (Python bytes) under a TEXT key.
  auto* disk = dynamic_cast<DiskBackend*>(backends[0].get());
  disk->set("blob", bin);
  auto raw = disk->cache().get<dogpile::DiskValue>("blob");
  REQUIRE(raw.has_value());
  REQUIRE(std::holds_alternative<dogpile::Bytes>(*raw));
  CHECK(std::get<dogpile::Bytes>(*raw).data == bin);
  // A value another program stored as a number reads as a miss, not an error.
  disk->cache().set("number", 42);
  CHECK_FALSE(disk->get("number").has_value());
}

TEST_CASE("a disk region's values are readable by python-diskcache", "[disk_backend][python]") {
  TempDir d;
  auto region = dogpile::make_region({.name = "py"});
  region.configure("disk", {.arguments = {{"directory", d.str()}}});
  region.set("user:1", std::string("alice"));
  CHECK(region.get<std::string>("user:1") == std::optional<std::string>("alice"));

  const std::string out = d.str() + "/py.out";
  const std::string cmd = python() + " -c 'import diskcache,sys; c=diskcache.Cache(sys.argv[1]); " +
                          "v=c[\"user:1\"]; assert isinstance(v, bytes), type(v); " +
                          "open(sys.argv[2],\"wb\").write(v)' " + d.str() + " " + out;
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::FILE* fp = std::fopen(out.c_str(), "rb");
  REQUIRE(fp != nullptr);
  std::string bytes(4096, '\0');
  bytes.resize(std::fread(bytes.data(), 1, bytes.size(), fp));
  std::fclose(fp);
  CHECK(bytes.rfind("{\"ct\": ", 0) == 0);           // dogpile.cache's envelope
  CHECK(bytes.substr(bytes.find('|')) == "|alice");  // strings pass through
}

TEST_CASE("disk lock: ownership, no-wait and timeouts", "[disk_backend][lock]") {
  TempDir d;
  auto a = dogpile::make_backend("disk", {{"directory", d.str()}});
  auto b = dogpile::make_backend("disk", {{"directory", d.str()}});  // another client
  auto ma = a->get_mutex("k");
  auto mb = b->get_mutex("k");
  REQUIRE(ma);
  REQUIRE(mb);
  CHECK_FALSE(ma->locked());
  CHECK(ma->acquire(false));
  CHECK(ma->locked());
  CHECK(mb->locked());
  CHECK_FALSE(mb->acquire(false));
  CHECK_FALSE(mb->try_acquire_for(20ms));
  CHECK_THROWS_AS(mb->release(), dogpile::LockError);  // not the owner
  CHECK(ma->locked());                                 // ...and the lock is untouched
  // The lock lives in the cache under "_lock" + key.
  auto* disk = dynamic_cast<DiskBackend*>(a.get());
  CHECK(disk->cache().contains("_lockk"));
  ma->release();
  CHECK_FALSE(ma->locked());
  CHECK_THROWS_AS(ma->release(), dogpile::LockError);  // twice
  CHECK(mb->acquire(true));
  CHECK(mb->locked());
  mb->release();

  // Other keys are independent; threads sharing one mutex object exclude each other.
  auto m1 = a->get_mutex("x");
  auto m2 = a->get_mutex("y");
  CHECK(m1->acquire(false));
  CHECK(m2->acquire(false));
  m1->release();
  m2->release();

  int inside = 0;
  int max_inside = 0;
  std::vector<std::thread> threads;
  std::mutex mm;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        REQUIRE(m1->acquire(true));
        {
          std::lock_guard lk(mm);
          max_inside = std::max(max_inside, ++inside);
        }
        {
          std::lock_guard lk(mm);
          --inside;
        }
        m1->release();
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(max_inside == 1);
  CHECK_FALSE(m1->locked());
}

TEST_CASE("disk lock: the lease frees a lock whose holder is gone", "[disk_backend][lock]") {
  TempDir d;
  dogpile::ManualClock clock;
  auto make = [&] {
    DiskBackendOptions o;
    o.directory = d.path;
    o.cache.clock = clock;
    o.lock.lock_timeout = 30s;
    return std::make_shared<DiskBackend>(o);
  };
  auto a = make();
  auto b = make();
  auto ma = a->get_mutex("job");
  auto mb = b->get_mutex("job");
  REQUIRE(ma->acquire(false));
  clock.advance(29s);
  CHECK(mb->locked());
  CHECK_FALSE(mb->acquire(false));
  clock.advance(2s);  // lease (30 s) over: the holder is presumed dead
  CHECK_FALSE(mb->locked());
  CHECK(mb->acquire(false));
  CHECK(ma->locked());
  // The old holder's release must not free the new holder's lock.
  CHECK_THROWS_AS(ma->release(), dogpile::LockError);
  CHECK(mb->locked());
  mb->release();
  CHECK_FALSE(ma->locked());
  // ...and the old holder may take it again afterwards.
  CHECK(ma->acquire(false));
  ma->release();
}

TEST_CASE("fanout lock: ownership and lease", "[disk_backend][lock]") {
  TempDir d;
  dogpile::ManualClock clock;
  auto make = [&] {
    FanoutBackendOptions o;
    o.directory = d.path;
    o.cache.shards = 4;
    o.cache.clock = clock;
    o.lock.lock_timeout = 5s;
    return std::make_shared<FanoutBackend>(o);
  };
  auto a = make();
  auto b = make();
  for (const char* key : {"a", "b", "c", "d", "e"}) {
    auto ma = a->get_mutex(key);
    auto mb = b->get_mutex(key);
    REQUIRE(ma->acquire(false));
    CHECK_FALSE(mb->acquire(false));
    CHECK_THROWS_AS(mb->release(), dogpile::LockError);
    clock.advance(6s);
    CHECK(mb->acquire(false));
    CHECK_THROWS_AS(ma->release(), dogpile::LockError);
    mb->release();
    CHECK_FALSE(ma->locked());
  }
}

TEST_CASE("disk lock excludes across processes", "[disk_backend][lock][fork]") {
  TempDir d;
  for (const char* kind : {"disk", "fanout"}) {
    const nlohmann::json args = {{"directory", d.str() + "/" + kind}};
    {
      auto b = dogpile::make_backend(kind, args);  // create the directory before forking
      b->set("counter", "0");
    }
    constexpr int kProcs = 4;
    constexpr int kRounds = 20;
    const int ok = run_children(kProcs, [&](int) {
      auto b = dogpile::make_backend(kind, args);
      auto m = b->get_mutex("counter");
      for (int i = 0; i < kRounds; ++i) {
        if (!m->acquire(true)) return false;
        // A non-atomic read-modify-write: only exclusion keeps the count right.
        auto v = b->get("counter");
        if (!v) return false;
        b->set("counter", std::to_string(std::stoi(*v) + 1));
        m->release();
      }
      return true;
    });
    CHECK(ok == kProcs);
    auto b = dogpile::make_backend(kind, args);
    CHECK(b->get("counter") == std::optional<std::string>(std::to_string(kProcs * kRounds)));
    CHECK_FALSE(b->get_mutex("counter")->locked());
  }
}

TEST_CASE("cross-process stampede on a disk region creates once", "[disk_backend][fork]") {
  TempDir d;
  for (const char* kind : {"disk", "fanout"}) {
    const std::string dir = d.str() + "/" + kind;
    const nlohmann::json args = {{"directory", dir}, {"lock_sleep", 0.02}};
    {  // create both caches before forking (the stampede is the subject, not concurrent init)
      dogpile::make_backend(kind, args);
      dogpile::DiskCache counter(dir + "-counter");
    }
    // All children start together: they block on a pipe until the parent closes it.
    std::array<int, 2> gate{};
    REQUIRE(::pipe(gate.data()) == 0);
    constexpr int kProcs = 4;
    constexpr int kThreads = 8;
    const int ok = [&] {
      std::vector<pid_t> children;
      for (int p = 0; p < kProcs; ++p) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
          ::close(gate[1]);
          int code = 1;
          try {
            auto region = dogpile::make_region({.name = "stampede"});
            region.configure(kind, {.arguments = args});
            // The creation counter lives in the cache itself (atomic incr across processes).
            dogpile::DiskCache counter(dir + "-counter");
            std::latch ready(kThreads + 1);
            std::atomic<int> good{0};
            std::vector<std::thread> threads;
            for (int t = 0; t < kThreads; ++t) {
              threads.emplace_back([&] {
                ready.arrive_and_wait();
                try {
                  const int v = region.get_or_create("the-key", [&] {
                    counter.incr("creations");
                    return 4242;
                  });
                  if (v == 4242) good.fetch_add(1);
                } catch (const std::exception& e) {
                  std::fprintf(stderr, "thread: %s\n", e.what());
                }
              });
            }
            char c = 0;
            if (::read(gate[0], &c, 1) < 0) std::perror("read");
            ready.arrive_and_wait();
            for (auto& t : threads) t.join();
            code = good.load() == kThreads ? 0 : 1;
          } catch (const std::exception& e) {
            std::fprintf(stderr, "child: %s\n", e.what());
          }
          ::_exit(code);
        }
        children.push_back(pid);
      }
      ::close(gate[0]);
      ::close(gate[1]);  // EOF: everyone goes
      int n = 0;
      for (const pid_t pid : children) {
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++n;
      }
      return n;
    }();
    CHECK(ok == kProcs);
    dogpile::DiskCache counter(dir + "-counter");
    CHECK(counter.get<std::int64_t>("creations") == std::optional<std::int64_t>(1));
    auto region = dogpile::make_region({.name = "check"});
    region.configure(kind, {.arguments = args});
    CHECK(region.get<int>("the-key") == std::optional<int>(4242));
    CHECK_FALSE(region.key_is_locked("the-key"));
  }
}

// ---- leases: issue 6 point 8 -------------------------------------------------------------------

TEST_CASE("disk region: a creator slower than the lease keeps its lock (3 callers, 1 creation)",
          "[disk_backend][lease][lease_region]") {
  TempDir d;
  for (const char* kind : {"disk", "fanout"}) {
    // The reproduction: the creator runs 3 leases long. Renewal (every lease/3) keeps
    // the lock, so the two waiters never take it over and the release finds it still ours.
    auto region = dogpile::make_region({.name = std::string("slow-") + kind});
    region.configure(kind, {.arguments = {{"directory", d.str() + "/" + kind},
                                          {"lock_timeout", 0.6},
                                          {"lock_sleep", 0.02}}});
    std::atomic<int> creations{0};
    std::atomic<int> good{0};
    std::atomic<int> errors{0};
    std::latch start(3);
    std::vector<std::thread> callers;
    callers.reserve(3);
    for (int i = 0; i < 3; ++i) {
      callers.emplace_back([&] {
        start.arrive_and_wait();
        try {
          const std::string v = region.get_or_create("slow", [&] {
            creations.fetch_add(1);
            std::this_thread::sleep_for(1800ms);
            return std::string("computed");
          });
          if (v == "computed") good.fetch_add(1);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "caller: %s\n", e.what());
          errors.fetch_add(1);
        }
      });
    }
    for (auto& t : callers) t.join();
    CHECK(creations == 1);
    CHECK(good == 3);
    CHECK(errors == 0);
    CHECK_FALSE(region.key_is_locked("slow"));
  }
}

TEST_CASE("disk lock: a paused (SIGSTOP) holder process loses the lock after the lease",
          "[disk_backend][lease][fork]") {
  TempDir d;
  for (const char* kind : {"disk", "fanout"}) {
    const nlohmann::json args = {{"directory", d.str() + "/" + kind}, {"lock_timeout", 1}};
    dogpile::make_backend(kind, args);  // create the directory before forking
    dogpile_conformance::holder_process_signalled([&] { return dogpile::make_backend(kind, args); },
                                                  SIGSTOP);
  }
}

// The region reports a lost lease (stats `locks_lost`, listener, on_backend_error) instead of
// throwing it at a caller whose value is fine.
TEST_CASE("disk region: a lease lost during creation is reported, not thrown",
          "[disk_backend][lease][lease_region]") {
  TempDir d;
  auto backend = std::make_shared<DiskBackend>(DiskBackendOptions{.directory = d.path});
  std::vector<std::string> reported;
  auto region = dogpile::make_region(
      {.name = "lost", .on_backend_error = dogpile::treat_as_miss([&](const std::exception& e) {
                         reported.emplace_back(e.what());
                       })});
  region.configure(backend);
  std::string got;
  CHECK_NOTHROW(got = region.get_or_create("k", [&] {
    // Another holder took the lock over (as after an expired lease).
    backend->cache().set("_lockk", std::string("4242-0000000000000000"));
    return std::string("value");
  }));
  CHECK(got == "value");
  CHECK(region.get<std::string>("k") == std::optional<std::string>("value"));
  // The other holder's lock is untouched.
  CHECK(backend->cache().get<std::string>("_lockk") ==
        std::optional<std::string>("4242-0000000000000000"));
  CHECK(region.stats().locks_lost == 1);
  REQUIRE(reported.size() == 1);
  CHECK_THAT(reported[0], Catch::Contains("key 'k'") && Catch::Contains("lock_timeout"));
}
