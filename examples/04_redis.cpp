// A region shared by several processes through Redis: three worker processes call get_or_create
// on the same keys at the same moment, and with `distributed_lock` on, the expensive function
// runs once per key across all of them; the others wait for the lock, then read the value.
//
//   example_04_redis [redis://127.0.0.1:6379/0]     (or set DOGPILE_REDIS_URL)
//
// Needs a running Redis server, e.g. `redis-server --port 6379 --save ''`. CTest runs it against
// a server of its own; scripts/demo.sh starts a temporary one when redis-server is installed.
#include <sys/wait.h>
#include <unistd.h>

#include <dogpile/backends/redis.hpp>
#include <dogpile/dogpile.hpp>

#include <array>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

// A value as JSON, so Python dogpile.cache regions with a JSON serializer can read it too
// (a std::string would be stored as its raw bytes; see docs/backends.md).
struct Report {
  std::string key;
  int built_by = 0;  // the pid of the process whose creator ran
};
void to_json(nlohmann::json& j, const Report& r) { j = {{"key", r.key}, {"built_by", r.built_by}}; }
void from_json(const nlohmann::json& j, Report& r) {
  r.key = j.at("key").get<std::string>();
  r.built_by = j.at("built_by").get<int>();
}

// The region every process configures the same way: by name, with dogpile's argument names.
dogpile::CacheRegion shared_region(const std::string& url) {
  dogpile::CacheRegion region = dogpile::make_region({.name = "reports"});
  region.configure("redis", {.expiration_time = 10min,
                             .arguments = {{"url", url},
                                           {"distributed_lock", true},       // one creator per key
                                           {"lock_timeout", 30},             // the lease, seconds
                                           {"redis_expiration_time", 3600},  // server-side TTL
                                           {"socket_timeout", 2.0},
                                           {"socket_connect_timeout", 1.0}}});
  return region;
}

// One worker: waits at the gate, then asks for every key. Writes "<key>\n" to `created` each
// time its creator runs (short writes to a pipe are atomic), prints what it got.
int worker(int n, const std::string& url, const std::vector<std::string>& keys, int gate,
           int created) {
  dogpile::CacheRegion region = shared_region(url);
  char go = 0;
  if (::read(gate, &go, 1) < 0) return 1;  // returns 0 (EOF) when the parent closes it: go
  for (const auto& key : keys) {
    Report r = region.get_or_create(key, [&] {
      std::this_thread::sleep_for(300ms);  // the expensive part
      const std::string line = key + "\n";
      if (::write(created, line.data(), line.size()) < 0) std::abort();
      return Report{key, static_cast<int>(::getpid())};
    });
    std::cout << "worker " << n << " (pid " << ::getpid() << "): " << r.key << " built by pid "
              << r.built_by << std::endl;
  }
  return 0;
}

int main(int argc, char** argv) {
  const char* env = std::getenv("DOGPILE_REDIS_URL");
  const std::string url = argc > 1 ? argv[1] : env != nullptr ? env : "redis://127.0.0.1:6379/0";
  const std::vector<std::string> keys = {"report:1", "report:2", "report:3"};

  // Start from empty keys, so every run shows the creations. Before any worker exists, this
  // also checks that the server answers.
  dogpile::CacheRegion region = shared_region(url);
  try {
    region.erase_multi(keys);
  } catch (const dogpile::BackendError& e) {
    std::cerr << "cannot reach Redis at " << url << ": " << e.what()
              << "\nstart one with `redis-server --port 6379 --save ''`, or pass its URL\n";
    return 2;
  }

  std::array<int, 2> gate{};
  std::array<int, 2> created{};
  if (::pipe(gate.data()) != 0 || ::pipe(created.data()) != 0) return 1;
  std::cout << std::flush;  // the children must not inherit unflushed output
  std::vector<pid_t> workers;
  for (int n = 1; n <= 3; ++n) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(gate[1]);
      ::close(created[0]);
      int code = 1;
      try {
        code = worker(n, url, keys, gate[0], created[1]);
      } catch (const std::exception& e) {
        std::cerr << "worker " << n << ": " << e.what() << std::endl;
      }
      ::_exit(code);
    }
    if (pid < 0) return 1;
    workers.push_back(pid);
  }
  ::close(gate[0]);
  ::close(gate[1]);  // all workers start together
  ::close(created[1]);

  bool ok = true;
  for (const pid_t pid : workers) {
    int status = 0;
    ok = ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 && ok;
  }
  std::map<std::string, int> creations;
  std::string text;
  std::array<char, 256> buf{};
  for (ssize_t n = 0; (n = ::read(created[0], buf.data(), buf.size())) > 0;) {
    text.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(created[0]);
  std::istringstream lines(text);
  for (std::string key; std::getline(lines, key);) ++creations[key];

  // Any process sharing the server sees the values (this one never created them).
  for (const auto& key : keys) {
    const std::optional<Report> r = region.get<Report>(key);
    std::cout << key << ": created " << creations[key] << "x by 3 processes, cached value built by "
              << (r ? std::to_string(r->built_by) : std::string("nobody")) << "\n";
    ok = ok && creations[key] == 1 && r.has_value();
  }
  region.erase_multi(keys);
  std::cout << (ok ? "one creation per key across processes" : "FAILED") << "\n";
  return ok ? 0 : 1;
}
