// The hot-read cache (DiskCacheOptions::hot_cache_bytes).
//
// Validation. In WAL mode every reader finds its snapshot through the wal-index header, the
// first 96 bytes of the `<db>-shm` file: two copies of the 48-byte WalIndexHdr (documented in
// https://www.sqlite.org/walformat.html, §2.2.1). A committing writer rewrites both copies
// (copy 1, a memory barrier, copy 0) before its COMMIT returns, and `iChange` grows by one with
// every commit; a WAL restart changes the salts and resets mxFrame; a checkpoint alone leaves the
// header as it is (it only moves nBackfill, which lies after the header), and so does a
// rolled-back transaction. So: equal headers at two instants ⇒ no commit in between, by any
// connection of any process (an ABA would need 2^32 commits inside one WAL generation).
//
// Entries are filled as: read the header H (both copies equal, else no fill), then run the
// SQLite read in a fresh read transaction (autocommit, no open transaction on the connection);
// the entry is kept only while the header still equals H. A hit reads the header again and needs
// it equal to H: no commit happened since H was read, the read started after H, so the read's
// snapshot is the database as it is now. Any header change — a commit by another process, by
// another DiskCache of ours, or by this cache itself (our own writes simply invalidate; we do
// not patch entries, which would need a proof that no foreign commit slipped in) — drops every
// entry at the next lookup. With one writer elsewhere committing every millisecond, entries live
// a millisecond: the hit rate is what docs/benchmarks.md measures.
//
// Reading the header (see also the DMS lock in attach_locked). We mmap the -shm file read-only
// ourselves (MAP_SHARED: the same page
// cache SQLite's mapping writes to) instead of borrowing SQLite's mapping through xShmMap:
// our loads then never alias SQLite's plain stores at one address (no data race for TSan to
// see), and we depend only on the documented file format. The mapping stays valid because the
// -shm is only ever truncated and reinitialised by a process holding the exclusive DMS lock: we
// hold a shared one of our own (an open-file-description lock on the descriptor we mapped,
// attach_locked) for as long as the mapping exists. A dedicated "anchor" connection of ours
// also keeps the wal-index open, so the database stays in WAL mode while we watch it (leaving
// WAL needs an exclusive lock the anchor's shared lock denies). Non-WAL journal modes have no
// -shm: the hot cache stays off there (every read goes to SQLite).
//
// Standing down. On a workload it cannot help — many keys each read about once between two
// commits (a writer elsewhere committing every millisecond), or uniform reads over many more
// keys than fit — the cache would only add its lookup and its fills to every get. It judges
// itself every kWindow lookups: when fewer than 1 in kPayingHits of them were hits AND it
// dropped entries in that window (a commit invalidated them, or the bound evicted them: filling
// did not build anything up), it sends the next lookups straight to SQLite — no mutex, no
// header read, no fill — for kMinStandDown lookups, twice that after each further window that
// does not pay, up to kMaxStandDown; then it tries one window again (with the entries it kept:
// still valid if nothing committed meanwhile, dropped at that first lookup otherwise). A window
// that pays resets the length. A cache still warming up (entries filled, nothing dropped) is
// never judged as not paying. A hit saves a SQLite read (2–7 µs); a miss costs the lookup and
// maybe a fill (~0.3–0.7 µs), so below about one hit in four the cache loses on the mean.
// Standing down changes only which reads go to SQLite, never what a hit may return.
//
// Fork. A child inherits the mapping and the entries but not the anchor's POSIX locks: it
// abandons the parent's anchor (never closing the parent's SQLite handle), unmaps, drops the
// entries and attaches afresh.
#include "hot_cache.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string_view>

namespace dogpile::detail {

std::size_t KeyHash::operator()(const Key& k) const noexcept {
  const auto& v = k.value();
  std::size_t h = v.index() * 0x9e3779b97f4a7c15ull;
  switch (v.index()) {
    case 0:
      return h ^ std::hash<std::int64_t>{}(std::get<0>(v));
    case 1: {
      double d = std::get<1>(v);
      return h ^ std::hash<double>{}(d == 0.0 ? 0.0 : d);  // 0.0 == -0.0
    }
    case 2:
      return h ^ std::hash<std::string_view>{}(std::get<2>(v));
    default:
      return h ^ std::hash<std::string_view>{}(std::get<3>(v).data);
  }
}

namespace {

constexpr std::uint32_t kWalIndexVersion = 3007000;  // WalIndexHdr.iVersion
constexpr std::size_t kMapBytes = 4096;
// The -shm's "DMS" (dead man switch) lock byte (walformat.html §2.3.1; os_unix.c UNIX_SHM_DMS).
constexpr off_t kDmsByte = 128;
// An entry's own overhead beyond its value and key bytes (node, hash slot, optionals).
constexpr std::size_t kEntryOverhead = 96;
// Standing down (see the top of this file).
constexpr std::uint32_t kWindow = 512;
constexpr std::uint32_t kPayingHits = 4;  // a window pays with ≥ 1 hit in 4 lookups
constexpr std::int64_t kMinStandDown = 4096;
constexpr std::int64_t kMaxStandDown = 65536;

std::size_t value_bytes(const DiskValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return s->size();
  if (const auto* b = std::get_if<Bytes>(&v)) return b->data.size();
  return 8;
}

std::size_t key_bytes(const Key& k) {
  const auto& v = k.value();
  if (const auto* s = std::get_if<std::string>(&v)) return s->size();
  if (const auto* b = std::get_if<Bytes>(&v)) return b->data.size();
  return 8;
}

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

HotCache::HotCache(std::string db_path, std::size_t max_bytes)
    : db_path_(std::move(db_path)), max_bytes_(max_bytes) {}

HotCache::~HotCache() {
  std::lock_guard lk(mu_);
  detach_locked();
}

bool HotCache::read_token_locked(Token& out) const noexcept {
  // SQLite's reader protocol (walIndexTryHdr): copy 0, barrier, copy 1; equal copies are a
  // header no writer was in the middle of. The loads are atomic so that the compiler neither
  // tears nor merges them; copy 0's loads are acquire loads, which order copy 1's loads after
  // them as the writer's barrier orders its stores the other way round. (Acquire loads rather
  // than a fence: gcc's ThreadSanitizer does not support atomic_thread_fence, and on x86 both
  // are plain loads.)
  Token second{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = __atomic_load_n(hdr_ + i, __ATOMIC_ACQUIRE);
  for (std::size_t i = 0; i < second.size(); ++i) {
    second[i] = __atomic_load_n(hdr_ + 12 + i, __ATOMIC_RELAXED);
  }
  if (out != second) return false;
  unsigned char is_init = 0;
  std::memcpy(&is_init, reinterpret_cast<const unsigned char*>(out.data()) + 12, 1);
  return out[0] == kWalIndexVersion && is_init != 0;
}

bool HotCache::attach_locked() noexcept {
  if (hdr_ != nullptr && fork_gen_ == fork_generation()) return true;
  if (hdr_ != nullptr || anchor_) detach_locked();  // forked child: the parent's are not ours
  if (steady_ns() < retry_at_) return false;
  try {
    auto anchor = std::make_unique<Connection>(db_path_, false);
    anchor->arm(std::chrono::milliseconds(1000), false);
    // A read opens the WAL and its wal-index (the -shm) on this connection; it stays open until
    // the connection closes.
    std::string mode;
    {
      sqlite3_stmt* s = anchor->prepare("PRAGMA journal_mode");
      StmtGuard g(s);
      if (sqlite3_step(s) == SQLITE_ROW) {
        const auto* t = sqlite3_column_text(s, 0);
        if (t != nullptr) mode = reinterpret_cast<const char*>(t);
      }
    }
    if (mode != "wal") throw std::runtime_error("not in WAL mode");
    if (anchor->try_exec("SELECT count(*) FROM sqlite_master") != SQLITE_OK) {
      throw std::runtime_error("anchor read failed");
    }
    int fd = ::open((db_path_ + "-shm").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("no -shm");
    // Our own shared lock on SQLite's DMS byte, as an open-file-description lock: it conflicts
    // with another process's exclusive DMS lock (which it takes to truncate and reinitialise the
    // -shm) for as long as this descriptor is open, independently of SQLite's per-process POSIX
    // locks (which a forked child does not hold, and which closing any other descriptor of the
    // file would drop). It lives and dies with the mapping; a child closing its inherited copy
    // of the descriptor does not release it for the parent.
    struct flock dms {};
    dms.l_type = F_RDLCK;
    dms.l_whence = SEEK_SET;
    dms.l_start = kDmsByte;
    dms.l_len = 1;
    struct stat st {};
    void* p = MAP_FAILED;
    if (::fcntl(fd, F_OFD_SETLK, &dms) == 0 && ::fstat(fd, &st) == 0 &&
        st.st_size >= static_cast<off_t>(kMapBytes)) {
      p = ::mmap(nullptr, kMapBytes, PROT_READ, MAP_SHARED, fd, 0);
    }
    if (p == MAP_FAILED) {
      ::close(fd);
      throw std::runtime_error("mmap failed");
    }
    shm_fd_ = fd;
    anchor_ = std::move(anchor);
    hdr_ = static_cast<const std::uint32_t*>(p);
    fork_gen_ = fork_generation();
    return true;
  } catch (...) {
    // Not WAL, or the database is busy being recovered: plain SQLite reads; look again later.
    retry_at_ = steady_ns() + 1'000'000'000;
    return false;
  }
}

void HotCache::detach_locked() noexcept {
  clear_locked();
  ++epoch_;
  if (hdr_ != nullptr) ::munmap(const_cast<std::uint32_t*>(hdr_), kMapBytes);
  hdr_ = nullptr;
  if (shm_fd_ >= 0) ::close(shm_fd_);  // releases our DMS lock (this process's copy)
  shm_fd_ = -1;
  if (anchor_ && fork_gen_ != fork_generation()) anchor_->abandon();
  anchor_.reset();
}

void HotCache::adapt_locked() noexcept {
  // When the entries dropped by a commit were filled far more often than they were hit (many
  // keys read once between two commits elsewhere: the fill is pure overhead, a value copy and a
  // map node), fill only every 2nd, 4th … 64th miss; when hits come back, fill more again. Only
  // which reads fill changes, never what a hit may return: correctness does not depend on it.
  if (run_fills_ >= 8 && run_hits_ * 8 < run_fills_) {
    admit_every_ = std::min<std::uint32_t>(64, admit_every_ * 2);
  } else if (run_hits_ >= run_fills_ && run_hits_ > 0) {
    admit_every_ = std::max<std::uint32_t>(1, admit_every_ / 2);
  }
  run_fills_ = 0;
  run_hits_ = 0;
}

bool HotCache::judge_window_locked() noexcept {
  const bool pays = win_hits_ * kPayingHits >= win_lookups_ || !win_wasted_;
  win_lookups_ = 0;
  win_hits_ = 0;
  win_wasted_ = false;
  if (pays) {
    stand_down_ = 0;
    return false;
  }
  stand_down_ = stand_down_ == 0 ? kMinStandDown : std::min(kMaxStandDown, stand_down_ * 2);
  skip_.store(stand_down_, std::memory_order_relaxed);
  skip_assigned_ += static_cast<std::uint64_t>(stand_down_);
  ++counters_.stand_downs;
  // The next window fills every miss again (the admission sampling starts afresh).
  admit_every_ = 1;
  admit_tick_ = 0;
  run_fills_ = 0;
  run_hits_ = 0;
  return true;
}

void HotCache::clear_locked() noexcept {
  map_.clear();
  bytes_ = 0;
  have_current_ = false;
}

std::optional<HotCache::Hit> HotCache::find(const Key& key, double now, Ticket& ticket,
                                            bool want_value) {
  ticket.valid = false;
  if (skip_.load(std::memory_order_relaxed) > 0 &&
      skip_.fetch_sub(1, std::memory_order_relaxed) > 0) {
    return std::nullopt;  // standing down: SQLite answers
  }
  std::lock_guard lk(mu_);
  ++counters_.misses;  // undone below on a hit
  if (!attach_locked()) return std::nullopt;
  if (++win_lookups_ >= kWindow && judge_window_locked()) return std::nullopt;
  Token t;
  if (!read_token_locked(t)) return std::nullopt;  // a writer mid-update: SQLite decides
  // Admission: a miss hands out a fill ticket only every admit_every_-th time (see adapt_locked).
  bool admit = ++admit_tick_ >= admit_every_;
  if (admit) admit_tick_ = 0;
  ticket = Ticket{t, epoch_, admit};
  if (!have_current_ || t != current_) {
    if (!map_.empty()) {
      ++counters_.invalidations;
      win_wasted_ = true;
    }
    adapt_locked();
    clear_locked();  // something committed: every entry may be stale
    current_ = t;
    have_current_ = true;
    return std::nullopt;
  }
  auto it = map_.find(key);
  if (it == map_.end()) return std::nullopt;
  const Entry& e = it->second;
  if (e.expire_time && !(*e.expire_time > now)) return std::nullopt;  // as kSelectLive
  Hit h{want_value ? e.value : DiskValue(std::int64_t{0}), e.rowid, e.expire_time, e.tag};
  --counters_.misses;
  ++counters_.hits;
  ++run_hits_;
  ++win_hits_;
  return h;
}

void HotCache::insert(const Ticket& ticket, const Key& key, const DiskValue& value,
                      std::int64_t rowid, std::optional<double> expire_time,
                      const std::optional<Key>& tag) noexcept {
  if (!ticket.valid) return;
  std::size_t bytes = value_bytes(value) + key_bytes(key) + kEntryOverhead +
                      (tag ? key_bytes(*tag) + kEntryOverhead / 2 : 0);
  if (bytes > max_bytes_ / 4) return;  // a few large values must not flush all the small ones
  try {
    std::lock_guard lk(mu_);
    if (ticket.epoch != epoch_ || !have_current_ || ticket.token != current_) return;
    if (fork_gen_ != fork_generation()) return;
    auto it = map_.find(key);
    if (it != map_.end()) {
      bytes_ -= it->second.bytes;
      map_.erase(it);
    }
    // The bound: drop arbitrary entries (the map's first ones) until the new one fits.
    while (bytes_ + bytes > max_bytes_ && !map_.empty()) {
      win_wasted_ = true;
      bytes_ -= map_.begin()->second.bytes;
      map_.erase(map_.begin());
    }
    map_.emplace(key, Entry{value, rowid, expire_time, tag, bytes});
    bytes_ += bytes;
    ++run_fills_;
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory: simply not cached
  }
}

std::optional<HotCache::Token> HotCache::pre_commit_token() noexcept {
  // try_lock: our caller holds the WAL write lock, and another thread may hold mu_ while its
  // attach waits on SQLite locks; rather than wait, just do not keep the entries this time.
  std::unique_lock lk(mu_, std::try_to_lock);
  if (!lk.owns_lock()) return std::nullopt;
  if (hdr_ == nullptr || fork_gen_ != fork_generation()) return std::nullopt;
  Token t;
  if (!read_token_locked(t)) return std::nullopt;
  return t;
}

void HotCache::after_own_commit(const Token& pre, const Key& key) noexcept {
  // Why this is exact: `pre` was read while our connection held the WAL write lock, after its
  // last write and before its COMMIT, so no other commit lies between `pre` and ours. iChange
  // (word 2) grows by one with every commit (walformat.html), so post.iChange == pre.iChange + 1
  // means ours was the only commit between the two reads. The same salts (words 8, 9) and a
  // grown mxFrame (word 4) exclude a WAL restart or a recovery in between (a recovery rebuilds
  // the header with iChange 0; pre.iChange + 1 == 0 is refused). Our transaction changed the
  // row of `key` only (the caller guarantees: no cull deletions, no other statements), so every
  // other entry is as valid under `post` as it was under `pre`.
  std::lock_guard lk(mu_);
  if (hdr_ == nullptr || fork_gen_ != fork_generation()) return;
  Token post;
  if (!read_token_locked(post)) return;
  bool only_ours = pre[2] + 1 != 0 && post[2] == pre[2] + 1 && post[8] == pre[8] &&
                   post[9] == pre[9] && post[4] > pre[4];
  if (!only_ours || !have_current_ || current_ != pre) return;
  auto it = map_.find(key);
  if (it != map_.end()) {
    bytes_ -= it->second.bytes;
    map_.erase(it);
  }
  current_ = post;
  ++counters_.own_commits_kept;
}

HotCacheStats HotCache::stats() noexcept {
  std::lock_guard lk(mu_);
  HotCacheStats s = counters_;
  // Every lookup of a stand-down but those still to come was skipped (a racing lookup that
  // found the budget spent takes it below zero without skipping: counted by the max).
  s.skipped = skip_assigned_ - static_cast<std::uint64_t>(std::max<std::int64_t>(
                                   0, skip_.load(std::memory_order_relaxed)));
  s.entries = map_.size();
  s.bytes = bytes_;
  return s;
}

void HotCache::close() noexcept {
  std::lock_guard lk(mu_);
  detach_locked();
}

}  // namespace dogpile::detail
