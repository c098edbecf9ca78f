// dogpile::Deque: python-diskcache's tests/test_deque.py cases that make sense in C++, a
// model-based randomized test against std::deque, and forked processes appending and popping.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <deque>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "disk_test_support.hpp"
#include "dogpile/disk/deque.hpp"

using disk_test::big_bytes;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::Deque;
using dogpile::DiskCache;
using dogpile::DiskValue;
using dogpile::IndexError;

namespace {

std::vector<std::string> chars(const std::string& s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

std::string joined(const Deque<std::string>& d) {
  std::string out;
  for (const std::string& s : d) out += s;
  return out;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const IndexError& e) {
    return std::string("IndexError: ") + e.what();
  } catch (const dogpile::ValueNotFound& e) {
    return std::string("ValueNotFound: ") + e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("deque: init, a second handle on the directory, fromcache", "[disk][deque]") {
  TempDir d;
  Deque<std::string> a(d.path);
  a.extend(chars("abcde"));
  Deque<std::string> b(d.path);  // the same directory: the same items
  CHECK(a == b);
  CHECK(b.to_vector() == chars("abcde"));
  CHECK(b.cache().settings().eviction_policy == dogpile::EvictionPolicy::none);
  auto c = Deque<std::string>::fromcache(DiskCache(d / "other"));
  CHECK(c.empty());
  c.append("x");
  CHECK(c.cache().size() == 1);
  CHECK(c.directory() == d / "other");
  CHECK_THROWS_AS(
      Deque<int>(d / "lru",
                 {.cache = {.eviction_policy = dogpile::EvictionPolicy::least_recently_used}}),
      dogpile::ValidationError);
}

TEST_CASE("deque: get, set and erase by index, negative indexes included", "[disk][deque]") {
  TempDir d;
  Deque<std::string> q(d.path);
  q.extend(chars("abcde"));
  CHECK(q.at(0) == "a");
  CHECK(q.at(1) == "b");
  CHECK(q.at(-1) == "e");
  CHECK(q.at(-2) == "d");
  CHECK(q.at(-5) == "a");
  CHECK(error_of([&] { (void)q.at(5); }) == "IndexError: deque index out of range");
  CHECK(error_of([&] { (void)q.at(-6); }) == "IndexError: deque index out of range");
  q.set(0, "A");
  q.set(-1, "E");
  q.set(2, "C");
  CHECK(joined(q) == "AbCdE");
  CHECK_THROWS_AS(q.set(5, "x"), IndexError);
  q.erase(0);
  q.erase(-1);
  q.erase(1);
  CHECK(joined(q) == "bd");
  CHECK_THROWS_AS(q.erase(2), IndexError);
  q.erase(-2);
  q.erase(0);
  CHECK(q.empty());
  CHECK_THROWS_AS(q.at(0), IndexError);
}

TEST_CASE("deque: maxlen drops from the other end", "[disk][deque]") {
  TempDir d;
  SECTION("append keeps the last three") {
    Deque<std::string> q(d.path, {.maxlen = 3});
    for (const auto& c : chars("abcde")) q.append(c);
    CHECK(joined(q) == "cde");
  }
  SECTION("appendleft keeps the first three pushed, reversed") {
    Deque<std::string> q(d.path, {.maxlen = 3});
    for (const auto& c : chars("abcde")) q.appendleft(c);
    CHECK(joined(q) == "edc");
  }
  SECTION("extend and extendleft trim too") {
    Deque<std::string> q(d.path, {.maxlen = 3});
    q.extend(chars("abcde"));
    CHECK(joined(q) == "cde");
    q.extendleft(chars("xy"));
    CHECK(joined(q) == "yxc");
  }
  SECTION("set_maxlen trims from the front; a new handle has its own maxlen") {
    Deque<std::string> q(d.path);
    q.extend(chars("abcdef"));
    q.set_maxlen(4);
    CHECK(joined(q) == "cdef");
    CHECK(q.maxlen() == 4u);
    Deque<std::string> other(d.path);
    CHECK(!other.maxlen());
    other.append("g");
    CHECK(joined(q) == "cdefg");
    q.set_maxlen(0);
    CHECK(q.empty());
    q.append("z");  // pushed and dropped in one transaction
    CHECK(q.empty());
  }
}

TEST_CASE("deque: ends, and errors with diskcache's messages", "[disk][deque]") {
  TempDir d;
  Deque<std::int64_t> q(d.path);
  CHECK(error_of([&] { q.pop(); }) == "IndexError: pop from an empty deque");
  CHECK(error_of([&] { q.popleft(); }) == "IndexError: pop from an empty deque");
  CHECK(error_of([&] { (void)q.peek(); }) == "IndexError: peek from an empty deque");
  CHECK(error_of([&] { (void)q.peekleft(); }) == "IndexError: peek from an empty deque");
  CHECK(error_of([&] { (void)q.at(0); }) == "IndexError: deque index out of range");
  q.extend(std::vector<int>{0, 1, 2, 3, 4});
  for (std::int64_t v = 0; v < 5; ++v) q.appendleft(-v);
  CHECK(q == std::vector<std::int64_t>{-4, -3, -2, -1, 0, 0, 1, 2, 3, 4});
  CHECK(q.size() == 10);
  CHECK(q.peek() == 4);
  CHECK(q.peekleft() == -4);
  CHECK(q.pop() == 4);
  CHECK(q.popleft() == -4);
  q.reverse();
  CHECK(q == std::vector<std::int64_t>{3, 2, 1, 0, 0, -1, -2, -3});
  // The keys are diskcache's queue keys: appendleft went below 500000000000000.
  auto keys = q.cache().sorted_keys();
  CHECK(keys.front() == dogpile::Key(std::int64_t{499999999999996}));
  CHECK(keys.back() == dogpile::Key(std::int64_t{500000000000003}));
}

TEST_CASE("deque: a peek of a 100 KB value leaves it there", "[disk][deque]") {
  TempDir d;
  Deque<Bytes> q(d.path);
  q.append(Bytes{std::string(100000, 'x')});
  CHECK(q.peek().data.size() == 100000);
  CHECK(q.size() == 1);
  CHECK(q.pop().data.size() == 100000);
  CHECK(disk_test::value_files(d.path) == 0);
}

TEST_CASE("deque: comparisons", "[disk][deque]") {
  TempDir d;
  Deque<std::int64_t> q(d.path);
  CHECK(q == std::vector<std::int64_t>{});
  CHECK(std::ranges::lexicographical_compare(q, std::vector<std::int64_t>{1}));  // deque < [1]
  q.append(1);
  CHECK(q == std::vector<std::int64_t>{1});
  CHECK(!(q == std::vector<std::int64_t>{}));  // not deque == {}
  CHECK(!(q == std::vector<std::int64_t>{1, 2}));
  CHECK(!(q == std::vector<std::int64_t>{2}));
  TempDir d2;
  Deque<double> other(d2.path);
  other.append(1.0);
  CHECK(q == other);  // 1 == 1.0, as in Python
  other.append(2.5);
  CHECK(!(q == other));
  Deque<std::int64_t> same(d.path);
  CHECK(q == same);
}

TEST_CASE("deque: count, extend, extendleft, remove, reverse, rotate", "[disk][deque]") {
  TempDir d;
  Deque<std::string> q(d.path);
  SECTION("count") {
    for (int n = 1; n < 5; ++n) {
      for (int i = 0; i < n; ++i) q.append(std::to_string(n));
    }
    CHECK(q.count("0") == 0);
    CHECK(q.count("1") == 1);
    CHECK(q.count("4") == 4);
  }
  SECTION("extendleft reverses") {
    q.extendleft(chars("abc"));
    CHECK(joined(q) == "cba");
  }
  SECTION("remove takes out the first occurrence") {
    q.extend(chars("abaca"));
    q.remove("a");
    CHECK(joined(q) == "baca");
    q.remove("a");
    CHECK(joined(q) == "bca");
    q.remove("a");
    CHECK(joined(q) == "bc");
    CHECK(error_of([&] { q.remove("a"); }) ==
          "ValueNotFound: deque.remove(value): value not in deque");
  }
  SECTION("reverse, including odd and tiny lengths") {
    q.reverse();
    CHECK(q.empty());
    q.append("a");
    q.reverse();
    CHECK(joined(q) == "a");
    q.extend(chars("bcd"));
    q.reverse();
    CHECK(joined(q) == "dcba");
    q.append("e");
    q.reverse();
    CHECK(joined(q) == "eabcd");
  }
  SECTION("rotate") {
    q.extend(chars("abcde"));
    q.rotate(3);
    CHECK(joined(q) == "cdeab");
    q.rotate(-3);
    CHECK(joined(q) == "abcde");
    q.rotate(-2);
    CHECK(joined(q) == "cdeab");
    q.rotate(35);
    CHECK(joined(q) == "cdeab");
    q.rotate(INT64_MIN);  // -2^63 % 5 == -3: three steps left
    CHECK(joined(q) == "abcde");
    q.rotate();
    CHECK(joined(q) == "eabcd");
  }
}

TEST_CASE("deque: iteration both ways skips items removed meanwhile", "[disk][deque]") {
  TempDir d;
  Deque<std::string> q(d.path);
  q.extend(chars("abcdef"));
  std::string seen;
  for (const std::string& s : q) {
    seen += s;
    if (s == "b") {
      Deque<std::string> other(d.path);  // another handle (could be another process)
      other.erase(2);                    // "c" vanishes before the iterator reaches it
    }
  }
  CHECK(seen == "abdef");
  std::string back;
  for (auto it = q.rbegin(); it != q.rend(); ++it) {
    back += *it;
    if (*it == "e") q.popleft();  // "a" vanishes
  }
  CHECK(back == "fedb");
  std::string rev;
  for (const std::string& s : q.reversed()) rev += s;
  CHECK(rev == "fedb");
  // Positions count what is left (b d e f).
  CHECK(q.at(1) == "d");
}

TEST_CASE("deque: a key that vanishes between listing and reading is skipped by indexing",
          "[disk][deque]") {
  // An expired row is listed (and counted) but reads as missing: the state diskcache's tests
  // create by deleting a key mid-iteration. The injectable clock makes it deterministic.
  TempDir d;
  dogpile::ManualClock clock;
  auto q = Deque<std::string>::fromcache(DiskCache(d.path, {.clock = clock}));
  q.append("a");
  q.cache().push(std::string("gone"), {.expire = std::chrono::seconds(1)});
  q.append("c");
  clock.advance(std::chrono::seconds(2));
  CHECK(q.size() == 3);    // the expired row still counts
  CHECK(q.at(1) == "c");   // position 1 vanished: the next item takes its place
  CHECK(q.at(-2) == "a");  // from the back: "gone" is skipped towards the front
  CHECK(q.at(2) == "c");   // positions count the listed keys, the vanished one included
  q.set(1, "C");           // sets the next live item instead of re-creating "gone"
  CHECK(q.to_vector() == std::vector<std::string>{"a", "C"});
  std::vector<std::string> back;
  for (const auto& s : q.reversed()) back.push_back(s);
  CHECK(back == std::vector<std::string>{"C", "a"});
}

TEST_CASE("deque: a value that is not a T throws and stays", "[disk][deque]") {
  TempDir d;
  Deque<DiskValue> mixed(d.path);
  mixed.append(DiskValue{std::int64_t{1}});
  mixed.append(DiskValue{std::string("two")});
  Deque<std::int64_t> ints(d.path);
  CHECK_THROWS_AS(ints.pop(), dogpile::TypeMismatch);
  CHECK(ints.size() == 2);
  CHECK(ints.popleft() == 1);
  CHECK(std::get<std::string>(mixed.pop()) == "two");
}

TEST_CASE("deque: transact makes a rotate-by-hand atomic", "[disk][deque]") {
  TempDir d;
  Deque<std::int64_t> q(d.path);
  q.extend(std::vector<std::int64_t>{0, 1, 2, 3, 4});
  {
    auto tx = q.transact();
    auto v = q.pop();
    q.appendleft(v);
  }
  CHECK(q == std::vector<std::int64_t>{4, 0, 1, 2, 3});
  {
    auto tx = q.transact();
    q.clear();
    q.append(9);
    tx.rollback();
  }
  CHECK(q == std::vector<std::int64_t>{4, 0, 1, 2, 3});
}

TEST_CASE("deque: model-based, random operations against std::deque", "[disk][deque][model]") {
  const auto seed = Catch::rngSeed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  TempDir d;
  const bool bounded = GENERATE(false, true);
  const std::optional<std::size_t> maxlen = bounded ? std::optional<std::size_t>(12) : std::nullopt;
  Deque<std::int64_t> q(d.path, {.maxlen = maxlen});
  std::deque<std::int64_t> model;
  auto trim = [&](bool from_front) {
    while (maxlen && model.size() > *maxlen) {
      if (from_front) {
        model.pop_front();
      } else {
        model.pop_back();
      }
    }
  };
  auto index_of = [&](std::int64_t i) {  // model position of a Python index, or -1
    const auto n = static_cast<std::int64_t>(model.size());
    if (i >= n || i < -n) return std::int64_t{-1};
    return i < 0 ? n + i : i;
  };
  for (int step = 0; step < 3000; ++step) {
    const auto op = pick(0, 15);
    const std::int64_t v = pick(0, 9);
    const auto n = static_cast<std::int64_t>(model.size());
    INFO("step " << step << " op " << op << " v " << v);
    switch (op) {
      case 0:
      case 1:
        q.append(v);
        model.push_back(v);
        trim(true);
        break;
      case 2:
      case 3:
        q.appendleft(v);
        model.push_front(v);
        trim(false);
        break;
      case 4:
        if (model.empty()) {
          CHECK_THROWS_AS(q.pop(), IndexError);
        } else {
          CHECK(q.pop() == model.back());
          model.pop_back();
        }
        break;
      case 5:
        if (model.empty()) {
          CHECK_THROWS_AS(q.popleft(), IndexError);
        } else {
          CHECK(q.popleft() == model.front());
          model.pop_front();
        }
        break;
      case 6:
        if (model.empty()) {
          CHECK_THROWS_AS(q.peek(), IndexError);
          CHECK_THROWS_AS(q.peekleft(), IndexError);
        } else {
          CHECK(q.peek() == model.back());
          CHECK(q.peekleft() == model.front());
        }
        break;
      case 7:
      case 8: {
        const auto i = pick(-n - 1, n);
        const auto pos = index_of(i);
        if (pos < 0) {
          CHECK_THROWS_AS(q.at(i), IndexError);
        } else {
          CHECK(q.at(i) == model[static_cast<std::size_t>(pos)]);
        }
        break;
      }
      case 9: {
        const auto i = pick(-n - 1, n);
        const auto pos = index_of(i);
        if (pos < 0) {
          CHECK_THROWS_AS(q.set(i, v), IndexError);
        } else {
          q.set(i, v);
          model[static_cast<std::size_t>(pos)] = v;
        }
        break;
      }
      case 10: {
        const auto i = pick(-n - 1, n);
        const auto pos = index_of(i);
        if (pos < 0) {
          CHECK_THROWS_AS(q.erase(i), IndexError);
        } else {
          q.erase(i);
          model.erase(model.begin() + pos);
        }
        break;
      }
      case 11: {
        auto it = std::find(model.begin(), model.end(), v);
        if (it == model.end()) {
          CHECK_THROWS_AS(q.remove(v), dogpile::ValueNotFound);
        } else {
          q.remove(v);
          model.erase(it);
        }
        CHECK(q.count(v) == static_cast<std::size_t>(std::count(model.begin(), model.end(), v)));
        break;
      }
      case 12: {
        const auto k = pick(-15, 15);
        q.rotate(k);
        if (!model.empty()) {
          const auto m = static_cast<std::int64_t>(model.size());
          const auto r = ((k % m) + m) % m;
          std::rotate(model.begin(), model.end() - r, model.end());
        }
        break;
      }
      case 13:
        q.reverse();
        std::reverse(model.begin(), model.end());
        break;
      case 14: {
        std::vector<std::int64_t> more(static_cast<std::size_t>(pick(0, 4)), v);
        for (std::size_t j = 0; j < more.size(); ++j) more[j] += static_cast<std::int64_t>(j);
        if (pick(0, 1) == 0) {
          q.extend(more);
          for (auto x : more) {
            model.push_back(x);
            trim(true);
          }
        } else {
          q.extendleft(more);
          for (auto x : more) {
            model.push_front(x);
            trim(false);
          }
        }
        break;
      }
      default:
        if (pick(0, 20) == 0) {
          q.clear();
          model.clear();
        }
        break;
    }
    REQUIRE(q.size() == model.size());
    REQUIRE(q.to_vector() == std::vector<std::int64_t>(model.begin(), model.end()));
  }
  std::vector<std::int64_t> backwards;
  for (auto v : q.reversed()) backwards.push_back(v);
  CHECK(backwards == std::vector<std::int64_t>(model.rbegin(), model.rend()));
  CHECK(q.cache().check().empty());
}

using disk_test::run_children;

TEST_CASE("deque: processes append and pop; every item exactly once", "[disk][deque][process]") {
  constexpr int kProcs = 4;
  constexpr int kItems = 150;
  TempDir d;
  Deque<std::string> q(d / "q");
  q.append("seed");  // the parent's connection is open before fork
  q.popleft();
  SECTION("appends from 4 processes: exactly 4N items, each child's in its order") {
    auto codes = run_children(kProcs, [&](int child) {
      for (int i = 0; i < kItems; ++i) {
        if (i % 2 == 0) {
          q.append(std::to_string(child) + ":" + std::to_string(i));
        } else {
          q.extend(std::vector<std::string>{std::to_string(child) + ":" + std::to_string(i)});
        }
      }
      return 0;
    });
    CHECK(codes == std::vector<int>(kProcs, 0));
    auto items = q.to_vector();
    CHECK(items.size() == static_cast<std::size_t>(kProcs * kItems));
    CHECK(std::set<std::string>(items.begin(), items.end()).size() == items.size());
    std::vector<int> last(kProcs, -1);
    for (const auto& s : items) {
      const int child = std::stoi(s.substr(0, s.find(':')));
      const int i = std::stoi(s.substr(s.find(':') + 1));
      CHECK(i == last[static_cast<std::size_t>(child)] + 1);
      last[static_cast<std::size_t>(child)] = i;
    }
    CHECK(q.cache().check().empty());
  }
  SECTION("pops from 4 processes (both ends) deliver every item exactly once") {
    std::vector<std::string> all;
    all.reserve(kProcs * kItems);
    for (int i = 0; i < kProcs * kItems; ++i) all.push_back("item" + std::to_string(i));
    q.extend(all);
    auto codes = run_children(kProcs, [&](int child) {
      std::ofstream out(d / ("got" + std::to_string(child)));
      for (;;) {
        try {
          out << (child % 2 == 0 ? q.popleft() : q.pop()) << "\n";
        } catch (const IndexError&) {
          return 0;
        }
      }
    });
    CHECK(codes == std::vector<int>(kProcs, 0));
    std::vector<std::string> got;
    for (int child = 0; child < kProcs; ++child) {
      std::ifstream in(d / ("got" + std::to_string(child)));
      for (std::string line; std::getline(in, line);) got.push_back(line);
    }
    std::sort(got.begin(), got.end());
    std::sort(all.begin(), all.end());
    CHECK(got == all);
    CHECK(q.empty());
  }
}

namespace {
// interop_persistent.py's DEQUE_ITEMS.
std::vector<DiskValue> deque_items() {
  return {DiskValue{std::int64_t{-1}},     DiskValue{std::string("zero")},
          DiskValue{std::int64_t{1}},      DiskValue{2.5},
          DiskValue{std::string("three")}, DiskValue{Bytes{"four"}},
          DiskValue{big_bytes()}};
}
}  // namespace

TEST_CASE("interop: a Deque python-diskcache wrote, read and extended by C++",
          "[disk][deque][interop]") {
  TempDir d;
  auto w = disk_test::run_python("interop_persistent.py", "write-deque", d.path);
  INFO(w.output);
  REQUIRE(w.status == 0);
  Deque<DiskValue> q(d.path);
  CHECK(q == deque_items());
  CHECK(q.at(-1) == DiskValue{big_bytes()});
  q.appendleft(DiskValue{std::string("c++ front")});
  q.pop();  // the big item; its value file goes with it
  CHECK(disk_test::value_files(d.path) == 0);
  auto r = disk_test::run_python("interop_persistent.py", "append-deque", d.path);
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output == "['c++ front', -1, 'zero', 1, 2.5, 'three', b'four', 'py']\n");
  CHECK(q.peek() == DiskValue{std::string("py")});
}

TEST_CASE("interop: python-diskcache reads a Deque C++ wrote, in order", "[disk][deque][interop]") {
  TempDir d;
  {
    Deque<DiskValue> q(d.path);
    auto items = deque_items();
    q.extend(std::vector<DiskValue>(items.begin() + 2, items.end()));
    q.appendleft(items[1]);
    q.appendleft(items[0]);
  }
  auto r = disk_test::run_python("interop_persistent.py", "read-deque", d.path);
  INFO(r.output);
  CHECK(r.status == 0);
}

namespace {
struct Job {
  std::string name;
  int priority = 0;
  friend bool operator==(const Job&, const Job&) = default;
};
void to_json(nlohmann::json& j, const Job& v) { j = {{"name", v.name}, {"priority", v.priority}}; }
void from_json(const nlohmann::json& j, Job& v) {
  j.at("name").get_to(v.name);
  j.at("priority").get_to(v.priority);
}
}  // namespace

TEST_CASE("deque: a Codec type (JSON) works as the item type", "[disk][deque]") {
  TempDir d;
  Deque<Job> q(d.path);
  q.append({"a", 1});
  q.appendleft({"b", 2});
  CHECK(q == std::vector<Job>{{"b", 2}, {"a", 1}});
  CHECK(q.count({"a", 1}) == 1);
  // Python sees JSON bytes.
  CHECK(Deque<Bytes>(d.path).peek() == Bytes{R"({"name":"a","priority":1})"});
  CHECK(q.pop() == Job{"a", 1});
}

TEST_CASE("interop: python and C++ append to one Deque at the same time; nothing is lost",
          "[disk][deque][interop][process]") {
  TempDir d;
  Deque<std::string> q(d.path);
  q.append("seed");
  const std::string script = DOGPILE_DISK_TEST_DIR "/interop_persistent.py";
  const std::string dir = d.path.string();
  const pid_t py = ::fork();
  REQUIRE(py >= 0);
  if (py == 0) {
    ::execl("/usr/bin/python3", "python3", script.c_str(), "append-many", dir.c_str(), nullptr);
    ::_exit(127);
  }
  // Append until Python has finished its 300, so the two writers overlap.
  int cpp = 0;
  int st = 0;
  while (::waitpid(py, &st, WNOHANG) == 0 && cpp < 20000) {
    q.append("cpp-" + std::to_string(cpp++));
  }
  if (cpp == 20000) ::waitpid(py, &st, 0);
  REQUIRE((WIFEXITED(st) && WEXITSTATUS(st) == 0));
  auto items = q.to_vector();
  REQUIRE(items.size() == static_cast<std::size_t>(1 + 300 + cpp));
  CHECK(items.front() == "seed");
  int next_py = 0;
  int next_cpp = 0;
  int cpp_between = 0;  // C++ items between Python's first and last: proof of overlap
  for (std::size_t i = 1; i < items.size(); ++i) {
    if (items[i].rfind("py-", 0) == 0) {
      CHECK(items[i] == "py-" + std::to_string(next_py++));
    } else {
      CHECK(items[i] == "cpp-" + std::to_string(next_cpp++));
      if (next_py > 0 && next_py < 300) ++cpp_between;
    }
  }
  CHECK(next_py == 300);
  CHECK(next_cpp == cpp);
  CHECK(cpp_between > 0);
  CHECK(q.cache().check().empty());
}
