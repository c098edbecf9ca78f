// dogpile::Index: python-diskcache's tests/test_index.py cases that make sense in C++, and a
// model-based randomized test against an insertion-ordered map.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "disk_test_support.hpp"
#include "dogpile/disk/deque.hpp"
#include "dogpile/disk/index.hpp"

using disk_test::big_bytes;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::DiskCache;
using dogpile::DiskValue;
using dogpile::Index;
using dogpile::Key;
using dogpile::KeyNotFound;

namespace {
std::vector<Key> keys_of(const std::vector<std::string>& ks) { return {ks.begin(), ks.end()}; }
}  // namespace

TEST_CASE("index: init forms and a second handle", "[disk][index]") {
  TempDir d;
  Index<std::int64_t> a(d.path);
  a.update(std::map<std::string, int>{{"a", 1}, {"b", 2}});                // a mapping
  a.update(std::vector<std::pair<std::string, int>>{{"c", 3}, {"d", 4}});  // pairs, in order
  Index<std::int64_t> b(d.path);
  CHECK(b.size() == 4);
  CHECK(a == b);
  CHECK(b.keys() == keys_of({"a", "b", "c", "d"}));
  CHECK(b.cache().settings().eviction_policy == dogpile::EvictionPolicy::none);
  auto c = Index<std::int64_t>::fromcache(DiskCache(d / "other"));
  c.set(1, 2);
  CHECK(c.directory() == d / "other");
  CHECK(c.at(1) == 2);
}

TEST_CASE("index: get, set, erase, pop, KeyNotFound", "[disk][index]") {
  TempDir d;
  Index<std::string> idx(d.path);
  idx.set("a", "1");
  idx.set(2, "two");
  idx.set(2.5, "float");
  idx.set(Bytes{"b"}, "bytes");
  CHECK(idx.at("a") == "1");
  CHECK(idx.at(2) == "two");
  CHECK(idx.at(2.5) == "float");
  CHECK(idx.at(Bytes{"b"}) == "bytes");
  CHECK(idx.get("zz") == std::nullopt);
  CHECK(idx.contains("a"));
  CHECK(!idx.contains("zz"));
  try {
    (void)idx.at("zz");
    FAIL("at() of a missing key must throw");
  } catch (const KeyNotFound& e) {
    CHECK(std::string(e.what()).find("'zz'") != std::string::npos);
  }
  CHECK(idx.erase("a"));
  CHECK(!idx.erase("a"));
  CHECK(idx.pop(2) == "two");
  CHECK_THROWS_WITH(idx.pop(2),
                    "Index::pop: key 2 is not in the index (pop(key, default) "
                    "returns the default instead)");
  CHECK(idx.pop(2, "default") == "default");
  CHECK(idx.size() == 2);
  idx.clear();
  CHECK(idx.empty());
}

TEST_CASE("index: popitem is LIFO, popitem(false) FIFO; peekitem", "[disk][index]") {
  TempDir d;
  Index<std::int64_t> idx(d.path);
  idx.update(std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(idx.peekitem() == std::pair<Key, std::int64_t>("c", 3));
  CHECK(idx.peekitem(false) == std::pair<Key, std::int64_t>("a", 1));
  CHECK(idx.popitem() == std::pair<Key, std::int64_t>("c", 3));
  CHECK(idx.popitem(false) == std::pair<Key, std::int64_t>("a", 1));
  CHECK(idx.popitem() == std::pair<Key, std::int64_t>("b", 2));
  try {
    idx.popitem();
    FAIL("popitem of an empty index must throw");
  } catch (const KeyNotFound& e) {
    CHECK(std::string(e.what()) == "dictionary is empty");
  }
  CHECK_THROWS_AS(idx.peekitem(), KeyNotFound);
}

TEST_CASE("index: setdefault", "[disk][index]") {
  TempDir d;
  Index<std::int64_t> idx(d.path);
  CHECK(idx.setdefault("a", 0) == 0);
  CHECK(idx.setdefault("a", 1) == 0);
  CHECK(idx.at("a") == 0);
}

TEST_CASE("index: insertion order, overwrite keeps the position, reversed", "[disk][index]") {
  TempDir d;
  Index<std::int64_t> idx(d.path);
  for (const char* k : {"x", "y", "z", "w"}) idx.set(k, 0);
  idx.set("y", 5);  // keeps its place
  idx.erase("z");
  idx.set("z", 7);  // goes last
  std::vector<std::pair<Key, std::int64_t>> want{{"x", 0}, {"y", 5}, {"w", 0}, {"z", 7}};
  CHECK(idx.items() == want);
  CHECK(idx.keys() == keys_of({"x", "y", "w", "z"}));
  CHECK(idx.keys(true) == keys_of({"z", "w", "y", "x"}));
  CHECK(idx.values() == std::vector<std::int64_t>{0, 5, 0, 7});
  std::vector<std::pair<Key, std::int64_t>> back;
  for (const auto& item : idx.reversed()) back.push_back(item);
  CHECK(back == std::vector<std::pair<Key, std::int64_t>>(want.rbegin(), want.rend()));
  // Keys removed while iterating are skipped.
  std::vector<Key> seen;
  for (const auto& [k, v] : idx) {
    seen.push_back(k);
    if (k == Key("x")) Index<std::int64_t>(d.path).erase("w");
  }
  CHECK(seen == keys_of({"x", "y", "z"}));
}

TEST_CASE("index: equality with an Index, a map (any order), pairs (in order)", "[disk][index]") {
  TempDir d;
  TempDir d2;
  Index<std::int64_t> idx(d.path);
  idx.update(std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(idx == std::unordered_map<std::string, int>{{"c", 3}, {"b", 2}, {"a", 1}});
  CHECK(idx == std::map<std::string, std::int64_t>{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(!(idx == std::map<std::string, int>{{"a", 1}, {"b", 2}}));
  CHECK(!(idx == std::map<std::string, int>{{"a", 1}, {"b", 2}, {"c", 4}}));
  CHECK(idx == std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(!(idx == std::vector<std::pair<std::string, int>>{{"c", 3}, {"b", 2}, {"a", 1}}));
  Index<std::int64_t> other(d2.path);
  other.update(std::vector<std::pair<std::string, int>>{{"c", 3}, {"b", 2}, {"a", 1}});
  CHECK(!(idx == other));  // order-sensitive, as Python's Index == Index
  other.clear();
  other.update(std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(idx == other);
}

TEST_CASE("index: push/pull queues, memoize, transact", "[disk][index]") {
  TempDir d;
  Index<std::string> idx(d.path);
  CHECK(idx.push("apples") == Key(std::int64_t{500000000000000}));
  CHECK(idx.push("beans") == Key(std::int64_t{500000000000001}));
  CHECK(idx.push("cherries", {.side = dogpile::Side::front}) == Key(std::int64_t{499999999999999}));
  CHECK(idx.at(std::int64_t{500000000000001}) == "beans");
  CHECK(idx.push("dates", {.prefix = "fruit"}) == Key("fruit-500000000000000"));
  auto first = idx.pull();
  REQUIRE(first);
  CHECK(first->second == "cherries");
  CHECK(idx.pull({.side = dogpile::Side::back})->second == "beans");
  CHECK(!idx.pull({.prefix = "veg"}));
  CHECK(idx.pull({.prefix = "fruit"})->second == "dates");

  int calls = 0;
  auto fib = idx.memoize("fib", [&](int n) {
    ++calls;
    return n * 2;
  });
  CHECK(fib(21) == 42);
  CHECK(fib(21) == 42);
  CHECK(calls == 1);
  Index<std::int64_t> memo = Index<std::int64_t>::fromcache(idx.cache());
  CHECK(memo.at(fib.cache_key(21)) == 42);

  Index<double> acc(d / "acc");
  {
    auto tx = acc.transact();
    acc.set("total", acc.get("total").value_or(0) + 123.4);
    acc.set("count", acc.get("count").value_or(0) + 1);
  }
  CHECK(acc.at("total") / acc.at("count") == 123.4);
}

TEST_CASE("index: a value that is not a T throws and stays", "[disk][index]") {
  TempDir d;
  Index<DiskValue> mixed(d.path);
  mixed.set("n", DiskValue{std::int64_t{1}});
  mixed.set("s", DiskValue{std::string("text")});
  Index<std::int64_t> ints(d.path);
  CHECK_THROWS_AS(ints.pop("s"), dogpile::TypeMismatch);
  CHECK_THROWS_AS(ints.popitem(), dogpile::TypeMismatch);
  CHECK(mixed.size() == 2);
  CHECK(ints.pop("n") == 1);
  CHECK(std::get<std::string>(mixed.pop("s")) == "text");
}

TEST_CASE("index: model-based, random operations against an ordered map", "[disk][index][model]") {
  const auto seed = Catch::rngSeed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed + 1);
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  auto key_of = [&](std::int64_t k) -> Key {
    switch (k % 4) {  // all four key kinds
      case 0:
        return k;
      case 1:
        return "k" + std::to_string(k);
      case 2:
        return static_cast<double>(k) + 0.5;
      default:
        return Bytes{"b" + std::to_string(k)};
    }
  };
  TempDir d;
  Index<std::int64_t> idx(d.path);
  std::vector<std::pair<Key, std::int64_t>> model;  // insertion order
  auto find = [&](const Key& k) {
    return std::find_if(model.begin(), model.end(), [&](const auto& p) { return p.first == k; });
  };
  for (int step = 0; step < 3000; ++step) {
    const auto op = pick(0, 9);
    const Key k = key_of(pick(0, 23));
    const std::int64_t v = pick(-100, 100);
    INFO("step " << step << " op " << op << " key " << k.repr());
    auto it = find(k);
    switch (op) {
      case 0:
      case 1:
      case 2:
        idx.set(k, v);
        if (it == model.end()) {
          model.emplace_back(k, v);
        } else {
          it->second = v;
        }
        break;
      case 3:
        CHECK(idx.erase(k) == (it != model.end()));
        if (it != model.end()) model.erase(it);
        break;
      case 4:
        if (it == model.end()) {
          CHECK_THROWS_AS(idx.pop(k), KeyNotFound);
        } else {
          CHECK(idx.pop(k) == it->second);
          model.erase(it);
        }
        break;
      case 5: {
        const bool last = pick(0, 1) == 1;
        if (model.empty()) {
          CHECK_THROWS_AS(idx.popitem(last), KeyNotFound);
        } else {
          auto got = idx.popitem(last);
          CHECK(got == (last ? model.back() : model.front()));
          model.erase(last ? model.end() - 1 : model.begin());
        }
        break;
      }
      case 6: {
        const auto got = idx.setdefault(k, v);
        if (it == model.end()) {
          CHECK(got == v);
          model.emplace_back(k, v);
        } else {
          CHECK(got == it->second);
        }
        break;
      }
      case 7:
        CHECK(idx.contains(k) == (it != model.end()));
        if (it == model.end()) {
          CHECK_THROWS_AS(idx.at(k), KeyNotFound);
        } else {
          CHECK(idx.at(k) == it->second);
        }
        break;
      case 8:
        if (model.empty()) {
          CHECK_THROWS_AS(idx.peekitem(), KeyNotFound);
        } else {
          CHECK(idx.peekitem() == model.back());
          CHECK(idx.peekitem(false) == model.front());
        }
        break;
      default:
        if (pick(0, 30) == 0) {
          idx.clear();
          model.clear();
        }
        break;
    }
    REQUIRE(idx.size() == model.size());
    REQUIRE(idx.items() == model);
  }
  CHECK(idx.keys(true).size() == model.size());
  CHECK(idx == model);
  CHECK(idx.cache().check().empty());
}

TEST_CASE("index: setdefault from 4 processes agrees on one value per key",
          "[disk][index][process]") {
  TempDir d;
  Index<std::int64_t> idx(d.path);
  idx.set("warm", 0);  // the parent's connection is open before fork
  std::vector<pid_t> pids;
  for (int child = 0; child < 4; ++child) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 0;
      try {
        for (int k = 0; k < 50; ++k) {
          // Every caller must get the stored value, whoever stored it.
          if (idx.setdefault(k, child) != idx.at(k)) code = 1;
          idx.set("c" + std::to_string(child) + "-" + std::to_string(k), k);
        }
      } catch (...) {  // NOLINT(bugprone-empty-catch): reported through the exit code
        code = 99;
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0));
  }
  CHECK(idx.size() == 1 + 50 + 4 * 50);
  for (int k = 0; k < 50; ++k) {
    const auto v = idx.at(k);
    CHECK((v >= 0 && v < 4));
  }
  CHECK(idx.cache().check().empty());
}

namespace {
// interop_persistent.py's INDEX_ITEMS.
std::vector<std::pair<Key, DiskValue>> index_items() {
  return {{Key("a"), DiskValue{std::int64_t{10}}}, {Key(2), DiskValue{std::string("two")}},
          {Key(3.5), DiskValue{Bytes{"bytes"}}},   {Key(Bytes{"k"}), DiskValue{4.25}},
          {Key("big"), DiskValue{big_bytes()}},    {Key("gone"), DiskValue{std::string("back")}}};
}
}  // namespace

TEST_CASE("interop: C++ reads an Index python-diskcache wrote, in order",
          "[disk][index][interop]") {
  TempDir d;
  auto w = disk_test::run_python("interop_persistent.py", "write-index", d.path);
  INFO(w.output);
  REQUIRE(w.status == 0);
  Index<DiskValue> idx(d.path);
  CHECK(idx.items() == index_items());
  CHECK(idx == index_items());
  CHECK(idx.peekitem() == index_items().back());
  CHECK(idx.at(2) == DiskValue{std::string("two")});
  CHECK(Index<std::string>(d.path).at(2) == "two");
}

TEST_CASE("interop: python-diskcache reads an Index C++ wrote, in order",
          "[disk][index][interop]") {
  TempDir d;
  {
    Index<DiskValue> idx(d.path);
    idx.set("a", DiskValue{std::int64_t{1}});
    idx.set(2, DiskValue{std::string("two")});
    idx.set("gone", DiskValue{std::string("first")});
    idx.set(3.5, DiskValue{Bytes{"bytes"}});
    idx.set(Bytes{"k"}, DiskValue{4.25});
    idx.set("big", DiskValue{big_bytes()});
    idx.set("a", DiskValue{std::int64_t{10}});  // overwritten: keeps its position
    CHECK(idx.erase("gone"));
    idx.set("gone", DiskValue{std::string("back")});  // re-added: goes last
    CHECK(idx == index_items());
  }
  auto r = disk_test::run_python("interop_persistent.py", "read-index", d.path);
  INFO(r.output);
  CHECK(r.status == 0);
}

TEST_CASE("index: the docs/disk.md example", "[disk][index][deque]") {
  TempDir d;
  dogpile::Deque<std::string> jobs(d / "jobs", {.maxlen = 1000});
  jobs.append("resize a.png");
  jobs.appendleft("urgent");
  std::string next = jobs.popleft();
  CHECK(next == "urgent");
  std::vector<std::string> seen;
  for (const std::string& job : jobs) seen.push_back(job);
  CHECK(seen == std::vector<std::string>{"resize a.png"});

  dogpile::Index<std::int64_t> scores(d / "scores");
  scores.set("alice", 10);
  scores.set("bob", 7);
  scores.set("alice", 12);
  std::int64_t a = scores.at("alice");
  std::optional<std::int64_t> c = scores.get("carol");
  CHECK(a == 12);
  CHECK(!c);
  auto [key, value] = scores.popitem();
  CHECK(key == Key("bob"));
  CHECK(value == 7);
}
