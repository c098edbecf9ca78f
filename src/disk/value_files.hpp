#pragma once
// Value files: python-diskcache's layout `<dir>/ab/cd/<28 hex>.val`, written crash-safely
// (temporary name, then rename) and removed with the now-empty hex directories.
//
// The `filename` column comes from a file anyone with write access to the cache can edit, so
// it is untrusted: only names of exactly this layout are used, and every path below the cache
// directory is walked with openat(O_NOFOLLOW) one component at a time, so that neither a
// tampered name (`../x`, `/etc/x`) nor a symlink planted in the directory (as a value file or
// as a hex directory) makes us read, write or delete anything outside the cache directory.

#include <cstdint>
#include <filesystem>
#include <istream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace dogpile::detail {

/// A new random relative path `ab/cd/<28 hex>.val` (16 random bytes, like diskcache's Disk).
std::string random_value_filename();

/// True if `rel` is a name of the value-file layout both python-diskcache 5.x and this library
/// write: two 2-digit lowercase hex directories and 28 lowercase hex digits + `.val`.
bool is_value_filename(std::string_view rel) noexcept;

/// Modes of new hex directories and value files (the umask still applies).
struct FileModes {
  unsigned dir = 0777;
  unsigned file = 0666;
};

/// Writes `data` to a new value file under `dir`; returns the relative path.
/// @throws BackendError naming the path on I/O failure (or a symlinked hex directory).
std::string write_value_file(const std::filesystem::path& dir, std::string_view data,
                             FileModes modes = {});
/// Streams `in` into a new value file; returns the relative path and the byte count.
std::pair<std::string, std::int64_t> write_value_stream(const std::filesystem::path& dir,
                                                        std::istream& in, FileModes modes = {});

/// Removes `dir / rel` (a file or symlink; with `directory`, an empty directory) reaching it
/// without following any symlink below `dir`, so a directory swapped for a symlink meanwhile
/// cannot redirect the removal outside. Never throws; false if nothing was removed.
bool remove_inside(const std::filesystem::path& dir, const std::filesystem::path& rel,
                   bool directory) noexcept;

/// Creates the cache directory `dir` and its parents if missing (`private_dir`: the directory
/// itself 0700). `what` starts error messages. @throws DatabaseError when it cannot.
void create_cache_dir(const std::filesystem::path& dir, bool private_dir, std::string_view what);
/// Refuses a directory another user owns or that group/others can read or write.
/// @throws DatabaseError naming the directory and its mode.
void check_private_dir(const std::filesystem::path& dir, std::string_view what);

/// What opening a row's value file found.
enum class ValueFileState : std::uint8_t {
  ok,
  missing,  ///< no such file (a concurrent delete, or a lost file)
  unsafe,   ///< not this cache's own file: a foreign name, a symlink, not a regular file
};
/// The state of a row's value file and, when ok, its size. Never reads outside `dir`.
/// @throws BackendError on I/O errors other than the above.
ValueFileState stat_value_file(const std::filesystem::path& dir, const std::string& rel,
                               std::int64_t* size);
/// The content of a value file, or nullopt if it is missing or unsafe (see ValueFileState).
/// @throws ValueTooLargeError when the file is over `max_bytes` (checked before reading, and
///   while reading: it may grow); BackendError on I/O failure.
std::optional<std::string> read_value_file(const std::filesystem::path& dir, const std::string& rel,
                                           std::size_t max_bytes);
/// A stream over a value file (reading the file opened safely), or nullptr as read_value_file.
std::unique_ptr<std::istream> open_value_stream(const std::filesystem::path& dir,
                                                const std::string& rel);
/// Removes a value file and its hex directories if they became empty. Does nothing for an
/// unsafe name; never follows a symlink; never throws.
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
