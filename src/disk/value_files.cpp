#include "value_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <system_error>
#include <vector>

#include "dogpile/disk/types.hpp"
#include "dogpile/error.hpp"

namespace dogpile::detail {

namespace fs = std::filesystem;

namespace {

std::uint64_t random_u64() {
  // Reseeded per thread and after fork (the pid is part of the seed check), so parent and
  // child never draw the same names.
  thread_local pid_t seeded_pid = 0;
  thread_local std::mt19937_64 rng;
  pid_t pid = ::getpid();
  if (pid != seeded_pid) {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), static_cast<unsigned>(pid)};
    rng.seed(seq);
    seeded_pid = pid;
  }
  return rng();
}

[[noreturn]] void io_fail(const fs::path& p, std::string_view what, int err) {
  std::string msg =
      "disk cache: " + std::string(what) + " " + p.string() + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) {
    msg +=
        " (the disk is full: free space, lower size_limit, or move the cache; nothing "
        "stored before was lost)";
  }
  throw BackendError(msg);
}

/// Closes an fd at scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

/// The cache directory itself (the caller's path: a symlink there is the caller's choice).
int open_base(const fs::path& dir) {
  return ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/// A hex directory below `parent`, never through a symlink (ELOOP/ENOTDIR then); with
/// `create`, made first if missing.
int open_sub(int parent, const std::string& name, bool create, unsigned mode) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    int fd = ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || !create || errno != ENOENT) return fd;
    if (::mkdirat(parent, name.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST) {
      return -1;
    }
  }
  errno = ENOENT;
  return -1;
}

/// The `ab/cd` directory of `rel` (a valid name), or -1 with errno.
int open_leaf_dir(const fs::path& dir, const std::string& rel, bool create, unsigned mode) {
  Fd base(open_base(dir));
  if (base.fd < 0) return -1;
  Fd a(open_sub(base.fd, rel.substr(0, 2), create, mode));
  if (a.fd < 0) return -1;
  return open_sub(a.fd, rel.substr(3, 2), create, mode);
}

std::string leaf_name(const std::string& rel) { return rel.substr(6); }

/// Creates `<rel>.tmp` exclusively in its hex directory; retries when a concurrent remove
/// prunes the directory in between (as diskcache's `_write`). Returns the file and its dir.
std::pair<int, int> open_tmp(const fs::path& dir, const std::string& rel, FileModes modes) {
  const std::string tmp = leaf_name(rel) + ".tmp";
  int err = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    Fd leaf(open_leaf_dir(dir, rel, true, modes.dir));
    if (leaf.fd < 0) {
      err = errno;
      if (err == ENOENT) continue;
      if (err == ELOOP || err == ENOTDIR) {
        throw BackendError("disk cache: " + (dir / rel).parent_path().string() +
                           " is not a directory of this cache (a symlink or a file); run "
                           "check(fix=true)");
      }
      break;
    }
    int fd = ::openat(leaf.fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      static_cast<mode_t>(modes.file));
    if (fd >= 0) return {fd, leaf.release()};
    err = errno;
    if (err != ENOENT) break;
  }
  io_fail(dir / (rel + ".tmp"), "cannot create value file", err);
}

/// Writes into the temporary file; on failure removes it and throws.
void write_all(int fd, int leaf, const fs::path& full, const std::string& tmp, const char* p,
               std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlinkat(leaf, tmp.c_str(), 0);
      ::close(leaf);
      io_fail(full, "cannot write value file", err);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void finish(int fd, int leaf, const fs::path& full, const std::string& rel) {
  const std::string tmp = leaf_name(rel) + ".tmp";
  Fd guard(leaf);
  if (::close(fd) != 0) {
    int err = errno;
    ::unlinkat(leaf, tmp.c_str(), 0);
    io_fail(full, "cannot close value file", err);
  }
  // The final name appears complete or not at all; the row naming it commits only afterwards.
  if (::renameat(leaf, tmp.c_str(), leaf, leaf_name(rel).c_str()) != 0) {
    int err = errno;
    ::unlinkat(leaf, tmp.c_str(), 0);
    io_fail(full, "cannot rename value file", err);
  }
}

/// Opens a row's value file for reading, or returns -1 with the state why not.
int open_value(const fs::path& dir, const std::string& rel, ValueFileState& state,
               std::int64_t* size) {
  state = ValueFileState::unsafe;
  if (!is_value_filename(rel)) return -1;
  Fd leaf(open_leaf_dir(dir, rel, false, 0));
  int fd = -1;
  if (leaf.fd >= 0) {
    // O_NONBLOCK: a FIFO planted under the name must not block the open.
    fd = ::openat(leaf.fd, leaf_name(rel).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  }
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      state = ValueFileState::missing;
      return -1;
    }
    // A symlink (ELOOP; ENOTDIR for a symlinked hex directory opened with O_DIRECTORY) or a
    // file where a hex directory belongs: not this cache's layout.
    if (err == ELOOP || err == ENOTDIR) return -1;
    io_fail(dir / rel, "cannot open value file", err);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return -1;
  }
  if (size) *size = static_cast<std::int64_t>(st.st_size);
  state = ValueFileState::ok;
  return fd;
}

/// An istream over an owned fd (std::ifstream cannot open a file descriptor).
class FdBuf : public std::streambuf {
 public:
  explicit FdBuf(int fd) : fd_(fd), buf_(1 << 16) {}
  FdBuf(const FdBuf&) = delete;
  FdBuf& operator=(const FdBuf&) = delete;
  ~FdBuf() override { ::close(fd_); }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    ssize_t r = 0;
    do {
      r = ::read(fd_, buf_.data(), buf_.size());
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return traits_type::eof();
    setg(buf_.data(), buf_.data(), buf_.data() + r);
    return traits_type::to_int_type(*gptr());
  }

 private:
  int fd_;
  std::vector<char> buf_;
};

class FdStream : public std::istream {
 public:
  explicit FdStream(int fd) : std::istream(nullptr), buf_(fd) { rdbuf(&buf_); }

 private:
  FdBuf buf_;
};

}  // namespace

std::string random_value_filename() {
  static const char* hex = "0123456789abcdef";
  std::string h;
  h.reserve(32);
  for (int part = 0; part < 2; ++part) {
    std::uint64_t r = random_u64();
    for (int i = 0; i < 16; ++i) {
      h.push_back(hex[r & 0xF]);
      r >>= 4;
    }
  }
  return h.substr(0, 2) + "/" + h.substr(2, 2) + "/" + h.substr(4) + ".val";
}

bool is_value_filename(std::string_view rel) noexcept {
  // diskcache 5.x Disk.filename: hex = os.urandom(16).hex(); hex[:2]/hex[2:4]/hex[4:] + '.val'.
  if (rel.size() != 2 + 1 + 2 + 1 + 28 + 4) return false;
  if (rel[2] != '/' || rel[5] != '/' || rel.substr(34) != ".val") return false;
  for (std::size_t i = 0; i < 34; ++i) {
    if (i == 2 || i == 5) continue;
    char ch = rel[i];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  }
  return true;
}

std::string write_value_file(const fs::path& dir, std::string_view data, FileModes modes) {
  std::string rel = random_value_filename();
  fs::path full = dir / rel;
  auto [fd, leaf] = open_tmp(dir, rel, modes);
  write_all(fd, leaf, full, leaf_name(rel) + ".tmp", data.data(), data.size());
  finish(fd, leaf, full, rel);
  return rel;
}

std::pair<std::string, std::int64_t> write_value_stream(const fs::path& dir, std::istream& in,
                                                        FileModes modes) {
  std::string rel = random_value_filename();
  fs::path full = dir / rel;
  const std::string tmp = leaf_name(rel) + ".tmp";
  auto [fd, leaf] = open_tmp(dir, rel, modes);
  std::vector<char> buf(1 << 20);
  std::int64_t total = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    write_all(fd, leaf, full, tmp, buf.data(), n);
    total += static_cast<std::int64_t>(n);
  }
  if (in.bad()) {
    ::close(fd);
    ::unlinkat(leaf, tmp.c_str(), 0);
    ::close(leaf);
    throw BackendError("disk cache: reading the input stream failed while writing " +
                       full.string());
  }
  finish(fd, leaf, full, rel);
  return {rel, total};
}

bool remove_inside(const fs::path& dir, const fs::path& rel, bool directory) noexcept {
  try {
    std::vector<std::string> parts;
    for (const auto& p : rel) {
      const std::string s = p.string();
      if (s.empty() || s == "." || s == ".." || s == "/") return false;
      parts.push_back(s);
    }
    if (parts.empty()) return false;
    Fd at(open_base(dir));
    if (at.fd < 0) return false;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      Fd next(open_sub(at.fd, parts[i], false, 0));
      if (next.fd < 0) return false;
      std::swap(at.fd, next.fd);
    }
    return ::unlinkat(at.fd, parts.back().c_str(), directory ? AT_REMOVEDIR : 0) == 0;
  } catch (...) {  // allocation only
    return false;
  }
}

void create_cache_dir(const fs::path& dir, bool private_dir, std::string_view what) {
  std::error_code ec;
  if (private_dir) {
    // The parents as usual; the directory itself 0700 from the start (no window at 0755).
    if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      ec = std::error_code(errno, std::generic_category());
    } else {
      ec.clear();
    }
  } else {
    fs::create_directories(dir, ec);
  }
  if (ec && !fs::is_directory(dir)) {
    throw DatabaseError(std::string(what) + ": directory " + dir.string() +
                        " does not exist and could not be created: " + ec.message());
  }
}

void check_private_dir(const fs::path& dir, std::string_view what) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    throw DatabaseError(std::string(what) + ": cannot stat " + dir.string() + ": " +
                        std::strerror(errno));
  }
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  if (st.st_uid != ::geteuid()) {
    throw DatabaseError(std::string(what) + ": private_cache: " + dir.string() + " (mode " + mode +
                        ") is owned by uid " + std::to_string(st.st_uid) +
                        ", not by this process's uid " + std::to_string(::geteuid()));
  }
  if ((st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) != 0) {
    throw DatabaseError(std::string(what) + ": private_cache: " + dir.string() + " has mode " +
                        mode +
                        ": group or others can read or write it (chmod 700 it, or use "
                        "another directory)");
  }
}

ValueFileState stat_value_file(const fs::path& dir, const std::string& rel, std::int64_t* size) {
  ValueFileState state{};
  int fd = open_value(dir, rel, state, size);
  if (fd >= 0) ::close(fd);
  return state;
}

std::optional<std::string> read_value_file(const fs::path& dir, const std::string& rel,
                                           std::size_t max_bytes) {
  ValueFileState state{};
  std::int64_t size = 0;
  Fd fd(open_value(dir, rel, state, &size));
  if (fd.fd < 0) return std::nullopt;
  auto too_large = [&](const std::string& how) {
    throw ValueTooLargeError("value file " + (dir / rel).string() + " is " + how +
                             " bytes, more than max_value_bytes (" + std::to_string(max_bytes) +
                             "); refused before reading it (raise max_value_bytes, or stream "
                             "it with read())");
  };
  if (static_cast<std::uint64_t>(size) > max_bytes) too_large(std::to_string(size));
  std::string out;
  if (size > 0) out.reserve(static_cast<std::size_t>(size));
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd.fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      io_fail(dir / rel, "cannot read value file", errno);
    }
    if (r == 0) break;
    // The file may grow after fstat (someone appending to it): the bound holds for the read.
    if (static_cast<std::size_t>(r) > max_bytes - out.size())
      too_large("over " + std::to_string(max_bytes));
    out.append(buf, static_cast<std::size_t>(r));
  }
  return out;
}

std::unique_ptr<std::istream> open_value_stream(const fs::path& dir, const std::string& rel) {
  ValueFileState state{};
  int fd = open_value(dir, rel, state, nullptr);
  if (fd < 0) return nullptr;
  return std::make_unique<FdStream>(fd);
}

void remove_value_file(const fs::path& dir, const std::string& rel) noexcept {
  // A foreign name is left alone: it may point anywhere. A symlink planted as the value file
  // is unlinked itself (inside the directory); symlinked hex directories are not entered, and
  // rmdir never follows a symlink, so the pruning stays inside the cache directory too.
  if (!is_value_filename(rel)) return;
  try {
    Fd base(open_base(dir));
    if (base.fd < 0) return;
    const std::string a_name = rel.substr(0, 2);
    const std::string b_name = rel.substr(3, 2);
    Fd a(open_sub(base.fd, a_name, false, 0));
    if (a.fd < 0) return;
    {
      Fd b(open_sub(a.fd, b_name, false, 0));
      if (b.fd < 0) return;
      ::unlinkat(b.fd, leaf_name(rel).c_str(), 0);
    }
    // Prune the (now possibly empty) hex directories, never the cache directory itself.
    if (::unlinkat(a.fd, b_name.c_str(), AT_REMOVEDIR) == 0) {
      ::unlinkat(base.fd, a_name.c_str(), AT_REMOVEDIR);
    }
  } catch (...) {  // std::string allocation only
  }
}

}  // namespace dogpile::detail
