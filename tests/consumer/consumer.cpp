// The consumer program shared by the find_package / add_subdirectory / FetchContent tests: it
// must compile against the public headers only and link through the exported targets
// (nlohmann_json, zlib and libcrypto come in transitively).
#include <dogpile/dogpile.hpp>
#ifdef DOGPILE_CONSUMER_DISK
#include <dogpile/backends/disk.hpp>

#include <filesystem>
#endif

#include <iostream>
#include <string>

int main() {
  auto backend = dogpile::make_backend("memory_serialized");
  // zlib (compressed envelope) and libcrypto (SHA-1 key mangler) must link.
  const dogpile::CodecOptions opts{.compress_threshold = 16};
  const std::string key = dogpile::sha1_mangle_key(dogpile::make_key("consumer", 1));
  backend->set(key, dogpile::encode_value(std::string(100, 'x'), {.ct = 1.0}, opts));
  const auto bytes = backend->get(key);
  if (!bytes || dogpile::unpack_envelope(*bytes).payload != std::string(100, 'x')) return 1;
#ifdef DOGPILE_CONSUMER_DISK
  const auto dir = std::filesystem::temp_directory_path() / "dogpile-consumer-disk";
  std::filesystem::remove_all(dir);
  auto disk = dogpile::make_backend("disk", {{"directory", dir.string()}});
  disk->set("k", "v");
  const auto got = disk->get("k");
  disk.reset();
  std::filesystem::remove_all(dir);
  if (got != std::optional<std::string>("v")) {
    std::cerr << "disk backend returned " << (got ? "'" + *got + "'" : "nothing") << "\n";
    return 2;
  }
  std::cout << "disk ";
#endif
  std::cout << "consumer ok\n";
  return 0;
}
