// The `dbm` region backend: GDBM file + read/write lock file + dogpile lock file, as dogpile's
// DBMBackend, with the GDBM handle kept open while no other process writes.
#include "dogpile/backends/dbm.hpp"

#include <fcntl.h>
#include <gdbm.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "dogpile/detail/backend_arguments.hpp"

namespace dogpile {
namespace {

using SteadyClock = std::chrono::steady_clock;

[[noreturn]] void bad_argument(const std::string& name, const std::string& what) {
  detail::bad_argument("dbm", name, what);  // adds the "did you mean" to an unknown name
}

[[noreturn]] void sys_error(const std::string& what, const std::string& path, int err) {
  detail::throw_error<BackendError>("dbm backend: " + what + " '" + path +
                                    "': " + std::strerror(err));
}

// A GDBM error with the system error behind it, if any.
std::string gdbm_message(gdbm_error ec, int err) {
  std::string m = gdbm_strerror(ec);
  if (gdbm_check_syserr(ec) != 0 && err != 0) m += std::string(": ") + std::strerror(err);
  return m;
}

// `mode` is the mode of a created file: 0666 (the umask applies), 0600 under private_cache.
int open_file(const std::string& path, int flags, mode_t mode) {
  for (;;) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd >= 0 || errno != EINTR) return fd;
  }
}

// flock with EINTR retried. @returns 0 or the errno.
int flock_retry(int fd, int op) {
  for (;;) {
    if (::flock(fd, op) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// Takes `op` (LOCK_SH / LOCK_EX) on `fd`: blocking when `timeout` is nullopt, once when zero,
// else polling with capped backoff (1 ms doubling to 50 ms) until the deadline. flock has no
// timed wait; a waiter that polls at most every 50 ms sees a release within 50 ms.
bool flock_for(int fd, int op, std::optional<std::chrono::milliseconds> timeout,
               const std::string& path) {
  if (!timeout) {
    if (const int e = flock_retry(fd, op); e != 0) sys_error("cannot lock", path, e);
    return true;
  }
  const auto deadline = SteadyClock::now() + *timeout;
  auto nap = std::chrono::milliseconds(1);
  for (;;) {
    const int e = flock_retry(fd, op | LOCK_NB);
    if (e == 0) return true;
    if (e != EWOULDBLOCK) sys_error("cannot lock", path, e);
    const auto now = SteadyClock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<SteadyClock::duration>(nap, deadline - now));
    nap = std::min(nap * 2, std::chrono::milliseconds(50));
  }
}

// ---- the dogpile lock: one flock for the whole file, reentrant per thread across keys --------

// Per backend: which threads of this process hold the dogpile lock file, through which fd, for
// which keys (dogpile's KeyReentrantMutex keystore). Each thread has its own fd, so threads of
// one process exclude each other in the kernel exactly as processes do.
struct FlockState {
  std::string path;
  mode_t mode;  // of the lock file when this process creates it
  std::mutex mu;
  pid_t pid = ::getpid();
  struct Hold {
    int fd = -1;
    std::set<std::string, std::less<>> keys;
  };
  std::map<std::thread::id, Hold> holds;

  FlockState(std::string p, mode_t m) : path(std::move(p)), mode(m) {}
  FlockState(const FlockState&) = delete;
  FlockState& operator=(const FlockState&) = delete;
  ~FlockState() {
    for (auto& [t, h] : holds) ::close(h.fd);
  }
  // Under `mu`. In a forked child the fds are the parent's open file descriptions: close them
  // without LOCK_UN (that would unlock the parent's lock) and forget the holds.
  void after_fork_locked() {
    if (pid == ::getpid()) return;
    for (auto& [t, h] : holds) ::close(h.fd);
    holds.clear();
    pid = ::getpid();
  }
};

class DbmMutex final : public CacheMutex {
 public:
  DbmMutex(std::shared_ptr<FlockState> st, std::string key)
      : st_(std::move(st)), key_(std::move(key)) {}
  DbmMutex(const DbmMutex&) = delete;
  DbmMutex& operator=(const DbmMutex&) = delete;
  ~DbmMutex() override {
    try {
      std::lock_guard lk(st_->mu);
      if (owner_ && owner_pid_ == ::getpid()) release_locked();
    } catch (...) {  // a destructor must not throw
    }
  }

 protected:
  bool do_acquire(std::optional<std::chrono::milliseconds> timeout) override {
    const auto me = std::this_thread::get_id();
    {
      std::lock_guard lk(st_->mu);
      st_->after_fork_locked();
      if (owner_ && owner_pid_ != ::getpid()) owner_.reset();  // the parent's hold
      auto it = st_->holds.find(me);
      // This thread already holds the file lock for other keys: add this one (reentrant).
      if (!owner_ && it != st_->holds.end() && !it->second.keys.contains(key_)) {
        it->second.keys.insert(key_);
        set_owner(me);
        return true;
      }
    }
    // The real lock, on a fresh fd: this thread holding this key already (or another thread
    // holding this object) makes it wait, as dogpile's FileLock does.
    const int fd = open_file(st_->path, O_RDWR | O_CREAT, st_->mode);
    if (fd < 0) sys_error("cannot open the dogpile lock file", st_->path, errno);
    bool got = false;
    try {
      got = flock_for(fd, LOCK_EX, timeout, st_->path);
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (!got) {
      ::close(fd);
      return false;
    }
    std::lock_guard lk(st_->mu);
    st_->after_fork_locked();
    auto& h = st_->holds[me];
    if (h.fd >= 0) {
      ::close(fd);  // cannot happen (this thread was waiting), but never leak or double-hold
    } else {
      h.fd = fd;
    }
    h.keys.insert(key_);
    set_owner(me);
    return true;
  }

  void do_release() override {
    std::lock_guard lk(st_->mu);
    st_->after_fork_locked();
    if (!owner_) {
      detail::throw_error<LockError>("dbm lock '" + st_->path + "' for key '" + key_ +
                                     "': release of a lock this mutex does not hold");
    }
    if (owner_pid_ != ::getpid()) {
      owner_.reset();
      detail::throw_error<LockError>("dbm lock '" + st_->path +
                                     "': a forked child does not own its parent's lock");
    }
    release_locked();
  }

  // Held through this mutex, or — when no thread of this backend holds the file lock — held
  // by another process or backend object (a non-blocking probe on a fresh fd).
  [[nodiscard]] bool do_locked() const override {
    {
      std::lock_guard lk(st_->mu);
      if (owner_ && owner_pid_ == ::getpid()) return true;
      if (st_->pid == ::getpid() && !st_->holds.empty()) return false;  // ours, other keys
    }
    const int fd = open_file(st_->path, O_RDWR | O_CREAT, st_->mode);
    if (fd < 0) sys_error("cannot open the dogpile lock file", st_->path, errno);
    const int e = flock_retry(fd, LOCK_EX | LOCK_NB);
    ::close(fd);  // closing drops the probe's lock
    if (e != 0 && e != EWOULDBLOCK) sys_error("cannot probe the dogpile lock file", st_->path, e);
    return e == EWOULDBLOCK;
  }

 private:
  void set_owner(std::thread::id t) {
    owner_ = t;
    owner_pid_ = ::getpid();
  }
  // Under st_->mu: drops this key from its owner thread's set; the last key unlocks the file.
  void release_locked() {
    auto it = st_->holds.find(*owner_);
    owner_.reset();
    if (it == st_->holds.end()) return;
    it->second.keys.erase(key_);
    if (it->second.keys.empty()) {
      ::flock(it->second.fd, LOCK_UN);
      ::close(it->second.fd);
      st_->holds.erase(it);
    }
  }

  std::shared_ptr<FlockState> st_;
  std::string key_;
  std::optional<std::thread::id> owner_;  // guarded by st_->mu
  pid_t owner_pid_ = 0;
};

// ---- the read/write lock around each GDBM call ------------------------------------------------

class RwGuard {
 public:
  RwGuard(int fd, bool exclusive, const std::string& path) : fd_(fd) {
    if (fd_ < 0) return;
    if (const int e = flock_retry(fd_, exclusive ? LOCK_EX : LOCK_SH); e != 0) {
      sys_error("cannot lock", path, e);
    }
  }
  RwGuard(const RwGuard&) = delete;
  RwGuard& operator=(const RwGuard&) = delete;
  ~RwGuard() {
    if (fd_ >= 0) ::flock(fd_, LOCK_UN);
  }

 private:
  int fd_;
};

// What identifies the file's content from outside: a foreign writer changes one of these.
struct Fingerprint {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = -1;
  std::int64_t mtime_ns = 0;
  bool operator==(const Fingerprint&) const = default;
};

std::int64_t ns_of(const timespec& t) {
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

std::int64_t wall_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return ns_of(t);
}

// File timestamps come from a coarse clock (one kernel tick, 1-10 ms): a write in the same tick
// as the one we saw leaves mtime unchanged. A fingerprint is trusted only when its mtime was
// already older than this margin when taken, so any later write must produce another mtime.
constexpr std::int64_t kCoarseMarginNs = 50'000'000;

}  // namespace

// ---- DbmBackend::Impl -----------------------------------------------------------------------

struct DbmBackend::Impl {
  DbmOptions opts;
  std::string file;  // filename as a string
  std::string rw_path;
  std::shared_ptr<FlockState> flock_state;  // null without a dogpile lock file

  std::mutex mu;  // one GDBM call at a time: a GDBM handle is not thread-safe
  pid_t pid = ::getpid();
  int rw_fd = -1;
  bool rw_writable = false;
  GDBM_FILE dbf = nullptr;
  bool dbf_writer = false;
  std::uint64_t gen_seen = 0;
  Fingerprint fp_seen{};
  bool fp_trusted = false;
  std::atomic<std::uint64_t> open_count{0};

  explicit Impl(DbmOptions o) : opts(std::move(o)) {
    if (opts.filename.empty()) bad_argument("filename", "is required");
    opts.filename = std::filesystem::absolute(opts.filename);
    file = opts.filename.string();
    if (!opts.rw_lockfile) opts.rw_lockfile = file + ".rw.lock";
    if (!opts.dogpile_lockfile) opts.dogpile_lockfile = file + ".dogpile.lock";
    rw_path = opts.rw_lockfile->string();
    if (opts.private_cache) {
      check_private_file(file);
      check_private_file(rw_path);
      check_private_file(opts.dogpile_lockfile->string());
    }
    if (!opts.dogpile_lockfile->empty()) {
      flock_state = std::make_shared<FlockState>(opts.dogpile_lockfile->string(), create_mode());
    }
    open_rw_lockfile();
    // Create the file if absent (under the write lock, so a reader never sees it half-made);
    // open an existing one for reading, so a corrupt file fails here, naming it.
    std::error_code ec;
    with_db(!std::filesystem::exists(opts.filename, ec), [](GDBM_FILE) {});
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (pid == ::getpid()) {
      close_db();
      if (rw_fd >= 0) ::close(rw_fd);
    }
  }

  mode_t create_mode() const { return opts.private_cache ? 0600 : 0666; }

  // private_cache: an existing file must be this user's and closed to group and others (a file
  // others can write is a file they can poison; one they can read leaks the cached values).
  // Created files get 0600 whatever the umask.
  static void check_private_file(const std::string& path) {
    if (path.empty()) return;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return;  // created below with mode 0600
      sys_error("private_cache: cannot stat", path, errno);
    }
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    if (st.st_uid != ::geteuid()) {
      detail::throw_error<BackendError>(
          "dbm backend: private_cache: '" + path + "' (mode " + mode + ") is owned by uid " +
          std::to_string(st.st_uid) + ", not by this process's uid " + std::to_string(::geteuid()));
    }
    if ((st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) != 0) {
      detail::throw_error<BackendError>(
          "dbm backend: private_cache: '" + path + "' has mode " + mode +
          ": group or others can read or write it (chmod 600 it, or use another file)");
    }
  }

  void open_rw_lockfile() {
    if (rw_path.empty()) return;
    rw_fd = open_file(rw_path, O_RDWR | O_CREAT, create_mode());
    rw_writable = rw_fd >= 0;
    if (rw_fd < 0 && (errno == EACCES || errno == EROFS)) rw_fd = open_file(rw_path, O_RDONLY, 0);
    if (rw_fd < 0) sys_error("cannot open the read/write lock file", rw_path, errno);
  }

  void close_db() noexcept {
    if (dbf != nullptr) gdbm_close(dbf);
    dbf = nullptr;
  }

  // In a forked child the handle and the lock fd are the parent's open file descriptions:
  // sharing them would share the parent's locks. Drop them (closing the fds only) and reopen.
  void after_fork() {
    if (pid == ::getpid()) return;
    if (dbf != nullptr) ::close(gdbm_fdesc(dbf));  // the GDBM struct is leaked on purpose:
    dbf = nullptr;                                 // gdbm_close could write the parent's state
    if (rw_fd >= 0) ::close(rw_fd);
    rw_fd = -1;
    pid = ::getpid();
    open_rw_lockfile();
  }

  [[noreturn]] void gdbm_fail(const std::string& what) {
    const std::string msg = "dbm backend: " + what + " '" + file +
                            "': " + gdbm_message(dbf ? gdbm_last_errno(dbf) : gdbm_errno, errno);
    close_db();  // reopened next call: a handle that saw an error may need recovery
    detail::throw_error<BackendError>(msg);
  }

  void open_db(bool write, bool lock_by_gdbm) {
    close_db();
    const int nolock = lock_by_gdbm ? 0 : GDBM_NOLOCK;
    open_count.fetch_add(1, std::memory_order_relaxed);
    // A writer when we may write (so reads and writes share one handle), else a reader.
    GDBM_FILE d = nullptr;
    int err = 0;
    gdbm_error ec = GDBM_NO_ERROR;
    for (const bool as_writer : {true, false}) {
      if (!as_writer && write) break;
      // Under GDBM's own lock a writer excludes every reader: read as a reader.
      if (as_writer && lock_by_gdbm && !write) continue;
      const int mode = as_writer ? GDBM_WRCREAT : GDBM_READER;
      d = gdbm_open(file.c_str(), 0, mode | nolock | GDBM_CLOEXEC, static_cast<int>(create_mode()),
                    nullptr);
      if (d != nullptr) {
        dbf_writer = as_writer;
        break;
      }
      err = errno;
      ec = gdbm_errno;
      if (!(gdbm_check_syserr(ec) != 0 && (err == EACCES || err == EROFS))) break;
    }
    if (d == nullptr) {
      errno = err;
      gdbm_errno = ec;
      if (ec == GDBM_CANT_BE_READER || ec == GDBM_CANT_BE_WRITER) {
        detail::throw_error<TimeoutError>(
            "dbm backend: '" + file + "' is locked by another process: " + gdbm_message(ec, err));
      }
      const bool permission = gdbm_check_syserr(ec) != 0 && (err == EACCES || err == EROFS);
      detail::throw_error<BackendError>(
          "dbm backend: cannot open '" + file + "'" + (write && permission ? " for writing" : "") +
          ": " + gdbm_message(ec, err) +
          (ec == GDBM_BAD_MAGIC_NUMBER || ec == GDBM_BAD_HEADER || ec == GDBM_BLOCK_SIZE_ERROR
               ? " (not a GDBM file, or a corrupt one: remove it to start an empty cache)"
               : ""));
    }
    dbf = d;
  }

  std::uint64_t read_gen() const {
    std::uint64_t g = 0;
    if (::pread(rw_fd, &g, sizeof g, 0) != static_cast<ssize_t>(sizeof g)) return 0;
    return g;
  }

  Fingerprint stat_file() const {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) return {};
    return {st.st_dev, st.st_ino, st.st_size, ns_of(st.st_mtim)};
  }

  // Under the read/write lock: reuse the kept handle if nobody wrote since we saw the file.
  void ensure_current(bool write) {
    const bool keep = opts.keep_open && rw_writable;
    const std::uint64_t gen = keep ? read_gen() : 0;
    const Fingerprint fp = stat_file();
    if (keep && dbf != nullptr && (dbf_writer || !write) && fp_trusted && gen == gen_seen &&
        fp == fp_seen) {
      return;
    }
    open_db(write, false);
    gen_seen = gen;
    fp_seen = stat_file();
    fp_trusted = fp_seen.mtime_ns < wall_ns() - kCoarseMarginNs;
  }

  // After our own write, still under the exclusive lock: bump the generation (so other
  // dogpile-cpp processes reopen) and date mtime one second back, so a foreign write, even in
  // the same clock tick, changes it; our handle stays current.
  void after_write() {
    if (!(opts.keep_open && rw_writable)) return;
    gen_seen = read_gen() + 1;
    if (::pwrite(rw_fd, &gen_seen, sizeof gen_seen, 0) != static_cast<ssize_t>(sizeof gen_seen)) {
      close_db();  // cannot publish the change: never trust this handle again
      return;
    }
    const std::int64_t back = wall_ns() - 1'000'000'000;
    const timespec times[2] = {
        {0, UTIME_OMIT},
        {static_cast<time_t>(back / 1'000'000'000), static_cast<long>(back % 1'000'000'000)}};
    if (::futimens(gdbm_fdesc(dbf), times) != 0) {
      fp_trusted = false;
      return;
    }
    fp_seen = stat_file();
    fp_trusted = fp_seen.mtime_ns < wall_ns() - kCoarseMarginNs;
  }

  template <class F>
  void with_db(bool write, F&& f) {
    std::lock_guard lk(mu);
    after_fork();
    if (rw_fd < 0) {
      // No read/write lock file: GDBM's own (non-blocking) lock, retried for up to 10 s.
      const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
      auto nap = std::chrono::milliseconds(1);
      for (;;) {
        try {
          open_db(write, true);
          break;
        } catch (const TimeoutError&) {
          if (SteadyClock::now() >= deadline) throw;
          std::this_thread::sleep_for(nap);
          nap = std::min(nap * 2, std::chrono::milliseconds(50));
        }
      }
      struct Close {
        Impl* self;
        ~Close() { self->close_db(); }
      } close{this};
      f(dbf);
      return;
    }
    RwGuard guard(rw_fd, write, rw_path);
    ensure_current(write);
    if (write) {
      struct After {
        Impl* self;
        ~After() {
          if (self->dbf != nullptr) self->after_write();
        }
      } after{this};
      f(dbf);
    } else {
      f(dbf);
    }
    if (!opts.keep_open) close_db();
  }

  std::optional<std::string> fetch(GDBM_FILE d, std::string_view key) {
    datum k{const_cast<char*>(key.data()), static_cast<int>(key.size())};
    datum v = gdbm_fetch(d, k);
    if (v.dptr == nullptr) {
      if (gdbm_errno == GDBM_ITEM_NOT_FOUND) return std::nullopt;
      gdbm_fail("cannot read from");
    }
    const auto n = static_cast<std::size_t>(v.dsize);
    if (n > opts.max_value_bytes) {
      // Over the bound: a miss, as documented. GDBM has already read it (its API has no size
      // query), but it is not copied, decoded or returned.
      std::free(v.dptr);
      return std::nullopt;
    }
    std::string out(v.dptr, n);
    std::free(v.dptr);
    return out;
  }

  void store(GDBM_FILE d, std::string_view key, std::string_view value) {
    if (!dbf_writer) {
      detail::throw_error<BackendError>("dbm backend: '" + file +
                                        "' is read-only: cannot store a value");
    }
    datum k{const_cast<char*>(key.data()), static_cast<int>(key.size())};
    datum v{const_cast<char*>(value.data()), static_cast<int>(value.size())};
    if (gdbm_store(d, k, v, GDBM_REPLACE) != 0) gdbm_fail("cannot write to");
  }

  void remove(GDBM_FILE d, std::string_view key) {
    if (!dbf_writer) {
      detail::throw_error<BackendError>("dbm backend: '" + file +
                                        "' is read-only: cannot delete a value");
    }
    datum k{const_cast<char*>(key.data()), static_cast<int>(key.size())};
    if (gdbm_delete(d, k) != 0 && gdbm_errno != GDBM_ITEM_NOT_FOUND) gdbm_fail("cannot write to");
  }
};

// ---- DbmBackend -----------------------------------------------------------------------------

namespace {
void check_sizes(std::string_view key, std::string_view value = {}) {
  constexpr std::size_t max = 0x7fffffff;  // GDBM datum sizes are ints
  if (key.size() > max || value.size() > max) {
    detail::throw_error<ValidationError>("dbm backend: a key or value over 2 GiB");
  }
}
}  // namespace

DbmBackend::DbmBackend(DbmOptions options)
    : CacheBackend("dbm"), impl_(std::make_shared<Impl>(std::move(options))) {
  if (impl_->opts.max_value_bytes == 0) {
    detail::throw_error<ValidationError>("dbm backend: 'max_value_bytes' must be at least 1");
  }
}

DbmBackend::~DbmBackend() = default;

const DbmOptions& DbmBackend::options() const noexcept { return impl_->opts; }

std::size_t DbmBackend::do_max_value_bytes() const { return impl_->opts.max_value_bytes; }

std::uint64_t DbmBackend::opens() const noexcept {
  return impl_->open_count.load(std::memory_order_relaxed);
}

std::shared_ptr<CacheBackend> DbmBackend::from_arguments(const nlohmann::json& arguments) {
  if (!arguments.is_object()) {
    detail::throw_error<ValidationError>("dbm backend: arguments must be a JSON object");
  }
  DbmOptions o;
  bool have_file = false;
  for (const auto& item : arguments.items()) {
    const std::string& name = item.key();
    const nlohmann::json& v = item.value();
    if (name == "filename") {
      if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
        bad_argument(name, "must be a non-empty path string, got " + v.dump());
      }
      o.filename = v.get<std::string>();
      have_file = true;
    } else if (name == "rw_lockfile" || name == "dogpile_lockfile") {
      auto& field = name == "rw_lockfile" ? o.rw_lockfile : o.dogpile_lockfile;
      if (v.is_boolean() && !v.get<bool>()) {
        field = std::filesystem::path();
      } else if (v.is_string() && !v.get_ref<const std::string&>().empty()) {
        field = v.get<std::string>();
      } else if (!v.is_null()) {
        bad_argument(name, "must be a path string, false or null, got " + v.dump());
      }
    } else if (name == "keep_open") {
      if (!v.is_boolean()) bad_argument(name, "must be a boolean, got " + v.dump());
      o.keep_open = v.get<bool>();
    } else if (name == "private_cache") {
      if (!v.is_boolean()) bad_argument(name, "must be a boolean, got " + v.dump());
      o.private_cache = v.get<bool>();
    } else if (name == "max_value_bytes") {
      if (!v.is_number_integer() || v.get<std::int64_t>() < 1) {
        bad_argument(name, "must be a positive integer, got " + v.dump());
      }
      o.max_value_bytes = v.get<std::size_t>();
    } else {
      bad_argument(name,
                   "is unknown (known: filename, rw_lockfile, dogpile_lockfile, keep_open, "
                   "private_cache, max_value_bytes)");
    }
  }
  if (!have_file) bad_argument("filename", "is required");
  return std::make_shared<DbmBackend>(std::move(o));
}

std::optional<std::string> DbmBackend::do_get(std::string_view key) {
  check_sizes(key);
  std::optional<std::string> out;
  impl_->with_db(false, [&](GDBM_FILE d) { out = impl_->fetch(d, key); });
  return out;
}

void DbmBackend::do_set(std::string_view key, std::string_view value) {
  check_sizes(key, value);
  impl_->with_db(true, [&](GDBM_FILE d) { impl_->store(d, key, value); });
}

void DbmBackend::do_erase(std::string_view key) {
  check_sizes(key);
  impl_->with_db(true, [&](GDBM_FILE d) { impl_->remove(d, key); });
}

std::vector<std::optional<std::string>> DbmBackend::do_get_multi(
    std::span<const std::string> keys) {
  for (const auto& k : keys) check_sizes(k);
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  impl_->with_db(false, [&](GDBM_FILE d) {
    for (const auto& k : keys) out.push_back(impl_->fetch(d, k));
  });
  return out;
}

void DbmBackend::do_set_multi(std::span<const BytesItem> items) {
  for (const auto& [k, v] : items) check_sizes(k, v);
  impl_->with_db(true, [&](GDBM_FILE d) {
    for (const auto& [k, v] : items) impl_->store(d, k, v);
  });
}

void DbmBackend::do_erase_multi(std::span<const std::string> keys) {
  for (const auto& k : keys) check_sizes(k);
  impl_->with_db(true, [&](GDBM_FILE d) {
    for (const auto& k : keys) impl_->remove(d, k);
  });
}

std::shared_ptr<CacheMutex> DbmBackend::do_get_mutex(std::string_view key) {
  if (!impl_->flock_state) return nullptr;
  return std::make_shared<DbmMutex>(impl_->flock_state, std::string(key));
}

void register_dbm_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_backend("dbm", [](const nlohmann::json& a) { return DbmBackend::from_arguments(a); });
  });
}

}  // namespace dogpile
