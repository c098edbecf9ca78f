#pragma once
// SHA-1 through OpenSSL libcrypto's EVP interface, compiled in dogpile::core (src/core/sha1.cpp)
// so that <openssl/evp.h> stays out of the public headers. Never hand-written.

#include <string>
#include <string_view>

namespace dogpile::detail {

/// Lowercase hex SHA-1 of `data`, as Python's `hashlib.sha1(data).hexdigest()`.
/// Thread-safe (a digest context per thread).
/// @throws Error if libcrypto fails (e.g. SHA-1 disabled by the system policy).
std::string sha1_hex(std::string_view data);

}  // namespace dogpile::detail
