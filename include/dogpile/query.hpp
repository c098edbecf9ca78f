#pragma once
/// @file query.hpp
/// Query caching (component `query`, target `dogpile::query`): the C++ counterpart of the
/// SQLAlchemy `FromCache` / `RelationshipCache` recipe of dogpile.cache.
///
/// ```
/// dogpile::query::QueryCache cache(region);
/// cache.depends_on("user", {"users"});
/// auto user = cache.one(db, "user", "SELECT id, name FROM users WHERE id = ?", {id},
///                       [](const dogpile::query::Row& r) { return User{r.get<int>(0),
///                                                                      r.get<std::string>(1)}; });
/// // after a write to `users` commits:
/// cache.tables_changed({"users"});
/// ```
///
/// Keys (stable across processes and runs; another language can compute them):
///   a cached query's rows live under `dq:<namespace>:<sha1hex(canonical)>`; a relationship's
///   under `dq:<namespace>:<generation>:<sha1hex(canonical)>`, where `<generation>` is the
///   value of the region key `dqg:<namespace>` (32 lowercase hex chars, random; created when
///   missing) and `canonical` is the bytes
///     `"dq1\n"`, then `s<len>:<sql>`, then per parameter: `N` (NULL), `b0`/`b1` (bool),
///     `i<decimal>;` (int64), `d<16 hex>` (a double's IEEE-754 bits, big-endian; every NaN is
///     `7ff8000000000000`, `-0.0` stays distinct), `t<len>:<utf-8>` (text), `x<len>:<bytes>`
///     (blob), then `e<len>:<extra>` (the query's version; `one:` prefixed for `one`; the
///     parent's generation for relationships). `<len>` is a decimal byte count.
///   So `1`, `"1"`, `1.0`, `true` and NULL are five keys; the SQL is used byte for byte.
///   A cached query's value is the namespace generation it was read under plus the rows (on a
///   byte backend: the generation, a newline, then the rows encoded by the rows' codec).
///
/// Invalidation and the stale-set race: a reader reads the namespace's generation *before*
/// running its SELECT and stores it with its rows; a hit reads the generation and the entry in
/// one `get_multi` and serves the rows only if they carry the current generation. A writer
/// that commits and then bumps the generation (`tables_changed`, `invalidate_namespace`,
/// `WriteScope`) makes every entry made before the bump unservable, so rows a slow reader read
/// before the commit and stores after the bump are never served. Generations live in the region
/// itself (get/set only), so this works on every backend; an evicted generation is replaced by
/// a new random one, which fails safe (a miss, never old rows).
///
/// Thread-safety: a `QueryCache` is safe to share between threads (the region is); the
/// `Database` handed to a call is used only by that call, for as long as it runs.

#include <openssl/rand.h>

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <variant>
#include <vector>

#include "dogpile/detail/sha1.hpp"
#include "dogpile/detail/type_name.hpp"
#include "dogpile/error.hpp"
#include "dogpile/keys.hpp"
#include "dogpile/region.hpp"

namespace dogpile::query {

// ---- values ------------------------------------------------------------------------------

/// Bytes that are a BLOB, not text (SQLite `x'..'`, PostgreSQL `bytea`).
struct Blob {
  std::string bytes;  ///< raw bytes
  friend bool operator==(const Blob&, const Blob&) = default;
  /// nlohmann_json mapping (so rows holding blobs have a codec): the bytes as an array of
  /// numbers, which every JSON format round-trips.
  friend void to_json(nlohmann::json& j, const Blob& b) {
    j = std::vector<std::uint8_t>(b.bytes.begin(), b.bytes.end());
  }
  friend void from_json(const nlohmann::json& j, Blob& b) {
    const auto raw = j.get<std::vector<std::uint8_t>>();
    b.bytes.assign(raw.begin(), raw.end());
  }
};

/// One SQL value: NULL, bool, int64, double, text or blob. What a driver binds and reads.
using Value = std::variant<std::nullptr_t, bool, std::int64_t, double, std::string, Blob>;

}  // namespace dogpile::query

// nlohmann_json mapping of `Value`, so rows of values have a codec on every backend: NULL,
// bool, integer and text as themselves; a finite double as a number, NaN/±inf as
// `{"f": "nan" | "inf" | "-inf"}`; a blob as `{"x": [bytes]}`.
/// @cond
namespace nlohmann {
template <>
struct adl_serializer<dogpile::query::Value> {
  static void to_json(nlohmann::json& j, const dogpile::query::Value& v) {
    switch (v.index()) {
      case 0:
        j = nullptr;
        break;
      case 1:
        j = std::get<bool>(v);
        break;
      case 2:
        j = std::get<std::int64_t>(v);
        break;
      case 3: {
        const double d = std::get<double>(v);
        if (d != d) {
          j = {{"f", "nan"}};
        } else if (d == std::numeric_limits<double>::infinity()) {
          j = {{"f", "inf"}};
        } else if (d == -std::numeric_limits<double>::infinity()) {
          j = {{"f", "-inf"}};
        } else {
          j = d;
        }
        break;
      }
      case 4:
        j = std::get<std::string>(v);
        break;
      default:
        j = {{"x", std::get<dogpile::query::Blob>(v)}};
        break;
    }
  }
  static void from_json(const nlohmann::json& j, dogpile::query::Value& v) {
    if (j.is_null()) {
      v = nullptr;
    } else if (j.is_boolean()) {
      v = j.get<bool>();
    } else if (j.is_number_integer()) {
      v = j.get<std::int64_t>();
    } else if (j.is_number_float()) {
      v = j.get<double>();
    } else if (j.is_string()) {
      v = j.get<std::string>();
    } else if (j.is_object() && j.contains("x")) {
      v = j.at("x").get<dogpile::query::Blob>();
    } else if (j.is_object() && j.contains("f")) {
      const auto f = j.at("f").get<std::string>();
      v = f == "nan"   ? std::numeric_limits<double>::quiet_NaN()
          : f == "inf" ? std::numeric_limits<double>::infinity()
                       : -std::numeric_limits<double>::infinity();
    } else {
      throw nlohmann::json::type_error::create(302, "not a dogpile::query::Value", &j);
    }
  }
};
}  // namespace nlohmann
/// @endcond

namespace dogpile::query {

/// The name of a value's SQL type ("NULL", "bool", "integer", "real", "text", "blob").
inline const char* kind_of(const Value& v) {
  static constexpr const char* kNames[] = {"NULL", "bool", "integer", "real", "text", "blob"};
  return kNames[v.index()];
}

/// The error of a cached query: it names the namespace and the statement. Nothing was cached.
class QueryError : public Error {
 public:
  /// An error of the query (`ns`, `statement`); `detail` says what failed.
  QueryError(std::string ns, std::string statement, const std::string& detail)
      : Error("dogpile::query: namespace '" + ns + "', statement \"" + shorten(statement) +
              "\": " + detail + " (nothing was cached)"),
        ns_(std::move(ns)),
        statement_(std::move(statement)) {}
  /// The query's namespace.
  [[nodiscard]] const std::string& ns() const { return ns_; }
  /// The SQL text.
  [[nodiscard]] const std::string& statement() const { return statement_; }

 private:
  static std::string shorten(const std::string& s) {
    return s.size() <= 200 ? s : s.substr(0, 200) + "...";
  }
  std::string ns_;
  std::string statement_;
};

/// A bound parameter. Converts from NULL (`nullptr`, `std::nullopt`), bool, any integer (to
/// int64), any floating type (to double), text (`std::string`, `std::string_view`,
/// `const char*`), `Blob` and `std::optional` of those.
class Param {
 public:
  /// NULL.
  Param(std::nullptr_t) : v_(nullptr) {}
  /// NULL.
  Param(std::nullopt_t) : v_(nullptr) {}
  /// Any value.
  Param(Value v) : v_(std::move(v)) {}
  /// Text.
  Param(std::string s) : v_(std::move(s)) {}
  /// Text.
  Param(std::string_view s) : v_(std::string(s)) {}
  /// Text (a NUL-terminated string).
  Param(const char* s) : v_(std::string(s)) {}
  /// A blob.
  Param(Blob b) : v_(std::move(b)) {}
  /// A bool (a type of its own in the key: `true` is not `1`).
  template <class T>
  requires std::same_as<T, bool> Param(T b) : v_(b) {}
  /// Any integer type, as int64.
  /// @throws ValidationError for an unsigned value above INT64_MAX.
  template <std::integral T>
  requires(!std::same_as<T, bool>) Param(T i) : v_(std::int64_t{}) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
      if (i > static_cast<T>(std::numeric_limits<std::int64_t>::max())) {
        detail::throw_error<ValidationError>("dogpile::query: parameter " + std::to_string(i) +
                                             " does not fit a signed 64-bit SQL integer");
      }
    }
    v_ = static_cast<std::int64_t>(i);
  }
  /// Any floating type, as double.
  template <std::floating_point T>
  Param(T d) : v_(static_cast<double>(d)) {}
  /// The value, or NULL when empty.
  template <class T>
  Param(const std::optional<T>& o) : v_(o ? Param(*o).value() : Value(nullptr)) {}

  /// The value.
  [[nodiscard]] const Value& value() const { return v_; }
  /// Same type and value (a NaN is not equal to itself).
  friend bool operator==(const Param& a, const Param& b) { return a.v_ == b.v_; }

 private:
  Value v_;
};

/// Bound parameters, in placeholder order.
using Params = std::vector<Param>;

/// One result row, as a driver hands it to the row mapper. Valid only during the call.
class Row {
 public:
  /// A row over `columns` (made by a driver; the row does not copy them).
  explicit Row(std::span<const Value> columns) : cols_(columns) {}
  /// The number of columns.
  [[nodiscard]] std::size_t size() const { return cols_.size(); }
  /// Column `i`. @throws Error when `i` is out of range.
  [[nodiscard]] const Value& operator[](std::size_t i) const {
    if (i >= cols_.size()) {
      detail::throw_error<Error>("column " + std::to_string(i) + " of a " +
                                 std::to_string(cols_.size()) + "-column row");
    }
    return cols_[i];
  }
  /// Every column (to cache raw rows: `std::vector<Value>` has a codec).
  [[nodiscard]] std::vector<Value> values() const { return {cols_.begin(), cols_.end()}; }
  /// Column `i` as `T`: an integer type, bool, float/double, `std::string`, `Blob`, `Value`, or
  /// `std::optional` of one (NULL gives nullopt). Integers widen to doubles; nothing else
  /// converts. @throws Error naming the column and both types when the value does not fit.
  template <class T>
  [[nodiscard]] T get(std::size_t i) const {
    return convert<T>((*this)[i], i);
  }

 private:
  template <class T>
  static T convert(const Value& v, std::size_t i) {
    if constexpr (std::is_same_v<T, Value>) {
      return v;
    } else if constexpr (dogpile::detail::is_optional_v<T>) {
      if (std::holds_alternative<std::nullptr_t>(v)) return std::nullopt;
      return convert<typename T::value_type>(v, i);
    } else if constexpr (std::is_same_v<T, bool>) {
      if (const auto* b = std::get_if<bool>(&v)) return *b;
      if (const auto* n = std::get_if<std::int64_t>(&v)) return *n != 0;
      mismatch<T>(v, i);
    } else if constexpr (std::is_integral_v<T>) {
      if (const auto* n = std::get_if<std::int64_t>(&v)) {
        if (!std::in_range<T>(*n)) {
          detail::throw_error<Error>("column " + std::to_string(i) + " holds " +
                                     std::to_string(*n) + ", out of range of " +
                                     detail::type_name<T>());
        }
        return static_cast<T>(*n);
      }
      if (const auto* b = std::get_if<bool>(&v)) return static_cast<T>(*b);
      mismatch<T>(v, i);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (const auto* d = std::get_if<double>(&v)) return static_cast<T>(*d);
      if (const auto* n = std::get_if<std::int64_t>(&v)) return static_cast<T>(*n);
      mismatch<T>(v, i);
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (const auto* s = std::get_if<std::string>(&v)) return *s;
      mismatch<T>(v, i);
    } else if constexpr (std::is_same_v<T, Blob>) {
      if (const auto* b = std::get_if<Blob>(&v)) return *b;
      mismatch<T>(v, i);
    } else {
      static_assert(!sizeof(T*),
                    "Row::get<T>: T must be an integer, bool, floating point, std::string, "
                    "Blob, Value or std::optional of one");
    }
  }
  template <class T>
  [[noreturn]] static void mismatch(const Value& v, std::size_t i) {
    detail::throw_error<Error>("column " + std::to_string(i) + " holds " + kind_of(v) + ", not " +
                               detail::type_name<T>());
  }

  std::span<const Value> cols_;
};

/// What a driver calls for each row.
using RowSink = std::function<void(const Row&)>;

/// A database driver: `execute(sql, params, sink)` prepares `sql`, binds `params` (in order,
/// to the statement's placeholders), steps through the result and calls `sink` once per row,
/// then resets the statement. It throws (any `std::exception`) when a step fails and lets
/// the sink's exceptions through, leaving the connection usable. Optional:
/// `placeholder(i) -> std::string` (the i-th, 0-based; "?" when absent, "$1".. for PostgreSQL),
/// and `in_transaction() -> bool`: when true, queries bypass the cache (not read, not stored).
template <class D>
concept Database = requires(D& db, std::string_view sql, std::span<const Value> params,
                            const RowSink& sink) {
  db.execute(sql, params, sink);
};

/// Options of one cached query.
struct QueryOptions {
  Expiration expiration_time{};  ///< overrides the region's for this query
  /// Part of the key: change it when the row mapper or the row type changes shape, so that old
  /// entries (another layout) are not read back.
  std::string version{};
  /// A result of more rows than this is returned but not cached (logged at `info`); 0: no
  /// limit. Keeps one huge result from filling the cache or a memcached slab.
  std::size_t max_rows = 0;
  /// A result whose encoding is longer than this many bytes is returned but not cached
  /// (logged at `info`); 0: no limit. The size is that of `dogpile::Codec<std::vector<T>>`'s
  /// encoding in the region's format (computed only when set, on a miss); a `T` without a
  /// codec (possible on the `memory` backend) cannot be measured: QueryError.
  std::size_t max_bytes = 0;
};

namespace detail {

/// What a cached query stores under its key: the rows and the generation of the namespace
/// they were read under (read before the SELECT). A reader serves them only while that is
/// still the namespace's generation.
template <class T>
struct Entry {
  std::string gen;      ///< 32 hex characters
  std::vector<T> rows;  ///< the mapped rows
};

inline void append_len(std::string& out, char tag, std::string_view bytes) {
  out.push_back(tag);
  out += std::to_string(bytes.size());
  out.push_back(':');
  out.append(bytes);
}

/// One parameter in the canonical key encoding (see the file comment).
inline void append_value(std::string& out, const Value& v) {
  static constexpr char kHex[] = "0123456789abcdef";
  switch (v.index()) {
    case 0:
      out.push_back('N');
      break;
    case 1:
      out += std::get<bool>(v) ? "b1" : "b0";
      break;
    case 2:
      out.push_back('i');
      out += std::to_string(std::get<std::int64_t>(v));
      out.push_back(';');
      break;
    case 3: {
      const double d = std::get<double>(v);
      std::uint64_t bits =
          d != d ? std::uint64_t{0x7ff8000000000000} : std::bit_cast<std::uint64_t>(d);
      out.push_back('d');
      for (int shift = 60; shift >= 0; shift -= 4) out.push_back(kHex[(bits >> shift) & 0xF]);
      break;
    }
    case 4:
      append_len(out, 't', std::get<std::string>(v));
      break;
    default:
      append_len(out, 'x', std::get<Blob>(v).bytes);
      break;
  }
}

/// The canonical bytes of (sql, params, extra); their SHA-1 is the last part of the key.
inline std::string canonical(std::string_view sql, std::span<const Param> params,
                             std::string_view extra) {
  std::string out = "dq1\n";
  out.reserve(out.size() + sql.size() + 16 * params.size() + extra.size() + 16);
  append_len(out, 's', sql);
  for (const auto& p : params) append_value(out, p.value());
  append_len(out, 'e', extra);
  return out;
}

/// A fresh generation: 128 random bits (OpenSSL's CSPRNG), as 32 hex chars.
inline std::string new_generation() {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) {
    dogpile::detail::throw_error<Error>("dogpile::query: RAND_bytes failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(32);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xF]);
  }
  return out;
}

inline void check_namespace(std::string_view ns) {
  bool ok = !ns.empty() && ns.size() <= 120;
  for (char c : ns) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == ':') ok = false;
  }
  if (!ok) {
    dogpile::detail::throw_error<ValidationError>(
        "dogpile::query: namespace '" + std::string(ns) +
        "' must be 1-120 bytes with no ':', spaces or control characters (it is part of every "
        "key, and memcached keys allow none of them)");
  }
}

template <class D>
std::string placeholder(D& db, std::size_t i) {
  if constexpr (requires { db.placeholder(i); }) {
    return std::string(db.placeholder(i));
  } else {
    (void)db, (void)i;
    return "?";
  }
}

/// The driver's `in_transaction()`, or false for a driver without one.
template <class D>
bool in_transaction(D& db) {
  if constexpr (requires { db.in_transaction(); }) {
    return static_cast<bool>(db.in_transaction());
  } else {
    (void)db;
    return false;
  }
}

template <class M>
using mapped_t = std::remove_cvref_t<std::invoke_result_t<M&, const Row&>>;

/// Runs `sql` on `db`, mapping each row with `on_row`; every failure becomes a QueryError.
template <class D, class F>
void run(D& db, const std::string& ns, std::string_view sql, std::span<const Value> values,
         F&& on_row) {
  try {
    db.execute(sql, values, [&](const Row& row) {
      try {
        on_row(row);
      } catch (const std::exception& e) {
        throw QueryError(ns, std::string(sql), std::string("the row mapper threw: ") + e.what());
      }
    });
  } catch (const QueryError&) {
    throw;
  } catch (const std::exception& e) {
    throw QueryError(ns, std::string(sql), std::string("the statement failed: ") + e.what());
  }
}

inline std::vector<Value> values_of(std::span<const Param> params) {
  std::vector<Value> out;
  out.reserve(params.size());
  for (const auto& p : params) out.push_back(p.value());
  return out;
}

}  // namespace detail

}  // namespace dogpile::query

/// @cond
namespace dogpile {
/// A cached query's entry on a byte backend: `<generation>\n<rows>`, the rows encoded by the
/// rows' own codec (`Codec<std::vector<T>>`, so any `T` with a codec works) in the region's
/// format. Defined only when the rows have a codec, so `HasCodec` stays false otherwise and
/// the region reports the missing codec at run time.
template <class T>
struct Codec<query::detail::Entry<T>, std::enable_if_t<HasCodec<std::vector<T>>>> {
  static std::string encode(const query::detail::Entry<T>& e, Format f) {
    std::string out = e.gen;
    out.push_back('\n');
    out += Codec<std::vector<T>>::encode(e.rows, f);
    return out;
  }
  static query::detail::Entry<T> decode(std::string_view b, Format f) {
    const auto nl = b.find('\n');
    if (nl == std::string_view::npos) {
      detail::throw_error<CantDeserialize>(
          "dogpile::query: a cached entry without its generation line");
    }
    return {std::string(b.substr(0, nl)), Codec<std::vector<T>>::decode(b.substr(nl + 1), f)};
  }
};
}  // namespace dogpile
/// @endcond

namespace dogpile::query {

template <class Child>
class RelationshipCache;

/// Cached queries over a region (`FromCache`). Cheap to copy: copies share the region and the
/// table -> namespace declarations. Thread-safe.
class QueryCache {
 public:
  /// A query cache over `region` (configured or not yet; it must be by the first query).
  explicit QueryCache(CacheRegion cache_region)
      : region_(std::move(cache_region)), deps_(std::make_shared<Deps>()) {}

  /// The region the rows live in.
  [[nodiscard]] const CacheRegion& region() const { return region_; }

  /// Declares that the queries of namespace `ns` read `tables`: `tables_changed` with one of
  /// them invalidates the namespace. Call at start-up, in every process that writes.
  /// @throws ValidationError for a bad namespace.
  QueryCache& depends_on(std::string_view ns, const std::vector<std::string>& tables) {
    detail::check_namespace(ns);
    std::lock_guard lock(deps_->mu);
    for (const auto& t : tables) deps_->by_table[t].insert(std::string(ns));
    return *this;
  }

  /// The namespaces that depend on `table` (declared with `depends_on`).
  [[nodiscard]] std::vector<std::string> namespaces_of(std::string_view table) const {
    std::lock_guard lock(deps_->mu);
    auto it = deps_->by_table.find(std::string(table));
    if (it == deps_->by_table.end()) return {};
    return {it->second.begin(), it->second.end()};
  }

  /// Every row of `sql` with `params`, mapped by `mapper(const Row&) -> T`, through
  /// `region.get_or_create` (one creator per key under the dogpile lock). An empty result is
  /// cached too. While `db.in_transaction()` (when the driver has it) the query runs uncached. `T`
  /// needs a codec on a byte backend (nlohmann `to_json`/`from_json`).
  /// @throws QueryError (naming `ns` and `sql`) when the statement fails, the mapper throws or
  ///         `T` has no codec: nothing is cached; what the region throws otherwise
  ///         (BackendError, TimeoutError).
  template <Database D, class M, class T = detail::mapped_t<M>>
  std::vector<T> all(D& db, std::string_view ns, std::string_view sql, const Params& params,
                     M&& mapper, const QueryOptions& opts = {}) const {
    return fetch<T>(db, ns, sql, params, mapper, opts, false);
  }

  /// The first row of `sql`, or nullopt for an empty result (cached as such); as `all`.
  template <Database D, class M, class T = detail::mapped_t<M>>
  std::optional<T> one(D& db, std::string_view ns, std::string_view sql, const Params& params,
                       M&& mapper, const QueryOptions& opts = {}) const {
    auto rows = fetch<T>(db, ns, sql, params, mapper, opts, true);
    if (rows.empty()) return std::nullopt;
    return std::move(rows.front());
  }

  /// The key `all` stores the rows of (`ns`, `sql`, `params`) under: `dq:<ns>:<sha1>` (no
  /// generation: the entry holds it).
  [[nodiscard]] std::string key(std::string_view ns, std::string_view sql, const Params& params,
                                const QueryOptions& opts = {}) const {
    detail::check_namespace(ns);
    return make_key(ns, "", sql, params, opts.version);
  }
  /// The key `one` uses.
  [[nodiscard]] std::string key_one(std::string_view ns, std::string_view sql, const Params& params,
                                    const QueryOptions& opts = {}) const {
    detail::check_namespace(ns);
    return make_key(ns, "", sql, params, "one:" + opts.version);
  }

  /// Invalidates one cached query (`all` and `one` with the same SQL, parameters and version):
  /// a delete. It does not stop a reader that is filling the same key at that moment from
  /// storing rows it read before; a write path uses `tables_changed` (a generation bump).
  void invalidate(std::string_view ns, std::string_view sql, const Params& params,
                  const QueryOptions& opts = {}) const {
    region_.erase_multi({key(ns, sql, params, opts), key_one(ns, sql, params, opts)});
  }

  /// Invalidates every cached query of `ns` without touching them: a new generation makes
  /// their keys unreachable (the old entries expire or are evicted by the backend).
  /// @throws ValidationError for a bad namespace; BackendError as `tables_changed`.
  void invalidate_namespace(std::string_view ns) const {
    detail::check_namespace(ns);
    region_.set<std::string>(gen_key(ns), detail::new_generation());
  }

  /// The hook for a write path, called after its transaction commits: invalidates every
  /// namespace declared (`depends_on`) as reading one of `tables`. Returns those namespaces.
  /// @throws BackendError when the region cannot store the new generations (the namespaces
  ///         are then not invalidated: retry). Under `on_backend_error = treat_as_miss` the
  ///         region swallows that failure, and the region's expiration bounds the staleness.
  std::vector<std::string> tables_changed(const std::vector<std::string>& tables) const {
    std::set<std::string> nss;
    for (const auto& t : tables) {
      for (auto& ns : namespaces_of(t)) nss.insert(std::move(ns));
    }
    std::vector<std::pair<std::string, std::string>> items;
    for (const auto& ns : nss) items.emplace_back(gen_key(ns), detail::new_generation());
    if (!items.empty()) region_.set_multi(items);
    return {nss.begin(), nss.end()};
  }

  /// The current generation of `ns` (created and stored when missing).
  [[nodiscard]] std::string generation(std::string_view ns) const {
    const std::string gk = gen_key(ns);
    if (auto g = region_.get<std::string>(gk, {.ignore_expiration = true})) return std::move(*g);
    // Missing (never set, evicted or lost): a new random one, made under the dogpile lock so
    // that concurrent readers agree on it (each with its own would key the same query apart,
    // and each run the SELECT). Whichever value ends up stored, the rows a reader stores are
    // keyed by the generation it read before its SELECT, and a replaced value never comes back.
    return region_.get_or_create<std::string>(gk, [] { return detail::new_generation(); },
                                              {.expiration_time = dogpile::never});
  }

  /// The region key holding the generation of `ns`.
  [[nodiscard]] static std::string gen_key(std::string_view ns) { return "dqg:" + std::string(ns); }

  /// The key for (`ns`, `generation`, `sql`, `params`, `extra`): `dq:<ns>:<generation>:<sha1>`,
  /// or `dq:<ns>:<sha1>` for an empty generation (cached queries); see the file comment.
  [[nodiscard]] static std::string make_key(std::string_view ns, std::string_view generation,
                                            std::string_view sql, std::span<const Param> params,
                                            std::string_view extra) {
    std::string k = "dq:";
    k.append(ns);
    k.push_back(':');
    if (!generation.empty()) {
      k.append(generation);
      k.push_back(':');
    }
    k += dogpile::detail::sha1_hex(detail::canonical(sql, params, extra));
    return k;
  }

 private:
  template <class Child>
  friend class RelationshipCache;

  struct Deps {
    mutable std::mutex mu;
    std::map<std::string, std::set<std::string>> by_table;
  };

  template <class T, class D, class M>
  std::vector<T> fetch(D& db, std::string_view ns_view, std::string_view sql, const Params& params,
                       M& mapper, const QueryOptions& opts, bool first_only) const {
    static_assert(std::is_invocable_v<M&, const Row&>,
                  "the row mapper must take a `const dogpile::query::Row&`");
    const std::string ns(ns_view);
    detail::check_namespace(ns);
    auto select = [&]() {
      const std::vector<Value> values = detail::values_of(params);
      std::vector<T> rows;
      detail::run(db, ns, sql, values, [&](const Row& row) {
        if (first_only && !rows.empty()) return;
        rows.push_back(mapper(row));
      });
      return rows;
    };
    // Inside a transaction the rows may include its own uncommitted writes (or be rolled back):
    // neither served from nor stored in the cache.
    if (detail::in_transaction(db)) return select();
    return guard(ns, sql, [&] {
      return cached_rows<T>(
          ns, make_key(ns, "", sql, params, first_only ? "one:" + opts.version : opts.version), sql,
          opts, select);
    });
  }

  /// The rows under `rows_key`, or `select()`'s, under the region's dogpile lock for that key.
  /// One backend round trip on a hit: the namespace's generation and the entry are read with
  /// one `get_multi`, and the entry is served only if it was made under that generation (a
  /// mismatch is a miss). The generation a creator stores is the one its caller read before
  /// the SELECT, so rows read before a writer's commit and stored after its bump carry the old
  /// generation and are never served (the stale-set race; see the file comment).
  template <class T, class Select>
  std::vector<T> cached_rows(const std::string& ns, const std::string& rows_key,
                             std::string_view sql, const QueryOptions& opts, Select& select) const {
    using Rows = std::vector<T>;
    const CacheRegion& r = region_;
    const Expiration region_exp = r.expiration_time();  // by value: or_else returns a reference
    const Expiration& e = opts.expiration_time.or_else(region_exp);
    const std::optional<std::chrono::milliseconds> exp =
        e.is_set() ? e.resolve() : std::optional<std::chrono::milliseconds>{};
    std::string gen;  // the generation of the latest read, taken before any SELECT
    auto read = [&]() -> std::optional<Cached<Rows>> {
      auto [gens, entries] = r.get_multi_cached<std::string, detail::Entry<T>>(
          {gen_key(ns), rows_key}, 1, {.ignore_expiration = true},
          {.expiration_time = opts.expiration_time});
      gen = gens[0] ? std::move(gens[0]->value) : generation(ns);  // made under its lock
      auto& entry = entries[0];
      if (!entry || entry->value.gen != gen) return std::nullopt;
      return Cached<Rows>{std::move(entry->value.rows), entry->created, entry->delta};
    };
    auto create = [&]() -> Cached<Rows> {
      const std::string under = gen;
      const auto t0 = std::chrono::steady_clock::now();
      Rows rows = select();
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - t0;
      if (cacheable(ns, sql, rows, opts)) r.set(rows_key, detail::Entry<T>{under, rows});
      return {std::move(rows), std::chrono::system_clock::now(), took};
    };
    const RegionOptions& ro = r.options();
    const LockOptions lo{.expiration = exp,
                         .stale_policy = ro.stale_policy,
                         .early_refresh = ro.early_refresh,
                         .lock_timeout = ro.lock_timeout,
                         .clock = ro.clock};
    // The lock's outcomes count as get_or_create's do: a hit, a miss and its creation, a wait,
    // a lease lost under a slow SELECT (reported, not lost in silence). The SELECT always runs
    // in the caller's thread, never on the region's async_creation_runner: it uses the
    // caller's database connection, which another thread must not touch.
    auto observe = [&](LockEvent ev, std::chrono::nanoseconds d) {
      r.report_lock_event(ev, rows_key, d);
    };
    return dogpile::detail::run_dogpile_lock<Rows>([&] { return r.mutex_for(rows_key); }, read,
                                                   create, nullptr, false, lo, exp, observe);
  }

  /// False (and logged) when `rows` exceed the query's `max_rows` or `max_bytes`.
  template <class T>
  bool cacheable(const std::string& ns, std::string_view sql, const std::vector<T>& rows,
                 const QueryOptions& opts) const {
    std::string why;
    if (opts.max_rows != 0 && rows.size() > opts.max_rows) {
      why = std::to_string(rows.size()) + " rows, above max_rows " + std::to_string(opts.max_rows);
    } else if (opts.max_bytes != 0) {
      if constexpr (HasCodec<std::vector<T>>) {
        const std::size_t n =
            Codec<std::vector<T>>::encode(rows, region_.options().codec.format).size();
        if (n > opts.max_bytes) {
          why = std::to_string(n) + " bytes encoded, above max_bytes " +
                std::to_string(opts.max_bytes);
        }
      } else {
        throw QueryError(ns, std::string(sql),
                         "max_bytes needs a codec for the row type " +
                             dogpile::detail::type_name<T>() + " to measure the rows");
      }
    }
    if (why.empty()) return true;
    dogpile::detail::log(LogLevel::info, "dogpile::query: namespace '" + ns + "', statement \"" +
                                             std::string(sql.substr(0, 200)) + "\": " + why +
                                             ": returned, not cached");
    return false;
  }

  /// Region errors other than backend failures (a type without a codec, a type mismatch)
  /// become QueryErrors that name the query.
  template <class F>
  static auto guard(const std::string& ns, std::string_view sql, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const QueryError&) {
      throw;
    } catch (const BackendError&) {
      throw;
    } catch (const Error& e) {
      throw QueryError(ns, std::string(sql), e.what());
    }
  }

  CacheRegion region_;
  std::shared_ptr<Deps> deps_;
};

/// A write path's scope: bumps the generations of the namespaces that depend on `tables`
/// when it is made (before the write transaction begins) and again when it ends (after the
/// commit, or the rollback). The second bump is the one that closes the stale-set race: a
/// reader that read the generation after the first bump and the old rows before the commit
/// stores them under a generation that the second bump has already replaced. The first one
/// makes rows cached before the write unreachable even if the process dies between its commit
/// and the second bump.
///
/// ```
/// {
///   dogpile::query::WriteScope scope(cache, {"users"});
///   db.execute("BEGIN"); db.execute("UPDATE users ..."); db.execute("COMMIT");
///   scope.finish();  // the second bump; its failure throws (else the destructor bumps)
/// }
/// ```
/// Thread-safety: one scope per write, used by one thread.
class WriteScope {
 public:
  /// Bumps the namespaces of `tables` (`QueryCache::tables_changed`).
  /// @throws BackendError when the region cannot store the generations (nothing was written
  ///         yet: retry or fail the write).
  WriteScope(QueryCache cache, std::vector<std::string> tables)
      : cache_(std::move(cache)), tables_(std::move(tables)) {
    cache_.tables_changed(tables_);
  }
  WriteScope(const WriteScope&) = delete;
  WriteScope& operator=(const WriteScope&) = delete;
  /// The second bump, if `finish` did not run; a failure is logged (a warning), not thrown:
  /// the rows cached during the write then live until they expire.
  ~WriteScope() {
    if (done_) return;
    try {
      cache_.tables_changed(tables_);
    } catch (const std::exception& e) {
      dogpile::detail::log(LogLevel::warning,
                           std::string("dogpile::query: WriteScope could not bump the "
                                       "generations after the write: ") +
                               e.what());
    }
  }
  /// The second bump, now (call after the commit returns); returns the namespaces bumped.
  /// @throws BackendError as `tables_changed` (the destructor then tries once more).
  std::vector<std::string> finish() {
    auto nss = cache_.tables_changed(tables_);
    done_ = true;
    return nss;
  }

 private:
  QueryCache cache_;
  std::vector<std::string> tables_;
  bool done_ = false;
};

/// A relationship: the child rows of a parent key (`RelationshipCache`'s declaration).
template <class Child>
struct Relationship {
  std::string ns;  ///< namespace, e.g. "user_posts"
  /// The child SELECT; `:parents` marks where the parent keys go, e.g.
  /// `SELECT id, user_id, title FROM posts WHERE user_id IN (:parents) ORDER BY id`.
  std::string sql;
  std::function<Child(const Row&)> map;          ///< row -> child
  std::function<Param(const Child&)> parent_of;  ///< child -> its parent key
  std::vector<std::string> tables{};             ///< tables the SELECT reads (child table...)
  QueryOptions options{};                        ///< expiration and version
};

/// Caches a relationship per parent key: `load(db, parent)` and `load_many(db, parents)` go
/// through the region (one `get_multi` and one `IN (...)` query for the misses only);
/// `invalidate({a, b})` after a child write (moving a child from a to b: both) makes exactly
/// those parents' entries unreachable (a per-parent generation, race-free like namespaces);
/// `QueryCache::tables_changed` with one of `tables` invalidates every parent. Thread-safe.
template <class Child>
class RelationshipCache {
 public:
  /// @throws ValidationError for a bad namespace, an SQL text without `:parents`, or a missing
  ///         `map` / `parent_of`.
  RelationshipCache(QueryCache query_cache, Relationship<Child> relationship)
      : cache_(std::move(query_cache)), rel_(std::move(relationship)) {
    detail::check_namespace(rel_.ns);
    if (rel_.sql.find(":parents") == std::string::npos || !rel_.map || !rel_.parent_of) {
      dogpile::detail::throw_error<ValidationError>(
          "dogpile::query: relationship '" + rel_.ns +
          "' needs an SQL text with ':parents' (where the parent keys go), a row mapper and "
          "parent_of");
    }
    if (!rel_.tables.empty()) cache_.depends_on(rel_.ns, rel_.tables);
  }

  /// The declaration.
  [[nodiscard]] const Relationship<Child>& relationship() const { return rel_; }

  /// The children of `parent`. @throws as `load_many`.
  template <Database D>
  std::vector<Child> load(D& db, const Param& parent) const {
    return std::move(load_many(db, {parent}).front());
  }

  /// The children of each parent, in order: one region read for all (the generations, then the
  /// rows), one SELECT with `IN (...)` for the parents that missed (chunks of 500).
  /// @throws QueryError (naming the namespace and statement): the statement failed, a mapper
  ///         threw, `Child` has no codec, or a child's parent is not one of the parents asked
  ///         for; nothing is cached then.
  template <Database D>
  std::vector<std::vector<Child>> load_many(D& db, const std::vector<Param>& parents) const {
    if (parents.empty()) return {};
    if (detail::in_transaction(db)) return query_children(db, parents);  // see QueryCache::all
    const std::vector<std::string> keys = current_keys(parents);
    std::unordered_map<std::string, std::size_t> parent_of_key;
    for (std::size_t i = 0; i < keys.size(); ++i) parent_of_key.emplace(keys[i], i);
    auto creator = [&](std::span<const std::string> missing) {
      std::vector<Param> wanted;
      wanted.reserve(missing.size());
      for (const auto& k : missing) wanted.push_back(parents[parent_of_key.at(k)]);
      return query_children(db, wanted);
    };
    return QueryCache::guard(rel_.ns, rel_.sql, [&] {
      return cache_.region_.get_or_create_multi<std::vector<Child>>(
          keys, creator, {.expiration_time = rel_.options.expiration_time});
    });
  }

  /// Invalidates the entries of `parents` (call after the child write commits; for a child
  /// that moved, name both the old and the new parent).
  void invalidate(const std::vector<Param>& parents) const {
    std::vector<std::pair<std::string, std::string>> items;
    items.reserve(parents.size());
    for (const auto& p : parents) items.emplace_back(parent_gen_key(p), detail::new_generation());
    if (!items.empty()) cache_.region_.set_multi(items);
  }

  /// Invalidates every parent's entry (a new namespace generation).
  void invalidate_all() const { cache_.invalidate_namespace(rel_.ns); }

  /// The keys `load_many` uses now, one per parent.
  [[nodiscard]] std::vector<std::string> current_keys(const std::vector<Param>& parents) const {
    std::vector<std::string> gkeys;
    gkeys.reserve(parents.size() + 1);
    gkeys.push_back(QueryCache::gen_key(rel_.ns));
    for (const auto& p : parents) gkeys.push_back(parent_gen_key(p));
    auto gens = cache_.region_.get_multi<std::string>(gkeys, {.ignore_expiration = true});
    // Missing generations are made under the dogpile lock, as QueryCache::generation does, so
    // that concurrent loads of one parent agree on its key.
    std::vector<std::string> missing;
    for (std::size_t i = 0; i < gens.size(); ++i) {
      if (!gens[i]) missing.push_back(gkeys[i]);
    }
    if (!missing.empty()) {
      const auto made = cache_.region_.get_or_create_multi<std::string>(
          missing,
          [](std::span<const std::string> ks) {
            std::vector<std::string> out;
            out.reserve(ks.size());
            for (std::size_t j = 0; j < ks.size(); ++j) out.push_back(detail::new_generation());
            return out;
          },
          {.expiration_time = dogpile::never});
      std::size_t m = 0;
      for (auto& g : gens) {
        if (!g) g = made[m++];
      }
    }
    std::vector<std::string> keys;
    keys.reserve(parents.size());
    for (std::size_t i = 0; i < parents.size(); ++i) {
      keys.push_back(QueryCache::make_key(rel_.ns, *gens[0], rel_.sql,
                                          std::span<const Param>(&parents[i], 1),
                                          rel_.options.version + "|" + *gens[i + 1]));
    }
    return keys;
  }

 private:
  std::string parent_gen_key(const Param& p) const {
    return QueryCache::gen_key(rel_.ns) + ":" +
           dogpile::detail::sha1_hex(detail::canonical("", std::span<const Param>(&p, 1), ""));
  }

  template <class D>
  std::vector<std::vector<Child>> query_children(D& db, const std::vector<Param>& wanted) const {
    std::vector<std::vector<Child>> out(wanted.size());
    constexpr std::size_t kChunk = 500;
    for (std::size_t begin = 0; begin < wanted.size(); begin += kChunk) {
      const std::size_t end = std::min(wanted.size(), begin + kChunk);
      std::string marks;
      std::vector<Value> values;
      for (std::size_t i = begin; i < end; ++i) {
        if (i != begin) marks += ", ";
        marks += detail::placeholder(db, i - begin);
        values.push_back(wanted[i].value());
      }
      std::string sql = rel_.sql;
      sql.replace(sql.find(":parents"), std::string_view(":parents").size(), marks);
      detail::run(db, rel_.ns, sql, values, [&](const Row& row) {
        Child c = rel_.map(row);
        const Param parent = rel_.parent_of(c);
        auto it = std::find(wanted.begin() + static_cast<std::ptrdiff_t>(begin),
                            wanted.begin() + static_cast<std::ptrdiff_t>(end), parent);
        if (it == wanted.begin() + static_cast<std::ptrdiff_t>(end)) {
          dogpile::detail::throw_error<Error>(
              std::string("parent_of gave a ") + kind_of(parent.value()) +
              " parent key that is not one of the parents queried (a typed key: 1 and \"1\" "
              "differ)");
        }
        out[static_cast<std::size_t>(it - wanted.begin())].push_back(std::move(c));
      });
    }
    return out;
  }

  QueryCache cache_;
  Relationship<Child> rel_;
};

}  // namespace dogpile::query
