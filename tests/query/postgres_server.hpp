#pragma once
// A throwaway PostgreSQL server for the query tests: initdb (trust auth, no fsync) in a temporary
// directory, then `postgres` on a free loopback port with its Unix socket in that directory. As
// root (initdb refuses root) the directory is the `postgres` user's and both run through setpriv
// as that user.
// Stopped (SIGTERM, then SIGKILL) and removed by the destructor, like the other servers.
#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dogpile/query/postgres.hpp"
#include "support/servers.hpp"

namespace qtest {

class PostgresServer {
 public:
  static constexpr const char* kBin = "/usr/lib/postgresql/15/bin";

  PostgresServer() {
    // As root, initdb and postgres run as the postgres user (initdb refuses root); as anyone
    // else, as that user.
    const bool as_root = ::geteuid() == 0;
    if (as_root) {
      const passwd* pw = ::getpwnam("postgres");
      if (pw == nullptr) {
        throw std::runtime_error(
            "dogpile test harness: no 'postgres' user (Debian: apt-get install postgresql)");
      }
      if (::chown(dir_.path().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        dogpile::test::detail::throw_errno("chown " + dir_.path().string());
      }
    }
    const std::vector<std::string> as_postgres =
        as_root ? std::vector<std::string>{"setpriv", "--reuid=postgres", "--regid=postgres",
                                           "--clear-groups"}
                : std::vector<std::string>{};
    std::string prefix;
    for (const auto& a : as_postgres) prefix += a + " ";
    const std::string data = (dir_.path() / "data").string();
    const std::string initdb = "timeout 60 " + prefix + std::string(kBin) + "/initdb -D '" + data +
                               "' -A trust -U postgres --no-sync --no-instructions -E UTF8 "
                               "--locale=C.UTF-8 > '" +
                               (dir_.path() / "initdb.log").string() + "' 2>&1";
    if (std::system(initdb.c_str()) != 0) {
      throw std::runtime_error("initdb failed:\n" +
                               dogpile::test::detail::file_tail(dir_.path() / "initdb.log", 20));
    }
    for (int attempt = 0;; ++attempt) {
      port_ = dogpile::test::free_port();
      std::vector<std::string> argv = as_postgres;
      for (const auto& a :
           {std::string(kBin) + "/postgres", std::string("-D"), data, std::string("-p"),
            std::to_string(port_), std::string("-k"), dir_.path().string(), std::string("-c"),
            std::string("listen_addresses=127.0.0.1"), std::string("-c"), std::string("fsync=off"),
            std::string("-c"), std::string("synchronous_commit=off"), std::string("-c"),
            std::string("full_page_writes=off")}) {
        argv.push_back(a);
      }
      process_ = std::make_unique<dogpile::test::ServerProcess>(std::move(argv),
                                                                dir_.path() / "postgres.log");
      const bool up = dogpile::test::detail::poll_until(
          [&] {
            if (!process_->running()) return true;
            try {
              dogpile::query::PostgresDatabase probe(conninfo());
              return true;
            } catch (const std::exception&) {
              return false;
            }
          },
          std::chrono::milliseconds(20'000));
      if (up && process_->running()) return;
      if (attempt < 3 && dogpile::test::detail::log_says_address_in_use(process_->log_file())) {
        process_.reset();
        continue;
      }
      throw std::runtime_error("postgres did not start:\n" + process_->log_tail());
    }
  }

  /// A libpq connection string for the server's `postgres` database.
  [[nodiscard]] std::string conninfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) +
           " user=postgres dbname=postgres connect_timeout=2";
  }
  [[nodiscard]] int port() const { return port_; }

 private:
  dogpile::test::TempDir dir_;
  int port_ = 0;
  std::unique_ptr<dogpile::test::ServerProcess> process_;
};

}  // namespace qtest
