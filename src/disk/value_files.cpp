#include "value_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <system_error>
#include <vector>

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

/// Opens `<full>.tmp` exclusively, creating parent directories; retries when a concurrent
/// remove prunes the directory in between (as diskcache's `_write`).
int open_tmp(const fs::path& full, fs::path& tmp) {
  tmp = full;
  tmp += ".tmp";
  int err = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    std::error_code ec;
    fs::create_directories(full.parent_path(), ec);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    err = errno;
    if (err != ENOENT) break;
  }
  io_fail(tmp, "cannot create value file", err);
}

void write_all(int fd, const fs::path& tmp, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      io_fail(tmp, "cannot write value file", err);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void finish(int fd, const fs::path& tmp, const fs::path& full) {
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    io_fail(tmp, "cannot close value file", err);
  }
  // The final name appears complete or not at all; the row naming it commits only afterwards.
  if (::rename(tmp.c_str(), full.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    io_fail(full, "cannot rename value file", err);
  }
}

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

std::string write_value_file(const fs::path& dir, std::string_view data) {
  std::string rel = random_value_filename();
  fs::path full = dir / rel;
  fs::path tmp;
  int fd = open_tmp(full, tmp);
  write_all(fd, tmp, data.data(), data.size());
  finish(fd, tmp, full);
  return rel;
}

std::pair<std::string, std::int64_t> write_value_stream(const fs::path& dir, std::istream& in) {
  std::string rel = random_value_filename();
  fs::path full = dir / rel;
  fs::path tmp;
  int fd = open_tmp(full, tmp);
  std::vector<char> buf(1 << 20);
  std::int64_t total = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    write_all(fd, tmp, buf.data(), n);
    total += static_cast<std::int64_t>(n);
  }
  if (in.bad()) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw BackendError("disk cache: reading the input stream failed while writing " +
                       full.string());
  }
  finish(fd, tmp, full);
  return {rel, total};
}

std::optional<std::string> read_value_file(const fs::path& dir, const std::string& rel) {
  fs::path full = dir / rel;
  int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    io_fail(full, "cannot open value file", errno);
  }
  struct stat st {};
  std::string out;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      io_fail(full, "cannot read value file", err);
    }
    if (r == 0) break;
    out.append(buf, static_cast<std::size_t>(r));
  }
  ::close(fd);
  return out;
}

void remove_value_file(const fs::path& dir, const std::string& rel) noexcept {
  if (rel.empty()) return;
  fs::path full = dir / rel;
  ::unlink(full.c_str());
  // Prune the (now possibly empty) hex directories, never the cache directory itself.
  fs::path p = full.parent_path();
  for (int i = 0; i < 2 && p != dir && p.has_relative_path(); ++i) {
    if (::rmdir(p.c_str()) != 0) break;
    p = p.parent_path();
  }
}

}  // namespace dogpile::detail
