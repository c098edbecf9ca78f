#pragma once
/// @file query/postgres.hpp
/// The PostgreSQL driver of `dogpile::query` (libpqxx 6.4+), built when libpqxx was found at
/// configure time (`DOGPILE_QUERY_HAS_POSTGRES` is then defined; Debian: `libpqxx-dev`).
///
/// Placeholders are `$1`, `$2`, ... Parameters go as text (the server infers their types, as
/// libpqxx's `exec_params` does); a blob goes as `bytea` hex text. Columns come back typed by
/// their type OID: bool, int2/4/8 -> integer, float4/8 -> real, bytea -> blob, NULL; every
/// other type (numeric, dates, varchar...) as its text.

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "dogpile/query.hpp"
#include "dogpile/query/sqlite.hpp"  // DatabaseError

namespace dogpile::query {

/// A PostgreSQL connection for cached queries. Each `execute` runs in autocommit (a
/// `pqxx::nontransaction`). Not thread-safe: one per thread. Move-only.
class PostgresDatabase {
 public:
  /// Connects with a libpq connection string (`"host=... port=... dbname=..."`); a
  /// `connect_timeout=5` is added when it names none.
  /// @throws DatabaseError when the connection fails.
  explicit PostgresDatabase(const std::string& conninfo);
  /// Takes over `other`'s connection.
  PostgresDatabase(PostgresDatabase&& other) noexcept;
  /// Takes over `other`'s connection (closing this one's if it owns it).
  PostgresDatabase& operator=(PostgresDatabase&& other) noexcept;
  /// Finalizes the statements; closes the connection if this object opened it.
  ~PostgresDatabase();

  /// Runs `sql` with `params` ($1...), calling `sink` for each row.
  /// @throws DatabaseError (the server's message; a text parameter with a NUL byte); what
  ///         `sink` throws.
  void execute(std::string_view sql, std::span<const Value> params, const RowSink& sink);
  /// `execute` for statements whose rows are not wanted (DDL, writes).
  void execute(std::string_view sql, std::span<const Value> params = {});
  /// Runs a script of `;`-separated statements without parameters (the simple query protocol).
  /// @throws DatabaseError.
  void exec_script(const std::string& sql);
  /// "$<i+1>".
  [[nodiscard]] static std::string placeholder(std::size_t i) {
    return "$" + std::to_string(i + 1);
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dogpile::query
