// Tests of the server harness itself: every kind of server starts, answers, stops, restarts on
// the same port, dies on kill, hangs on pause and recovers on resume; the cluster covers every
// slot; the sentinel fails over; objects do nothing in forked children.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/servers.hpp"

using dogpile::test::free_port;
using dogpile::test::MemcachedServer;
using dogpile::test::port_accepts;
using dogpile::test::redis_cli;
using dogpile::test::RedisCluster;
using dogpile::test::RedisSentinelSet;
using dogpile::test::RedisServer;
using dogpile::test::RedisServerOptions;
using dogpile::test::ServerProcess;
using dogpile::test::tcp_exchange;
using dogpile::test::TempDir;
using namespace std::chrono_literals;

namespace {

// Prints how long constructing a server took (the numbers the harness's users plan with).
template <class F>
auto timed(const char* what, F&& make) {
  auto t0 = std::chrono::steady_clock::now();
  auto result = make();
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("[servers] %s ready in %lld ms\n", what, static_cast<long long>(ms));
  return result;
}

// A listening socket on 127.0.0.1:port, or -1 when the port cannot be bound.
int listen_on(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 4) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Forks; the child runs `body` then _exits 0; returns the child's exit status.
template <class F>
int in_child(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      body();
    } catch (...) {
      ::_exit(1);  // never unwind into Catch in the child
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::string mc(int port, const std::string& request, std::chrono::milliseconds timeout = 1000ms) {
  auto reply = tcp_exchange(port, request, "\r\n", timeout);
  return reply ? *reply : "<no reply>";
}

}  // namespace

TEST_CASE("free_port returns only ports nobody is bound to", "[servers]") {
  // 16 consecutive ports, all held by listeners except one: free_port over that range must
  // return exactly the released one, every time.
  std::vector<int> fds;
  int base = 0;
  for (int attempt = 0; attempt < 50 && fds.empty(); ++attempt) {
    base = free_port(59000, 21000);
    for (int p = base; p < base + 16; ++p) {
      int fd = listen_on(p);
      if (fd < 0) {
        for (int f : fds) ::close(f);
        fds.clear();
        break;
      }
      fds.push_back(fd);
    }
  }
  REQUIRE(fds.size() == 16);
  CHECK_THROWS_AS(free_port(base + 15, base), std::runtime_error);
  ::close(fds[7]);
  for (int i = 0; i < 20; ++i) CHECK(free_port(base + 15, base) == base + 7);
  for (std::size_t i = 0; i < fds.size(); ++i) {
    if (i != 7) ::close(fds[i]);
  }

  // Random picks over the default range never hit a held port.
  std::set<int> held;
  std::vector<int> held_fds;
  for (int i = 0; i < 50; ++i) {
    int p = free_port();
    int fd = listen_on(p);
    REQUIRE(fd >= 0);
    held.insert(p);
    held_fds.push_back(fd);
  }
  for (int i = 0; i < 300; ++i) {
    int p = free_port(60000);
    CHECK(held.count(p) == 0);
    CHECK(p <= 60000);
  }
  for (int fd : held_fds) ::close(fd);
  CHECK(free_port(55535) <= 55535);
}

TEST_CASE("TempDir is removed by its owner only", "[servers]") {
  std::filesystem::path path;
  {
    TempDir dir;
    path = dir.path();
    CHECK(std::filesystem::is_directory(path));
    CHECK(path.string().rfind("/tmp/", 0) == 0);
    std::filesystem::create_directories(path / "a" / "b");
    auto owned = std::make_unique<TempDir>();
    auto owned_path = owned->path();
    CHECK(in_child([&] { owned.reset(); }) == 0);
    CHECK(std::filesystem::is_directory(owned_path));
    owned.reset();
    CHECK_FALSE(std::filesystem::exists(owned_path));
  }
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("a missing binary names the Debian package", "[servers]") {
  TempDir dir;
  try {
    ServerProcess p({"dogpile-no-such-server"}, dir.path() / "log");
    FAIL("expected an exception");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("not installed") && Catch::Contains("apt-get install"));
  }
}

TEST_CASE("RedisServer starts, answers, stops, restarts, dies and hangs", "[servers]") {
  auto redis = timed("redis-server", [] { return std::make_unique<RedisServer>(); });
  const int port = redis->port();
  CHECK(redis->host() == "127.0.0.1");
  CHECK(redis->url() == "redis://127.0.0.1:" + std::to_string(port) + "/0");
  CHECK(redis->url(3) == "redis://127.0.0.1:" + std::to_string(port) + "/3");
  CHECK(redis->cli({"ping"}) == "PONG\n");
  CHECK(redis->cli({"set", "k", "v"}) == "OK\n");
  CHECK(redis->cli({"get", "k"}) == "v\n");
  CHECK(redis->cli({"config", "get", "save"}) == "save\n\n");
  CHECK(redis->cli({"config", "get", "appendonly"}) == "appendonly\nno\n");
  CHECK(std::filesystem::is_directory(redis->dir()));

  SECTION("stop closes the port; restart comes back on the same port") {
    redis->stop();
    CHECK_FALSE(redis->process().running());
    CHECK_FALSE(port_accepts(port));
    CHECK_THROWS_AS(redis->cli({"ping"}), std::runtime_error);
    redis->restart();
    CHECK(redis->port() == port);
    CHECK(redis->cli({"ping"}) == "PONG\n");
    CHECK(redis->cli({"get", "k"}) == "\n");  // no persistence
  }
  SECTION("kill makes requests fail; restart recovers") {
    redis->kill();
    CHECK_FALSE(redis->process().running());
    CHECK_FALSE(port_accepts(port));
    CHECK_THROWS_AS(redis->cli({"ping"}), std::runtime_error);
    redis->restart();
    CHECK(redis->ping());
  }
  SECTION("pause makes requests time out; resume fixes it") {
    redis->pause();
    CHECK_THROWS_WITH(redis->cli({"ping"}, 300ms), Catch::Contains("timed out"));
    CHECK_FALSE(redis->ping(300ms));
    redis->resume();
    CHECK(redis->ping());
  }
  SECTION("restart while running") {
    redis->restart();
    CHECK(redis->port() == port);
    CHECK(redis->ping());
  }
  SECTION("a forked child's destructor leaves the server running") {
    auto dir = redis->dir();
    CHECK(in_child([&] {
            redis->stop();
            redis->kill();
            redis.reset();
          }) == 0);
    CHECK(redis->process().running());
    CHECK(redis->ping());
    CHECK(std::filesystem::is_directory(dir));
  }
  if (redis) {
    auto dir = redis->dir();
    redis.reset();
    CHECK_FALSE(port_accepts(port));
    CHECK_FALSE(std::filesystem::exists(dir));
  }
}

TEST_CASE("RedisServer with a password and a fixed port", "[servers]") {
  RedisServerOptions o;
  o.password = "s3cret";
  o.port = free_port();
  o.extra_args = {"--maxmemory", "10mb"};
  RedisServer redis(o);
  CHECK(redis.port() == o.port);
  CHECK(redis.url(1) == "redis://:s3cret@127.0.0.1:" + std::to_string(o.port) + "/1");
  CHECK(redis.cli({"ping"}) == "PONG\n");
  CHECK(redis.cli({"config", "get", "maxmemory"}) == "maxmemory\n10485760\n");
  CHECK_THAT(redis_cli(redis.port(), {"ping"}), Catch::Contains("NOAUTH"));
  redis.restart();
  CHECK(redis.cli({"ping"}) == "PONG\n");

  // A second server on the same fixed port cannot start: the error carries the log tail.
  CHECK_THROWS_WITH(RedisServer(o), Catch::Contains("ddress already in use"));
}

TEST_CASE("MemcachedServer starts, answers, stops, restarts, dies and hangs", "[servers]") {
  auto memcached = timed("memcached", [] { return std::make_unique<MemcachedServer>(); });
  const int port = memcached->port();
  CHECK(memcached->address() == "127.0.0.1:" + std::to_string(port));
  CHECK(mc(port, "version\r\n").rfind("VERSION ", 0) == 0);
  CHECK(mc(port, "set k 0 0 1\r\nv\r\n") == "STORED\r\n");
  CHECK(tcp_exchange(port, "get k\r\n", "END\r\n") ==
        std::optional<std::string>("VALUE k 0 1\r\nv\r\nEND\r\n"));

  SECTION("stop closes the port; restart comes back on the same port") {
    memcached->stop();
    CHECK_FALSE(port_accepts(port));
    CHECK(mc(port, "version\r\n") == "<no reply>");
    memcached->restart();
    CHECK(memcached->port() == port);
    CHECK(memcached->ping());
    CHECK(mc(port, "get k\r\n") == "END\r\n");
  }
  SECTION("kill makes requests fail") {
    memcached->kill();
    CHECK_FALSE(memcached->process().running());
    CHECK_FALSE(port_accepts(port));
    memcached->restart();
    CHECK(memcached->ping());
  }
  SECTION("pause makes requests time out; resume fixes it") {
    memcached->pause();
    CHECK(mc(port, "version\r\n", 300ms) == "<no reply>");
    memcached->resume();
    CHECK(memcached->ping());
  }
  SECTION("extra args reach memcached") {
    MemcachedServer big({"-I", "2m", "-m", "32"});
    CHECK(tcp_exchange(big.port(), "stats settings\r\n", "END\r\n")
              ->find("STAT item_size_max 2097152") != std::string::npos);
    CHECK(
        tcp_exchange(big.port(), "stats settings\r\n", "END\r\n")->find("STAT maxbytes 33554432") !=
        std::string::npos);
  }
  SECTION("a forked child's destructor leaves the server running") {
    CHECK(in_child([&] { memcached.reset(); }) == 0);
    CHECK(memcached->ping());
  }
  memcached.reset();
  CHECK_FALSE(port_accepts(port));
}

TEST_CASE("RedisCluster covers every slot with 3 masters", "[servers]") {
  auto cluster =
      timed("redis cluster (3 masters)", [] { return std::make_unique<RedisCluster>(); });
  const std::vector<int> ports = cluster->ports();  // a copy: used after reset()
  REQUIRE(ports.size() == 3);
  CHECK(std::set<int>(ports.begin(), ports.end()).size() == 3);
  for (int p : ports) CHECK(p <= 55535);
  CHECK(cluster->url() == "redis://127.0.0.1:" + std::to_string(ports[0]));
  REQUIRE(cluster->startup_nodes().size() == 3);
  CHECK(cluster->startup_nodes()[1] == std::pair<std::string, int>("127.0.0.1", ports[1]));

  for (int p : ports) {
    CHECK_THAT(cluster->cli(p, {"cluster", "info"}),
               Catch::Contains("cluster_state:ok") && Catch::Contains("cluster_slots_ok:16384") &&
                   Catch::Contains("cluster_known_nodes:3"));
  }
  auto ranges = RedisCluster::parse_slots(cluster->cli(ports[0], {"cluster", "slots"}));
  int covered = 0;
  std::set<int> masters;
  for (const auto& r : ranges) {
    covered += r.last - r.first + 1;
    masters.insert(r.port);
  }
  CHECK(covered == 16384);
  CHECK(masters == std::set<int>(ports.begin(), ports.end()));
  CHECK(masters.count(cluster->port_for_slot(0)) == 1);
  CHECK(masters.count(cluster->port_for_slot(16383)) == 1);
  CHECK(cluster->port_for_slot(0) != cluster->port_for_slot(16383));
  CHECK_THROWS(cluster->port_for_slot(16384));

  // Keys land on different masters; -c follows the redirections from any node.
  for (int i = 0; i < 10; ++i) {
    const std::string key = "key" + std::to_string(i);
    CHECK(cluster->cli(ports[static_cast<std::size_t>(i) % 3],
                       {"-c", "set", key, "v" + std::to_string(i)}) == "OK\n");
  }
  for (int i = 0; i < 10; ++i) {
    const std::string key = "key" + std::to_string(i);
    CHECK(cluster->cli(ports[static_cast<std::size_t>(i + 1) % 3], {"-c", "get", key}) ==
          "v" + std::to_string(i) + "\n");
    // The owner answers without redirection.
    int slot = std::stoi(cluster->cli(ports[0], {"cluster", "keyslot", key}));
    CHECK(cluster->cli(cluster->port_for_slot(slot), {"get", key}) ==
          "v" + std::to_string(i) + "\n");
  }
  CHECK(in_child([&] { cluster.reset(); }) == 0);
  CHECK(cluster->node(ports[2]).ping());
  cluster.reset();
  for (int p : ports) CHECK_FALSE(port_accepts(p));
}

TEST_CASE("RedisSentinelSet fails over to the replica", "[servers]") {
  auto set = timed("redis sentinel set (master, replica, sentinel)",
                   [] { return std::make_unique<RedisSentinelSet>(); });
  CHECK(set->service_name() == "mymaster");
  CHECK(set->current_master() == std::pair<std::string, int>("127.0.0.1", set->master_port()));
  CHECK(set->master().cli({"set", "k", "v"}) == "OK\n");
  CHECK(dogpile::test::detail::poll_until(
      [&] {
        return set->replica().cli({"get", "k"}) == "v\n";
      },
      5000ms));
  CHECK_THAT(set->replica().cli({"set", "k", "w"}), Catch::Contains("READONLY"));
  CHECK_THAT(set->sentinel({"sentinel", "replicas", "mymaster"}),
             Catch::Contains("127.0.0.1:" + std::to_string(set->replica_port())));

  auto t0 = std::chrono::steady_clock::now();
  set->failover();
  std::printf("[servers] sentinel failover done in %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count()));
  CHECK(set->current_master() == std::pair<std::string, int>("127.0.0.1", set->replica_port()));
  CHECK(set->replica().cli({"role"}).rfind("master\n", 0) == 0);
  CHECK(set->replica().cli({"set", "k2", "after"}) == "OK\n");
  CHECK(set->replica().cli({"get", "k"}) == "v\n");
  // The old master rejoins as a replica at once (the sentinel would take 8-18 s).
  CHECK(set->rejoin_old_master());
  CHECK(set->master().cli({"role"}).rfind("slave\n", 0) == 0);
  CHECK(set->master().cli({"get", "k2"}) == "after\n");

  // Processes are reachable for crash tests.
  CHECK(set->master_process().running());
  CHECK(set->sentinel_process().running());
  const int sentinel_port = set->sentinel_port();
  CHECK(in_child([&] { set.reset(); }) == 0);
  CHECK(set->sentinel({"ping"}) == "PONG\n");
  set.reset();
  CHECK_FALSE(port_accepts(sentinel_port));
}

TEST_CASE("servers die with the process that started them", "[servers]") {
  // A worker starts a redis-server and a memcached, reports their ports, and is SIGKILLed
  // (no destructor runs): PR_SET_PDEATHSIG must take the servers down with it.
  struct Report {
    int ports[2];
    char redis_dir[256];
    char memcached_dir[256];
  };
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t worker = ::fork();
  if (worker == 0) {
    ::close(fds[0]);
    try {
      RedisServer redis;
      MemcachedServer memcached;
      Report r{{redis.port(), memcached.port()}, {}, {}};
      std::snprintf(r.redis_dir, sizeof r.redis_dir, "%s", redis.dir().c_str());
      std::snprintf(r.memcached_dir, sizeof r.memcached_dir, "%s", memcached.dir().c_str());
      if (::write(fds[1], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) ::_exit(1);
      ::pause();  // until killed
    } catch (const std::exception& e) {
      std::fprintf(stderr, "worker: %s\n", e.what());
    }
    ::_exit(1);  // never unwind into Catch in the worker
  }
  ::close(fds[1]);
  Report r{};
  REQUIRE(::read(fds[0], &r, sizeof r) == static_cast<ssize_t>(sizeof r));
  ::close(fds[0]);
  const auto& ports = r.ports;
  CHECK(port_accepts(ports[0]));
  CHECK(port_accepts(ports[1]));
  ::kill(worker, SIGKILL);
  int status = 0;
  ::waitpid(worker, &status, 0);
  for (int port : ports) {
    CHECK(dogpile::test::detail::poll_until([&] { return !port_accepts(port); }, 5000ms));
  }
  // Nobody ran the worker's destructors: remove its directories here.
  std::filesystem::remove_all(r.redis_dir);
  std::filesystem::remove_all(r.memcached_dir);
}

TEST_CASE("servers start while other threads run", "[servers]") {
  // fork() in a multithreaded process: the child only makes async-signal-safe calls before exec
  // (checked by the TSan and ASan builds of this test).
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&done] {
      std::vector<std::string> junk;
      while (!done.load()) {
        junk.emplace_back(100, 'x');
        if (junk.size() > 1000) junk.clear();
      }
    });
  }
  {
    RedisServer redis;
    MemcachedServer memcached;
    CHECK(redis.ping());
    CHECK(memcached.ping());
    redis.restart();
    CHECK(redis.ping());
  }
  done = true;
  for (auto& t : threads) t.join();
}
