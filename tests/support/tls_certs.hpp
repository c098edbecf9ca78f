// Test support: TLS certificates made once per test binary by the openssl CLI, in a temporary
// directory: a CA, a server certificate for 127.0.0.1 and localhost (subjectAltName), the same
// key with an expired certificate, a client certificate, and a second, unrelated CA. ~0.2 s.
// Header-only; include as "support/tls_certs.hpp".
#pragma once

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "dogpile/error.hpp"
#include "support/servers.hpp"

namespace dogpile::test {

/// The text of the BackendError `f` throws; when it throws none, a std::runtime_error that fails
/// the test (a TLS mistake must never pass silently).
template <class F>
std::string tls_error(F&& f) {
  try {
    f();
  } catch (const dogpile::BackendError& e) {
    return e.what();
  }
  throw std::runtime_error("expected a BackendError, none was thrown");
}

// Certificates for this test binary, made once (~0.2 s) in a temporary directory.
struct Certs {
  TempDir dir;
  std::string ca, server, server_key, expired, client, client_key, other_ca;

  Certs() {
    const std::string d = dir.path().string();
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string ca_ext =
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign";
    std::ofstream(d + "/server.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    run("openssl req -x509" + ec + " -keyout ca.key -out ca.crt -days 2 -subj /CN=dogpile-ca" +
        ca_ext);
    run("openssl req -x509" + ec + " -keyout other.key -out other.crt -days 2 -subj /CN=other-ca" +
        ca_ext);
    run("openssl req -new" + ec + " -keyout server.key -out server.csr -subj /CN=localhost");
    run("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile server.ext -out server.crt");
    // -days -1: notAfter a day before notBefore, so it is expired from the start.
    run("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days -1 "
        "-extfile server.ext -out expired.crt");
    run("openssl req -new" + ec + " -keyout client.key -out client.csr -subj /CN=dogpile-client");
    run("openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
        "-out client.crt");
    ca = d + "/ca.crt";
    other_ca = d + "/other.crt";
    server = d + "/server.crt";
    server_key = d + "/server.key";
    expired = d + "/expired.crt";
    client = d + "/client.crt";
    client_key = d + "/client.key";
  }
  void run(const std::string& cmd) const {
    const std::string full = "cd '" + dir.path().string() + "' && " + cmd + " >/dev/null 2>&1";
    if (std::system(full.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }
};

/// The binary's certificates (made on first use).
inline const Certs& certs() {
  static Certs c;
  return c;
}

}  // namespace dogpile::test
