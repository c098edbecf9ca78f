// TLS for `Connection` with OpenSSL: hiredis 0.14 (Debian 12) has no TLS, but it only needs to
// see plain bytes (its reader parses replies, its buffer formats commands). The socket is made
// non-blocking and every handshake, read and write waits with poll() against the call's
// deadline, so TLS keeps the same timeout discipline as plain text.
#include <arpa/inet.h>
#include <fcntl.h>
// sds.h (the command buffer's type) declares C functions without extern "C".
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "connection.hpp"
#include "dogpile/detail/backend_arguments.hpp"

namespace dogpile::redis_detail {
namespace {

// The newest OpenSSL error as text ("certificate verify failed", "wrong version number"), or
// "" when the queue is empty.
std::string ssl_reason() {
  const unsigned long e = ERR_peek_last_error();
  if (e == 0) return {};
  const char* r = ERR_reason_error_string(e);
  return r != nullptr ? r : "error " + std::to_string(e);
}

std::string file_error(const std::string& path) {
  std::string r = ssl_reason();
  ERR_clear_error();
  return "'" + path + "' cannot be used: " + (r.empty() ? "unreadable" : r);
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

int left_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left.count());
}

// Waits until `fd` is ready for what OpenSSL asked (`want`: SSL_ERROR_WANT_READ/WRITE). False
// at the deadline. An error or hang-up counts as ready: the next SSL call reports it.
bool wait_for(int fd, int want, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const int left = left_ms(deadline);
    if (left <= 0) return false;
    pollfd p{};
    p.fd = fd;
    p.events = want == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
    const int n = ::poll(&p, 1, left);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return true;
  }
}

// Why a failed SSL call failed, in words a user can act on.
std::string failure_reason(ssl_st* ssl, int err) {
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    std::string why =
        std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
    switch (verify) {
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        why +=
            " (the server's certificate is not signed by a CA this client trusts: pass the "
            "CA that signed it as ssl_ca_certs or ssl_ca_path, or ssl_cert_reqs='none' to "
            "skip verification)";
        break;
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        why +=
            " (the certificate does not name the host connected to: connect by a name it "
            "carries, or set ssl_server_hostname or ssl_check_hostname=false)";
        break;
      case X509_V_ERR_CERT_HAS_EXPIRED:
        why += " (the server's certificate has expired: renew it on the server)";
        break;
      default:
        break;
    }
    return why;
  }
  std::string r = ssl_reason();
  if (err == SSL_ERROR_SYSCALL && r.empty()) {
    r = errno != 0 ? std::strerror(errno) : "the server closed the connection";
  }
  if (r.empty()) r = "TLS error " + std::to_string(err);
  if (r.find("wrong version number") != std::string::npos ||
      r.find("packet length too long") != std::string::npos ||
      r.find("unexpected eof") != std::string::npos) {
    r += " (does this port serve TLS? a plain-text Redis port does not)";
  }
  if (r.find("certificate required") != std::string::npos) {
    r += " (the server wants a client certificate: pass ssl_certfile and ssl_keyfile)";
  }
  return r;
}

// A socket BIO whose writes use send(MSG_NOSIGNAL): OpenSSL's own uses write(), and a write to
// a connection the server reset raises SIGPIPE, which kills a program that did not ignore it.
// The BIO's data points to the descriptor in the redisContext (hiredis owns and closes it;
// the context outlives the SSL that owns the BIO).
int nosig_write(BIO* b, const char* buf, int len) {
  const int fd = *static_cast<const int*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  const ssize_t n = ::send(fd, buf, static_cast<std::size_t>(len), MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_write(b);
  }
  return static_cast<int>(n);
}

int nosig_read(BIO* b, char* buf, int len) {
  const int fd = *static_cast<const int*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  const ssize_t n = ::recv(fd, buf, static_cast<std::size_t>(len), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_read(b);
  }
  return static_cast<int>(n);
}

long nosig_ctrl(BIO* /*b*/, int cmd, long /*num*/, void* /*ptr*/) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;  // nothing is buffered here
}

int nosig_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

const BIO_METHOD* nosig_socket_method() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "dogpile socket");
    if (m == nullptr) return static_cast<BIO_METHOD*>(nullptr);
    BIO_meth_set_write(m, nosig_write);
    BIO_meth_set_read(m, nosig_read);
    BIO_meth_set_ctrl(m, nosig_ctrl);
    BIO_meth_set_create(m, nosig_create);
    return m;
  }();
  return method;
}

// TLS 1.3 servers check the client certificate after the client's side of the handshake: a
// server that wants one sends an alert and closes, and the client sees the alert on its first
// read, or only a reset on its first write if the close raced it.
std::string first_reply_hint(bool received_any, const std::string& why) {
  if (received_any || why.find("certificate required") != std::string::npos) return why;
  return why +
         " (the server dropped the TLS connection before any reply: if it requires a client "
         "certificate, pass ssl_certfile and ssl_keyfile)";
}

}  // namespace

TlsContext::TlsContext(const char* backend, TlsConfig config) : config_(std::move(config)) {
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (ctx_ == nullptr) detail::bad_argument(backend, "ssl", "cannot make a TLS context");
  try {
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    // A write retried after WANT_WRITE may be the rest of a partly written buffer.
    SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (config_.cert_reqs == TlsConfig::CertReqs::none) {
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    } else {
      // A client's `optional` is `required` in OpenSSL (and in Python's ssl): a server always
      // presents a certificate, and a bad one is refused either way.
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
      if (!config_.ca_certs.empty() || !config_.ca_path.empty()) {
        if (SSL_CTX_load_verify_locations(
                ctx_, config_.ca_certs.empty() ? nullptr : config_.ca_certs.c_str(),
                config_.ca_path.empty() ? nullptr : config_.ca_path.c_str()) != 1) {
          detail::bad_argument(
              backend, config_.ca_certs.empty() ? "ssl_ca_path" : "ssl_ca_certs",
              file_error(config_.ca_certs.empty() ? config_.ca_path : config_.ca_certs));
        }
      } else {
        (void)SSL_CTX_set_default_verify_paths(ctx_);  // the system store
      }
    }
    if (!config_.keyfile.empty() && config_.certfile.empty()) {
      detail::bad_argument(backend, "ssl_keyfile", "needs ssl_certfile (the certificate)");
    }
    if (!config_.certfile.empty()) {
      if (SSL_CTX_use_certificate_chain_file(ctx_, config_.certfile.c_str()) != 1) {
        detail::bad_argument(backend, "ssl_certfile", file_error(config_.certfile));
      }
      const std::string& key = config_.keyfile.empty() ? config_.certfile : config_.keyfile;
      if (SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1) {
        detail::bad_argument(backend, "ssl_keyfile", file_error(key));
      }
      if (SSL_CTX_check_private_key(ctx_) != 1) {
        detail::bad_argument(
            backend, "ssl_keyfile",
            "'" + key + "' is not the key of ssl_certfile '" + config_.certfile + "'");
      }
    }
  } catch (...) {
    SSL_CTX_free(ctx_);
    ERR_clear_error();
    throw;
  }
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

void Connection::start_tls(const TlsContext& tls, milliseconds connect_timeout) {
  const TlsConfig& c = tls.config();
  const auto deadline = Clock::now() + connect_timeout;
  auto refuse = [&](const std::string& why) -> void {
    throw ConnectionFailure(Failure::connect,
                            "TLS handshake with redis at " + ep_.str() + " failed: " + why);
  };
  const int flags = ::fcntl(ctx_->fd, F_GETFL);
  if (flags < 0 || ::fcntl(ctx_->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    refuse(std::string("cannot make the socket non-blocking: ") + std::strerror(errno));
  }
  ERR_clear_error();
  ssl_ = SSL_new(tls.get());
  const BIO_METHOD* method = nosig_socket_method();
  BIO* bio = method == nullptr ? nullptr : BIO_new(method);
  if (ssl_ == nullptr || bio == nullptr) {
    BIO_free(bio);
    refuse("out of memory");
  }
  BIO_set_data(bio, &ctx_->fd);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways: the SSL owns it
  const std::string& name = c.server_hostname.empty() ? ep_.host : c.server_hostname;
  const bool ip = is_ip_literal(name);
  if (!ip) (void)SSL_set_tlsext_host_name(ssl_, name.c_str());  // SNI takes names only
  if (c.cert_reqs != TlsConfig::CertReqs::none && c.check_hostname) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                      : X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
    if (ok != 1) refuse("cannot check the host name '" + name + "'");
  }
  for (;;) {
    ERR_clear_error();
    errno = 0;
    const int r = SSL_connect(ssl_);
    if (r == 1) return;
    const int err = SSL_get_error(ssl_, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!wait_for(ctx_->fd, err, deadline)) {
        // A plain-text Redis port reads the hello as an unfinished inline command: silence.
        refuse("the server did not finish the TLS handshake within socket_connect_timeout (" +
               std::to_string(connect_timeout.count()) +
               " ms) (does this port serve TLS? a plain-text Redis port does not answer one)");
      }
      continue;
    }
    refuse(failure_reason(ssl_, err));
  }
}

void Connection::tls_write_all(Clock::time_point deadline) {
  while (sdslen(ctx_->obuf) > 0) {
    const std::size_t len = sdslen(ctx_->obuf);
    ERR_clear_error();
    errno = 0;
    const int n =
        SSL_write(ssl_, ctx_->obuf, static_cast<int>(len > (1U << 30) ? (1U << 30) : len));
    if (n > 0) {
      sdsrange(ctx_->obuf, n, -1);
      continue;
    }
    const int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!wait_for(ctx_->fd, err, deadline)) {
        fail_with(Failure::timeout, "did not take the command within socket_timeout (" +
                                        std::to_string(socket_timeout_.count()) + " ms)");
      }
      continue;
    }
    fail_with(Failure::closed,
              "TLS write failed: " + first_reply_hint(received_any_, failure_reason(ssl_, err)));
  }
}

bool Connection::tls_read_some(Clock::time_point deadline) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    const int got = SSL_read(ssl_, rbuf_.get(), static_cast<int>(kReadChunkBytes));
    if (got > 0) {
      feed(static_cast<std::size_t>(got));
      return true;
    }
    const int err = SSL_get_error(ssl_, got);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!wait_for(ctx_->fd, err, deadline)) return false;
      continue;
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
      fail_with(Failure::closed, first_reply_hint(received_any_, "Server closed the connection"));
    }
    fail_with(Failure::closed,
              "TLS read failed: " + first_reply_hint(received_any_, failure_reason(ssl_, err)));
  }
}

}  // namespace dogpile::redis_detail
