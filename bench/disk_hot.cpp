// Hot reads: DiskCache::get with the hot-read cache off and on, against LMDB and the raw SQLite
// floor, on python-diskcache's data (keys b"0".."N-1", values str(i) * 1..99 = 1–495 bytes).
//
//   disk_hot [--keys 100,100000] [--gets 200000] [--min-seconds 1] [--writer-period-us 1000]
//            [--rounds 1] [--tsv FILE] [--dir DIR]
//
// For each key count and each of "no writer" / "one writer process elsewhere" (a forked child
// that stores a random key every writer-period, on the same database or LMDB environment), it
// times uniformly random gets per backend (at least `gets` of them and at least min-seconds),
// one clock read pair per op:
//   lmdb      LMDB (liblmdb): a read transaction per get (mdb_txn_renew / mdb_get / reset), the
//             value copied out; the writer's puts are committed with LMDB's default durability.
//   sqlite    the floor: the cache's own cache.db, one prepared SELECT (diskcache's live-row
//             query) per get in its own read transaction, value copied out.
//   disk      DiskCache::get, hot cache off (hot_cache_bytes = 0).
//   disk-def  DiskCache::get with the default options (hot cache 8 MiB, standing down where it
//             does not pay).
//   disk-hot  DiskCache::get with hot_cache_bytes = 64 MiB.
// Then "mixed": python-diskcache's 90/9/1 get/set/delete mix in this process, for the three
// DiskCache rows (their own writes invalidate the hot cache). Prints medians, p90, p99, means,
// the hot hit rate (and the share of lookups skipped while standing down) and the ratios to
// LMDB and to the floor; --tsv appends rows for docs/benchmarks.md. --rounds R runs every mode's
// rows R times, interleaved, and keeps each row's best median and best mean (a loaded machine's
// drift between rows is larger than the few per cent compared here).
#ifndef DOGPILE_BENCH_NO_LMDB
#include <lmdb.h>
#endif
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/disk/cache.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Config {
  std::vector<int> keys{100, 100'000};
  int gets = 200'000;
  int writer_period_us = 1000;
  int rounds = 1;
  double min_seconds = 1.0;
  std::string tsv;
  fs::path dir;
};

std::string value_of(std::size_t i, int repeat) {
  const std::string s = std::to_string(i);
  std::string v;
  for (int r = 0; r < repeat; ++r) v += s;
  return v;
}

#ifndef DOGPILE_BENCH_NO_LMDB
constexpr bool kHaveLmdb = true;

void check_mdb(int rc, const char* what) {
  if (rc != MDB_SUCCESS) {
    throw std::runtime_error(std::string("lmdb ") + what + ": " + mdb_strerror(rc));
  }
}

#else
constexpr bool kHaveLmdb = false;  // built without liblmdb: the LMDB rows are left out
#endif

// ---- the backends ----------------------------------------------------------------------------

class Reader {
 public:
  virtual ~Reader() = default;
  virtual bool get(int key) = 0;
  virtual void set(int key, const std::string& v) = 0;
  virtual void erase(int key) = 0;
  virtual std::string extra() { return ""; }
};

#ifndef DOGPILE_BENCH_NO_LMDB
class Lmdb {
 public:
  explicit Lmdb(const fs::path& dir) {
    fs::create_directories(dir);
    check_mdb(mdb_env_create(&env_), "env_create");
    check_mdb(mdb_env_set_mapsize(env_, std::size_t{1} << 30), "set_mapsize");
    check_mdb(mdb_env_open(env_, dir.c_str(), 0, 0644), "env_open");
    MDB_txn* txn = nullptr;
    check_mdb(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    check_mdb(mdb_dbi_open(txn, nullptr, 0, &dbi_), "dbi_open");
    check_mdb(mdb_txn_commit(txn), "commit");
  }
  ~Lmdb() {
    if (rtxn_ != nullptr) mdb_txn_abort(rtxn_);
    mdb_env_close(env_);
  }
  Lmdb(const Lmdb&) = delete;
  Lmdb& operator=(const Lmdb&) = delete;

  void put_many(int from, int to, const std::function<std::string(int)>& value) {
    MDB_txn* txn = nullptr;
    check_mdb(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    for (int i = from; i < to; ++i) {
      std::string k = std::to_string(i);
      std::string v = value(i);
      MDB_val mk{k.size(), k.data()};
      MDB_val mv{v.size(), v.data()};
      check_mdb(mdb_put(txn, dbi_, &mk, &mv, 0), "put");
    }
    check_mdb(mdb_txn_commit(txn), "commit");
  }
  void del(int key) {
    MDB_txn* txn = nullptr;
    check_mdb(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    std::string k = std::to_string(key);
    MDB_val mk{k.size(), k.data()};
    int rc = mdb_del(txn, dbi_, &mk, nullptr);
    if (rc != MDB_NOTFOUND) check_mdb(rc, "del");
    check_mdb(mdb_txn_commit(txn), "commit");
  }
  bool get(int key, std::string& out) {
    if (rtxn_ == nullptr) {
      check_mdb(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &rtxn_), "txn_begin");
    } else {
      check_mdb(mdb_txn_renew(rtxn_), "txn_renew");
    }
    char buf[24];
    int n = std::snprintf(buf, sizeof buf, "%d", key);
    MDB_val mk{static_cast<std::size_t>(n), buf};
    MDB_val mv{};
    int rc = mdb_get(rtxn_, dbi_, &mk, &mv);
    bool hit = rc == MDB_SUCCESS;
    if (hit) out.assign(static_cast<const char*>(mv.mv_data), mv.mv_size);
    mdb_txn_reset(rtxn_);
    return hit;
  }

 private:
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  MDB_txn* rtxn_ = nullptr;
};
#else
class Lmdb {  // never opened (kHaveLmdb is false): keeps the code below in one piece
 public:
  explicit Lmdb(const fs::path&) {}
  void put_many(int, int, const std::function<std::string(int)>&) {}
  void del(int) {}
  bool get(int, std::string&) { return false; }
};
#endif

class LmdbReader final : public Reader {
 public:
  explicit LmdbReader(const fs::path& dir) : db_(dir) {}
  bool get(int key) override { return db_.get(key, out_); }
  void set(int key, const std::string& v) override {
    db_.put_many(key, key + 1, [&](int) { return v; });
  }
  void erase(int key) override { db_.del(key); }

 private:
  Lmdb db_;
  std::string out_;
};

class SqliteReader final : public Reader {
 public:
  explicit SqliteReader(const fs::path& dir) {
    if (sqlite3_open_v2((dir / "cache.db").c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) !=
        SQLITE_OK) {
      throw std::runtime_error("sqlite open");
    }
    sqlite3_busy_timeout(db_, 60000);
    sqlite3_exec(db_, "PRAGMA mmap_size = 67108864; PRAGMA cache_size = 8192", nullptr, nullptr,
                 nullptr);
    const char* sql =
        "SELECT rowid, expire_time, tag, mode, filename, value FROM Cache"
        " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)";
    if (sqlite3_prepare_v2(db_, sql, -1, &get_, nullptr) != SQLITE_OK) {
      throw std::runtime_error("sqlite prepare");
    }
  }
  ~SqliteReader() override {
    sqlite3_finalize(get_);
    sqlite3_close(db_);
  }
  SqliteReader(const SqliteReader&) = delete;
  SqliteReader& operator=(const SqliteReader&) = delete;
  bool get(int key) override {
    char buf[24];
    int n = std::snprintf(buf, sizeof buf, "%d", key);
    sqlite3_bind_blob(get_, 1, buf, n, SQLITE_STATIC);
    sqlite3_bind_double(
        get_, 2,
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
    bool hit = sqlite3_step(get_) == SQLITE_ROW;
    if (hit) {
      const void* p = sqlite3_column_blob(get_, 5);
      out_.assign(static_cast<const char*>(p),
                  static_cast<std::size_t>(sqlite3_column_bytes(get_, 5)));
    }
    sqlite3_reset(get_);
    return hit;
  }
  void set(int, const std::string&) override {}
  void erase(int) override {}

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* get_ = nullptr;
  std::string out_;
};

class DiskReader final : public Reader {
 public:
  /// `hot`: hot_cache_bytes, or nullopt for the default options.
  DiskReader(const fs::path& dir, std::optional<std::size_t> hot) : cache_(dir, opts(hot)) {}
  bool get(int key) override {
    auto v = cache_.get<dogpile::Bytes>(dogpile::Bytes{std::to_string(key)});
    return v.has_value();
  }
  void set(int key, const std::string& v) override {
    cache_.set(dogpile::Bytes{std::to_string(key)}, dogpile::Bytes{v});
  }
  void erase(int key) override { cache_.erase(dogpile::Bytes{std::to_string(key)}); }
  std::string extra() override {
    auto s = cache_.hot_cache_stats();
    if (s.hits + s.misses == 0) return "";
    char b[64];
    const auto all = static_cast<double>(s.hits + s.misses + s.skipped);
    if (s.skipped == 0) {
      std::snprintf(b, sizeof b, "%.1f", 100.0 * static_cast<double>(s.hits) / all);
    } else {
      std::snprintf(b, sizeof b, "%.1f/s%.0f", 100.0 * static_cast<double>(s.hits) / all,
                    100.0 * static_cast<double>(s.skipped) / all);
    }
    return b;
  }

 private:
  static dogpile::DiskCacheOptions opts(std::optional<std::size_t> hot) {
    dogpile::DiskCacheOptions o;
    if (hot) o.hot_cache_bytes = *hot;
    return o;
  }
  dogpile::DiskCache cache_;
};

// ---- the writer elsewhere ----------------------------------------------------------------------

struct Shared {
  std::atomic<int> stop{0};
  std::atomic<long> writes{0};
};

/// Forks a process that stores a random key every `period_us` until told to stop.
pid_t start_writer(Shared* sh, bool lmdb, const fs::path& dir, int keys, int period_us) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  try {
    std::unique_ptr<Lmdb> env;
    std::unique_ptr<dogpile::DiskCache> cache;
    if (lmdb) {
      env = std::make_unique<Lmdb>(dir);
    } else {
      cache = std::make_unique<dogpile::DiskCache>(dir,
                                                   dogpile::DiskCacheOptions{.hot_cache_bytes = 0});
    }
    std::mt19937_64 gen(99);
    std::uniform_int_distribution<int> key(0, keys - 1);
    std::uniform_int_distribution<int> rep(1, 99);
    timespec next{};
    clock_gettime(CLOCK_MONOTONIC, &next);
    while (sh->stop.load() == 0) {
      int k = key(gen);
      std::string v = value_of(static_cast<std::size_t>(k), rep(gen));
      if (lmdb) {
        env->put_many(k, k + 1, [&](int) { return v; });
      } else {
        cache->set(dogpile::Bytes{std::to_string(k)}, dogpile::Bytes{v});
      }
      sh->writes.fetch_add(1);
      next.tv_nsec += static_cast<long>(period_us) * 1000;
      while (next.tv_nsec >= 1'000'000'000) {
        next.tv_nsec -= 1'000'000'000;
        ++next.tv_sec;
      }
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "writer: %s\n", e.what());
    ::_exit(1);
  }
  ::_exit(0);
}

// ---- measurement -------------------------------------------------------------------------------

struct Result {
  double median = 0, p90 = 0, p99 = 0, mean = 0;
  long count = 0, misses = 0;
};

Result summarize(std::vector<std::int64_t>& ns, long misses) {
  Result r;
  r.count = static_cast<long>(ns.size());
  r.misses = misses;
  if (ns.empty()) return r;
  double sum = 0;
  for (auto v : ns) sum += static_cast<double>(v);
  r.mean = sum / static_cast<double>(ns.size()) / 1000.0;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    return static_cast<double>(
               ns[static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1))]) /
           1000.0;
  };
  r.median = at(0.5);
  r.p90 = at(0.9);
  r.p99 = at(0.99);
  return r;
}

Result time_gets(Reader& r, int keys, int gets, double min_seconds, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int> key(0, keys - 1);
  std::vector<int> seq(static_cast<std::size_t>(gets));
  for (auto& k : seq) k = key(gen);
  for (int i = 0; i < std::min(gets, 2000); ++i) r.get(seq[static_cast<std::size_t>(i)]);  // warm
  std::vector<std::int64_t> ns;
  ns.reserve(seq.size());
  long misses = 0;
  // At least `gets` ops and at least min_seconds (so a writer elsewhere commits many times
  // during even the fastest row), cycling through the key sequence.
  auto end = Clock::now() + std::chrono::duration<double>(min_seconds);
  for (std::size_t i = 0; i < seq.size() || (Clock::now() < end && ns.size() < 20'000'000); ++i) {
    int k = seq[i % seq.size()];
    auto t0 = Clock::now();
    bool hit = r.get(k);
    auto t1 = Clock::now();
    ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    misses += hit ? 0 : 1;
  }
  return summarize(ns, misses);
}

/// python-diskcache's 90/9/1 mix in this process; returns the get latencies.
Result time_mixed(Reader& r, int keys, int ops, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int> key(0, keys - 1);
  std::uniform_int_distribution<int> rep(1, 99);
  std::uniform_real_distribution<double> choice(0.0, 1.0);
  std::vector<std::int64_t> ns;
  long misses = 0;
  for (int i = 0; i < ops; ++i) {
    int k = key(gen);
    double c = choice(gen);
    if (c < 0.90) {
      auto t0 = Clock::now();
      bool hit = r.get(k);
      auto t1 = Clock::now();
      ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      misses += hit ? 0 : 1;
    } else if (c < 0.99) {
      r.set(k, value_of(static_cast<std::size_t>(k), rep(gen)));
    } else {
      r.erase(k);
    }
  }
  return summarize(ns, misses);
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--keys") {
      c.keys.clear();
      std::string list = next();
      std::size_t p = 0;
      while (p < list.size()) {
        std::size_t q = list.find(',', p);
        if (q == std::string::npos) q = list.size();
        c.keys.push_back(std::stoi(list.substr(p, q - p)));
        p = q + 1;
      }
    } else if (a == "--gets") {
      c.gets = std::stoi(next());
    } else if (a == "--writer-period-us") {
      c.writer_period_us = std::stoi(next());
    } else if (a == "--rounds") {
      c.rounds = std::max(1, std::stoi(next()));
    } else if (a == "--min-seconds") {
      c.min_seconds = std::stod(next());
    } else if (a == "--tsv") {
      c.tsv = next();
    } else if (a == "--dir") {
      c.dir = next();
    } else {
      throw std::runtime_error("unknown option " + a);
    }
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) try {
  Config cfg = parse(argc, argv);
  bool own_dir = cfg.dir.empty();
  if (own_dir) {
    std::string t = (fs::temp_directory_path() / "dogpile-hot-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp");
    cfg.dir = t;
  }
  auto* sh = static_cast<Shared*>(
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) throw std::runtime_error("mmap");
  std::FILE* tsv = cfg.tsv.empty() ? nullptr : std::fopen(cfg.tsv.c_str(), "a");
  constexpr std::size_t kHotBytes = std::size_t{64} << 20;

  for (int keys : cfg.keys) {
    fs::path disk_dir = cfg.dir / ("disk-" + std::to_string(keys));
    fs::path lmdb_dir = cfg.dir / ("lmdb-" + std::to_string(keys));
    fs::remove_all(disk_dir);
    fs::remove_all(lmdb_dir);
    auto value = [](int i) { return value_of(static_cast<std::size_t>(i), 1 + i % 99); };
    // Every key present with its value (again before each mixed row: the previous one deleted
    // some, and both mixed rows must start from the same state).
    auto populate = [&] {
      dogpile::DiskCache fill(disk_dir);
      auto tx = fill.transact();
      for (int i = 0; i < keys; ++i) {
        fill.set(dogpile::Bytes{std::to_string(i)}, dogpile::Bytes{value(i)});
      }
    };
    populate();
    if (kHaveLmdb) Lmdb(lmdb_dir).put_many(0, keys, value);

    std::printf("\n## %d keys, %d gets per row (latency µs)\n", keys, cfg.gets);
    std::printf("%-14s %-9s %9s %8s %8s %8s %8s %9s %9s %8s\n", "mode", "backend", "median", "p90",
                "p99", "misses", "hot-hit%", "/lmdb", "/sqlite", "mean");
    for (const char* mode : {"get", "get+writer", "mixed"}) {
      std::map<std::string, Result> res;
      for (int round = 0; round < cfg.rounds; ++round) {
        for (const char* backend : {"lmdb", "sqlite", "disk", "disk-def", "disk-hot"}) {
          std::string b = backend;
          std::string m = mode;
          if (m == "mixed" && b.rfind("disk", 0) != 0) continue;
          if (b == "lmdb" && !kHaveLmdb) continue;
          bool lmdb = b == "lmdb";
          pid_t writer = -1;
          if (m == "mixed") populate();
          std::unique_ptr<Reader> r;
          if (lmdb) {
            r = std::make_unique<LmdbReader>(lmdb_dir);
          } else if (b == "sqlite") {
            r = std::make_unique<SqliteReader>(disk_dir);
          } else {
            r = std::make_unique<DiskReader>(disk_dir, b == "disk-hot" ? std::optional(kHotBytes)
                                                       : b == "disk-def"
                                                           ? std::nullopt
                                                           : std::optional<std::size_t>(0));
          }
          sh->stop.store(0);
          sh->writes.store(0);
          if (m == "get+writer") {
            writer = start_writer(sh, lmdb, lmdb ? lmdb_dir : disk_dir, keys, cfg.writer_period_us);
            std::this_thread::sleep_for(std::chrono::milliseconds(50));  // writing steadily
          }
          auto t0 = Clock::now();
          Result x = m == "mixed" ? time_mixed(*r, keys, cfg.gets * 10 / 9, 7)
                                  : time_gets(*r, keys, cfg.gets, cfg.min_seconds, 7);
          double secs = std::chrono::duration<double>(Clock::now() - t0).count();
          if (writer > 0) {
            sh->stop.store(1);
            int st = 0;
            ::waitpid(writer, &st, 0);
          }
          std::string hot = r->extra();
          if (auto it = res.find(b); it != res.end()) {  // an earlier round: keep the best of each
            x.median = std::min(x.median, it->second.median);
            x.mean = std::min(x.mean, it->second.mean);
          }
          res[b] = x;
          if (round + 1 < cfg.rounds) continue;
          // Ratios to the same mode's LMDB and floor rows ("mixed" has neither: the disk row).
          auto ratio = [&](const char* base) {
            auto it = res.find(m == "mixed" ? "disk" : base);
            return it == res.end() || it->second.median <= 0 ? 0.0 : x.median / it->second.median;
          };
          std::printf("%-14s %-9s %9.2f %8.2f %8.2f %8ld %8s %8.2fx %8.2fx %8.2f", mode, backend,
                      x.median, x.p90, x.p99, x.misses, hot.empty() ? "-" : hot.c_str(),
                      ratio("lmdb"), ratio("sqlite"), x.mean);
          if (writer > 0) {
            std::printf("  (writer: %ld commits in %.1f s)", sh->writes.load(), secs);
          }
          std::printf("\n");
          std::fflush(stdout);
          if (tsv != nullptr) {
            std::fprintf(tsv, "%d\t%s\t%s\t%ld\t%ld\t%.3f\t%.3f\t%.3f\t%s\t%.3f\t%.3f\t%ld\t%.3f\n",
                         keys, mode, backend, x.count, x.misses, x.median, x.p90, x.p99,
                         hot.empty() ? "-" : hot.c_str(), ratio("lmdb"), ratio("sqlite"),
                         writer > 0 ? sh->writes.load() : 0L, x.mean);
          }
        }
      }
    }
  }
  if (tsv != nullptr) std::fclose(tsv);
  if (own_dir) fs::remove_all(cfg.dir);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "disk_hot: %s\n", e.what());
  return 1;
}
