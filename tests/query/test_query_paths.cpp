// dogpile::query's hit path and write path: a hit is one backend read (the namespace's
// generation and the entry together), WriteScope's bump after the commit closes the stale-set
// race (threads in injected order), and the per-query size limits.
#include <catch2/catch.hpp>

#include <atomic>
#include <semaphore>
#include <thread>

#include "query/query_test_support.hpp"
#include "support/captured_log.hpp"
#include "support/servers.hpp"

namespace {

// Counts the backend reads that reach the wrapped backend.
class ReadCounter final : public dogpile::ProxyBackend {
 public:
  std::atomic<int> reads{0};

 protected:
  std::optional<std::string> do_get(std::string_view key) override {
    ++reads;
    return ProxyBackend::do_get(key);
  }
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override {
    ++reads;
    return ProxyBackend::do_get_multi(keys);
  }
  std::optional<dogpile::StoredObject> do_get_object(std::string_view key) override {
    ++reads;
    return ProxyBackend::do_get_object(key);
  }
  std::vector<std::optional<dogpile::StoredObject>> do_get_objects(
      std::span<const std::string> keys) override {
    ++reads;
    return ProxyBackend::do_get_objects(keys);
  }
};

struct Unencodable {  // no codec: fine on `memory`, not measurable for max_bytes
  std::int64_t id = 0;
};

}  // namespace

TEST_CASE("query: a hit is one backend read, on object and byte backends") {
  for (const char* backend : {"memory", "memory_serialized"}) {
    INFO(backend);
    dogpile::test::TempDir dir;
    auto sqlite = qtest::make_db(dir.path() / "app.db");
    qtest::CountingDb db{&sqlite};
    auto counter = std::make_shared<ReadCounter>();
    dogpile::TimePoint now = std::chrono::system_clock::now();
    auto region = dogpile::make_region({.clock = [&] { return now; }});
    region.configure(backend, {.wrap = {counter}});
    dogpile::query::QueryCache cache(region);
    cache.depends_on("user", {"users"});

    CHECK(cache.one(db, "user", qtest::kUserSql, {1}, qtest::map_user)->name == "ed");
    counter->reads = 0;
    CHECK(cache.one(db, "user", qtest::kUserSql, {1}, qtest::map_user)->name == "ed");
    CHECK(cache.all(db, "user", qtest::kUserSql, {1}, qtest::map_user).size() == 1);
    CHECK(cache.all(db, "user", qtest::kUserSql, {1}, qtest::map_user).size() == 1);
    CHECK(db.count == 2);  // one SELECT for `one`, one for `all`
    // The second `one` (1), the first `all` (a miss: its read, and the re-read under the
    // lock), the second `all` (1).
    CHECK(counter->reads == 4);
    counter->reads = 0;
    CHECK(cache.all(db, "user", qtest::kUserSql, {1}, qtest::map_user).size() == 1);
    CHECK(counter->reads == 1);  // a hit: exactly one round trip

    // An entry made under an older generation is a miss, in the same single read.
    sqlite.execute("UPDATE users SET name = 'edward' WHERE id = 1");
    cache.tables_changed({"users"});
    CHECK(cache.one(db, "user", qtest::kUserSql, {1}, qtest::map_user)->name == "edward");
    CHECK(db.count == 3);

    // The region's own invalidation applies to the entries (hard: a miss) ...
    region.invalidate();
    now += std::chrono::seconds(1);
    CHECK(cache.one(db, "user", qtest::kUserSql, {1}, qtest::map_user)->name == "edward");
    CHECK(db.count == 4);
    CHECK(cache.one(db, "user", qtest::kUserSql, {1}, qtest::map_user)->name == "edward");
    CHECK(db.count == 4);
    // ... and so does the query's expiration (by the region's clock).
    const dogpile::query::QueryOptions minute{.expiration_time = std::chrono::minutes(1)};
    CHECK(cache.one(db, "user", qtest::kUserSql, {1}, qtest::map_user, minute)->name == "edward");
    CHECK(db.count == 4);
    now += std::chrono::minutes(2);
    CHECK(cache.one(db, "user", qtest::kUserSql, {1}, qtest::map_user, minute)->name == "edward");
    CHECK(db.count == 5);
  }
}

TEST_CASE("query: WriteScope's bump after the commit closes the stale-set race") {
  // The reader reads the generation after the scope's first bump and the old rows before the
  // commit, then stores them after the commit: only the second bump makes them unservable.
  for (const bool explicit_finish : {true, false}) {
    INFO("finish(): " << explicit_finish);
    dogpile::test::TempDir dir;
    const auto path = dir.path() / "app.db";
    auto writer_db = qtest::make_db(path);
    dogpile::query::QueryCache cache(qtest::memory_region("memory_serialized"));
    cache.depends_on("user", {"users"});
    CHECK(cache.one(writer_db, "user", qtest::kUserSql, {1}, qtest::map_user)->name == "ed");

    std::binary_semaphore selected{0};
    std::binary_semaphore go{0};
    std::thread reader;
    {
      dogpile::query::WriteScope scope(cache, {"users"});  // first bump: the cached "ed" is gone
      reader = std::thread([&] {
        auto db = dogpile::query::SqliteDatabase::open(path.string());
        const auto u =
            cache.one(db, "user", qtest::kUserSql, {1}, [&](const dogpile::query::Row& r) {
              selected.release();  // the old row is read
              go.acquire();
              return qtest::map_user(r);
            });
        CHECK(u->name == "ed");  // the reader gets what it read
      });
      selected.acquire();
      writer_db.execute("UPDATE users SET name = 'edward' WHERE id = 1");  // commits
      if (explicit_finish) CHECK(scope.finish() == std::vector<std::string>{"user"});
    }  // without finish(): the destructor bumps
    go.release();
    reader.join();  // it stored "ed" under the generation of the first bump
    CHECK(cache.one(writer_db, "user", qtest::kUserSql, {1}, qtest::map_user)->name == "edward");
  }
}

TEST_CASE("query: results above max_rows or max_bytes are returned, not cached, and logged") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  qtest::CountingDb db{&sqlite};
  dogpile::query::QueryCache cache(qtest::memory_region("memory_serialized"));
  const char* const all_users = "SELECT id, name FROM users ORDER BY id";
  dogpile::test::CapturedLog log;

  const dogpile::query::QueryOptions two_rows{.version = "a", .max_rows = 2};
  const auto n = cache.all(db, "user", all_users, {}, qtest::map_user).size();
  REQUIRE(n > 2);
  db.count = 0;
  for (int i = 0; i < 2; ++i) {
    CHECK(cache.all(db, "user", all_users, {}, qtest::map_user, two_rows).size() == n);
  }
  CHECK(db.count == 2);  // not cached: each call ran the SELECT
  CHECK(log.containing("above max_rows 2: returned, not cached").size() == 2);
  CHECK(cache.all(db, "user", qtest::kUserSql, {1}, qtest::map_user, two_rows).size() == 1);
  CHECK(cache.all(db, "user", qtest::kUserSql, {1}, qtest::map_user, two_rows).size() == 1);
  CHECK(db.count == 3);  // within the limit: cached

  db.count = 0;
  const dogpile::query::QueryOptions small{.version = "b", .max_bytes = 10};
  const dogpile::query::QueryOptions roomy{.version = "b", .max_bytes = 100'000};
  CHECK(cache.all(db, "user", all_users, {}, qtest::map_user, small).size() == n);
  CHECK(cache.all(db, "user", all_users, {}, qtest::map_user, small).size() == n);
  CHECK(db.count == 2);
  CHECK(log.containing("bytes encoded, above max_bytes 10").size() == 2);
  CHECK(cache.all(db, "user", all_users, {}, qtest::map_user, roomy).size() == n);
  CHECK(cache.all(db, "user", all_users, {}, qtest::map_user, roomy).size() == n);
  CHECK(db.count == 3);

  // A row type without a codec cannot be measured: a clear error, nothing cached.
  dogpile::query::QueryCache objects(qtest::memory_region("memory"));
  auto to_unencodable = [](const dogpile::query::Row& r) {
    return Unencodable{r.get<std::int64_t>(0)};
  };
  CHECK(objects.all(db, "user", all_users, {}, to_unencodable).size() == n);  // no limit: fine
  CHECK_THROWS_WITH(objects.all(db, "user", all_users, {}, to_unencodable, small),
                    Catch::Contains("max_bytes needs a codec") && Catch::Contains("'user'"));
}
