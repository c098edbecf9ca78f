// dogpile-disk: inspect and maintain a DiskCache or FanoutCache directory (python-diskcache
// compatible) from the shell. See `dogpile-disk --help` for commands and exit codes.
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"
#include "dogpile_disk_args.hpp"

namespace fs = std::filesystem;

namespace {

using dogpile_disk_cli::Args;
using dogpile_disk_cli::from_repr;
using dogpile_disk_cli::make_key;
using dogpile_disk_cli::parse_args;
using dogpile_disk_cli::typed;
using dogpile_disk_cli::UsageError;

// Exit codes scripts can rely on.
constexpr int kOk = 0;
constexpr int kNotFound = 1;
constexpr int kUsage = 2;
constexpr int kCacheError = 3;
constexpr int kProblems = 4;

constexpr const char* kUsageText =
    R"(usage: dogpile-disk DIR COMMAND [ARGS] [OPTIONS]

Inspect and maintain a disk cache directory: a DiskCache (DIR/cache.db) or a FanoutCache
(DIR/000/cache.db, ...), as written by dogpile-cpp or python-diskcache 5.x.

commands:
  stats              print type, shard count, item count, volume, settings, hits/misses
  check [--fix]      verify the database and value files; --fix repairs what it can
  keys               print every key (Python repr: 42, 1.5, 'text', b'bytes'), one per line;
                     get and erase take a printed text or bytes key back as it is
                     (numbers: --key-type int, float or repr)
  get KEY            print the value (text/numbers with a newline; bytes raw into a pipe or
                     file, as a b'...' repr on a terminal unless --raw)
  erase KEY          remove KEY (exit 1 if it was not there)
  set KEY VALUE      store VALUE under KEY
  evict TAG          remove every item tagged TAG; prints the count
  expire             remove expired items; prints the count
  cull               expire, then evict by policy down to size_limit; prints the count
  clear              remove every item; prints the count

options:
  --key-type T       KEY is text (default), int, float, bytes, or repr: the form `keys`
                     prints ('text', b'\x00bytes', 42, 1.5) (TAG too). Without it, get and
                     erase also try a quoted KEY ('text', b'bytes') as that printed form
  --value-type T     VALUE is text (default), int, float or bytes
  --expire SECONDS   set: time to live
  --tag TAG          set: tag the item
  --fix              check: repair
  --raw              get: write bytes values as they are, also to a terminal
  -h, --help         this text
  --version          print the versions of dogpile-disk and of the SQLite it uses

stats, keys and get only read: they open the cache read-only (nothing is written, not even
settings), refuse a database that is not a cache, and read without waiting for writers.

exit codes: 0 ok, 1 key not found (get), 2 usage error, 3 cache error (not a cache
directory, corrupt database, lock timeout...), 4 check found problems (without --fix).
A progress bar is drawn on stderr for long operations when stderr is a terminal.
)";

// ---- progress bar -------------------------------------------------------------------------

class Progress {
 public:
  Progress(std::string label, std::uint64_t total)
      : label_(std::move(label)), total_(total), enabled_(::isatty(STDERR_FILENO) == 1) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  void update(std::uint64_t done) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    constexpr int kWidth = 40;
    const double frac =
        total_ == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
    const int fill = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<std::size_t>(fill), '#');
    bar.append(static_cast<std::size_t>(kWidth - fill), ' ');
    std::fprintf(stderr, "\r%s [%s] %3d%% %llu/%llu", label_.c_str(), bar.c_str(),
                 static_cast<int>(frac * 100), static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total_));
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_ && drawn_) {
      std::fputs("\n", stderr);
      std::fflush(stderr);
    }
    drawn_ = false;
    enabled_ = false;
  }

 private:
  std::string label_;
  std::uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// ---- the cache ----------------------------------------------------------------------------

struct NotACache {
  std::string message;
};

// A DiskCache or a FanoutCache, detected from the directory layout.
class AnyCache {
 public:
  // `read_only`: for the inspection commands, which must not change anything (no settings
  // rewritten, no schema added to a database that is not a cache, no journal-mode switch) and
  // must not wait for writers (a read-only handle reads its WAL snapshot).
  AnyCache(const fs::path& dir, bool read_only) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw NotACache{"'" + dir.string() + "' is not a directory"};
    if (fs::is_regular_file(dir / "cache.db", ec)) {
      dogpile::DiskCacheOptions o;
      o.read_only = read_only;
      if (read_only) o.timeout = std::chrono::seconds(5);
      disk_.emplace(dir, o);
    } else if (fs::is_regular_file(dir / "000" / "cache.db", ec)) {
      dogpile::FanoutCacheOptions o;
      o.timeout = std::chrono::seconds(5);
      o.read_only = read_only;
      // Counted before the open, which creates missing shards of the recorded count.
      const bool recorded = fs::exists(dir / "dogpile-fanout.json", ec);
      const std::size_t directories = shard_directories(dir);
      fan_.emplace(dir, o);
      if (recorded && directories != fan_->shard_count()) {
        warn_shard_mismatch(dir, fan_->shard_count(), directories);
      }
    } else {
      throw NotACache{"'" + dir.string() +
                      "' is not a disk cache directory (no cache.db, no 000/cache.db)"};
    }
  }

  // The shard directories 000, 001, … that hold a cache.db (as FanoutCache counts them).
  static std::size_t shard_directories(const fs::path& dir) {
    std::size_t n = 0;
    std::error_code ec;
    char name[8];
    for (;; ++n) {
      std::snprintf(name, sizeof name, "%03zu", n);
      if (!fs::is_regular_file(dir / name / "cache.db", ec)) return n;
    }
  }

  // Python's diskcache.FanoutCache does not read dogpile-fanout.json: opened without
  // `shards=` it adds shards up to its default 8 and routes keys by that count, so each side
  // misses the other's keys. Said on every command (stderr), with the fix.
  static void warn_shard_mismatch(const fs::path& dir, std::size_t recorded,
                                  std::size_t directories) {
    std::fprintf(stderr,
                 "dogpile-disk: warning: %s records %zu shards (dogpile-fanout.json) but has %zu "
                 "shard directories: it was opened with another shard count (Python's "
                 "diskcache.FanoutCache defaults to 8 and ignores the recorded count), so keys "
                 "written with that count are routed to shards this tool does not read; open it "
                 "from Python with FanoutCache(directory, shards=%zu)\n",
                 dir.c_str(), recorded, directories, recorded);
  }

  [[nodiscard]] bool fanout() const { return fan_.has_value(); }
  [[nodiscard]] std::size_t shard_count() const { return fan_ ? fan_->shard_count() : 1; }
  // The DiskCache of shard i (the cache itself when not a fanout).
  dogpile::DiskCache& part(std::size_t i) { return fan_ ? fan_->shard(i) : *disk_; }
  dogpile::DiskCache& route(const dogpile::Key& k) { return fan_ ? fan_->shard_for(k) : *disk_; }

 private:
  std::optional<dogpile::DiskCache> disk_;
  std::optional<dogpile::FanoutCache> fan_;
};

std::string policy_name(dogpile::EvictionPolicy p) { return std::string(dogpile::to_string(p)); }

std::string format_double(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

// Runs `op` on every part with a per-part progress bar; returns the summed counts.
std::size_t each_part(AnyCache& c, const char* label,
                      const std::function<std::size_t(dogpile::DiskCache&)>& op) {
  Progress bar(label, c.shard_count());
  std::size_t total = 0;
  for (std::size_t i = 0; i < c.shard_count(); ++i) {
    bar.update(i);
    total += op(c.part(i));
  }
  bar.update(c.shard_count());
  return total;
}

int cmd_stats(AnyCache& c, const Args& a) {
  const dogpile::DiskCacheSettings s = c.part(0).settings();
  std::int64_t count = 0;
  std::uint64_t volume = 0;
  dogpile::CacheStats st;
  for (std::size_t i = 0; i < c.shard_count(); ++i) {
    auto& p = c.part(i);
    count += p.size();
    volume += p.volume();
    // Read the counters without writing (stats() persists the statistics setting).
    auto counter = [&](const char* name) -> std::int64_t {
      const auto v = p.reset(name);
      const auto* n = std::get_if<std::int64_t>(&v);
      return n != nullptr ? *n : 0;
    };
    st.hits += counter("hits");
    st.misses += counter("misses");
  }
  std::printf("directory: %s\n", a.dir.string().c_str());
  std::printf("type: %s\n", c.fanout() ? "FanoutCache" : "DiskCache");
  std::printf("shards: %zu\n", c.shard_count());
  std::printf("count: %lld\n", static_cast<long long>(count));
  std::printf("volume: %llu\n", static_cast<unsigned long long>(volume));
  std::printf("size_limit: %llu%s\n", static_cast<unsigned long long>(s.size_limit),
              c.fanout() ? " (per shard)" : "");
  std::printf("eviction_policy: %s\n", policy_name(s.eviction_policy).c_str());
  std::printf("cull_limit: %lld\n", static_cast<long long>(s.cull_limit));
  std::printf("statistics: %d\n", s.statistics ? 1 : 0);
  std::printf("tag_index: %d\n", s.tag_index ? 1 : 0);
  std::printf("disk_min_file_size: %lld\n", static_cast<long long>(s.disk_min_file_size));
  std::printf("hits: %lld\n", static_cast<long long>(st.hits));
  std::printf("misses: %lld\n", static_cast<long long>(st.misses));
  return kOk;
}

const char* kind_name(dogpile::CheckWarning::Kind k) {
  using K = dogpile::CheckWarning::Kind;
  switch (k) {
    case K::integrity:
      return "integrity";
    case K::missing_file:
      return "missing_file";
    case K::file_size:
      return "file_size";
    case K::unknown_file:
      return "unknown_file";
    case K::empty_dir:
      return "empty_dir";
    case K::bad_filename:
      return "bad_filename";
    case K::count:
      return "count";
    case K::size:
      return "size";
  }
  return "unknown";
}

int cmd_check(AnyCache& c, const Args& a) {
  std::vector<dogpile::CheckWarning> all;
  each_part(c, a.fix ? "check --fix" : "check", [&](dogpile::DiskCache& p) {
    auto w = p.check(a.fix, /*retry=*/true);
    all.insert(all.end(), w.begin(), w.end());
    return w.size();
  });
  for (const auto& w : all) {
    std::printf("%s%s: %s\n", a.fix ? "fixed " : "", kind_name(w.kind), w.message.c_str());
  }
  if (all.empty()) std::printf("ok\n");
  return !all.empty() && !a.fix ? kProblems : kOk;
}

int cmd_keys(AnyCache& c) {
  for (std::size_t i = 0; i < c.shard_count(); ++i) {
    c.part(i).for_each_key([](const dogpile::Key& k) {
      std::fputs(k.repr().c_str(), stdout);
      std::fputc('\n', stdout);
      return true;
    });
  }
  return kOk;
}

// KEY as given, then (without --key-type) a quoted KEY as the repr `keys` prints ('text',
// b'bytes'), so that a key copied from `keys` works as is; a text key of that very spelling comes
// first. Numbers are not guessed: `get 7` is the text key "7" (the int 7 needs --key-type).
std::vector<dogpile::Key> candidate_keys(const Args& a) {
  const std::string& s = a.positional[0];
  std::vector<dogpile::Key> out{make_key(s, a)};
  const bool quoted =
      s.starts_with('\'') || s.starts_with('"') || s.starts_with("b'") || s.starts_with("b\"");
  if (!a.key_type_given && quoted) {
    if (auto v = from_repr(s)) out.emplace_back(std::move(*v));
  }
  return out;
}

int cmd_get(AnyCache& c, const Args& a) {
  const auto candidates = candidate_keys(a);
  const dogpile::Key& key = candidates.front();
  std::optional<dogpile::DiskValue> v;
  for (const auto& k : candidates) {
    if ((v = c.route(k).get<dogpile::DiskValue>(k))) break;
  }
  if (!v) {
    std::fprintf(stderr, "dogpile-disk: key %s not found\n", key.repr().c_str());
    return kNotFound;
  }
  const bool raw = a.raw;
  std::visit(
      [raw](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::int64_t>) {
          std::printf("%lld\n", static_cast<long long>(x));
        } else if constexpr (std::is_same_v<T, double>) {
          std::printf("%s\n", format_double(x).c_str());
        } else if constexpr (std::is_same_v<T, std::string>) {
          std::fwrite(x.data(), 1, x.size(), stdout);
          std::fputc('\n', stdout);
        } else if (!raw && ::isatty(STDOUT_FILENO) == 1) {
          // Raw bytes would garble the terminal: show them as Python does.
          std::printf("%s\n", dogpile::Key(x).repr().c_str());
        } else {
          std::fwrite(x.data.data(), 1, x.data.size(), stdout);
        }
      },
      *v);
  return kOk;
}

int cmd_erase(AnyCache& c, const Args& a) {
  const auto candidates = candidate_keys(a);
  const dogpile::Key& key = candidates.front();
  bool erased = false;
  for (const auto& k : candidates) {
    if ((erased = c.route(k).erase(k))) break;
  }
  if (!erased) {
    std::fprintf(stderr, "dogpile-disk: key %s not found\n", key.repr().c_str());
    return kNotFound;
  }
  return kOk;
}

int cmd_set(AnyCache& c, const Args& a) {
  const dogpile::Key key = make_key(a.positional[0], a);
  const auto value = typed(a.positional[1], a.value_type, "value");
  dogpile::SetOptions o;
  if (a.expire) {
    o.expire = std::chrono::duration<double>(*a.expire);  // Duration rounds to the millisecond
  }
  if (a.tag) o.tag = make_key(*a.tag, a);
  std::visit([&](const auto& v) { c.route(key).set(key, v, o); }, value);
  return kOk;
}

int cmd_clear(AnyCache& c) {
  std::int64_t total = 0;
  for (std::size_t i = 0; i < c.shard_count(); ++i) total += c.part(i).size();
  Progress bar("clear", static_cast<std::uint64_t>(std::max<std::int64_t>(total, 0)));
  std::size_t removed = 0;
  std::uint64_t done = 0;
  for (std::size_t i = 0; i < c.shard_count(); ++i) {
    auto& p = c.part(i);
    // Delete in pages of 100 keys so the bar moves; `clear` then sweeps what is left
    // (expired rows, keys Python pickled).
    std::vector<dogpile::Key> page;
    auto flush = [&] {
      removed += p.erase_many(page, /*retry=*/true);
      done += page.size();
      page.clear();
      bar.update(done);
    };
    for (const auto& k : p.keys()) {
      page.push_back(k);
      if (page.size() == 100) flush();
    }
    if (!page.empty()) flush();
    removed += p.clear(/*retry=*/true);
  }
  bar.finish();
  std::printf("%zu\n", removed);
  return kOk;
}

int run(const Args& a) {
  const bool inspect = a.command == "stats" || a.command == "keys" || a.command == "get";
  AnyCache c(a.dir, inspect);
  if (a.command == "stats") return cmd_stats(c, a);
  if (a.command == "check") return cmd_check(c, a);
  if (a.command == "keys") return cmd_keys(c);
  if (a.command == "get") return cmd_get(c, a);
  if (a.command == "erase") return cmd_erase(c, a);
  if (a.command == "set") return cmd_set(c, a);
  if (a.command == "clear") return cmd_clear(c);
  std::size_t n = 0;
  if (a.command == "evict") {
    const dogpile::Key tag = make_key(a.positional[0], a);
    n = each_part(c, "evict", [&](dogpile::DiskCache& p) { return p.evict(tag, true); });
  } else if (a.command == "expire") {
    n = each_part(c, "expire", [&](dogpile::DiskCache& p) { return p.expire(std::nullopt, true); });
  } else if (a.command == "cull") {
    n = each_part(c, "cull", [&](dogpile::DiskCache& p) { return p.cull(true); });
  }
  std::printf("%zu\n", n);
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "dogpile-disk: %s\n\n%s", e.message.c_str(), kUsageText);
    return kUsage;
  }
  if (args.help) {
    std::fputs(kUsageText, stdout);
    return kOk;
  }
  if (args.version) {
    std::printf("dogpile-disk %s (SQLite %s)\n", DOGPILE_VERSION, sqlite3_libversion());
    return kOk;
  }
  try {
    const int rc = run(args);
    std::fflush(stdout);
    return rc;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "dogpile-disk: %s\n", e.message.c_str());
    return kUsage;
  } catch (const NotACache& e) {
    std::fprintf(stderr, "dogpile-disk: %s\n", e.message.c_str());
    return kCacheError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dogpile-disk: %s\n", e.what());
    return kCacheError;
  }
}
