// How src/redis reports failures: as dogpile exceptions that name the server and say what to do.
#include "dogpile/error.hpp"

#include "client.hpp"

namespace dogpile::redis_detail {

void throw_failure(const ConnectionFailure& e) {
  if (e.kind() == Failure::timeout) {
    detail::throw_error<TimeoutError>(std::string(e.what()) +
                                      " (raise socket_timeout if the server is just slow)");
  }
  detail::throw_error<BackendError>(e.what());
}

void throw_reply_error(const std::string& where, const char* what, const Reply& r) {
  detail::throw_error<BackendError>(where + " refused " + what + ": " + r.str);
}

}  // namespace dogpile::redis_detail
