// HotCache: DiskCache's process-local cache of hot inline values
// (DiskCacheOptions::hot_cache_bytes). See hot_cache.cpp for the validation argument and for
// standing down when it does not pay.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "dogpile/disk/types.hpp"
#include "sqlite_util.hpp"

namespace dogpile::detail {

/// Hash of a Key consistent with Key's operator== (0.0 and -0.0 hash alike).
struct KeyHash {
  std::size_t operator()(const Key& k) const noexcept;
};

/// A process-local map key → (value, rowid, expire_time, tag) that is trusted only while the
/// SQLite wal-index header (the first 96 bytes of the `-shm` file) is unchanged since the SQLite
/// read that filled it. Thread-safe (one mutex); fork-safe (a child drops what it inherited).
class HotCache {
 public:
  /// The wal-index header both copies agreed on (12 words of WalIndexHdr).
  using Token = std::array<std::uint32_t, 12>;
  /// What a lookup that missed hands to the fill: the header seen before the SQLite read.
  struct Ticket {
    Token token{};
    std::uint64_t epoch = 0;
    bool valid = false;
  };
  /// A hit.
  struct Hit {
    DiskValue value;
    std::int64_t rowid = 0;
    std::optional<double> expire_time;
    std::optional<Key> tag;
  };

  HotCache(std::string db_path, std::size_t max_bytes);
  ~HotCache();
  HotCache(const HotCache&) = delete;
  HotCache& operator=(const HotCache&) = delete;

  /// The entry of `key` if the header is unchanged since it was filled and it has not expired at
  /// `now`; otherwise nullopt and, in `ticket`, the header seen now for a fill. Never throws.
  std::optional<Hit> find(const Key& key, double now, Ticket& ticket, bool want_value = true);
  /// Stores what a SQLite read that started after `ticket` was taken returned (inline values
  /// only; too large ones are skipped). A stale ticket stores nothing.
  void insert(const Ticket& ticket, const Key& key, const DiskValue& value, std::int64_t rowid,
              std::optional<double> expire_time, const std::optional<Key>& tag) noexcept;
  /// Drops every entry and the mapping (DiskCache::close, a journal-mode change); the next
  /// lookup maps the header again.
  void close() noexcept;
  /// The header now, read while this process's connection holds the WAL write lock just before
  /// its COMMIT (so no other commit can come in between); nullopt when not attached.
  std::optional<Token> pre_commit_token() noexcept;
  /// After that COMMIT returned: if exactly one commit (ours) happened since `pre` — iChange
  /// grew by one in the same WAL generation — the entries (except `key`, which the transaction
  /// wrote; it alone changed) stay valid under the new header. Otherwise nothing: the next
  /// lookup sees a changed header and drops every entry.
  void after_own_commit(const Token& pre, const Key& key) noexcept;
  /// The counters and the current size.
  HotCacheStats stats() noexcept;

 private:
  struct Entry {
    DiskValue value;
    std::int64_t rowid = 0;
    std::optional<double> expire_time;
    std::optional<Key> tag;
    std::size_t bytes = 0;
  };
  bool attach_locked() noexcept;
  void detach_locked() noexcept;
  bool read_token_locked(Token& out) const noexcept;
  void clear_locked() noexcept;
  void adapt_locked() noexcept;
  /// Every kWindow lookups: stands down (true) when the window did not pay.
  bool judge_window_locked() noexcept;

  std::string db_path_;
  std::size_t max_bytes_;
  std::mutex mu_;
  std::unique_ptr<Connection> anchor_;  // keeps the -shm open (SQLite's DMS lock) while mapped
  const std::uint32_t* hdr_ = nullptr;  // our read-only mapping of the -shm's first page
  int shm_fd_ = -1;                     // the -shm, holding our shared DMS lock while mapped
  std::uint64_t fork_gen_ = 0;          // process generation the mapping belongs to
  std::uint64_t epoch_ = 1;             // bumped by every detach: old tickets are void
  std::int64_t retry_at_ = 0;           // steady-clock ns: no attach attempt before (failure)
  Token current_{};                     // the header every entry was filled under
  bool have_current_ = false;
  std::unordered_map<Key, Entry, KeyHash> map_;
  std::size_t bytes_ = 0;
  HotCacheStats counters_{};
  std::uint64_t run_fills_ = 0;    // fills since the last invalidation
  std::uint64_t run_hits_ = 0;     // hits since the last invalidation
  std::uint32_t admit_every_ = 1;  // a miss may fill every admit_every_-th time
  std::uint32_t admit_tick_ = 0;
  // Standing down (judge_window_locked): lookups still to send straight to SQLite, without the
  // mutex or the header read. Outside the mutex, hence atomic (one decrement per skipped lookup).
  std::atomic<std::int64_t> skip_{0};
  std::uint64_t skip_assigned_ = 0;  // lookups of every stand-down so far (for stats().skipped)
  std::uint32_t win_lookups_ = 0;    // lookups of the current judging window
  std::uint32_t win_hits_ = 0;
  bool win_wasted_ = false;      // entries were dropped (commit) or evicted in the window
  std::int64_t stand_down_ = 0;  // length of the next stand-down (0: the shortest)
};

/// The calling process's fork generation (bumped in a child after fork()); cache_txn.cpp owns it.
std::uint64_t fork_generation() noexcept;

}  // namespace dogpile::detail
