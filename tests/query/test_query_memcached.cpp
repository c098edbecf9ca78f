// dogpile::query on a real memcached (started by tests/support/servers.hpp): cached queries,
// one backend read per hit, the generation bump, WriteScope, the size limits and relationships
// over a byte backend with memcached's key rules (no spaces, at most 250 bytes).
#include <catch2/catch.hpp>

#include "dogpile/backends/memcached.hpp"
#include "query/query_test_support.hpp"
#include "support/servers.hpp"

namespace {

dogpile::test::MemcachedServer& query_memcached() {
  static dogpile::test::MemcachedServer s;
  return s;
}

dogpile::CacheRegion memcached_region() {
  auto r = dogpile::make_region();
  r.configure(std::make_shared<dogpile::MemcachedBackend>(dogpile::MemcachedOptions{
      .url = {query_memcached().address()}, .socket_timeout = std::chrono::seconds(1)}));
  return r;
}

}  // namespace

TEST_CASE("query memcached: cached queries, invalidation, limits and relationships") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  qtest::CountingDb db{&sqlite};
  const std::string ns = "mc" + std::to_string(::getpid());
  dogpile::query::QueryCache cache(memcached_region());
  cache.depends_on(ns, {"users"});
  // Another process's view: its own region (connection) on the same server.
  dogpile::query::QueryCache other(memcached_region());
  other.depends_on(ns, {"users"});

  CHECK(cache.one(db, ns, qtest::kUserSql, {1}, qtest::map_user)->name == "ed");
  CHECK(other.one(db, ns, qtest::kUserSql, {1}, qtest::map_user)->name == "ed");
  const auto everyone =
      cache.all(db, ns, "SELECT id, name FROM users ORDER BY id", {}, qtest::map_user);
  CHECK(other.all(db, ns, "SELECT id, name FROM users ORDER BY id", {}, qtest::map_user) ==
        everyone);
  CHECK(db.count == 2);  // the second reads were served by memcached

  // A write through a WriteScope in one process; the other never sees the old row again.
  {
    dogpile::query::WriteScope scope(cache, {"users"});
    sqlite.execute("UPDATE users SET name = 'edward' WHERE id = 1");
    scope.finish();
  }
  CHECK(other.one(db, ns, qtest::kUserSql, {1}, qtest::map_user)->name == "edward");
  CHECK(cache.one(db, ns, qtest::kUserSql, {1}, qtest::map_user)->name == "edward");
  CHECK(db.count == 3);

  // The generation is gone (memcached evicted it): a miss, never the older rows.
  sqlite.execute("UPDATE users SET name = 'ted' WHERE id = 1");
  cache.region().erase(dogpile::query::QueryCache::gen_key(ns));
  CHECK(other.one(db, ns, qtest::kUserSql, {1}, qtest::map_user)->name == "ted");

  // Above max_bytes: returned, not cached.
  db.count = 0;
  const dogpile::query::QueryOptions tiny{.version = "tiny", .max_bytes = 8};
  CHECK(cache.all(db, ns, "SELECT id, name FROM users ORDER BY id", {}, qtest::map_user, tiny)
            .size() == everyone.size());
  CHECK(cache.all(db, ns, "SELECT id, name FROM users ORDER BY id", {}, qtest::map_user, tiny)
            .size() == everyone.size());
  CHECK(db.count == 2);

  // A relationship: one IN (...) for the misses, then served for both processes.
  dogpile::query::RelationshipCache<qtest::Post> posts(
      cache, {.ns = ns + "_posts",
              .sql = qtest::kPostsSql,
              .map = qtest::map_post,
              .parent_of = [](const qtest::Post& p) { return dogpile::query::Param(p.user_id); },
              .tables = {"posts"}});
  dogpile::query::RelationshipCache<qtest::Post> posts_other(other, posts.relationship());
  db.count = 0;
  const auto loaded = posts.load_many(db, {1, 2});
  CHECK(posts_other.load_many(db, {1, 2}) == loaded);
  CHECK(db.count == 1);
}
