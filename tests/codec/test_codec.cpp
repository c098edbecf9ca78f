// Codec<T>, the two envelopes and zlib: round trips, byte-exact dogpile.cache headers (checked
// against CPython's json.dumps), and corrupt input that must give CantDeserialize, never a crash.
#include <zlib.h>
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/clock.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/detail/value_adapter.hpp"
#include "dogpile/limits.hpp"

namespace app {
struct User {
  int id = 0;
  std::string name;
  std::vector<double> scores;
  bool operator==(const User&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(User, id, name, scores)
}  // namespace app

namespace {

using dogpile::CodecOptions;
using dogpile::EnvelopeFormat;
using dogpile::Format;

// Runs a Python snippet with Debian's python3 and returns its stdout.
std::string run_python(const std::string& code) {
  const std::string cmd = std::string(DOGPILE_PYTHON3) + " -c '" + code + "'";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  REQUIRE(pclose(p) == 0);
  return out;
}

template <class T>
T round_trip(const T& value, const CodecOptions& opts, double ct = 1700000000.5) {
  const std::string bytes = dogpile::encode_value(value, dogpile::Metadata{.ct = ct}, opts);
  const dogpile::Unpacked u = dogpile::unpack_envelope(bytes);
  CHECK(u.meta.ct == ct);
  CHECK(u.meta.v == 2);
  return dogpile::Codec<T>::decode(u.payload, opts.format);
}

// Every outcome of unpacking+decoding hostile bytes must be a value, CantDeserialize (bad
// bytes) or TypeMismatch (well-formed bytes of another type).
template <class T>
void expect_value_or_cant_deserialize(std::string_view bytes, Format format) {
  try {
    const auto u = dogpile::unpack_envelope(bytes);
    (void)dogpile::Codec<T>::decode(u.payload, format);
  } catch (const dogpile::CantDeserialize&) {
  } catch (const dogpile::TypeMismatch&) {
  }
}

}  // namespace

TEST_CASE("dogpile envelope is byte-identical to dogpile.cache's", "[codec]") {
  const std::string bytes =
      dogpile::pack_envelope(dogpile::Metadata{.ct = 1700000000.123, .v = 2}, "payload", {});
  CHECK(bytes == R"({"ct": 1700000000.123, "v": 2}|payload)");

  // The same header CPython writes for a range of creation times.
  const std::vector<double> cts{1700000000.123,    1700000000.0,       1.5,   0.0,
                                1763727845.987654, 1234567890.1234567, 1e-05, 86400.25};
  const std::string py = run_python(
      "import json\n"
      "for ct in [1700000000.123, 1700000000.0, 1.5, 0.0, 1763727845.987654, "
      "1234567890.1234567, 1e-05, 86400.25]:\n"
      "    print(json.dumps({\"ct\": ct, \"v\": 2}))\n");
  std::string expected;
  for (double ct : cts) {
    const std::string env = dogpile::pack_envelope(dogpile::Metadata{.ct = ct}, "", {});
    REQUIRE(env.back() == '|');
    expected += env.substr(0, env.size() - 1) + "\n";
  }
  CHECK(expected == py);
}

TEST_CASE("an envelope written by Python dogpile.cache (JSON serializer) is read", "[codec]") {
  // As dogpile.cache's region: json.dumps(metadata).encode("ascii") + b"|" + serializer(value).
  const std::string bytes = run_python(
      "import json, sys\n"
      "meta = {\"ct\": 1700000000.123, \"v\": 2}\n"
      "value = {\"id\": 7, \"name\": \"Ann\\u00e9\", \"scores\": [1.0, 0.5]}\n"
      "sys.stdout.buffer.write(json.dumps(meta).encode(\"ascii\") + b\"|\" + "
      "json.dumps(value).encode())\n");
  const auto u = dogpile::unpack_envelope(bytes);
  CHECK(u.meta.ct == 1700000000.123);
  CHECK(u.meta.v == 2);
  const auto user = dogpile::Codec<app::User>::decode(u.payload, Format::json);
  CHECK(user == app::User{7, "Ann\xC3\xA9", {1.0, 0.5}});
}

TEST_CASE("an envelope written by dogpile-cpp is read by Python", "[codec]") {
  const std::string bytes = dogpile::encode_value(
      app::User{3, "Bo", {2.5}}, dogpile::Metadata{.ct = 1700000000.25}, CodecOptions{});
  // Hex-encode so the shell quoting stays trivial.
  std::string hex;
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 0x0F]);
  }
  const std::string out = run_python(
      "import json\n"
      "raw = bytes.fromhex(\"" +
      hex +
      "\")\n"
      "meta, _, payload = raw.partition(b\"|\")\n"
      "m = json.loads(meta); v = json.loads(payload)\n"
      "print(repr(m[\"ct\"]), m[\"v\"], v[\"id\"], v[\"name\"], v[\"scores\"])\n");
  CHECK(out == "1700000000.25 2 3 Bo [2.5]\n");
}

TEST_CASE("values round-trip through JSON, MessagePack and CBOR", "[codec]") {
  for (Format f : {Format::json, Format::msgpack, Format::cbor}) {
    for (EnvelopeFormat e : {EnvelopeFormat::dogpile, EnvelopeFormat::compact}) {
      const CodecOptions opts{.format = f, .envelope = e};
      CHECK(round_trip(42, opts) == 42);
      CHECK(round_trip(-1.25, opts) == -1.25);
      CHECK(round_trip(true, opts) == true);
      CHECK(round_trip(app::User{1, "x|y", {0.1, 1e300}}, opts) ==
            app::User{1, "x|y", {0.1, 1e300}});
      const std::map<std::string, std::vector<int>> m{{"a", {1, 2}}, {"b", {}}};
      CHECK(round_trip(m, opts) == m);
      const nlohmann::json j = {{"k", nullptr}, {"n", {1, 2.5, "s"}}};
      CHECK(round_trip(j, opts) == j);
    }
  }
  // The binary formats really are binary.
  CHECK(dogpile::Codec<int>::encode(1, Format::msgpack) == std::string("\x01", 1));
  CHECK(dogpile::Codec<int>::encode(1, Format::cbor) == std::string("\x01", 1));
  CHECK(dogpile::Codec<int>::encode(1, Format::json) == "1");
}

TEST_CASE("strings and bytes pass through unchanged", "[codec]") {
  const std::string s("bin\0ary|\xFF{\"ct\"", 14);
  for (Format f : {Format::json, Format::msgpack, Format::cbor}) {
    CHECK(dogpile::Codec<std::string>::encode(s, f) == s);
    CHECK(dogpile::Codec<std::string>::decode(s, f) == s);
    const std::vector<std::uint8_t> b{0, 1, 255, '|'};
    const std::string eb = dogpile::Codec<std::vector<std::uint8_t>>::encode(b, f);
    CHECK(eb == std::string("\x00\x01\xFF|", 4));
    CHECK(dogpile::Codec<std::vector<std::uint8_t>>::decode(eb, f) == b);
    const std::vector<std::byte> sb{std::byte{7}, std::byte{0}};
    CHECK(dogpile::Codec<std::vector<std::byte>>::decode(
              dogpile::Codec<std::vector<std::byte>>::encode(sb, f), f) == sb);
    CHECK(dogpile::Codec<std::vector<char>>::decode("", f).empty());
    CHECK(round_trip(s, CodecOptions{.format = f}) == s);
  }
  // A payload containing '|' : only the first '|' separates the header.
  const auto u = dogpile::unpack_envelope(R"({"ct": 1.5, "v": 2}|a|b)");
  CHECK(u.payload == "a|b");
}

// StringCodec::json (docs/envelope.md, "Strings"): a std::string is stored as the JSON string
// Python's json.dumps writes for a str, so a Python JSON deserializer reads it (and the raw
// default does not), and a str Python stored reads back as the std::string.
TEST_CASE("StringCodec::json stores std::string as the JSON string Python reads", "[codec]") {
  const CodecOptions js{.string_codec = dogpile::StringCodec::json};
  const std::string text = "caf\xC3\xA9 \"q\" |x\n";
  auto hex_of = [](const std::string& bytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (const char ch : bytes) {
      const auto c = static_cast<unsigned char>(ch);
      hex.push_back(kHex[c >> 4]);
      hex.push_back(kHex[c & 0x0F]);
    }
    return hex;
  };
  // Python: dogpile.cache's read (split at the first '|', json.loads the payload).
  auto python_reads = [&](const std::string& stored) {
    return run_python(
        "import json\n"
        "meta, _, payload = bytes.fromhex(\"" +
        hex_of(stored) +
        "\").partition(b\"|\")\n"
        "try:\n"
        "    v = json.loads(payload)\n"
        "    print(type(v).__name__, json.dumps(v))\n"
        "except ValueError:\n"
        "    print(\"JSONDecodeError\")\n");
  };
  const dogpile::Metadata meta{.ct = 1700000000.5};
  const std::string stored = dogpile::detail::to_bytes(text, meta, js, "test");
  CHECK(stored == R"({"ct": 1700000000.5, "v": 2}|"café \"q\" |x\n")");
  CHECK(python_reads(stored) == "str \"caf\\u00e9 \\\"q\\\" |x\\n\"\n");
  // The default stays raw: Python's JSON deserializer fails on it.
  CHECK(python_reads(dogpile::detail::to_bytes(text, meta, CodecOptions{}, "test")) ==
        "JSONDecodeError\n");

  // What Python's JSON serializer stores for a str reads back as the std::string.
  const std::string from_python = run_python(
      "import json, sys\n"
      "sys.stdout.buffer.write(json.dumps({\"ct\": 1700000000.5, \"v\": 2}).encode(\"ascii\") + "
      "b\"|\" + json.dumps(\"caf\\u00e9 \\u2603\").encode())\n");
  const auto got = dogpile::detail::from_bytes<std::string>(from_python, true, js, "k", "test");
  REQUIRE(got);
  CHECK(got->value == "caf\xC3\xA9 \xE2\x98\x83");
  // Under the raw default the same bytes read back quoted and escaped.
  CHECK(dogpile::detail::from_bytes<std::string>(from_python, true, CodecOptions{}, "k", "test")
            ->value == R"("caf\u00e9 \u2603")");

  // Every format round-trips; MessagePack/CBOR hold a string of that format.
  for (Format f : {Format::json, Format::msgpack, Format::cbor}) {
    const CodecOptions o{.format = f, .string_codec = dogpile::StringCodec::json};
    const auto back = dogpile::detail::from_bytes<std::string>(
        dogpile::detail::to_bytes(text, meta, o, "test"), true, o, "k", "test");
    REQUIRE(back);
    CHECK(back->value == text);
  }
  CHECK(dogpile::encode_payload(std::string("a"), {.format = Format::msgpack,
                                                   .string_codec = dogpile::StringCodec::json}) ==
        "\xA1"
        "a");
  // Other types and byte vectors are not affected.
  CHECK(dogpile::encode_payload(7, js) == "7");
  CHECK(dogpile::encode_payload(std::vector<char>{'"', 'x'}, js) == "\"x");

  // Stored bytes that are not a JSON string: a raw string written before the switch is a miss
  // (regenerated), another JSON type is TypeMismatch naming the key, and a string that is not
  // UTF-8 cannot be written.
  const std::string raw = dogpile::detail::to_bytes(text, meta, CodecOptions{}, "test");
  CHECK_FALSE(dogpile::detail::from_bytes<std::string>(raw, true, js, "k", "test"));
  const std::string number = dogpile::detail::to_bytes(42, meta, js, "test");
  CHECK_THROWS_WITH(dogpile::detail::from_bytes<std::string>(number, true, js, "k", "test"),
                    Catch::Contains("cache key 'k'") && Catch::Contains("number is not a string"));
  CHECK_THROWS_AS(dogpile::detail::to_bytes(std::string("\xFF"), meta, js, "test"),
                  dogpile::ValidationError);
}

TEST_CASE("compact envelope layout", "[codec]") {
  const CodecOptions opts{.envelope = EnvelopeFormat::compact};
  const std::string bytes =
      dogpile::pack_envelope(dogpile::Metadata{.ct = 1700000000.123456, .v = 2}, "xyz", opts);
  REQUIRE(bytes.size() == 20 + 3);
  CHECK(bytes.substr(0, 4) == std::string("\xDCP\x02\x00", 4));
  // Creation time in microseconds, 8 bytes little endian.
  std::uint64_t us = 0;
  for (int i = 0; i < 8; ++i) {
    us |= static_cast<std::uint64_t>(
              static_cast<unsigned char>(bytes[4 + static_cast<std::size_t>(i)]))
          << (8 * i);
  }
  CHECK(us == 1700000000123456ULL);
  CHECK(bytes.substr(20) == "xyz");
  const auto u = dogpile::unpack_envelope(bytes);
  CHECK(u.meta.ct == Approx(1700000000.123456).margin(1e-6));
  CHECK(u.payload == "xyz");
  // delta is kept in both formats.
  for (EnvelopeFormat e : {EnvelopeFormat::dogpile, EnvelopeFormat::compact}) {
    const auto d = dogpile::unpack_envelope(dogpile::pack_envelope(
        dogpile::Metadata{.ct = 10, .delta = 0.25}, "p", CodecOptions{.envelope = e}));
    CHECK(d.meta.delta == 0.25);
  }
}

TEST_CASE("zlib compression above the threshold", "[codec]") {
  const std::string big(5000, 'a');
  for (EnvelopeFormat e : {EnvelopeFormat::dogpile, EnvelopeFormat::compact}) {
    const CodecOptions opts{.envelope = e, .compress_threshold = 100};
    const std::string packed = dogpile::pack_envelope(dogpile::Metadata{.ct = 1}, big, opts);
    CHECK(packed.size() < 200);
    if (e == EnvelopeFormat::dogpile) CHECK(packed.find("\"z\": 1}|") != std::string::npos);
    CHECK(dogpile::unpack_envelope(packed).payload == big);

    // Below the threshold: stored as is.
    const std::string small(99, 'a');
    const std::string plain = dogpile::pack_envelope(dogpile::Metadata{.ct = 1}, small, opts);
    CHECK(plain.substr(plain.size() - small.size()) == small);
    CHECK(dogpile::unpack_envelope(plain).payload == small);

    // Incompressible data above the threshold is stored as is (compression would grow it).
    std::mt19937 rng(7);
    std::string noise(1000, '\0');
    for (char& c : noise) c = static_cast<char>(rng() & 0xFF);
    const std::string raw = dogpile::pack_envelope(dogpile::Metadata{.ct = 1}, noise, opts);
    CHECK(raw.substr(raw.size() - noise.size()) == noise);
    CHECK(dogpile::unpack_envelope(raw).payload == noise);
  }
  // Default options never compress (Python interop).
  const std::string def = dogpile::pack_envelope(dogpile::Metadata{.ct = 1}, big, {});
  CHECK(def.find("\"z\"") == std::string::npos);
}

TEST_CASE("corrupt and truncated bytes throw CantDeserialize", "[codec]") {
  using dogpile::CantDeserialize;
  CHECK_THROWS_AS(dogpile::unpack_envelope(""), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope("no separator"), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope("|payload"), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope("{}|payload"), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"({"ct": "x"}|p)"), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"([1, 2]|p)"), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"({"ct": 1.0, "v": 2)"), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope(std::string("\xDCP\x02\x00\x01", 5)), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"({"ct": 1, "z": 1}|)"), CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"({"ct": 1, "z": 1}|garbage-not-zlib)"),
                  CantDeserialize);
  // A compressed-length prefix that lies (asks for 2^60 bytes) is rejected before allocating.
  CHECK_THROWS_AS(dogpile::unpack_envelope(std::string(R"({"ct": 1, "z": 1}|)") +
                                           std::string("\0\0\0\0\0\0\0\x10xxxx", 12)),
                  CantDeserialize);

  // Well-formed bytes holding another type are a TypeMismatch, as on the memory backend.
  CHECK_THROWS_AS(dogpile::Codec<int>::decode("\"text\"", Format::json), dogpile::TypeMismatch);
  CHECK_THROWS_AS(dogpile::Codec<int>::decode("{", Format::json), CantDeserialize);
  CHECK_THROWS_AS(dogpile::Codec<int>::decode("", Format::json), CantDeserialize);
  CHECK_THROWS_AS(dogpile::Codec<int>::decode("\xC1", Format::msgpack), CantDeserialize);
  CHECK_THROWS_AS(dogpile::Codec<int>::decode("\x9F", Format::cbor), CantDeserialize);
  CHECK_THROWS_AS(dogpile::Codec<app::User>::decode(R"({"id": 1})", Format::json),
                  dogpile::TypeMismatch);
}

TEST_CASE("every truncation and byte flip of valid envelopes is handled", "[codec]") {
  std::vector<std::pair<std::string, Format>> samples;
  for (Format f : {Format::json, Format::msgpack, Format::cbor}) {
    for (EnvelopeFormat e : {EnvelopeFormat::dogpile, EnvelopeFormat::compact}) {
      for (std::size_t threshold : {std::size_t{0}, std::size_t{16}}) {
        const CodecOptions opts{.format = f, .envelope = e, .compress_threshold = threshold};
        samples.emplace_back(dogpile::encode_value(app::User{9, std::string(40, 'n'), {1, 2, 3}},
                                                   dogpile::Metadata{.ct = 1700000000.5}, opts),
                             f);
      }
    }
  }
  std::mt19937 rng(2026);
  for (const auto& [bytes, f] : samples) {
    for (std::size_t n = 0; n <= bytes.size(); ++n) {
      expect_value_or_cant_deserialize<app::User>(std::string_view(bytes).substr(0, n), f);
    }
    for (int i = 0; i < 300; ++i) {
      std::string m = bytes;
      m[rng() % m.size()] = static_cast<char>(rng() & 0xFF);
      expect_value_or_cant_deserialize<app::User>(m, f);
      expect_value_or_cant_deserialize<nlohmann::json>(m, f);
    }
  }
  SUCCEED("no exception other than CantDeserialize or TypeMismatch escaped");
}

TEST_CASE("numbers that do not fit the requested type are TypeMismatch", "[codec]") {
  using dogpile::Codec;
  using dogpile::TypeMismatch;
  CHECK_THROWS_AS(Codec<int>::decode("1e300", Format::json), TypeMismatch);
  CHECK_THROWS_AS(Codec<int>::decode("1.5", Format::json), TypeMismatch);
  CHECK_THROWS_AS(Codec<std::uint8_t>::decode("300", Format::json), TypeMismatch);
  CHECK_THROWS_AS(Codec<std::uint32_t>::decode("-1", Format::json), TypeMismatch);
  CHECK_THROWS_AS(Codec<std::int64_t>::decode("18446744073709551615", Format::json), TypeMismatch);
  CHECK_THROWS_AS(Codec<float>::decode("1e300", Format::json), TypeMismatch);
  CHECK_THROWS_AS(Codec<double>::decode("\"1\"", Format::json), TypeMismatch);
  CHECK(Codec<int>::decode("2.0", Format::json) == 2);  // a whole float is fine (Python 2.0)
  CHECK(Codec<std::int64_t>::decode("-9223372036854775808", Format::json) ==
        std::numeric_limits<std::int64_t>::min());
  CHECK(Codec<std::uint64_t>::decode("18446744073709551615", Format::json) ==
        std::numeric_limits<std::uint64_t>::max());
  CHECK(Codec<double>::decode("1e300", Format::json) == 1e300);
  CHECK(Codec<float>::decode("0.5", Format::json) == 0.5f);
  CHECK(Codec<double>::decode("7", Format::json) == 7.0);
  CHECK(Codec<bool>::decode("true", Format::json));
  CHECK_THROWS_AS(Codec<bool>::decode("1", Format::json), TypeMismatch);
}

TEST_CASE("a value JSON cannot represent is a ValidationError on encode", "[codec]") {
  const std::vector<std::string> bad_utf8{"ok", "\xFF\xFE"};
  CHECK_THROWS_AS(dogpile::Codec<std::vector<std::string>>::encode(bad_utf8, Format::json),
                  dogpile::ValidationError);
  // Binary formats carry the bytes.
  CHECK(dogpile::Codec<std::vector<std::string>>::decode(
            dogpile::Codec<std::vector<std::string>>::encode(bad_utf8, Format::msgpack),
            Format::msgpack) == bad_utf8);
}

// ---- hostile stored values (issue 18) ---------------------------------------------------------

namespace {
// `depth` nested one-element arrays around a null, in `format`.
std::string nested_arrays(std::size_t depth, Format format) {
  switch (format) {
    case Format::msgpack:  // fixarray(1) ... nil
      return std::string(depth, '\x91') + '\xC0';
    case Format::cbor:  // array(1) ... null
      return std::string(depth, '\x81') + '\xF6';
    case Format::json:
      break;
  }
  return std::string(depth, '[') + "null" + std::string(depth, ']');
}
}  // namespace

TEST_CASE("a payload nested a million deep is CantDeserialize, not a stack overflow",
          "[codec][hostile]") {
  const dogpile::CodecOptions opts{};
  for (Format f : {Format::json, Format::msgpack, Format::cbor}) {
    CAPTURE(static_cast<int>(f));
    const std::string deep = nested_arrays(1'000'000, f);
    CHECK_THROWS_AS(dogpile::Codec<nlohmann::json>::decode(deep, f), dogpile::CantDeserialize);
    CHECK_THROWS_AS((dogpile::Codec<std::vector<std::vector<int>>>::decode(deep, f)),
                    dogpile::CantDeserialize);
    // Through the envelope, as a region reads it: a miss.
    const std::string stored = dogpile::pack_envelope(dogpile::Metadata{.ct = 1}, deep, opts);
    CodecOptions codec{};
    codec.format = f;
    CHECK_FALSE(dogpile::detail::from_bytes<nlohmann::json>(stored, true, codec, "k", "test"));

    // The limit itself: max_nesting_depth levels decode, one more does not.
    const auto at_limit =
        dogpile::Codec<nlohmann::json>::decode(nested_arrays(dogpile::max_nesting_depth, f), f);
    CHECK(at_limit.is_array());
    CHECK_THROWS_WITH(
        dogpile::Codec<nlohmann::json>::decode(nested_arrays(dogpile::max_nesting_depth + 1, f), f),
        Catch::Contains("nested deeper than 512"));
  }
  // Objects count as nesting too, and a deep value inside a shallow one is still refused.
  std::string objects;
  for (int i = 0; i < 600; ++i) objects += "{\"a\":";
  objects += "1" + std::string(600, '}');
  CHECK_THROWS_AS(dogpile::Codec<nlohmann::json>::decode(objects, Format::json),
                  dogpile::CantDeserialize);
  CHECK_THROWS_AS(
      dogpile::Codec<nlohmann::json>::decode(
          "{\"x\": 1, \"y\": " + nested_arrays(100'000, Format::json) + "}", Format::json),
      dogpile::CantDeserialize);
  // Malformed bytes are still CantDeserialize, well-formed ones of another type TypeMismatch.
  CHECK_THROWS_AS(dogpile::Codec<int>::decode("[[[", Format::json), dogpile::CantDeserialize);
  CHECK_THROWS_AS(dogpile::Codec<int>::decode("[[1]]", Format::json), dogpile::TypeMismatch);
}

TEST_CASE("a compressed payload above max_value_bytes is refused before it is inflated",
          "[codec][hostile]") {
  const std::string big(2u << 20, 'z');  // 2 MiB, deflates to a few KiB
  const CodecOptions opts{.compress_threshold = 1};
  const std::string stored = dogpile::pack_envelope(dogpile::Metadata{.ct = 1}, big, opts);
  REQUIRE(stored.size() < 16'384);
  CHECK(dogpile::unpack_envelope(stored).payload == big);              // under the default 64 MiB
  CHECK(dogpile::unpack_envelope(stored, big.size()).payload == big);  // exactly at the bound
  CHECK_THROWS_WITH(dogpile::unpack_envelope(stored, big.size() - 1),
                    Catch::Contains("more than max_value_bytes"));
  // A region's byte backend reads with CodecOptions::max_value_bytes: a miss.
  CHECK(dogpile::detail::from_bytes<std::string>(stored, true, CodecOptions{}, "k", "test"));
  CHECK_FALSE(dogpile::detail::from_bytes<std::string>(
      stored, true, CodecOptions{.max_value_bytes = 1u << 20}, "k", "test"));

  // The default bound, against a length prefix that claims 64 MiB + 1 (plausible for its
  // size at deflate's 1032:1): refused from the prefix, nothing allocated or inflated.
  const std::size_t claim = dogpile::default_max_value_bytes + 1;
  std::string header(8, '\0');
  for (std::size_t i = 0; i < 8; ++i) header[i] = static_cast<char>((claim >> (8 * i)) & 0xFF);
  const std::string forged =
      std::string(R"({"ct": 1, "z": 1}|)") + header + std::string(claim / 1032 + 1, 'x');
  CHECK_THROWS_WITH(dogpile::unpack_envelope(forged), Catch::Contains("more than max_value_bytes"));

  // The shared bounded inflate (disk serializers; memcached flag 8): a plain zlib stream.
  uLongf n = compressBound(static_cast<uLong>(big.size()));
  std::string z(n, '\0');
  REQUIRE(compress2(reinterpret_cast<Bytef*>(z.data()), &n,
                    reinterpret_cast<const Bytef*>(big.data()), static_cast<uLong>(big.size()),
                    9) == Z_OK);
  z.resize(n);
  auto ok = dogpile::detail::zlib_inflate(z);
  CHECK(ok.status == dogpile::detail::InflateStatus::ok);
  CHECK(ok.data == big);
  CHECK(dogpile::detail::zlib_inflate(z, big.size()).status == dogpile::detail::InflateStatus::ok);
  auto bomb = dogpile::detail::zlib_inflate(z, 1u << 20);
  CHECK(bomb.status == dogpile::detail::InflateStatus::too_large);
  CHECK(bomb.data.empty());
  CHECK(dogpile::detail::zlib_inflate(z.substr(0, z.size() - 1)).status ==
        dogpile::detail::InflateStatus::corrupt);
  CHECK(dogpile::detail::zlib_inflate(z + "x").status == dogpile::detail::InflateStatus::corrupt);
  CHECK(dogpile::detail::zlib_inflate("").status == dogpile::detail::InflateStatus::corrupt);
}

TEST_CASE("a stored creation time out of range is a corrupt envelope (a miss), never UB",
          "[codec][hostile]") {
  using dogpile::CantDeserialize;
  // ct 1e10 (year 2286) read back as the year 1702: a signed overflow in from_unix_seconds.
  for (const char* header : {R"({"ct": 1e10, "v": 2}|1)", R"({"ct": -1e10, "v": 2}|1)",
                             R"({"ct": 1e308, "v": 2}|1)", R"({"ct": 18446744073709551615}|1)",
                             R"({"ct": 1, "d": 1e300}|1)", R"({"ct": 1, "d": -1}|1)"}) {
    CAPTURE(header);
    CHECK_THROWS_AS(dogpile::unpack_envelope(header), CantDeserialize);
    CHECK_FALSE(dogpile::detail::from_bytes<int>(std::string(header), true, {}, "k", "test"));
  }
  // Compact: int64 microseconds, INT64_MAX / INT64_MIN.
  for (std::uint64_t us : {std::uint64_t{0x7FFF'FFFF'FFFF'FFFF}, std::uint64_t{1} << 63}) {
    std::string compact("\xDCP\x02\x00", 4);
    for (int i = 0; i < 8; ++i) compact.push_back(static_cast<char>((us >> (8 * i)) & 0xFF));
    compact += std::string(8, '\0') + "1";
    CHECK_THROWS_AS(dogpile::unpack_envelope(compact), CantDeserialize);
  }
  // The bound itself is readable, and writing beyond it is refused (it could not be read).
  const double edge = dogpile::max_unix_seconds;
  for (EnvelopeFormat e : {EnvelopeFormat::dogpile, EnvelopeFormat::compact}) {
    const CodecOptions opts{.envelope = e};
    CHECK(dogpile::unpack_envelope(dogpile::pack_envelope({.ct = edge}, "1", opts)).meta.ct ==
          edge);
    CHECK(dogpile::unpack_envelope(dogpile::pack_envelope({.ct = -edge}, "1", opts)).meta.ct ==
          -edge);
    CHECK_THROWS_AS(dogpile::pack_envelope({.ct = 1e10}, "1", opts), dogpile::ValidationError);
    CHECK_THROWS_AS(dogpile::pack_envelope({.ct = 1, .delta = -1}, "1", opts),
                    dogpile::ValidationError);
  }
  // from_unix_seconds is total: clamped to the bound, NaN is the epoch.
  CHECK(dogpile::from_unix_seconds(1e10) == dogpile::from_unix_seconds(edge));
  CHECK(dogpile::from_unix_seconds(-1e300) == dogpile::from_unix_seconds(-edge));
  CHECK(dogpile::from_unix_seconds(std::numeric_limits<double>::infinity()) ==
        dogpile::from_unix_seconds(edge));
  CHECK(dogpile::from_unix_seconds(std::numeric_limits<double>::quiet_NaN()) ==
        dogpile::TimePoint{});
  CHECK(dogpile::to_unix_seconds(dogpile::from_unix_seconds(edge)) == edge);
  // A version beyond int is "no version of ours", not a narrowing surprise.
  CHECK(dogpile::unpack_envelope(R"({"ct": 1, "v": -4294967298}|1)").meta.v == -1);
}

TEST_CASE(
    "the header fast path reads what pack_envelope and Python write, and agrees with the "
    "general reader",
    "[codec]") {
  using dogpile::detail::EnvelopeView;
  const auto fast = [](std::string_view b) {
    EnvelopeView v;
    return dogpile::detail::parse_dogpile_header_fast(b, v) ? std::optional<EnvelopeView>(v)
                                                            : std::nullopt;
  };
  const auto general = [](std::string_view b) {
    EnvelopeView v;
    dogpile::detail::parse_dogpile_header_general(b, v);
    return v;
  };
  // What pack_envelope writes: every optional member, every time shape Python's repr gives.
  for (double ct : {1700000000.123, 1700000000.0, 0.0, 1.5, -12.25, 4102444800.0}) {
    for (double d : {0.0, 0.25, 3.0}) {
      for (std::size_t threshold : {std::size_t{0}, std::size_t{1}}) {
        const std::string packed =
            dogpile::pack_envelope(dogpile::Metadata{.ct = ct, .delta = d}, std::string(300, 'p'),
                                   CodecOptions{.compress_threshold = threshold});
        const auto f = fast(packed);
        REQUIRE(f);
        const EnvelopeView g = general(packed);
        CHECK(f->meta.ct == g.meta.ct);
        CHECK(f->meta.ct == ct);
        CHECK(f->meta.v == 2);
        CHECK(f->meta.delta == d);
        CHECK(f->zipped == (threshold != 0));
        CHECK(f->zipped == g.zipped);
        CHECK(f->payload.data() == g.payload.data());
        CHECK(f->payload.size() == g.payload.size());
      }
    }
  }
  // Python: json.dumps({"ct": time.time(), "v": 2}) and a payload holding '|'.
  const auto py = fast(R"({"ct": 1733530000.4817953, "v": 2}|{"a": "x|y"})");
  REQUIRE(py);
  CHECK(py->meta.ct == 1733530000.4817953);
  CHECK(py->payload == R"({"a": "x|y"})");
  // Anything else is left to the general reader, which still reads (or refuses) it.
  for (std::string_view other :
       {R"({"ct":1.5,"v":2}|p)", R"({"v": 2, "ct": 1.5}|p)", R"({"ct": 1.5e0, "v": 2}|p)",
        R"({"ct": 1.5, "v": 2.0}|p)", R"({"ct": 1.5, "v": 2, "z": 0}|p)", R"({"ct": 1.5}|p)",
        R"({"ct": 1.5, "v": 2, "x": 1}|p)", R"({"ct": 01, "v": 2}|p)", R"({"ct": 1.5, "v": 02}|p)",
        R"({"ct": -, "v": 2}|p)", R"({"ct": 1., "v": 2}|p)", R"({"ct": 1.5, "v": 2} |p)"}) {
    INFO(other);
    CHECK_FALSE(fast(other));
  }
  CHECK(dogpile::unpack_envelope(R"({"ct": 1.5e0, "x": [0], "v": 2}|p)").meta.ct == 1.5);
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"({"ct": 01, "v": 2}|p)"), dogpile::CantDeserialize);
  // Range checks apply to what the fast path reads too.
  CHECK(fast(R"({"ct": 99999999999.5, "v": 2}|p)"));
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"({"ct": 99999999999.5, "v": 2}|p)"),
                  dogpile::CantDeserialize);
  CHECK_THROWS_AS(dogpile::unpack_envelope(R"({"ct": 1.5, "v": 2, "d": 9999999999}|p)"),
                  dogpile::CantDeserialize);
}

TEST_CASE("a consumed string payload is the envelope's own buffer, header cut off", "[codec]") {
  const std::string payload(200, 's');
  std::optional<std::string> stored =
      dogpile::pack_envelope(dogpile::Metadata{.ct = 1700000000.5}, payload, {});
  const char* buffer = stored->data();
  auto v = dogpile::detail::from_bytes<std::string>(std::move(stored), false, CodecOptions{}, "k",
                                                    "test");
  REQUIRE(v);
  CHECK(v->value == payload);
  CHECK(v->value.data() == buffer);  // taken over, not copied
  CHECK(v->created == dogpile::from_unix_seconds(1700000000.5));
}
