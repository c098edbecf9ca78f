// The PostgreSQL driver of dogpile::query over libpqxx 6.4 (text parameters, typed columns).
#include "dogpile/query/postgres.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <pqxx/pqxx>
#include <vector>

namespace dogpile::query {

namespace {

// Type OIDs (Debian's libpq ships no pg_type_d.h): the stable, documented built-in ones.
constexpr pqxx::oid kBool = 16, kBytea = 17, kInt8 = 20, kInt2 = 21, kInt4 = 23, kFloat4 = 700,
                    kFloat8 = 701;

std::string double_text(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest round-trip
  return std::string(buf, r.ptr);
}

std::string bytea_hex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\\x";
  out.reserve(2 + 2 * bytes.size());
  for (char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xF]);
  }
  return out;
}

}  // namespace

struct PostgresDatabase::Impl {
  std::unique_ptr<pqxx::connection> conn;
};

PostgresDatabase::PostgresDatabase(const std::string& conninfo) : impl_(std::make_unique<Impl>()) {
  std::string ci = conninfo;
  if (ci.find("connect_timeout") == std::string::npos) ci += " connect_timeout=5";
  try {
    impl_->conn = std::make_unique<pqxx::connection>(ci);
  } catch (const std::exception& e) {
    throw DatabaseError(std::string("PostgreSQL connect: ") + e.what());
  }
}

PostgresDatabase::PostgresDatabase(PostgresDatabase&&) noexcept = default;
PostgresDatabase& PostgresDatabase::operator=(PostgresDatabase&&) noexcept = default;
PostgresDatabase::~PostgresDatabase() = default;

void PostgresDatabase::exec_script(const std::string& sql) {
  try {
    pqxx::nontransaction tx(*impl_->conn);
    tx.exec(sql);
  } catch (const std::exception& e) {
    throw DatabaseError(std::string("PostgreSQL: ") + e.what());
  }
}

void PostgresDatabase::execute(std::string_view sql, std::span<const Value> params) {
  execute(sql, params, [](const Row&) {});
}

void PostgresDatabase::execute(std::string_view sql, std::span<const Value> params,
                               const RowSink& sink) {
  // One container type for libpqxx's dynamic parameters: C strings, nullptr for NULL.
  std::vector<std::string> texts(params.size());
  std::vector<const char*> args(params.size(), nullptr);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Value& v = params[i];
    switch (v.index()) {
      case 0:
        continue;
      case 1:
        texts[i] = std::get<bool>(v) ? "true" : "false";
        break;
      case 2:
        texts[i] = std::to_string(std::get<std::int64_t>(v));
        break;
      case 3:
        texts[i] = double_text(std::get<double>(v));
        break;
      case 4:
        texts[i] = std::get<std::string>(v);
        if (texts[i].find('\0') != std::string::npos) {
          throw DatabaseError("PostgreSQL bind: text parameter " + std::to_string(i + 1) +
                              " holds a NUL byte (PostgreSQL text cannot; use a Blob/bytea)");
        }
        break;
      default:
        texts[i] = bytea_hex(std::get<Blob>(v).bytes);
        break;
    }
    args[i] = texts[i].c_str();
  }
  pqxx::result result;
  try {
    pqxx::nontransaction tx(*impl_->conn);
    result = tx.exec_params(std::string(sql), pqxx::prepare::make_dynamic_params(args));
  } catch (const std::exception& e) {
    throw DatabaseError(std::string("PostgreSQL: ") + e.what());
  }
  const auto ncols = static_cast<std::size_t>(result.columns());
  std::vector<pqxx::oid> types(ncols);
  for (std::size_t c = 0; c < ncols; ++c) {
    types[c] = result.column_type(static_cast<pqxx::row::size_type>(c));
  }
  std::vector<Value> row(ncols);
  for (const auto& r : result) {
    for (std::size_t c = 0; c < ncols; ++c) {
      const pqxx::field f = r[static_cast<pqxx::row::size_type>(c)];
      auto& out = row[c];
      if (f.is_null()) {
        out = nullptr;
        continue;
      }
      try {
        switch (types[c]) {
          case kBool:
            out = f.as<bool>();
            break;
          case kInt2:
          case kInt4:
          case kInt8:
            out = f.as<std::int64_t>();
            break;
          case kFloat4:
          case kFloat8:
            out = f.as<double>();
            break;
          case kBytea: {
            const pqxx::binarystring b(f);
            out = Blob{b.str()};
            break;
          }
          default:
            out = std::string(f.c_str(), f.size());
            break;
        }
      } catch (const std::exception& e) {
        throw DatabaseError("PostgreSQL column " + std::to_string(c) + ": " + e.what());
      }
    }
    sink(Row(row));
  }
}

}  // namespace dogpile::query
