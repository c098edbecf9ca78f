// SHA-1 for key mangling (detail/sha1.hpp) through OpenSSL libcrypto's EVP interface.

#include "dogpile/detail/sha1.hpp"

#include <openssl/evp.h>

#include <array>

#include "dogpile/error.hpp"

namespace dogpile::detail {

std::string sha1_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha1(), nullptr) != 1) {
    throw_error<Error>("SHA-1 digest failed (OpenSSL EVP_Digest)");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * static_cast<std::size_t>(len));
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 0x0F]);
  }
  return out;
}

}  // namespace dogpile::detail
