#pragma once
/// @file dbm.hpp
/// The `dbm` region backend (dogpile.cache's `dogpile.cache.dbm`): a region's envelope bytes in
/// a GDBM file, with dogpile's two lock files. Part of `dogpile::dbm`; including this header
/// registers the names `dbm` and `dogpile.cache.dbm`.
///
/// ```cpp
/// #include <dogpile/backends/dbm.hpp>
/// region.configure("dbm", {.expiration_time = 10min,
///                          .arguments = {{"filename", "/var/cache/app/users.dbm"}}});
/// ```
///
/// **File format**: a plain GDBM database (the file Python's `dbm.gnu` opens), keys and values
/// as bytes, so Python dogpile.cache's dbm backend with a JSON serializer reads this backend's
/// values and the other way.
///
/// **Locks** (as dogpile): every read holds a shared `flock` on the read/write lock file
/// (`<filename>.rw.lock` by default), every write an exclusive one, so dogpile-cpp and Python
/// processes never see a half-written file. The dogpile lock (`get_mutex`) is an exclusive
/// `flock` on the dogpile lock file (`<filename>.dogpile.lock`), **one lock for the whole file**,
/// reentrant per thread across keys (dogpile's `KeyReentrantMutex`): a creator of key A may call
/// `get_or_create(B)` on the same region. It is not a lease (`is_lease()` is false): the kernel
/// releases it the moment the holder process dies, and it never expires under a live holder.
///
/// **Beyond dogpile**: dogpile opens and closes the GDBM file on every call. This backend keeps
/// one handle open and reuses it while no other process has written the file since this handle
/// last saw it (every dogpile-cpp writer bumps a generation counter stored in the read/write lock
/// file; writers that do not, such as Python, are detected by the file's inode, size and
/// modification time). After its own writes it dates the file's mtime one second back, so a
/// foreign write in the same clock tick still changes it. Without a read/write lock file
/// (`rw_lockfile = false`) the handle is opened per call under GDBM's own lock, as dogpile.
///
/// Errors: a corrupt or unreadable file, a missing directory or a read-only file is a
/// `BackendError` naming the file; nothing already stored is touched.
///
/// Thread-safety: every call may be made from many threads and processes at once; calls of one
/// backend object are serialized on its GDBM handle.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dogpile/backend.hpp"
#include "dogpile/limits.hpp"
#include "dogpile/mutex.hpp"
#include "dogpile/registry.hpp"

namespace dogpile {

/// Options of `DbmBackend` (dogpile's argument names). Plain aggregate.
struct DbmOptions {
  std::filesystem::path filename{};  ///< the GDBM file (required); created if absent
  /// The read/write lock file: nullopt = `<filename>.rw.lock`; an empty path = none (dogpile's
  /// `rw_lockfile=False`: GDBM's own lock, the handle is opened per call).
  std::optional<std::filesystem::path> rw_lockfile{};
  /// The dogpile lock file: nullopt = `<filename>.dogpile.lock`; an empty path = none
  /// (dogpile's `dogpile_lockfile=False`: `get_mutex` returns nullptr and the region uses its
  /// in-process mutex).
  std::optional<std::filesystem::path> dogpile_lockfile{};
  /// Keep the GDBM handle open between calls while no other process writes (see the file
  /// comment); false = open and close it on every call, exactly as dogpile.
  bool keep_open = true;
  /// Private to this user (`"private_cache": true`): the GDBM file and both lock files are
  /// created with mode 0600 whatever the umask, and an existing one that is not this user's, or
  /// that group or others can read or write, is refused with a `BackendError` naming it and its
  /// mode. false (the default, as dogpile): files are created 0666 less the process umask. The
  /// directory is the caller's to choose (it is not created or checked).
  bool private_cache = false;
  /// Largest value a read returns and a region decodes (a larger stored value, or a
  /// compressed payload inflating past it, is a miss). At least 1.
  std::size_t max_value_bytes = default_max_value_bytes;
};

/// The `dbm` backend. See the file comment.
class DbmBackend final : public CacheBackend {
 public:
  /// Opens (creating if absent) the GDBM file and the lock files.
  /// @throws ValidationError for an empty filename; BackendError naming the file when it cannot
  /// be created or opened (missing directory, permissions, not a GDBM file).
  explicit DbmBackend(DbmOptions options);
  /// Closes the handle and the lock files. Never throws.
  ~DbmBackend() override;
  /// Arguments (JSON object): `filename` (string, required), `rw_lockfile` (string path or
  /// `false`), `dogpile_lockfile` (string path or `false`), `keep_open` (bool).
  /// @throws ValidationError naming a missing, mistyped or unknown argument.
  static std::shared_ptr<CacheBackend> from_arguments(const nlohmann::json& arguments);

  /// The options, with default lock file paths filled in (an empty path = none).
  [[nodiscard]] const DbmOptions& options() const noexcept;
  /// How many times this backend opened the GDBM file (the first open included): a measure of
  /// how often the kept handle was found stale. Thread-safety: any thread.
  [[nodiscard]] std::uint64_t opens() const noexcept;

 protected:
  /// The value under `key` (shared lock), or nullopt.
  std::optional<std::string> do_get(std::string_view key) override;
  /// Stores (exclusive lock).
  void do_set(std::string_view key, std::string_view value) override;
  /// Deletes if present (exclusive lock).
  void do_erase(std::string_view key) override;
  /// Every key under one shared lock.
  std::vector<std::optional<std::string>> do_get_multi(std::span<const std::string> keys) override;
  /// Every item under one exclusive lock.
  void do_set_multi(std::span<const BytesItem> items) override;
  /// Every key under one exclusive lock.
  void do_erase_multi(std::span<const std::string> keys) override;
  /// The file-wide, per-thread reentrant `flock` mutex, or nullptr without a dogpile lock file.
  std::shared_ptr<CacheMutex> do_get_mutex(std::string_view key) override;
  /// `max_value_bytes`.
  [[nodiscard]] std::size_t do_max_value_bytes() const override;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// Registers `dbm` (and its alias `dogpile.cache.dbm`); idempotent, thread-safe. Runs
/// automatically before `main` in every program that includes this header.
void register_dbm_backend();

namespace detail {
/// Makes `configure("dbm", …)` work for any program that includes this header.
inline const bool dbm_backend_registered = (register_dbm_backend(), true);
}  // namespace detail

}  // namespace dogpile
