// dogpile::query on a real redis-server: the stale-set race across two processes (a reader that
// read old rows before a writer's commit stores them after the writer's invalidation returned),
// and relationships over the network backend.
#include <catch2/catch.hpp>

#include <atomic>
#include <latch>
#include <thread>

#include "dogpile/backends/redis.hpp"
#include "query/query_test_support.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;

namespace {

dogpile::test::RedisServer& query_redis() {
  static dogpile::test::RedisServer s;
  return s;
}
// Started before any test forks: a child that started it lazily would get its own server.
const bool query_redis_started = (query_redis(), true);

dogpile::CacheRegion redis_region() {
  auto r = dogpile::make_region();
  r.configure(std::make_shared<dogpile::RedisBackend>(
      dogpile::RedisOptions{.host = "127.0.0.1",
                            .port = query_redis().port(),
                            .socket_timeout = 1s,
                            .socket_connect_timeout = 500ms}));
  return r;
}

enum class Invalidation { table_hook, delete_key };

// A forked reader misses, runs its SELECT (old rows) and stops in its row mapper. This process
// commits an UPDATE, invalidates (and the call returns), then lets the reader store what it
// read. Returns the name a fresh read in a third process sees afterwards.
std::string stale_set_race(Invalidation how, const std::string& ns) {
  dogpile::test::TempDir dir;
  const auto path = dir.path() / "app.db";
  auto writer_db = qtest::make_db(path);
  dogpile::query::QueryCache writer(redis_region());
  writer.depends_on(ns, {"users"});

  int paused[2];
  int go[2];
  REQUIRE(::pipe(paused) == 0);
  REQUIRE(::pipe(go) == 0);
  const pid_t reader = ::fork();
  if (reader == 0) {
    int code = 1;
    try {
      auto db = dogpile::query::SqliteDatabase::open(path.string());
      dogpile::query::QueryCache cache(redis_region());
      auto u = cache.one(db, ns, qtest::kUserSql, {1}, [&](const dogpile::query::Row& r) {
        qtest::signal_fd(paused[1]);  // SELECT done (old rows read)
        if (!qtest::wait_fd(go[0])) ::_exit(5);
        return qtest::map_user(r);
      });
      code = u && u->name == "ed" ? 0 : 3;  // the reader itself got what it read
    } catch (const std::exception& e) {
      std::fprintf(stderr, "reader: %s\n", e.what());
    }
    ::_exit(code);
  }
  REQUIRE(qtest::wait_fd(paused[0]));
  writer_db.execute("UPDATE users SET name = 'edward' WHERE id = 1");  // commits (autocommit)
  if (how == Invalidation::table_hook) {
    writer.tables_changed({"users"});
  } else {
    writer.invalidate(ns, qtest::kUserSql, {1});
  }
  qtest::signal_fd(go[1]);
  REQUIRE(qtest::wait_child(reader) == 0);
  for (int fd : {paused[0], paused[1], go[0], go[1]}) ::close(fd);

  // Another process reads now.
  int out[2];
  REQUIRE(::pipe(out) == 0);
  const pid_t later = ::fork();
  if (later == 0) {
    try {
      auto db = dogpile::query::SqliteDatabase::open(path.string());
      dogpile::query::QueryCache cache(redis_region());
      const auto name = cache.one(db, ns, qtest::kUserSql, {1}, qtest::map_user)->name;
      if (::write(out[1], name.data(), name.size()) < 0) ::_exit(4);
      ::_exit(0);
    } catch (...) {
      ::_exit(1);
    }
  }
  ::close(out[1]);
  REQUIRE(qtest::wait_child(later) == 0);
  char buf[64];
  const auto n = ::read(out[0], buf, sizeof buf);
  ::close(out[0]);
  REQUIRE(n > 0);
  // And this process too.
  CHECK(writer.one(writer_db, ns, qtest::kUserSql, {1}, qtest::map_user)->name ==
        std::string(buf, static_cast<std::size_t>(n)));
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace

TEST_CASE("query redis: no stale rows after tables_changed returns (two processes)") {
  CHECK(stale_set_race(Invalidation::table_hook, "race_hook") == "edward");
}

TEST_CASE("query redis: a delete-based invalidation loses that race (why the hook bumps)") {
  // The stale set the reference describes: invalidate(query) deletes a key the reader has not
  // written yet, so the old rows land after it. This is the documented limit of invalidate();
  // it also shows the race test above can fail.
  CHECK(stale_set_race(Invalidation::delete_key, "race_delete") == "ed");
}

TEST_CASE("query redis: cached queries and relationships over the network backend") {
  dogpile::test::TempDir dir;
  auto sqlite = qtest::make_db(dir.path() / "app.db");
  qtest::CountingDb db{&sqlite};
  dogpile::query::QueryCache cache(redis_region());
  cache.invalidate_namespace("r_user");
  CHECK(cache.one(db, "r_user", qtest::kUserSql, {2}, qtest::map_user) == qtest::User{2, "wendy"});
  CHECK(cache.one(db, "r_user", qtest::kUserSql, {2}, qtest::map_user) == qtest::User{2, "wendy"});
  CHECK(db.count == 1);

  dogpile::query::RelationshipCache<qtest::Post> posts(
      cache, {.ns = "r_user_posts",
              .sql = qtest::kPostsSql,
              .map = qtest::map_post,
              .parent_of = [](const qtest::Post& p) { return dogpile::query::Param(p.user_id); },
              .tables = {"posts"}});
  posts.invalidate_all();
  CHECK(posts.load_many(db, {1, 2}) ==
        std::vector<std::vector<qtest::Post>>{{{10, 1, "a"}, {11, 1, "b"}}, {{12, 2, "c"}}});
  CHECK(db.count == 2);
  CHECK(posts.load_many(db, {2, 1})[0] == std::vector<qtest::Post>{{12, 2, "c"}});
  CHECK(db.count == 2);
  sqlite.execute("UPDATE posts SET title = 'C' WHERE id = 12");
  posts.invalidate({2});
  CHECK(posts.load(db, 2) == std::vector<qtest::Post>{{12, 2, "C"}});
  CHECK(posts.load(db, 1).size() == 2);
  CHECK(db.count == 3);
}

TEST_CASE("query redis: 64 threads in two processes miss one query: one SELECT") {
  // 32 threads in this process and 32 in a forked one, on one redis-server with the
  // distributed dogpile lock, start together (a barrier across both) and ask for one query
  // that is not cached. The SELECT's mapper holds the lock a little while, so every other
  // thread arrives while it runs; the SELECTs of both processes are counted exactly.
  constexpr int kThreads = 32;
  dogpile::test::TempDir dir;
  const auto path = dir.path() / "app.db";
  qtest::make_db(path);
  const std::string ns = "stampede" + std::to_string(::getpid());
  auto locked_region = [] {
    auto r = dogpile::make_region();
    r.configure(std::make_shared<dogpile::RedisBackend>(
        dogpile::RedisOptions{.host = "127.0.0.1",
                              .port = query_redis().port(),
                              .socket_timeout = 1s,
                              .socket_connect_timeout = 500ms,
                              .distributed_lock = true,
                              .lock_sleep = 5ms}));
    return r;
  };
  // Runs the threads; returns how many SELECTs this process ran, or -1 if a read went wrong.
  auto run = [&](int ready_fd, int go_fd) {
    dogpile::query::QueryCache cache(locked_region());
    std::atomic<int> selects{0};
    std::atomic<int> right{0};
    std::latch ready(kThreads);
    std::latch go(1);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        auto db = dogpile::query::SqliteDatabase::open(path.string());
        ready.count_down();
        go.wait();
        try {
          const auto u = cache.one(db, ns, qtest::kUserSql, {1}, [&](const dogpile::query::Row& r) {
            ++selects;
            std::this_thread::sleep_for(100ms);  // keep the lock while the others arrive
            return qtest::map_user(r);
          });
          if (u && u->name == "ed") ++right;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "stampede reader: %s\n", e.what());
        }
      });
    }
    ready.wait();
    qtest::signal_fd(ready_fd);  // this process's threads are at the barrier
    const bool other_ready = qtest::wait_fd(go_fd);
    go.count_down();
    for (auto& th : threads) th.join();
    return other_ready && right == kThreads ? selects.load() : -1;
  };

  int to_parent[2];
  int to_child[2];
  REQUIRE(::pipe(to_parent) == 0);
  REQUIRE(::pipe(to_child) == 0);
  const pid_t child = ::fork();
  if (child == 0) {
    const int n = run(to_parent[1], to_child[0]);
    ::_exit(n < 0 ? 100 : n);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int here = run(to_child[1], to_parent[0]);
  const int there = qtest::wait_child(child);
  for (int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) ::close(fd);
  CHECK(here >= 0);
  CHECK(there >= 0);
  CHECK(there != 100);
  CHECK(here + there == 1);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}
