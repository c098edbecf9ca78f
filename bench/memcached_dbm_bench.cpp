// memcached and dbm region backends against their raw client libraries, in the same run:
//   mc_get / mc_set (200-byte value), mc_get_multi / mc_set_multi (100 keys): a region on the
//     `memcached` backend vs raw libmemcached calls on the same server (a memcached started on a
//     free port);
//   dbm_get / dbm_set (200-byte value): the `dbm` backend (kept-open handle, and dogpile's
//     open-per-call with keep_open=false) vs raw GDBM calls on an open handle;
//   then Python dogpile.cache's dbm backend on the same workload (/usr/bin/python3), if present.
// Build in Release with -DDOGPILE_BUILD_BENCH=ON; run: ./memcached_dbm_bench
//   [--benchmark_repetitions=5 --benchmark_enable_random_interleaving=true]
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <gdbm.h>
#include <libmemcached/memcached.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dogpile/backends/dbm.hpp"
#include "dogpile/backends/memcached.hpp"
#include "dogpile/region.hpp"
#include "support/ratio_reporter.hpp"
#include "support/servers.hpp"

namespace {

const std::string kValue(200, 'v');

dogpile::test::MemcachedServer& server() {
  static dogpile::test::MemcachedServer s;
  return s;
}

dogpile::test::TempDir& dir() {
  static dogpile::test::TempDir d;
  return d;
}

std::vector<std::string> keys(int n, const char* prefix) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

// ---- memcached ------------------------------------------------------------------------------

// The floor: one libmemcached client, configured as the backend configures its clients.
struct RawMemcached {
  memcached_st* mc = memcached_create(nullptr);
  RawMemcached() {
    memcached_server_add(mc, "127.0.0.1", static_cast<in_port_t>(server().port()));
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
  }
  ~RawMemcached() { memcached_free(mc); }
  RawMemcached(const RawMemcached&) = delete;
  RawMemcached& operator=(const RawMemcached&) = delete;
};

dogpile::CacheRegion& mc_region() {
  static dogpile::CacheRegion r = [] {
    auto region = dogpile::make_region({.name = "bench_mc"});
    region.configure("memcached", {.arguments = {{"url", server().address()}}});
    return region;
  }();
  return r;
}

void mc_get_floor(benchmark::State& state) {
  RawMemcached raw;
  memcached_set(raw.mc, "raw_k", 5, kValue.data(), kValue.size(), 0, 0);
  for (auto _ : state) {
    std::size_t len = 0;
    std::uint32_t flags = 0;
    memcached_return_t rc{};
    char* v = memcached_get(raw.mc, "raw_k", 5, &len, &flags, &rc);
    benchmark::DoNotOptimize(v);
    std::free(v);
  }
  state.SetItemsProcessed(state.iterations());
}
void mc_get_region(benchmark::State& state) {
  auto& r = mc_region();
  r.set("region_k", kValue);
  for (auto _ : state) benchmark::DoNotOptimize(r.get<std::string>("region_k"));
  state.SetItemsProcessed(state.iterations());
}
void mc_set_floor(benchmark::State& state) {
  RawMemcached raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(memcached_set(raw.mc, "raw_s", 5, kValue.data(), kValue.size(), 0, 0));
  }
  state.SetItemsProcessed(state.iterations());
}
void mc_set_region(benchmark::State& state) {
  auto& r = mc_region();
  for (auto _ : state) r.set("region_s", kValue);
  state.SetItemsProcessed(state.iterations());
}
void mc_get_multi_floor(benchmark::State& state) {
  RawMemcached raw;
  const auto ks = keys(100, "raw_m");
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  for (const auto& k : ks) {
    memcached_set(raw.mc, k.data(), k.size(), kValue.data(), kValue.size(), 0, 0);
    ptrs.push_back(k.data());
    lens.push_back(k.size());
  }
  for (auto _ : state) {
    memcached_mget(raw.mc, ptrs.data(), lens.data(), ptrs.size());
    std::vector<std::string> out;
    out.reserve(ks.size());
    memcached_return_t rc{};
    while (memcached_result_st* res = memcached_fetch_result(raw.mc, nullptr, &rc)) {
      out.emplace_back(memcached_result_value(res), memcached_result_length(res));
      memcached_result_free(res);
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}
void mc_get_multi_region(benchmark::State& state) {
  auto& r = mc_region();
  const auto ks = keys(100, "region_m");
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& k : ks) items.emplace_back(k, kValue);
  r.set_multi<std::string>(items);
  for (auto _ : state) benchmark::DoNotOptimize(r.get_multi<std::string>(ks));
  state.SetItemsProcessed(state.iterations());
}

// set_multi(100): the floor is raw libmemcached doing the same pipelined writes the backend
// does (binary protocol, buffered requests, flush, then every reply fetched and checked);
// per_key is 100 plain memcached_set calls (one round trip each), for scale.
std::vector<dogpile::BytesItem> multi_items(const char* prefix) {
  std::vector<dogpile::BytesItem> items;
  for (const auto& k : keys(100, prefix)) items.emplace_back(k, kValue);
  return items;
}
void mc_set_multi_floor(benchmark::State& state) {
  RawMemcached raw;
  memcached_behavior_set(raw.mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
  memcached_behavior_set(raw.mc, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1);
  const auto items = multi_items("raw_sm");
  memcached_result_st storage{};
  memcached_result_st* r = memcached_result_create(raw.mc, &storage);
  for (auto _ : state) {
    for (const auto& [k, v] : items) {
      memcached_set(raw.mc, k.data(), k.size(), v.data(), v.size(), 0, 0);
    }
    memcached_flush_buffers(raw.mc);
    std::size_t ok = 0;
    memcached_return_t rc{};
    while (memcached_fetch_result(raw.mc, r, &rc) != nullptr) ++ok;
    if (ok != items.size()) state.SkipWithError("a pipelined write was not confirmed");
  }
  memcached_result_free(r);
  state.SetItemsProcessed(state.iterations());
}
void mc_set_multi_per_key(benchmark::State& state) {
  RawMemcached raw;
  const auto items = multi_items("raw_sk");
  for (auto _ : state) {
    for (const auto& [k, v] : items) {
      benchmark::DoNotOptimize(memcached_set(raw.mc, k.data(), k.size(), v.data(), v.size(), 0, 0));
    }
  }
  state.SetItemsProcessed(state.iterations());
}
void mc_set_multi_backend(benchmark::State& state) {
  auto b = dogpile::make_backend("memcached", {{"url", server().address()}});
  const auto items = multi_items("backend_sm");
  for (auto _ : state) b->set_multi(items);
  state.SetItemsProcessed(state.iterations());
}
void mc_set_multi_region(benchmark::State& state) {
  auto& r = mc_region();
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& k : keys(100, "region_sm")) items.emplace_back(k, kValue);
  for (auto _ : state) r.set_multi<std::string>(items);
  state.SetItemsProcessed(state.iterations());
}

void mc_get_multi_backend(benchmark::State& state) {
  auto b = dogpile::make_backend("memcached", {{"url", server().address()}});
  const auto ks = keys(100, "backend_m");
  std::vector<dogpile::BytesItem> items;
  for (const auto& k : ks) items.emplace_back(k, kValue);
  b->set_multi(items);
  for (auto _ : state) benchmark::DoNotOptimize(b->get_multi(ks));
  state.SetItemsProcessed(state.iterations());
}

// ---- dbm ----------------------------------------------------------------------------------------

std::string dbm_file(const char* name) { return (dir().path() / name).string(); }

dogpile::CacheRegion dbm_region(const char* name, bool keep_open) {
  auto region = dogpile::make_region({.name = name});
  region.configure("dbm", {.arguments = {{"filename", dbm_file(name)}, {"keep_open", keep_open}}});
  return region;
}

void dbm_get_floor(benchmark::State& state) {
  const auto file = dbm_file("raw.dbm");
  GDBM_FILE g = gdbm_open(file.c_str(), 0, GDBM_WRCREAT, 0644, nullptr);
  char key[] = "k";
  gdbm_store(g, datum{key, 1}, datum{const_cast<char*>(kValue.data()), 200}, GDBM_REPLACE);
  for (auto _ : state) {
    datum v = gdbm_fetch(g, datum{key, 1});
    benchmark::DoNotOptimize(v.dptr);
    std::free(v.dptr);
  }
  gdbm_close(g);
  state.SetItemsProcessed(state.iterations());
}
// The floor a multi-process reader needs anyway: the same fetch under dogpile's shared flock
// on the rw lock file.
void dbm_get_floor_flock(benchmark::State& state) {
  const auto file = dbm_file("raw.dbm");
  GDBM_FILE g = gdbm_open(file.c_str(), 0, GDBM_WRCREAT | GDBM_NOLOCK, 0644, nullptr);
  const int fd = ::open((file + ".rw.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  char key[] = "k";
  gdbm_store(g, datum{key, 1}, datum{const_cast<char*>(kValue.data()), 200}, GDBM_REPLACE);
  for (auto _ : state) {
    ::flock(fd, LOCK_SH);
    datum v = gdbm_fetch(g, datum{key, 1});
    ::flock(fd, LOCK_UN);
    benchmark::DoNotOptimize(v.dptr);
    std::free(v.dptr);
  }
  ::close(fd);
  gdbm_close(g);
  state.SetItemsProcessed(state.iterations());
}
void dbm_get_backend(benchmark::State& state) {
  auto b = dogpile::make_backend("dbm", {{"filename", dbm_file("backend.dbm")}});
  b->set("k", kValue);
  for (auto _ : state) benchmark::DoNotOptimize(b->get("k"));
  state.SetItemsProcessed(state.iterations());
}
void dbm_set_floor(benchmark::State& state) {
  const auto file = dbm_file("raw.dbm");
  GDBM_FILE g = gdbm_open(file.c_str(), 0, GDBM_WRCREAT, 0644, nullptr);
  char key[] = "s";
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        gdbm_store(g, datum{key, 1}, datum{const_cast<char*>(kValue.data()), 200}, GDBM_REPLACE));
  }
  gdbm_close(g);
  state.SetItemsProcessed(state.iterations());
}
void dbm_get_region(benchmark::State& state, bool keep_open) {
  auto r = dbm_region(keep_open ? "kept.dbm" : "reopen.dbm", keep_open);
  r.set("k", kValue);
  for (auto _ : state) benchmark::DoNotOptimize(r.get<std::string>("k"));
  state.SetItemsProcessed(state.iterations());
}
void dbm_set_region(benchmark::State& state, bool keep_open) {
  auto r = dbm_region(keep_open ? "kept.dbm" : "reopen.dbm", keep_open);
  for (auto _ : state) r.set("s", kValue);
  state.SetItemsProcessed(state.iterations());
}
void dbm_get_kept(benchmark::State& s) { dbm_get_region(s, true); }
void dbm_get_reopen(benchmark::State& s) { dbm_get_region(s, false); }
void dbm_set_kept(benchmark::State& s) { dbm_set_region(s, true); }
void dbm_set_reopen(benchmark::State& s) { dbm_set_region(s, false); }

// Python dogpile.cache's dbm backend, same value size, JSON serializer as the interop tests.
void python_dbm() {
  const std::string file = dbm_file("python.dbm");
  const std::string script =
      "import json,time,sys\n"
      "from dogpile.cache import make_region\n"
      "r=make_region(serializer=lambda v: json.dumps(v).encode(),deserializer=json.loads)\n"
      "r.configure('dogpile.cache.dbm',arguments={'filename':sys.argv[1]})\n"
      "v='v'*200\nn=20000\n"
      "t=time.perf_counter()\n"
      "for i in range(n): r.set('s',v)\n"
      "s=(time.perf_counter()-t)/n*1e9\n"
      "t=time.perf_counter()\n"
      "for i in range(n): r.get('s')\n"
      "g=(time.perf_counter()-t)/n*1e9\n"
      "print('python dogpile.cache dbm: get %.0f ns/op, set %.0f ns/op' % (g,s))\n";
  const std::string py = (dir().path() / "bench.py").string();
  if (std::FILE* f = std::fopen(py.c_str(), "w")) {
    std::fputs(script.c_str(), f);
    std::fclose(f);
  }
  const std::string cmd = "/usr/bin/python3 " + py + " " + file;
  std::printf("\n");
  std::fflush(stdout);
  if (std::system(cmd.c_str()) != 0) std::printf("python dogpile.cache dbm: not available\n");
}

}  // namespace

BENCHMARK(mc_get_floor)->Name("mc_get/floor_libmemcached")->UseRealTime();
BENCHMARK(mc_get_region)->Name("mc_get/region")->UseRealTime();
BENCHMARK(mc_set_floor)->Name("mc_set/floor_libmemcached")->UseRealTime();
BENCHMARK(mc_set_region)->Name("mc_set/region")->UseRealTime();
BENCHMARK(mc_get_multi_floor)->Name("mc_get_multi100/floor_libmemcached")->UseRealTime();
BENCHMARK(mc_get_multi_region)->Name("mc_get_multi100/region")->UseRealTime();
BENCHMARK(mc_get_multi_backend)->Name("mc_get_multi100/backend")->UseRealTime();
BENCHMARK(mc_set_multi_floor)->Name("mc_set_multi100/floor_libmemcached_pipelined")->UseRealTime();
BENCHMARK(mc_set_multi_per_key)->Name("mc_set_multi100/libmemcached_per_key")->UseRealTime();
BENCHMARK(mc_set_multi_backend)->Name("mc_set_multi100/backend")->UseRealTime();
BENCHMARK(mc_set_multi_region)->Name("mc_set_multi100/region")->UseRealTime();
BENCHMARK(dbm_get_floor)->Name("dbm_get/floor_gdbm")->UseRealTime();
BENCHMARK(dbm_get_floor_flock)->Name("dbm_get_flocked/floor_gdbm_flock")->UseRealTime();
BENCHMARK(dbm_get_backend)->Name("dbm_get_flocked/backend_kept_open")->UseRealTime();
BENCHMARK(dbm_get_kept)->Name("dbm_get/region_kept_open")->UseRealTime();
BENCHMARK(dbm_get_reopen)->Name("dbm_get/region_reopen_per_call")->UseRealTime();
BENCHMARK(dbm_set_floor)->Name("dbm_set/floor_gdbm")->UseRealTime();
BENCHMARK(dbm_set_kept)->Name("dbm_set/region_kept_open")->UseRealTime();
BENCHMARK(dbm_set_reopen)->Name("dbm_set/region_reopen_per_call")->UseRealTime();

int main(int argc, char** argv) {
  const int rc = dogpile::bench::run_with_ratios(argc, argv);
  python_dbm();
  return rc;
}
