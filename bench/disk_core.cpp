// python-diskcache's tests/benchmark_core.py, reproduced on dogpile-cpp's DiskCache and
// FanoutCache, on raw SQLite prepared statements with diskcache's schema and pragmas (the floor)
// and on Debian's python3-diskcache (bench/diskcache_core.py, run from here), in one run with
// the identical operation sequence for every backend.
//
// Workload (reference/diskcache.md §4.1): P processes, each with its own client, run N
// operations over 100 keys b"0".."99": 90% get, 9% set of str(i).encode() * randrange(1, 100)
// (1-495 bytes), 1% delete. Each op is timed alone; the first `--warmup` ops of each process are
// not recorded. Percentiles are diskcache's `sorted[int(n * p) - 1]`.
//
//   disk_core [--procs P] [--ops N] [--keys K] [--warmup W] [--rounds R] [--dir D]
//             [--backends sqlite,sqlite8,disk,fanout,py-disk,py-fanout] [--python PY]
//             [--script S]
//             [--tsv FILE]
//
// Output: one table row per backend and op (count, misses, median, p90, p99, max in µs, total
// in s) and the ratios get-median/floor and set-median/floor; `--tsv` appends machine-readable
// rows for bench/plot_disk.gnuplot.
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"

#ifndef DOGPILE_BENCH_DIR
#define DOGPILE_BENCH_DIR "bench"
#endif

namespace fs = std::filesystem;

namespace {

enum OpKind : std::uint8_t { kGet = 0, kSet = 1, kDelete = 2, kCpu = 3 };
constexpr std::array<const char*, 4> kOpNames{"get", "set", "delete", "cpu"};

struct Op {
  OpKind kind;
  std::uint8_t key;     // key index: the key is str(key).encode()
  std::uint8_t repeat;  // value = str(i).encode() * repeat
};

struct Config {
  int procs = 1;
  int ops = 100'000;
  int keys = 100;
  int warmup = 1'000;
  int rounds = 1;
  fs::path dir;
  std::vector<std::string> backends{"sqlite", "sqlite8", "disk", "fanout", "py-disk", "py-fanout"};
  std::string python = "/usr/bin/python3";
  std::string script = DOGPILE_BENCH_DIR "/diskcache_core.py";
  std::string tsv;
};

// The op sequence of worker w (deterministic; the same for every backend and for Python,
// which reads it from the file written by `write_ops`).
std::vector<Op> make_ops(const Config& c, int w) {
  std::mt19937_64 gen(static_cast<std::uint64_t>(w) + 1);
  std::uniform_int_distribution<int> key(0, c.keys - 1);
  std::uniform_int_distribution<int> rep(1, 99);
  std::uniform_real_distribution<double> choice(0.0, 1.0);
  std::vector<Op> ops(static_cast<std::size_t>(c.ops));
  for (auto& op : ops) {
    op.key = static_cast<std::uint8_t>(key(gen));
    op.repeat = static_cast<std::uint8_t>(rep(gen));
    const double r = choice(gen);
    op.kind = r < 0.90 ? kGet : r < 0.99 ? kSet : kDelete;
  }
  return ops;
}

void write_ops(const fs::path& file, const std::vector<Op>& ops) {
  std::ofstream out(file);
  for (const auto& op : ops) {
    out << "gsd"[op.kind] << ' ' << int(op.key) << ' ' << int(op.repeat) << '\n';
  }
}

std::string value_of(std::size_t i, int repeat) {
  const std::string s = std::to_string(i);
  std::string v;
  v.reserve(s.size() * static_cast<std::size_t>(repeat));
  for (int r = 0; r < repeat; ++r) v += s;
  return v;
}

// One timed sample.
struct Sample {
  std::int64_t ns;
  std::uint8_t kind;
  std::uint8_t miss;
};

// ---- clients --------------------------------------------------------------------------------

// A backend as the worker sees it: get (true = hit), set (true = stored), erase (true = was
// there). Constructed in the worker process, after fork.
class Client {
 public:
  virtual ~Client() = default;
  virtual bool get(int key) = 0;
  virtual bool set(int key, const std::string& value) = 0;
  virtual bool erase(int key) = 0;
};

std::vector<dogpile::Key> byte_keys(int n) {
  std::vector<dogpile::Key> keys;
  for (int i = 0; i < n; ++i) keys.emplace_back(dogpile::Bytes{std::to_string(i)});
  return keys;
}

class DiskClient final : public Client {
 public:
  DiskClient(const fs::path& dir, int keys) : cache_(dir), keys_(byte_keys(keys)) {}
  bool get(int k) override {
    return cache_.get<dogpile::Bytes>(keys_[static_cast<std::size_t>(k)]).has_value();
  }
  bool set(int k, const std::string& v) override {
    value_.data = v;  // outside the library, as Python builds its value before timing
    return cache_.set(keys_[static_cast<std::size_t>(k)], value_);
  }
  bool erase(int k) override { return cache_.erase(keys_[static_cast<std::size_t>(k)]); }

 private:
  dogpile::DiskCache cache_;
  std::vector<dogpile::Key> keys_;
  dogpile::Bytes value_;
};

class FanoutClient final : public Client {
 public:
  FanoutClient(const fs::path& dir, int keys)
      : cache_(dir,
               dogpile::FanoutCacheOptions{.shards = 8, .timeout = std::chrono::milliseconds(10)}),
        keys_(byte_keys(keys)) {}
  bool get(int k) override {
    return cache_.get<dogpile::Bytes>(keys_[static_cast<std::size_t>(k)]).has_value();
  }
  bool set(int k, const std::string& v) override {
    value_.data = v;
    return cache_.set(keys_[static_cast<std::size_t>(k)], value_);
  }
  bool erase(int k) override { return cache_.erase(keys_[static_cast<std::size_t>(k)]); }

 private:
  dogpile::FanoutCache cache_;
  std::vector<dogpile::Key> keys_;
  dogpile::Bytes value_;
};

// The floor: diskcache's schema and pragmas, one prepared statement per step, nothing else
// (no value files, no culling, no settings reads).
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS Settings (key TEXT NOT NULL UNIQUE, value);
INSERT OR IGNORE INTO Settings VALUES ('count', 0), ('size', 0), ('hits', 0), ('misses', 0);
CREATE TABLE IF NOT EXISTS Cache (rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER,
  store_time REAL, expire_time REAL, access_time REAL, access_count INTEGER DEFAULT 0,
  tag BLOB, size INTEGER DEFAULT 0, mode INTEGER DEFAULT 0, filename TEXT, value BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS Cache_key_raw ON Cache(key, raw);
CREATE INDEX IF NOT EXISTS Cache_expire_time ON Cache (expire_time) WHERE expire_time IS NOT NULL;
CREATE INDEX IF NOT EXISTS Cache_store_time ON Cache (store_time);
CREATE TRIGGER IF NOT EXISTS Settings_count_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN
  UPDATE Settings SET value = value + 1 WHERE key = 'count'; END;
CREATE TRIGGER IF NOT EXISTS Settings_count_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN
  UPDATE Settings SET value = value - 1 WHERE key = 'count'; END;
CREATE TRIGGER IF NOT EXISTS Settings_size_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN
  UPDATE Settings SET value = value + NEW.size WHERE key = 'size'; END;
CREATE TRIGGER IF NOT EXISTS Settings_size_update AFTER UPDATE ON Cache FOR EACH ROW BEGIN
  UPDATE Settings SET value = value + NEW.size - OLD.size WHERE key = 'size'; END;
CREATE TRIGGER IF NOT EXISTS Settings_size_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN
  UPDATE Settings SET value = value - OLD.size WHERE key = 'size'; END;
)sql";

class SqliteClient final : public Client {
 public:
  SqliteClient(const fs::path& dir, int keys) {
    if (sqlite3_open((dir / "cache.db").c_str(), &db_) != SQLITE_OK) fail("open");
    sqlite3_busy_timeout(db_, 60'000);
    exec("PRAGMA auto_vacuum = 1");  // before the first table, as diskcache
    exec("PRAGMA journal_mode = wal");
    exec("PRAGMA synchronous = 1");
    exec("PRAGMA cache_size = 8192");
    exec("PRAGMA mmap_size = 67108864");
    exec(kSchema);
    get_ = prepare(
        "SELECT rowid, expire_time, tag, mode, filename, value FROM Cache WHERE key = ?1 AND "
        "raw = 1 AND (expire_time IS NULL OR expire_time > ?2)");
    begin_ = prepare("BEGIN IMMEDIATE");
    commit_ = prepare("COMMIT");
    set_ = prepare(
        "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, "
        "size, mode, filename, value) VALUES (?1, 1, ?2, NULL, ?2, 0, NULL, 0, 1, NULL, ?3) "
        "ON CONFLICT(key, raw) DO UPDATE SET store_time = ?2, expire_time = NULL, "
        "access_time = ?2, access_count = 0, tag = NULL, size = 0, mode = 1, filename = NULL, "
        "value = ?3");
    del_ = prepare(
        "DELETE FROM Cache WHERE key = ?1 AND raw = 1 AND (expire_time IS NULL OR "
        "expire_time > ?2)");
    for (int i = 0; i < keys; ++i) keys_.push_back(std::to_string(i));
  }
  ~SqliteClient() override {
    for (auto* s : {get_, begin_, commit_, set_, del_}) sqlite3_finalize(s);
    sqlite3_close(db_);
  }
  SqliteClient(const SqliteClient&) = delete;
  SqliteClient& operator=(const SqliteClient&) = delete;

  bool get(int k) override {
    bind_key(get_, k);
    sqlite3_bind_double(get_, 2, now());
    bool hit = false;
    if (sqlite3_step(get_) == SQLITE_ROW) {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(get_, 5));
      out_.assign(p, static_cast<std::size_t>(sqlite3_column_bytes(get_, 5)));
      hit = true;
    }
    sqlite3_reset(get_);
    return hit;
  }
  bool set(int k, const std::string& v) override {
    step_done(begin_);
    bind_key(set_, k);
    sqlite3_bind_double(set_, 2, now());
    sqlite3_bind_blob64(set_, 3, v.data(), v.size(), SQLITE_STATIC);
    step_done(set_);
    step_done(commit_);
    return true;
  }
  bool erase(int k) override {
    step_done(begin_);
    bind_key(del_, k);
    sqlite3_bind_double(del_, 2, now());
    step_done(del_);
    const bool found = sqlite3_changes(db_) > 0;
    step_done(commit_);
    return found;
  }

 private:
  static double now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  [[noreturn]] void fail(const char* what) {
    throw std::runtime_error(std::string("sqlite floor: ") + what + ": " + sqlite3_errmsg(db_));
  }
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error(std::string("sqlite floor: ") + m);
    }
  }
  sqlite3_stmt* prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
      fail(sql);
    }
    return s;
  }
  void bind_key(sqlite3_stmt* s, int k) {
    const auto& key = keys_[static_cast<std::size_t>(k)];
    sqlite3_bind_blob64(s, 1, key.data(), key.size(), SQLITE_STATIC);
  }
  void step_done(sqlite3_stmt* s) {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) fail(sqlite3_sql(s));
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* get_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* set_ = nullptr;
  sqlite3_stmt* del_ = nullptr;
  std::vector<std::string> keys_;
  std::string out_;
};

// FanoutCache's floor: the same raw statements over 8 shard databases (000/ … 007/), each key
// routed as diskcache routes a bytes key (adler32 of its bytes, modulo the shard count), so
// the floor pays what sharding itself costs (8 files, 8 WALs, a cold page cache per shard) and
// the ratio shows only what FanoutCache adds on top.
class Sqlite8Client final : public Client {
 public:
  Sqlite8Client(const fs::path& dir, int keys) {
    for (int i = 0; i < kShards; ++i) {
      char name[8];
      std::snprintf(name, sizeof name, "%03d", i);
      fs::create_directories(dir / name);
      shards_.push_back(std::make_unique<SqliteClient>(dir / name, keys));
    }
    for (int k = 0; k < keys; ++k) {
      const std::string key = std::to_string(k);
      const uLong h =
          ::adler32(0L, reinterpret_cast<const Bytef*>(key.data()), static_cast<uInt>(key.size()));
      route_.push_back(static_cast<int>((h & 0xFFFFFFFFUL) % kShards));
    }
  }
  bool get(int k) override { return shard(k).get(k); }
  bool set(int k, const std::string& v) override { return shard(k).set(k, v); }
  bool erase(int k) override { return shard(k).erase(k); }

 private:
  static constexpr int kShards = 8;
  SqliteClient& shard(int k) {
    return *shards_[static_cast<std::size_t>(route_[static_cast<std::size_t>(k)])];
  }
  std::vector<std::unique_ptr<SqliteClient>> shards_;
  std::vector<int> route_;
};

std::unique_ptr<Client> make_client(const std::string& backend, const fs::path& dir, int keys) {
  if (backend == "sqlite") return std::make_unique<SqliteClient>(dir, keys);
  if (backend == "sqlite8") return std::make_unique<Sqlite8Client>(dir, keys);
  if (backend == "disk") return std::make_unique<DiskClient>(dir, keys);
  if (backend == "fanout") return std::make_unique<FanoutClient>(dir, keys);
  throw std::runtime_error("unknown backend " + backend);
}

// ---- the run --------------------------------------------------------------------------------

std::int64_t process_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::vector<Sample> run_worker(Client& c, const std::vector<Op>& ops, int warmup) {
  std::vector<Sample> out;
  out.reserve(ops.size());
  std::vector<std::string> values(ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) values[i] = value_of(i, ops[i].repeat);
  using clock = std::chrono::steady_clock;
  const std::int64_t cpu0 = process_cpu_ns();
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    bool ok = false;
    const auto t0 = clock::now();
    switch (op.kind) {
      case kGet:
        ok = c.get(op.key);
        break;
      case kSet:
        ok = c.set(op.key, values[i]);
        break;
      case kDelete:
      case kCpu:  // never generated
        ok = c.erase(op.key);
        break;
    }
    const auto t1 = clock::now();
    if (static_cast<int>(i) >= warmup) {
      out.push_back(Sample{std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(),
                           op.kind, static_cast<std::uint8_t>(ok ? 0 : 1)});
    }
  }
  // The process CPU time of the whole loop (all ops, warm-up included), as a last sample.
  out.push_back(Sample{process_cpu_ns() - cpu0, kCpu, 0});
  return out;
}

struct Stats {
  std::size_t count = 0;
  std::size_t misses = 0;
  double median = 0, p90 = 0, p99 = 0, max = 0;  // µs
  double total = 0;                              // s
};

Stats stats_of(std::vector<std::int64_t> ns, std::size_t misses) {
  Stats s;
  s.count = ns.size();
  s.misses = misses;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  auto pct = [&](double p) {
    auto idx = static_cast<std::ptrdiff_t>(static_cast<double>(ns.size()) * p) - 1;
    idx = std::clamp<std::ptrdiff_t>(idx, 0, static_cast<std::ptrdiff_t>(ns.size()) - 1);
    return static_cast<double>(ns[static_cast<std::size_t>(idx)]) / 1000.0;
  };
  s.median = pct(0.5);
  s.p90 = pct(0.9);
  s.p99 = pct(0.99);
  s.max = static_cast<double>(ns.back()) / 1000.0;
  double tot = 0;
  for (auto v : ns) tot += static_cast<double>(v);
  s.total = tot / 1e9;
  return s;
}

// Per-op statistics plus, in slot 3, the CPU time per op (µs, all ops of all processes).
std::array<Stats, 4> finish(std::array<std::vector<std::int64_t>, 3>& ns,
                            const std::array<std::size_t, 3>& misses, std::int64_t cpu_ns,
                            const Config& c) {
  std::array<Stats, 4> out;
  for (std::size_t k = 0; k < 3; ++k) out[k] = stats_of(std::move(ns[k]), misses[k]);
  const auto total_ops = static_cast<std::size_t>(c.procs) * static_cast<std::size_t>(c.ops);
  out[3].count = total_ops;
  out[3].median = out[3].p90 = out[3].p99 = out[3].max =
      static_cast<double>(cpu_ns) / 1000.0 / static_cast<double>(total_ops);
  out[3].total = static_cast<double>(cpu_ns) / 1e9;
  return out;
}

// Runs one C++ backend: prefill, then `procs` forked workers, samples gathered through files.
std::array<Stats, 4> run_cpp(const Config& c, const std::string& backend,
                             const std::vector<std::vector<Op>>& ops, const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    auto client = make_client(backend, dir, c.keys);
    for (int i = 0; i < c.keys; ++i) client->set(i, std::to_string(i));
  }
  std::array<int, 2> gate{};
  if (::pipe(gate.data()) != 0) throw std::runtime_error("pipe");
  std::vector<pid_t> pids;
  for (int w = 0; w < c.procs; ++w) {
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork");
    if (pid == 0) {
      ::close(gate[1]);
      int code = 0;
      try {
        auto client = make_client(backend, dir, c.keys);
        char ch = 0;
        if (::read(gate[0], &ch, 1) < 0) std::perror("read");
        auto samples = run_worker(*client, ops[static_cast<std::size_t>(w)], c.warmup);
        std::ofstream out(dir / ("samples-" + std::to_string(w) + ".bin"), std::ios::binary);
        out.write(reinterpret_cast<const char*>(samples.data()),
                  static_cast<std::streamsize>(samples.size() * sizeof(Sample)));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s worker %d: %s\n", backend.c_str(), w, e.what());
        code = 1;
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  ::close(gate[0]);
  ::close(gate[1]);
  for (const pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error(backend + ": a worker failed");
    }
  }
  std::array<std::vector<std::int64_t>, 3> ns;
  std::array<std::size_t, 3> misses{};
  std::int64_t cpu = 0;
  for (int w = 0; w < c.procs; ++w) {
    std::ifstream in(dir / ("samples-" + std::to_string(w) + ".bin"), std::ios::binary);
    Sample s{};
    while (in.read(reinterpret_cast<char*>(&s), sizeof s)) {
      if (s.kind == kCpu) {
        cpu += s.ns;
        continue;
      }
      ns[s.kind].push_back(s.ns);
      misses[s.kind] += s.miss;
    }
  }
  return finish(ns, misses, cpu, c);
}

// Runs bench/diskcache_core.py on the same op files; it prints "op count misses ns ns ..." rows.
std::array<Stats, 4> run_python(const Config& c, const std::string& backend, const fs::path& dir,
                                const fs::path& ops_dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path out_file = dir.string() + ".samples";
  const std::string cmd = c.python + " " + c.script + " --backend " +
                          (backend == "py-disk" ? "cache" : "fanout") + " --dir " + dir.string() +
                          " --ops-dir " + ops_dir.string() + " --procs " + std::to_string(c.procs) +
                          " --keys " + std::to_string(c.keys) + " --warmup " +
                          std::to_string(c.warmup) + " --out " + out_file.string();
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("python failed: " + cmd);
  std::array<std::vector<std::int64_t>, 3> ns;
  std::array<std::size_t, 3> misses{};
  std::int64_t cpu = 0;
  std::ifstream in(out_file);
  std::string kind;
  std::int64_t t = 0;
  int miss = 0;
  while (in >> kind >> t >> miss) {
    if (kind == "c") {
      cpu += t;
      continue;
    }
    const std::size_t k = kind == "g" ? 0 : kind == "s" ? 1 : 2;
    ns[k].push_back(t);
    misses[k] += static_cast<std::size_t>(miss);
  }
  fs::remove(out_file);
  return finish(ns, misses, cpu, c);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--procs") {
      c.procs = std::stoi(next());
    } else if (a == "--ops") {
      c.ops = std::stoi(next());
    } else if (a == "--keys") {
      c.keys = std::stoi(next());
    } else if (a == "--warmup") {
      c.warmup = std::stoi(next());
    } else if (a == "--rounds") {
      c.rounds = std::stoi(next());
    } else if (a == "--dir") {
      c.dir = next();
    } else if (a == "--backends") {
      c.backends = split(next(), ',');
    } else if (a == "--python") {
      c.python = next();
    } else if (a == "--script") {
      c.script = next();
    } else if (a == "--tsv") {
      c.tsv = next();
    } else {
      throw std::runtime_error("unknown option " + a +
                               " (see the comment at the top of bench/disk_core.cpp)");
    }
  }
  if (c.procs < 1 || c.ops < 1 || c.keys < 1 || c.keys > 256 || c.warmup < 0 || c.rounds < 1) {
    throw std::runtime_error("bad --procs/--ops/--keys/--warmup/--rounds");
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) try {
  Config c = parse(argc, argv);
  const bool own_dir = c.dir.empty();
  if (own_dir) {
    std::string tmpl = (fs::temp_directory_path() / "dogpile-disk-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp");
    c.dir = tmpl;
  }
  fs::create_directories(c.dir);
  const fs::path ops_dir = c.dir / "ops";
  fs::create_directories(ops_dir);
  std::vector<std::vector<Op>> ops;
  for (int w = 0; w < c.procs; ++w) {
    ops.push_back(make_ops(c, w));
    write_ops(ops_dir / ("ops-" + std::to_string(w) + ".txt"), ops.back());
  }

  // Samples of every round are pooled per backend; rounds interleave the backends so that
  // drifting machine load spreads over all of them.
  std::map<std::string, std::array<Stats, 4>> results;
  std::map<std::string, std::array<std::vector<Stats>, 4>> per_round;
  for (int r = 0; r < c.rounds; ++r) {
    for (const auto& b : c.backends) {
      std::fprintf(stderr, "round %d/%d: %s (%d process%s)...\n", r + 1, c.rounds, b.c_str(),
                   c.procs, c.procs == 1 ? "" : "es");
      const fs::path dir = c.dir / b;
      auto st = b.rfind("py-", 0) == 0 ? run_python(c, b, dir, ops_dir) : run_cpp(c, b, ops, dir);
      for (std::size_t k = 0; k < 4; ++k) per_round[b][k].push_back(st[k]);
      fs::remove_all(dir);
    }
  }
  // With several rounds, report each figure as the median over rounds (max: the max).
  for (const auto& b : c.backends) {
    for (std::size_t k = 0; k < 4; ++k) {
      auto& v = per_round[b][k];
      auto med = [&](double Stats::*f) {
        std::vector<double> xs;
        for (const auto& s : v) xs.push_back(s.*f);
        std::sort(xs.begin(), xs.end());
        return xs[(xs.size() - 1) / 2];
      };
      Stats s = v.front();
      s.median = med(&Stats::median);
      s.p90 = med(&Stats::p90);
      s.p99 = med(&Stats::p99);
      s.total = med(&Stats::total);
      for (const auto& x : v) s.max = std::max(s.max, x.max);
      if (k == kCpu) s.max = med(&Stats::max);
      results[b][k] = s;
    }
  }

  std::printf("# disk_core: procs=%d ops/proc=%d keys=%d warmup=%d rounds=%d\n", c.procs, c.ops,
              c.keys, c.warmup, c.rounds);
  std::printf("%-10s %-7s %8s %6s %11s %11s %11s %11s %9s\n", "backend", "op", "count", "miss",
              "median_us", "p90_us", "p99_us", "max_us", "total_s");
  for (const auto& b : c.backends) {
    for (std::size_t k = 0; k < 3; ++k) {
      const auto& s = results[b][k];
      std::printf("%-10s %-7s %8zu %6zu %11.3f %11.3f %11.3f %11.3f %9.3f\n", b.c_str(),
                  kOpNames[k], s.count, s.misses, s.median, s.p90, s.p99, s.max, s.total);
    }
    std::printf("%-10s %-7s %8zu %6s %11.3f   (CPU µs per op, all ops, warm-up included)\n",
                b.c_str(), "cpu", results[b][3].count, "", results[b][3].median);
  }
  if (results.count("sqlite")) {
    const auto& f = results["sqlite"];
    std::printf("# ratios to the raw SQLite floor (median)\n");
    for (const auto& b : c.backends) {
      if (b == "sqlite") continue;
      const auto& s = results[b];
      std::printf("ratio %-10s get %.2fx  set %.2fx  delete %.2fx  cpu/op %.2fx\n", b.c_str(),
                  s[0].median / f[0].median, s[1].median / f[1].median, s[2].median / f[2].median,
                  s[3].median / f[3].median);
    }
  }
  for (const char* b : {"fanout", "py-fanout"}) {
    if (!results.count("sqlite8") || !results.count(b)) continue;
    const auto& f = results["sqlite8"];
    const auto& s = results[b];
    std::printf(
        "ratio %-10s to the 8-shard floor: get %.2fx  set %.2fx  delete %.2fx  cpu/op %.2fx\n", b,
        s[0].median / f[0].median, s[1].median / f[1].median, s[2].median / f[2].median,
        s[3].median / f[3].median);
  }
  if (!c.tsv.empty()) {
    std::ofstream out(c.tsv, std::ios::app);
    for (const auto& b : c.backends) {
      for (std::size_t k = 0; k < 4; ++k) {
        const auto& s = results[b][k];
        out << c.procs << '\t' << b << '\t' << kOpNames[k] << '\t' << s.count << '\t' << s.misses
            << '\t' << s.median << '\t' << s.p90 << '\t' << s.p99 << '\t' << s.max << '\t'
            << s.total << '\n';
      }
    }
  }
  if (own_dir) fs::remove_all(c.dir);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "disk_core: %s\n", e.what());
  return 1;
}
