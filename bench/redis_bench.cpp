// The Redis backends (dogpile::redis) against raw hiredis on the same server, in the same run.
// The program starts its own servers with the test harness (tests/support/servers.hpp): one
// redis-server and, unless --no_cluster, a 3-master cluster; it never uses a running server.
//
// Keys are 20-24 bytes ("bench:user:profile:42"), longer than std::string's inline buffer, as
// most real keys are (a copy of a key allocates).
//
// Families (ratio table at the end, see support/ratio_reporter.hpp; lower is better):
//   get/...               region.get<std::string> of a 200-byte value vs redisCommand("GET")
//   set/...               region.set of a 200-byte value vs redisCommand("SET") of the same bytes
//   get_multi/...         region.get_multi of 100 keys vs one redisCommandArgv("MGET", 100 keys)
//   cluster_get_multi/... region.get_multi of the same 100 keys on a RedisClusterBackend
//                         (3 masters) vs on a RedisBackend (one server)
//   cluster_raw/...       the cluster backend's get_multi of those 100 keys (and the region's)
//                         vs raw hiredis doing the same work: one connection per master, one
//                         MGET per hash slot, every node's share sent, then every reply read
//   tls_get/..., tls_set/... RedisBackend get / set of the stored bytes over TLS (the same
//                         server's --tls-port, TLS 1.3, certificates verified) vs plain text
// The `backend_*` variants call the RedisBackend directly (no region, no envelope): they split
// the region's cost into "client library" and "region" parts. The `*_compact` variants are the
// region with `EnvelopeFormat::compact` (binary metadata) instead of dogpile's JSON envelope,
// on keys of their own (their values are 220 bytes instead of 234).
//
// Then (unless --lock_trials=0) the lock wake-up latency: a holder and a waiter, each with its
// own RedisBackend object (so two LeaseLocks on one lock key), distributed_lock = true,
// lock_sleep 100 ms (the default); the waiter blocks in acquire(); measured from the holder's
// release() returning to the waiter's acquire() returning (negative when the waiter gets the
// lock before the holder's thread is back from release(): the key is deleted on the server
// before the reply reaches the holder), and also from the release() call (always positive,
// includes the release's own round trip). Variant "backoff only": the holder
// takes and deletes the lock key with raw hiredis (SET NX PX / DEL: no release notice is
// published), so the waiter wakes only at its next backoff poll.
//
// Extra flags, anywhere on the command line: --lock_trials=N (default 50), --no_cluster.
#include <hiredis/hiredis.h>

#include <dogpile/backends/redis.hpp>
#include <dogpile/dogpile.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/ratio_reporter.hpp"
#include "support/servers.hpp"
#include "support/tls_certs.hpp"

using namespace std::chrono_literals;

namespace {

constexpr std::size_t kValueBytes = 200;
constexpr int kMultiKeys = 100;

struct RawContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using RawContext = std::unique_ptr<redisContext, RawContextDeleter>;

struct ReplyDeleter {
  void operator()(void* r) const { freeReplyObject(r); }
};
using RawReply = std::unique_ptr<redisReply, ReplyDeleter>;

RawContext raw_connect(int port) {
  RawContext c(redisConnect("127.0.0.1", port));
  if (!c || c->err != 0) {
    throw std::runtime_error("hiredis: cannot connect to 127.0.0.1:" + std::to_string(port));
  }
  return c;
}

// Everything the benchmarks share; made in main() (the harness's servers die with the thread
// that started them, so they are started on the main thread).
struct Env {
  std::unique_ptr<dogpile::test::RedisServer> server;
  std::unique_ptr<dogpile::test::RedisCluster> cluster;
  RawContext raw;
  std::shared_ptr<dogpile::RedisBackend> backend;
  std::shared_ptr<dogpile::RedisBackend> tls_backend;  // the same server, over its TLS port
  dogpile::CacheRegion region;
  dogpile::CacheRegion compact_region;  // same backend, EnvelopeFormat::compact
  dogpile::CacheRegion cluster_region;
  std::string value = std::string(kValueBytes, 'v');
  std::string get_key = "bench:user:profile:get";
  std::string set_key = "bench:user:profile:set";
  std::string raw_set_key = "bench:user:profile:raw";
  std::string stored;  // the bytes the region stores for `value` (envelope + payload)
  std::vector<std::string> multi_keys;
  std::vector<std::string> compact_keys;  // the same 100 keys' values in compact envelopes
  std::string compact_get_key = "bench:user:compact:get";
  std::string compact_set_key = "bench:user:compact:set";
  std::vector<const char*> mget_ptrs;  // "MGET" + multi_keys, for redisCommandArgv
  std::vector<std::size_t> mget_lens;
  std::shared_ptr<dogpile::RedisClusterBackend> cluster_backend;
  // The raw cluster floor: per master, a connection and its MGETs (one per slot).
  struct RawNode {
    RawContext c;
    std::vector<std::vector<const char*>> ptrs;
    std::vector<std::vector<std::size_t>> lens;
  };
  std::vector<RawNode> raw_nodes;
};

std::unique_ptr<Env> env;

dogpile::RedisOptions single_options(int port) {
  return dogpile::RedisOptions{.host = "127.0.0.1", .port = port};
}

void setup(bool with_cluster) {
  env = std::make_unique<Env>();
  Env& e = *env;
  const auto& certs = dogpile::test::certs();
  e.server = std::make_unique<dogpile::test::RedisServer>(dogpile::test::RedisServerOptions{
      .tls = dogpile::test::RedisServerOptions::Tls{certs.server, certs.server_key, certs.ca}});
  e.raw = raw_connect(e.server->port());
  e.backend = std::make_shared<dogpile::RedisBackend>(single_options(e.server->port()));
  auto tls_options = single_options(e.server->tls_port());
  tls_options.tls = {.ssl = true, .ssl_ca_certs = certs.ca};
  e.tls_backend = std::make_shared<dogpile::RedisBackend>(tls_options);
  e.region = dogpile::make_region({.name = "bench"});
  e.region.configure(e.backend, {.expiration_time = 10min});
  e.region.set(e.get_key, e.value);
  e.region.set(e.set_key, e.value);
  {
    RawReply r(static_cast<redisReply*>(
        redisCommand(e.raw.get(), "GET %b", e.get_key.data(), e.get_key.size())));
    if (!r || r->type != REDIS_REPLY_STRING) throw std::runtime_error("GET after set failed");
    e.stored.assign(r->str, r->len);
  }
  for (int i = 0; i < kMultiKeys; ++i)
    e.multi_keys.push_back("bench:user:profile:" + std::to_string(i));
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& k : e.multi_keys) items.emplace_back(k, e.value);
  e.region.set_multi(items);
  e.compact_region = dogpile::make_region(
      {.name = "bench-compact", .codec = {.envelope = dogpile::EnvelopeFormat::compact}});
  e.compact_region.configure(e.backend, {.expiration_time = 10min});
  e.compact_region.set(e.compact_get_key, e.value);
  std::vector<std::pair<std::string, std::string>> compact_items;
  for (int i = 0; i < kMultiKeys; ++i) {
    e.compact_keys.push_back("bench:user:compact:" + std::to_string(i));
    compact_items.emplace_back(e.compact_keys.back(), e.value);
  }
  e.compact_region.set_multi(compact_items);
  e.mget_ptrs.push_back("MGET");
  e.mget_lens.push_back(4);
  for (const auto& k : e.multi_keys) {
    e.mget_ptrs.push_back(k.data());
    e.mget_lens.push_back(k.size());
  }
  if (with_cluster) {
    e.cluster = std::make_unique<dogpile::test::RedisCluster>();
    auto cb = std::make_shared<dogpile::RedisClusterBackend>(
        dogpile::RedisClusterOptions{.startup_nodes = e.cluster->startup_nodes()});
    e.cluster_region = dogpile::make_region({.name = "bench-cluster"});
    e.cluster_region.configure(cb, {.expiration_time = 10min});
    e.cluster_region.set_multi(items);
    e.cluster_backend = cb;
    // Which master serves each key, as the raw floor routes it: CLUSTER KEYSLOT per key once.
    const auto ranges = dogpile::test::RedisCluster::parse_slots(
        e.cluster->cli(e.cluster->ports()[0], {"cluster", "slots"}));
    RawContext ask = raw_connect(e.cluster->ports()[0]);
    std::map<int, std::map<long long, std::vector<const std::string*>>> by_node;
    for (const auto& k : e.multi_keys) {
      RawReply r(static_cast<redisReply*>(
          redisCommand(ask.get(), "CLUSTER KEYSLOT %b", k.data(), k.size())));
      if (!r || r->type != REDIS_REPLY_INTEGER) throw std::runtime_error("CLUSTER KEYSLOT failed");
      int port = 0;
      for (const auto& rg : ranges) {
        if (r->integer >= rg.first && r->integer <= rg.last) port = rg.port;
      }
      by_node[port][r->integer].push_back(&k);
    }
    for (const auto& [port, slots] : by_node) {
      Env::RawNode n{raw_connect(port), {}, {}};
      for (const auto& [slot, keys] : slots) {
        std::vector<const char*> p{"MGET"};
        std::vector<std::size_t> l{4};
        for (const auto* k : keys) {
          p.push_back(k->data());
          l.push_back(k->size());
        }
        n.ptrs.push_back(std::move(p));
        n.lens.push_back(std::move(l));
      }
      e.raw_nodes.push_back(std::move(n));
    }
  }
  std::printf("redis-server on port %d%s; stored value: %zu bytes (%zu-byte string + envelope)\n",
              e.server->port(), with_cluster ? ", cluster of 3 masters" : "", e.stored.size(),
              kValueBytes);
}

// ---- 1. get -------------------------------------------------------------------------------

void get_floor(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    RawReply r(static_cast<redisReply*>(
        redisCommand(e.raw.get(), "GET %b", e.get_key.data(), e.get_key.size())));
    if (!r || r->type != REDIS_REPLY_STRING) {
      state.SkipWithError("raw GET failed");
      break;
    }
    benchmark::DoNotOptimize(r->str);
  }
  state.SetItemsProcessed(state.iterations());
}

template <dogpile::CacheRegion Env::*Region, std::string Env::*Key>
void get_region(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    auto v = (e.*Region).get<std::string>(e.*Key);
    if (!v) {
      state.SkipWithError("region get missed");
      break;
    }
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

template <std::shared_ptr<dogpile::RedisBackend> Env::*Backend = &Env::backend>
void get_backend(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    auto v = (e.*Backend)->get(e.get_key);
    if (!v) {
      state.SkipWithError("backend get missed");
      break;
    }
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- 2. set -------------------------------------------------------------------------------

void set_floor(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    RawReply r(static_cast<redisReply*>(redisCommand(e.raw.get(), "SET %b %b", e.raw_set_key.data(),
                                                     e.raw_set_key.size(), e.stored.data(),
                                                     e.stored.size())));
    if (!r || r->type != REDIS_REPLY_STATUS) {
      state.SkipWithError("raw SET failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

template <dogpile::CacheRegion Env::*Region, std::string Env::*Key>
void set_region(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) (e.*Region).set(e.*Key, e.value);
  state.SetItemsProcessed(state.iterations());
}

template <std::shared_ptr<dogpile::RedisBackend> Env::*Backend = &Env::backend>
void set_backend(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) (e.*Backend)->set(e.set_key, e.stored);
  state.SetItemsProcessed(state.iterations());
}

// ---- 3. get_multi(100) --------------------------------------------------------------------

void get_multi_floor(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    RawReply r(
        static_cast<redisReply*>(redisCommandArgv(e.raw.get(), static_cast<int>(e.mget_ptrs.size()),
                                                  e.mget_ptrs.data(), e.mget_lens.data())));
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != kMultiKeys) {
      state.SkipWithError("raw MGET failed");
      break;
    }
    benchmark::DoNotOptimize(r->element);
  }
  state.SetItemsProcessed(state.iterations());
}

template <dogpile::CacheRegion Env::*Region, std::vector<std::string> Env::*Keys = &Env::multi_keys>
void get_multi_region(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    auto vs = (e.*Region).get_multi<std::string>(e.*Keys);
    if (!vs.back()) {
      state.SkipWithError("region get_multi missed");
      break;
    }
    benchmark::DoNotOptimize(vs);
  }
  state.SetItemsProcessed(state.iterations());
}

void get_multi_backend(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    auto vs = e.backend->get_multi(e.multi_keys);
    if (!vs.back()) {
      state.SkipWithError("backend get_multi missed");
      break;
    }
    benchmark::DoNotOptimize(vs);
  }
  state.SetItemsProcessed(state.iterations());
}

// What a hand-written hiredis cluster client does for get_multi(100): every master's MGETs
// appended and written, then every reply read.
void cluster_raw_floor(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    for (auto& n : e.raw_nodes) {
      for (std::size_t i = 0; i < n.ptrs.size(); ++i) {
        redisAppendCommandArgv(n.c.get(), static_cast<int>(n.ptrs[i].size()), n.ptrs[i].data(),
                               n.lens[i].data());
      }
      int done = 0;
      while (done == 0) {
        if (redisBufferWrite(n.c.get(), &done) != REDIS_OK) {
          state.SkipWithError("raw cluster write failed");
          return;
        }
      }
    }
    std::size_t got = 0;
    for (auto& n : e.raw_nodes) {
      for (std::size_t i = 0; i < n.ptrs.size(); ++i) {
        void* raw = nullptr;
        if (redisGetReply(n.c.get(), &raw) != REDIS_OK) {
          state.SkipWithError("raw cluster MGET failed");
          return;
        }
        RawReply r(static_cast<redisReply*>(raw));
        if (r->type != REDIS_REPLY_ARRAY) {
          state.SkipWithError("raw cluster MGET: not an array");
          return;
        }
        got += r->elements;
      }
    }
    if (got != kMultiKeys) {
      state.SkipWithError("raw cluster MGET: keys missing");
      break;
    }
    benchmark::DoNotOptimize(got);
  }
  state.SetItemsProcessed(state.iterations());
}

void cluster_backend_get_multi(benchmark::State& state) {
  Env& e = *env;
  for (auto _ : state) {
    auto vs = e.cluster_backend->get_multi(e.multi_keys);
    if (!vs.back()) {
      state.SkipWithError("cluster backend get_multi missed");
      break;
    }
    benchmark::DoNotOptimize(vs);
  }
  state.SetItemsProcessed(state.iterations());
}

void register_benchmarks(bool with_cluster) {
  benchmark::RegisterBenchmark("get/floor_hiredis_GET", get_floor)->UseRealTime();
  benchmark::RegisterBenchmark("get/region_get", get_region<&Env::region, &Env::get_key>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("get/region_get_compact",
                               get_region<&Env::compact_region, &Env::compact_get_key>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("get/backend_get", get_backend<>)->UseRealTime();
  benchmark::RegisterBenchmark("set/floor_hiredis_SET", set_floor)->UseRealTime();
  benchmark::RegisterBenchmark("set/region_set", set_region<&Env::region, &Env::set_key>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("set/region_set_compact",
                               set_region<&Env::compact_region, &Env::compact_set_key>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("set/backend_set", set_backend<>)->UseRealTime();
  benchmark::RegisterBenchmark("tls_get/floor_plain_backend_get", get_backend<>)->UseRealTime();
  benchmark::RegisterBenchmark("tls_get/tls_backend_get", get_backend<&Env::tls_backend>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("tls_set/floor_plain_backend_set", set_backend<>)->UseRealTime();
  benchmark::RegisterBenchmark("tls_set/tls_backend_set", set_backend<&Env::tls_backend>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("get_multi/floor_hiredis_MGET", get_multi_floor)->UseRealTime();
  benchmark::RegisterBenchmark("get_multi/region_get_multi", get_multi_region<&Env::region>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("get_multi/region_get_multi_compact",
                               get_multi_region<&Env::compact_region, &Env::compact_keys>)
      ->UseRealTime();
  benchmark::RegisterBenchmark("get_multi/backend_get_multi", get_multi_backend)->UseRealTime();
  if (with_cluster) {
    benchmark::RegisterBenchmark("cluster_get_multi/floor_one_server",
                                 get_multi_region<&Env::region>)
        ->UseRealTime();
    benchmark::RegisterBenchmark("cluster_get_multi/cluster_3_masters",
                                 get_multi_region<&Env::cluster_region>)
        ->UseRealTime();
    benchmark::RegisterBenchmark("cluster_raw/floor_hiredis_3_masters", cluster_raw_floor)
        ->UseRealTime();
    benchmark::RegisterBenchmark("cluster_raw/backend_get_multi", cluster_backend_get_multi)
        ->UseRealTime();
    benchmark::RegisterBenchmark("cluster_raw/region_get_multi",
                                 get_multi_region<&Env::cluster_region>)
        ->UseRealTime();
  }
}

// ---- 5. lock wake-up latency --------------------------------------------------------------

struct Percentiles {
  double median_ms;
  double p90_ms;
  double min_ms;
  double max_ms;
};

Percentiles percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double p) {
    const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
  };
  return {at(0.5), at(0.9), v.front(), v.back()};
}

// One trial: the holder holds the lock of `key` for `hold`, the waiter (its own thread and
// backend object) blocks in acquire(); returns the wake-up latency in ms.
// `notices`: the holder is a LeaseLock of `holder` (its release publishes a notice); otherwise
// it takes and deletes the lock key with raw hiredis, so no notice is published.
struct LockSample {
  double from_return_ms;  // release() returned -> acquire() returned (< 0: the waiter won the race)
  double from_call_ms;    // release() called -> acquire() returned (includes release's round trip)
};

LockSample lock_trial(dogpile::RedisBackend& holder, dogpile::RedisBackend& waiter,
                      const std::string& key, std::chrono::milliseconds hold, bool notices) {
  using Clock = std::chrono::steady_clock;
  Env& e = *env;
  std::shared_ptr<dogpile::CacheMutex> held;
  const std::string lock_key = holder.lock_key(key);
  if (notices) {
    held = holder.get_mutex(key);
    if (!held->acquire(true)) throw std::runtime_error("holder could not acquire");
  } else {
    RawReply r(static_cast<redisReply*>(
        redisCommand(e.raw.get(), "SET %b holder NX PX 30000", lock_key.data(), lock_key.size())));
    if (!r || r->type != REDIS_REPLY_STATUS) throw std::runtime_error("raw SET NX failed");
  }
  std::atomic<bool> started{false};
  Clock::time_point acquired{};
  std::exception_ptr failure;
  std::thread w([&] {
    try {
      auto m = waiter.get_mutex(key);
      started = true;
      if (!m->acquire(true)) throw std::runtime_error("waiter gave up");
      acquired = Clock::now();
      m->release();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  while (!started.load()) std::this_thread::yield();
  std::this_thread::sleep_for(hold);
  Clock::time_point released;
  const Clock::time_point release_called = Clock::now();
  if (notices) {
    held->release();
    released = Clock::now();
  } else {
    RawReply r(static_cast<redisReply*>(
        redisCommand(e.raw.get(), "DEL %b", lock_key.data(), lock_key.size())));
    released = Clock::now();
    if (!r || r->type != REDIS_REPLY_INTEGER) throw std::runtime_error("raw DEL failed");
  }
  w.join();
  if (failure) std::rethrow_exception(failure);
  using Ms = std::chrono::duration<double, std::milli>;
  return {Ms(acquired - released).count(), Ms(acquired - release_called).count()};
}

void lock_latency(int trials) {
  Env& e = *env;
  auto opts = single_options(e.server->port());
  opts.distributed_lock = true;  // lock_sleep: the default 100 ms
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> hold_ms(150, 350);
  std::printf("\nlock wake-up latency: release() returning -> the waiter's acquire() returning\n");
  std::printf("(%d trials each after one warm-up, holder holds 150-350 ms, lock_sleep %lld ms)\n",
              trials,
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(opts.lock_sleep).count()));
  std::printf("%-34s %7s %9s %9s %9s %9s | %s\n", "variant", "trials", "median ms", "p90 ms",
              "min ms", "max ms", "from release() call: median, p90 ms");
  for (const bool notices : {true, false}) {
    // Fresh backend objects per variant: two LeaseLocks on each key, two subscribers.
    auto holder = std::make_shared<dogpile::RedisBackend>(opts);
    auto waiter = std::make_shared<dogpile::RedisBackend>(opts);
    std::vector<double> ms;
    std::vector<double> from_call;
    for (int t = 0; t <= trials; ++t) {
      const std::string key =
          std::string("bench:lock:") + (notices ? "n" : "b") + std::to_string(t);
      const LockSample d =
          lock_trial(*holder, *waiter, key, std::chrono::milliseconds(hold_ms(rng)), notices);
      if (t > 0) {  // trial 0 starts the waiter's subscriber: warm-up
        ms.push_back(d.from_return_ms);
        from_call.push_back(d.from_call_ms);
      }
    }
    const auto p = percentiles(ms);
    const auto c = percentiles(from_call);
    std::printf("%-34s %7zu %9.3f %9.3f %9.3f %9.3f | %9.3f %9.3f\n",
                notices ? "release notice (LeaseLock holder)" : "backoff only (no notice)",
                ms.size(), p.median_ms, p.p90_ms, p.min_ms, p.max_ms, c.median_ms, c.p90_ms);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int lock_trials = 50;
  bool with_cluster = true;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.rfind("--lock_trials=", 0) == 0) {
      lock_trials = std::atoi(argv[i] + std::strlen("--lock_trials="));
    } else if (a == "--no_cluster") {
      with_cluster = false;
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  try {
    setup(with_cluster);
    register_benchmarks(with_cluster);
    const int rc = dogpile::bench::run_with_ratios(n, args.data());
    if (rc != 0) return rc;
    if (lock_trials > 0) lock_latency(lock_trials);
    env.reset();  // clients first, then the servers and their temporary directories
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "redis_bench: %s\n", ex.what());
    return 1;
  }
  return 0;
}
