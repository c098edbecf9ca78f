#pragma once
// Value files: python-diskcache's layout `<dir>/ab/cd/<28 hex>.val`, written crash-safely
// (temporary name, then rename) and removed with the now-empty hex directories.

#include <cstdint>
#include <filesystem>
#include <istream>
#include <optional>
#include <string>
#include <string_view>

namespace dogpile::detail {

/// A new random relative path `ab/cd/<28 hex>.val` (16 random bytes, like diskcache's Disk).
std::string random_value_filename();

/// Writes `data` to a new value file under `dir`; returns the relative path.
/// @throws BackendError naming the path on I/O failure.
std::string write_value_file(const std::filesystem::path& dir, std::string_view data);
/// Streams `in` into a new value file; returns the relative path and the byte count.
std::pair<std::string, std::int64_t> write_value_stream(const std::filesystem::path& dir,
                                                        std::istream& in);
/// The content of a value file, or nullopt if it does not exist (a concurrent delete).
std::optional<std::string> read_value_file(const std::filesystem::path& dir,
                                           const std::string& rel);
/// Removes a value file and its hex directories if they became empty. Never throws.
void remove_value_file(const std::filesystem::path& dir, const std::string& rel) noexcept;

/// RAII owner of a freshly written value file: removes it unless released.
class PendingFile {
 public:
  PendingFile() = default;
  PendingFile(std::filesystem::path dir, std::string rel)
      : dir_(std::move(dir)), rel_(std::move(rel)) {}
  PendingFile(PendingFile&& o) noexcept : dir_(std::move(o.dir_)), rel_(std::move(o.rel_)) {
    o.rel_.clear();
  }
  PendingFile& operator=(PendingFile&& o) noexcept {
    if (this != &o) {
      reset();
      dir_ = std::move(o.dir_);
      rel_ = std::move(o.rel_);
      o.rel_.clear();
    }
    return *this;
  }
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;
  ~PendingFile() { reset(); }
  void reset() noexcept {
    if (!rel_.empty()) remove_value_file(dir_, rel_);
    rel_.clear();
  }
  /// Gives up ownership (the file now belongs to a transaction).
  std::string release() noexcept {
    std::string r = std::move(rel_);
    rel_.clear();
    return r;
  }
  [[nodiscard]] const std::string& rel() const noexcept { return rel_; }
  [[nodiscard]] bool empty() const noexcept { return rel_.empty(); }

 private:
  std::filesystem::path dir_;
  std::string rel_;
};

}  // namespace dogpile::detail
