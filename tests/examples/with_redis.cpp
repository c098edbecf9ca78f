// dogpile_with_redis PROGRAM [ARGS...]: starts a redis-server on a free loopback port in a
// temporary directory (tests/support/servers.hpp), runs PROGRAM ARGS... with DOGPILE_REDIS_URL
// set to its URL, stops the server and exits with PROGRAM's status. A missing redis-server is a
// failure that names the package to install, never a skip. The server dies with this process
// even if it is killed (PDEATHSIG), and so does PROGRAM.
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "support/servers.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: dogpile_with_redis PROGRAM [ARGS...]\n";
    return 2;
  }
  try {
    dogpile::test::RedisServer server;
    const std::string url = server.url();
    std::cout << "dogpile_with_redis: redis-server at " << url << std::endl;
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("fork");
      return 1;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::setenv("DOGPILE_REDIS_URL", url.c_str(), 1);
      ::execv(argv[1], argv + 1);
      std::perror(argv[1]);
      ::_exit(127);
    }
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid) {
      std::perror("waitpid");
      return 1;
    }
    if (WIFSIGNALED(status)) {
      std::cerr << "dogpile_with_redis: " << argv[1] << " killed by signal " << WTERMSIG(status)
                << "\n";
      return 1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  } catch (const std::exception& e) {  // the server did not start (e.g. not installed)
    std::cerr << "dogpile_with_redis: " << e.what() << "\n";
    return 1;
  }
}
