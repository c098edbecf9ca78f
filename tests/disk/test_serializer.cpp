// Value serializers (DiskCacheOptions::serializer / FanoutCacheOptions::serializer): every type
// through every read path with JsonSerializer, ZlibSerializer and a user serializer, file-stored
// values included; foreign and corrupt bytes; values written with and without a serializer; and
// python-diskcache reading and writing through the Disk subclasses docs/disk.md gives (the
// Python half is tests/disk/serializer_interop.py, which runs the docs' code block).
#include <stdio.h>
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "disk_test_support.hpp"
#include "dogpile/backends/disk.hpp"
#include "dogpile/disk/cache.hpp"
#include "dogpile/disk/fanout.hpp"
#include "dogpile/disk/serializer.hpp"

using Catch::Matchers::Contains;
using disk_test::Point;
using disk_test::TempDir;
using dogpile::Bytes;
using dogpile::DiskCache;
using dogpile::DiskCacheOptions;
using dogpile::DiskValue;
using dogpile::FanoutCache;
using dogpile::Key;

namespace {

// The docs' custom serializer (docs/disk.md, "Value serialization").
struct Scramble final : dogpile::ValueSerializer {
  dogpile::DiskValue encode(const dogpile::DiskValue& v) const override {
    const auto* s = std::get_if<std::string>(&v);
    if (s == nullptr) return v;
    std::string out(s->rbegin(), s->rend());
    for (char& c : out) c ^= 0x5a;
    return dogpile::Bytes{"S" + out};
  }
  dogpile::DiskValue decode(dogpile::DiskValue v) const override {
    const auto* b = std::get_if<dogpile::Bytes>(&v);
    if (b == nullptr) return v;
    if (!b->data.starts_with('S')) throw dogpile::CantDeserialize("no 'S' marker");
    std::string out(b->data.rbegin(), b->data.rend() - 1);
    for (char& c : out) c ^= 0x5a;
    return out;
  }
  std::string name() const override { return "scramble"; }
};

// "text ünïcode" in UTF-8.
const std::string kUnicode =
    "text \xc3\xbcn\xc3\xaf"
    "code";

// Small enough that every "big" value below is a .val file even after compression.
constexpr std::int64_t kMinFile = 64;

DiskCacheOptions with(std::shared_ptr<const dogpile::ValueSerializer> s) {
  DiskCacheOptions o;
  o.serializer = std::move(s);
  o.disk_min_file_size = kMinFile;
  return o;
}

// A string zlib cannot shrink much (so compressed it is still a value file).
std::string noisy(std::size_t n) {
  std::string s(n, 'a');
  std::uint32_t x = 12345;
  for (char& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>('a' + (x >> 16) % 26);
  }
  return s;
}

// `v` through every DiskCache read and write path, as T.
template <class T>
void all_paths(DiskCache& c, const T& v) {
  CAPTURE(c.directory().string());
  REQUIRE(c.set("k", v));
  CHECK(c.get<T>("k") == v);
  auto item = c.get_item<T>("k");
  REQUIRE(item);
  CHECK(item->value == v);
  CHECK_FALSE(c.add("k", v));
  REQUIRE(c.add("k2", v));
  const std::vector<Key> keys{Key("k"), Key("missing"), Key("k2")};
  auto many = c.get_many<T>(keys);
  REQUIRE(many.size() == 3);
  CHECK(many[0] == v);
  CHECK_FALSE(many[1]);
  CHECK(many[2] == v);
  c.set_many(std::vector<std::pair<Key, T>>{{Key("m1"), v}, {Key("m2"), v}});
  CHECK(c.get<T>("m2") == v);
  CHECK(c.pop<T>("m1") == v);
  CHECK_FALSE(c.contains("m1"));
  auto pi = c.pop_item<T>("m2");
  REQUIRE(pi);
  CHECK(pi->value == v);
  CHECK(c.peekitem<T>()->second == v);
  c.push(v, {.prefix = "q"});
  c.push(v, {.prefix = "q"});
  CHECK(c.peek<T>({.prefix = "q"})->second == v);
  CHECK(c.peek_item<T>({.prefix = "q"})->value == v);
  CHECK(c.pull<T>({.prefix = "q"})->second == v);
  CHECK(c.pull_item<T>({.prefix = "q"})->value == v);
  int calls = 0;
  auto memo = c.memoize("f", [&](int) {
    ++calls;
    return v;
  });
  CHECK(memo(1) == v);
  CHECK(memo(1) == v);  // a hit: decoded from the store
  CHECK(calls == 1);
  c.clear();
}

template <class T>
void fanout_paths(FanoutCache& f, const T& v) {
  REQUIRE(f.set("k", v));
  CHECK(f.get<T>("k") == v);
  CHECK(f.get_item<T>("k")->value == v);
  CHECK_FALSE(f.add("k", v));
  REQUIRE(f.set_many(std::vector<std::pair<Key, T>>{{Key(1), v}, {Key(2), v}}));
  const std::vector<Key> keys{Key("k"), Key(1), Key(2), Key("nope")};
  auto many = f.get_many<T>(keys);
  CHECK(many[0] == v);
  CHECK(many[1] == v);
  CHECK(many[2] == v);
  CHECK_FALSE(many[3]);
  CHECK(f.pop<T>(1) == v);
  int calls = 0;
  auto memo = f.memoize("f", [&](int) {
    ++calls;
    return v;
  });
  CHECK(memo(7) == v);
  CHECK(memo(7) == v);
  CHECK(calls == 1);
  f.clear();
}

// What is stored for key `k`, read without a serializer.
DiskValue raw(const std::filesystem::path& dir, const Key& k) {
  DiskCache plain(dir, {.disk_min_file_size = kMinFile});
  auto v = plain.get<DiskValue>(k);
  REQUIRE(v);
  return *v;
}

using disk_test::PyResult;

/// Runs serializer_interop.py, which executes the Python code of docs/disk.md.
PyResult serializer_python(const std::string& mode, const std::filesystem::path& dir) {
  return disk_test::run_python("serializer_interop.py", mode, dir,
                               DOGPILE_DISK_TEST_DIR "/../../docs/disk.md");
}

}  // namespace

TEST_CASE("serializer: JsonSerializer round-trips every JSON type on every path",
          "[disk][serializer]") {
  TempDir d;
  auto json = std::make_shared<dogpile::JsonSerializer>();
  DiskCache c(d.path, with(json));
  all_paths<std::int64_t>(c, -1234567890123);
  all_paths<int>(c, 42);
  all_paths<double>(c, 2.5);
  all_paths<bool>(c, true);
  all_paths<std::string>(c, kUnicode);
  all_paths<std::string>(c, noisy(5000));  // a value file
  all_paths<Point>(c, Point{3, -4});
  all_paths<nlohmann::json>(c, nlohmann::json{{"a", {1, 2, 3}}, {"b", nullptr}});
  all_paths<std::vector<int>>(c, std::vector<int>(3000, 7));  // a file: JSON compresses, not 64
  SECTION("FanoutCache passes it to every shard") {
    TempDir fd;
    FanoutCache f(fd.path, {.shards = 3, .disk_min_file_size = kMinFile, .serializer = json});
    fanout_paths<std::int64_t>(f, 7);
    fanout_paths<std::string>(f, noisy(4000));
    fanout_paths<Point>(f, Point{1, 2});
    CHECK_THROWS_AS(f.incr("n"), dogpile::ValidationError);
    f.set("x", std::string("y"));
    bool found = false;
    for (std::size_t i = 0; i < 3; ++i) {  // the shard holding "x" stores compressed JSON
      DiskCache shard(fd.path / ("00" + std::to_string(i)));
      if (auto v = shard.get<DiskValue>("x")) {
        found = true;
        CHECK(std::holds_alternative<Bytes>(*v));
      }
    }
    CHECK(found);
  }
}

TEST_CASE("serializer: JsonSerializer's stored form and its refusals", "[disk][serializer]") {
  TempDir d;
  DiskCache c(d.path, with(std::make_shared<dogpile::JsonSerializer>()));
  c.set("big", noisy(5000));
  CHECK(disk_test::value_files(d.path) == 1);  // large encoded values still go to files
  c.set("n", 5);
  auto stored = raw(d.path, "n");
  REQUIRE(std::holds_alternative<Bytes>(stored));
  CHECK(std::get<Bytes>(stored).data.substr(0, 2) == std::string("\x78\x01", 2));  // zlib, level 1

  CHECK_THROWS_WITH(c.set("b", Bytes{"\x00\x01"}), Contains("not a JSON document"));
  CHECK_THROWS_AS(c.set("b", Bytes{"\x00\x01"}), dogpile::ValidationError);
  CHECK_THROWS_AS(c.set("nan", std::numeric_limits<double>::quiet_NaN()), dogpile::ValidationError);
  CHECK_THROWS_WITH(c.set("utf", std::string("\xff\xfe")), Contains("UTF-8"));
  CHECK_FALSE(c.contains("b"));
  CHECK_THROWS_AS(c.incr("n"), dogpile::ValidationError);
  CHECK_THROWS_AS(dogpile::JsonSerializer(10), dogpile::ValidationError);
  // Python-only values come back as what C++ stores for them.
  c.set("null", nlohmann::json(nullptr));
  CHECK(c.get<nlohmann::json>("null")->is_null());
  c.set("t", nlohmann::json(true));
  CHECK(c.get<bool>("t") == true);
  c.set("scalar", nlohmann::json(5));  // documented: a bare JSON number reads as a number
  CHECK(c.get<std::int64_t>("scalar") == 5);
  CHECK_THROWS_AS(c.get<nlohmann::json>("scalar"), dogpile::TypeMismatch);
}

TEST_CASE("serializer: ZlibSerializer compresses above the threshold only", "[disk][serializer]") {
  TempDir d;
  auto z = std::make_shared<dogpile::ZlibSerializer>(100);
  DiskCache c(d.path, with(z));
  all_paths<std::int64_t>(c, 1);
  all_paths<double>(c, -0.25);
  all_paths<std::string>(c, "small");
  all_paths<std::string>(c, std::string(20000, 'z'));  // compressed; still > 64: a file
  all_paths<Bytes>(c, Bytes{"\x00\x01\x02"});
  all_paths<Bytes>(c, Bytes{noisy(3000)});
  all_paths<Bytes>(c, Bytes{"\x89"
                            "DPZb"});  // begins with the magic: wrapped
  all_paths<std::vector<std::uint8_t>>(c, std::vector<std::uint8_t>(5000, 0xab));
  all_paths<Point>(c, Point{9, 9});

  c.set("small", std::string("abc"));
  c.set("big", std::string(20000, 'z'));
  c.set("bigb", Bytes{std::string(200, '\0')});
  c.set("magic", Bytes{"\x89"
                       "DPZ"});
  CHECK(raw(d.path, "small") == DiskValue(std::string("abc")));  // unchanged: Python reads a str
  for (const char* k : {"big", "bigb", "magic"}) {
    auto v = raw(d.path, k);
    REQUIRE(std::holds_alternative<Bytes>(v));
    CHECK(std::get<Bytes>(v).data.starts_with(dogpile::ZlibSerializer::magic));
  }
  CHECK(std::get<Bytes>(raw(d.path, "big")).data[4] == 't');
  CHECK(std::get<Bytes>(raw(d.path, "bigb")).data[4] == 'b');
  CHECK(std::get<Bytes>(raw(d.path, "big")).data.size() < 200);
  // read/set_stream bypass the serializer: read streams the stored layout.
  auto in = c.read("big");
  REQUIRE(in);
  std::string streamed((std::istreambuf_iterator<char>(*in)), {});
  CHECK(streamed.starts_with(dogpile::ZlibSerializer::magic));

  SECTION("FanoutCache") {
    TempDir fd;
    FanoutCache f(fd.path, {.shards = 2, .disk_min_file_size = kMinFile, .serializer = z});
    fanout_paths<Bytes>(f, Bytes{noisy(4000)});
    fanout_paths<std::string>(f, "s");
  }
}

TEST_CASE("serializer: the disk region backend stores through it", "[disk][serializer]") {
  TempDir d;
  auto z = std::make_shared<dogpile::ZlibSerializer>(100);
  dogpile::DiskBackend b({.directory = d.path, .cache = with(z)});
  const std::string big(5000, 'p');
  b.set("k", big);
  b.set("s", "small");
  CHECK(b.get("k") == big);
  CHECK(b.get("s") == "small");
  const std::vector<std::string> keys{"k", "s"};
  auto many = b.get_multi(keys);
  CHECK(many[0] == big);
  CHECK(many[1] == "small");
  // On disk: the big payload is compressed.
  DiskCache plain(d.path);
  int compressed = 0;
  for (const Key& k : plain.keys()) {
    auto v = plain.get<DiskValue>(k);
    if (v && std::holds_alternative<Bytes>(*v) &&
        std::get<Bytes>(*v).data.starts_with(dogpile::ZlibSerializer::magic)) {
      ++compressed;
    }
  }
  CHECK(compressed == 1);
}

TEST_CASE("serializer: a user serializer", "[disk][serializer]") {
  TempDir d;
  DiskCache c(d.path, with(std::make_shared<Scramble>()));
  all_paths<std::string>(c, "secret");
  all_paths<std::string>(c, noisy(1000));
  all_paths<std::int64_t>(c, 3);
  c.set("s", std::string("abc"));
  auto stored = raw(d.path, "s");
  CHECK(stored == DiskValue(Bytes{std::string("S") + char('c' ^ 0x5a) + char('b' ^ 0x5a) +
                                  char('a' ^ 0x5a)}));
  DiskCache plain(d.path);
  plain.set("foreign", Bytes{"xyz"});
  CHECK_THROWS_AS(c.get<std::string>("foreign"), dogpile::CantDeserialize);
  CHECK_THROWS_WITH(c.get<std::string>("foreign"),
                    Contains("'foreign'") && Contains("scramble") && Contains("no 'S' marker"));
}

TEST_CASE("serializer: foreign, corrupt and unserialized values", "[disk][serializer]") {
  TempDir d;
  DiskCache plain(d.path, {.disk_min_file_size = kMinFile});
  plain.set("int", 5);
  plain.set("text", std::string("hello"));
  plain.set("bytes", Bytes{"\x01\x02"});
  plain.set("bigbytes", Bytes{noisy(500)});  // a value file
  plain.set("fakezlib", Bytes{std::string("\x89"
                                          "DPZt",
                                          5) +
                              "garbage"});
  plain.set("badkind", Bytes{std::string("\x89"
                                         "DPZq",
                                         5)});

  SECTION("JsonSerializer: everything written without it throws CantDeserialize, naming the key") {
    DiskCache c(d.path, with(std::make_shared<dogpile::JsonSerializer>()));
    for (const char* k : {"int", "text", "bytes", "bigbytes", "fakezlib"}) {
      CAPTURE(k);
      CHECK_THROWS_AS(c.get<DiskValue>(k), dogpile::CantDeserialize);
      CHECK_THROWS_WITH(c.get<DiskValue>(k), Contains(Key(k).repr()) && Contains("json"));
    }
    CHECK_THROWS_WITH(c.get<DiskValue>("int"), Contains("written without"));
    const std::vector<Key> keys{Key("int")};
    CHECK_THROWS_AS(c.get_many<DiskValue>(keys), dogpile::CantDeserialize);
    CHECK_THROWS_AS(c.peekitem<DiskValue>(), dogpile::CantDeserialize);
    // zlib but not JSON
    DiskCache z(d.path, with(std::make_shared<dogpile::ZlibSerializer>(0)));
    z.set("zl", std::string("not json"));
    std::string compressed = std::get<Bytes>(raw(d.path, "zl")).data.substr(5);
    plain.set("notjson", Bytes{compressed});
    CHECK_THROWS_WITH(c.get<DiskValue>("notjson"), Contains("not JSON"));
    CHECK_THROWS_AS(c.pop<DiskValue>("notjson"), dogpile::CantDeserialize);
    CHECK_FALSE(c.contains("notjson"));  // documented: a pop that cannot decode has removed it
    // set_stream bypasses the serializer: its bytes read back as foreign ones.
    std::istringstream in("streamed");
    REQUIRE(c.set_stream("streamed", in));
    CHECK_THROWS_AS(c.get<DiskValue>("streamed"), dogpile::CantDeserialize);
  }
  SECTION("ZlibSerializer: plain values read unchanged, a broken layout throws") {
    DiskCache c(d.path, with(std::make_shared<dogpile::ZlibSerializer>()));
    CHECK(c.get<int>("int") == 5);
    CHECK(c.get<std::string>("text") == "hello");
    CHECK(c.get<Bytes>("bytes") == Bytes{"\x01\x02"});
    CHECK(c.get<Bytes>("bigbytes") == Bytes{noisy(500)});
    CHECK_THROWS_WITH(c.get<DiskValue>("fakezlib"), Contains("'fakezlib'") && Contains("corrupt"));
    CHECK_THROWS_AS(c.get<DiskValue>("badkind"), dogpile::CantDeserialize);
    std::istringstream in("streamed");
    REQUIRE(c.set_stream("streamed", in));
    CHECK(c.get<Bytes>("streamed") == Bytes{"streamed"});
  }
  SECTION("the reverse: a cache without a serializer reads the stored bytes") {
    DiskCache j(d.path, with(std::make_shared<dogpile::JsonSerializer>()));
    j.set("j", std::string("v"));
    auto v = plain.get<Bytes>("j");
    REQUIRE(v);
    CHECK(v->data.starts_with("\x78\x01"));
  }
}

TEST_CASE("serializer: python-diskcache through the Disk subclasses in docs/disk.md",
          "[disk][serializer][interop]") {
  if (std::system("/usr/bin/python3 -c 'import diskcache' >/dev/null 2>&1") != 0) {
    FAIL("python3-diskcache is not installed (/usr/bin/python3 -c 'import diskcache')");
  }
  const std::string big_str = [] {
    std::string s;
    for (int i = 0; i < 40000; ++i) s += "\xc3\xa9";
    return s;
  }();
  const Bytes big_bytes = [] {
    std::string s;
    for (int r = 0; r < 200; ++r) {
      for (int i = 0; i < 256; ++i) s += static_cast<char>(i);
    }
    return Bytes{s};
  }();

  SECTION("JSON: C++ writes, Python reads") {
    TempDir d;
    DiskCache c(d.path, with(std::make_shared<dogpile::JsonSerializer>()));
    c.set("int", 42);
    c.set("neg", -7);
    c.set("float", 1.5);
    c.set("str", std::string(kUnicode));
    c.set("big", big_str);
    c.set("obj", nlohmann::json{{"a", {1, 2, 3}}, {"b", "x"}});
    c.set("list", nlohmann::json::array({1, "two", 3.5}));
    c.set("true", nlohmann::json(true));
    c.set("null", nlohmann::json(nullptr));
    c.set("int64-max", std::numeric_limits<std::int64_t>::max());
    CHECK(disk_test::value_files(d.path) >= 1);
    c.close();
    auto r = serializer_python("json-read", d.path);
    INFO(r.output);
    CHECK(r.status == 0);
  }
  SECTION("JSON: Python writes, C++ reads") {
    TempDir d;
    auto r = serializer_python("json-write", d.path);
    INFO(r.output);
    REQUIRE(r.status == 0);
    DiskCache c(d.path, with(std::make_shared<dogpile::JsonSerializer>()));
    CHECK(c.get<int>("int") == 42);
    CHECK(c.get<int>("neg") == -7);
    CHECK(c.get<double>("float") == 1.5);
    CHECK(c.get<std::string>("str") == kUnicode);
    CHECK(c.get<std::string>("big") == big_str);
    CHECK(c.get<nlohmann::json>("obj") == nlohmann::json{{"a", {1, 2, 3}}, {"b", "x"}});
    CHECK(c.get<nlohmann::json>("list") == nlohmann::json::array({1, "two", 3.5}));
    CHECK(c.get<bool>("true") == true);
    CHECK(c.get<nlohmann::json>("null")->is_null());
    CHECK(c.get<std::int64_t>("int64-max") == std::numeric_limits<std::int64_t>::max());
  }
  SECTION("JSON: values Python's own JSONDisk wrote") {
    TempDir d;
    auto r = serializer_python("jsondisk-write", d.path);
    INFO(r.output);
    REQUIRE(r.status == 0);
    DiskCache c(d.path, with(std::make_shared<dogpile::JsonSerializer>()));
    std::vector<std::string> values;
    for (const Key& k : c.keys()) {
      REQUIRE(k.is_bytes());  // JSONDisk compresses keys too
      auto v = c.get<DiskValue>(k);
      REQUIRE(v);
      if (auto* t = std::get_if<std::string>(&*v)) {
        values.push_back(nlohmann::json(*t).dump());
      } else {
        values.push_back(nlohmann::json::parse(std::get<Bytes>(*v).data).dump());
      }
    }
    std::sort(values.begin(), values.end());
    CHECK(values == std::vector<std::string>{"\"text\"", R"({"x":[1,2]})"});
  }
  SECTION("zlib: C++ writes, Python reads") {
    TempDir d;
    DiskCache c(d.path, with(std::make_shared<dogpile::ZlibSerializer>()));
    c.set("int", 42);
    c.set("float", 1.5);
    c.set("small-str", std::string("abc"));
    c.set("small-bytes", Bytes{"\x00\x01"});
    c.set("big-str", big_str);
    c.set("big-bytes", big_bytes);
    c.set("magic-bytes", Bytes{"\x89"
                               "DPZ!"});
    c.close();
    auto r = serializer_python("zlib-read", d.path);
    INFO(r.output);
    CHECK(r.status == 0);
  }
  SECTION("zlib: Python writes, C++ reads") {
    TempDir d;
    auto r = serializer_python("zlib-write", d.path);
    INFO(r.output);
    REQUIRE(r.status == 0);
    DiskCache c(d.path, with(std::make_shared<dogpile::ZlibSerializer>()));
    CHECK(c.get<int>("int") == 42);
    CHECK(c.get<double>("float") == 1.5);
    CHECK(c.get<std::string>("small-str") == "abc");
    CHECK(c.get<Bytes>("small-bytes") == Bytes{"\x00\x01"});
    CHECK(c.get<std::string>("big-str") == big_str);
    CHECK(c.get<Bytes>("big-bytes") == big_bytes);
    CHECK(c.get<Bytes>("magic-bytes") == Bytes{"\x89"
                                               "DPZ!"});
    CHECK(
        std::get<Bytes>(raw(d.path, "big-bytes")).data.starts_with(dogpile::ZlibSerializer::magic));
  }
}

TEST_CASE("serializer: hostile stored values (deep nesting, decompression bombs)",
          "[disk][serializer][hostile]") {
  const dogpile::ZlibSerializer zip(0);
  // A plain zlib stream of `text` (what JsonSerializer stores).
  auto zlib_of = [&](const std::string& text) {
    return std::get<Bytes>(zip.encode(Bytes{text})).data.substr(5);
  };
  const dogpile::JsonSerializer json;
  // JSON nested a million deep: refused (dump() of it overflowed the stack), in ~2 KiB.
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  const std::string deep_z = zlib_of(deep);
  CHECK(deep_z.size() < 8192);
  CHECK_THROWS_AS(json.decode(Bytes{deep_z}), dogpile::CantDeserialize);
  CHECK_THROWS_AS(json.encode(Bytes{deep}), dogpile::ValidationError);
  CHECK(std::get<Bytes>(json.decode(Bytes{zlib_of("[[[1]]]")})).data == "[[[1]]]");

  // A value inflating beyond max_value_bytes is refused without inflating it all.
  const std::string big = '"' + std::string(2u << 20, 'a') + '"';
  const std::string big_z = zlib_of(big);
  CHECK(std::get<std::string>(json.decode(Bytes{big_z})).size() == big.size() - 2);
  const dogpile::JsonSerializer json_1m(1, 1u << 20);
  CHECK_THROWS_WITH(json_1m.decode(Bytes{big_z}), Contains("max_value_bytes"));
  const dogpile::ZlibSerializer zip_1m(0, 6, 1u << 20);
  const DiskValue stored = zip.encode(big);
  CHECK(std::get<std::string>(zip.decode(stored)) == big);
  CHECK_THROWS_WITH(zip_1m.decode(stored), Contains("max_value_bytes"));
  CHECK(std::get<std::string>(dogpile::ZlibSerializer(0, 6, big.size()).decode(stored)) == big);
}
