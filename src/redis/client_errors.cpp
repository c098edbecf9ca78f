// How src/redis reports failures: as dogpile exceptions that name the server and say what to do.
#include "dogpile/error.hpp"

#include "client.hpp"

namespace dogpile::redis_detail {

// Failure kind -> the exception a program branches on (docs/backends.md, "Errors").
void throw_failure(const ConnectionFailure& e) {
  switch (e.kind()) {
    case Failure::timeout:
      detail::throw_error<TimeoutError>(std::string(e.what()) +
                                        " (raise socket_timeout if the server is just slow)");
    case Failure::protocol:
      detail::throw_error<ReplyError>(e.what());
    case Failure::no_master:
      detail::throw_error<ClusterDownError>(e.what());
    case Failure::connect:
    case Failure::closed:
      break;
  }
  detail::throw_error<ConnectionError>(e.what());
}

// The replies that say "no master serves this right now" rather than "this command is wrong".
bool is_topology_error(std::string_view code) {
  return code == "CLUSTERDOWN" || code == "MASTERDOWN" || code == "TRYAGAIN" ||
         code == "READONLY" || code == "LOADING" || code == "MOVED" || code == "ASK";
}

void throw_reply_error(const std::string& where, const char* what, const Reply& r) {
  const std::string msg = where + " refused " + what + ": " + r.str;
  if (is_topology_error(r.error_code())) detail::throw_error<ClusterDownError>(msg);
  detail::throw_error<ReplyError>(msg);
}

}  // namespace dogpile::redis_detail
