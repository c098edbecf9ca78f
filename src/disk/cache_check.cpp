// DiskCache check(): SQLite's integrity check, rows whose value file is missing, foreign or of
// the wrong size, unknown files and empty directories, and the count / size counters.
#include "cache_impl.hpp"
#include "cache_sql.hpp"

#include <algorithm>
#include <tuple>

namespace dogpile {

using namespace std::chrono_literals;

std::vector<CheckWarning> DiskCache::check(bool fix, bool retry) {
  auto& impl = *impl_;
  std::vector<CheckWarning> out;
  using K = CheckWarning::Kind;
  Connection& c = impl.conn();
  c.arm(impl.options().timeout, retry);
  {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(c.db(), "PRAGMA integrity_check", -1, &s, nullptr);
    if (rc != SQLITE_OK) c.fail(rc, "PRAGMA integrity_check");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      auto msg = detail::column_opt_text(s, 0).value_or("");
      if (msg != "ok") out.push_back({K::integrity, "integrity check: " + msg});
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) c.fail(rc, "PRAGMA integrity_check");
  }
  if (fix) {
    impl.flush(true);
    c.arm(impl.options().timeout, retry);
    c.exec("VACUUM");
  }
  Txn tx(impl, c, retry);
  const fs::path& dir = impl.dir();
  std::vector<std::string> known;
  {
    std::vector<std::tuple<std::int64_t, std::int64_t, std::string>> rows;
    sqlite3_stmt* s =
        c.prepare("SELECT rowid, size, filename FROM Cache WHERE filename IS NOT NULL");
    {
      StmtGuard g(s);
      while (detail::step(c, s, "check")) {
        rows.emplace_back(sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
                          detail::column_opt_text(s, 2).value_or(""));
      }
    }
    for (const auto& [rowid, size, rel] : rows) {
      auto delete_row = [&c, id = rowid] {
        sqlite3_stmt* d = c.prepare(detail::kDeleteRowid);
        StmtGuard g(d);
        sqlite3_bind_int64(d, 1, id);
        detail::step(c, d, "check fix");
      };
      std::int64_t real = 0;
      auto state = detail::stat_value_file(dir, rel, &real);
      if (state == detail::ValueFileState::unsafe) {
        // A tampered row (a foreign name or a symlink): the row goes, the file it names is
        // never touched (a symlink inside the directory is removed below as an unknown file).
        out.push_back({K::bad_filename, "row " + std::to_string(rowid) +
                                            " names a file that is not this cache's own value "
                                            "file (a foreign name or a symlink): '" +
                                            rel.substr(0, 200) + "'"});
        if (fix) delete_row();
        continue;
      }
      fs::path full = dir / rel;
      if (state == detail::ValueFileState::missing) {
        out.push_back({K::missing_file, "file not found: " + full.string()});
        if (fix) delete_row();
        continue;
      }
      known.push_back(full.lexically_normal().string());
      if (static_cast<std::int64_t>(real) != size) {
        out.push_back({K::file_size, "wrong file size: " + full.string() + ", " +
                                         std::to_string(size) + " != " + std::to_string(real)});
        if (fix) {
          sqlite3_stmt* u = c.prepare("UPDATE Cache SET size = ? WHERE rowid = ?");
          StmtGuard g(u);
          sqlite3_bind_int64(u, 1, static_cast<std::int64_t>(real));
          sqlite3_bind_int64(u, 2, rowid);
          detail::step(c, u, "check fix");
        }
      }
    }
  }
  std::sort(known.begin(), known.end());
  {
    std::error_code ec;
    std::vector<fs::path> unknown;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      // symlink_status: a symlink (to anywhere) is itself an unknown file of the directory;
      // what it points to is neither read nor removed.
      auto st = it->symlink_status(ec);
      if (ec || !(fs::is_regular_file(st) || fs::is_symlink(st))) continue;
      std::string p = it->path().lexically_normal().string();
      if (it->path().filename().string().find("cache.db") != std::string::npos) continue;
      if (!std::binary_search(known.begin(), known.end(), p)) unknown.push_back(it->path());
    }
    for (const auto& p : unknown) {
      out.push_back({K::unknown_file, "unknown file: " + p.string()});
      if (fix) detail::remove_inside(dir, p.lexically_relative(dir), false);
    }
  }
  {
    std::error_code ec;
    std::vector<fs::path> dirs;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (fs::is_directory(it->symlink_status(ec))) dirs.push_back(it->path());
    }
    // Deepest first, so parents emptied by the fix are seen too.
    std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
      return a.string().size() > b.string().size();
    });
    for (const auto& d : dirs) {
      if (fs::is_empty(d, ec) && !ec) {
        out.push_back({K::empty_dir, "empty directory: " + d.string()});
        if (fix) detail::remove_inside(dir, d.lexically_relative(dir), true);
      }
    }
  }
  auto scalar = [&](const char* sql) {
    sqlite3_stmt* s = c.prepare(sql);
    StmtGuard g(s);
    detail::step(c, s, "check");
    return sqlite3_column_int64(s, 0);
  };
  std::int64_t count = scalar("SELECT COUNT(key) FROM Cache");
  std::int64_t size = scalar("SELECT COALESCE(SUM(size), 0) FROM Cache");
  for (auto [name, actual, kind] :
       {std::tuple{"count", count, K::count}, std::tuple{"size", size, K::size}}) {
    auto stored = impl.read_setting(c, name);
    // A tampered counter (text, a blob, a negative number) is a wrong counter, fixed the same.
    std::optional<std::int64_t> v;
    if (stored && !detail::setting_error(name, *stored)) v = detail::as_int(*stored, name);
    if (v != actual) {
      out.push_back({kind, std::string("Settings.") + name + " = " +
                               (stored ? detail::describe_setting(*stored) : "(missing)") +
                               " != actual " + std::to_string(actual)});
      if (fix) {
        sqlite3_stmt* u = c.prepare(detail::kSettingPut);
        StmtGuard g(u);
        detail::bind_text(u, 1, name);
        sqlite3_bind_int64(u, 2, actual);
        detail::step(c, u, "check fix");
      }
    }
  }
  tx.commit();
  return out;
}

}  // namespace dogpile
