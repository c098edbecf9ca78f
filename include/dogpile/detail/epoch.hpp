#pragma once
/// @file epoch.hpp
/// Epoch-based reclamation for the lock-free reads of the unbounded memory store: a reader pins
/// the current epoch for the length of one lookup and copy; a writer that unlinks a node keeps
/// it until every reader that could still hold it has left. Not part of the public API.
///
/// The scheme is crossbeam-epoch's: the global epoch advances from e to e + 1 only while every
/// pinned thread is pinned at e, so an object retired at epoch t is unreachable to every reader
/// once the global epoch reaches t + 2. Every operation that orders a reader against a writer
/// is seq_cst (the pin, the table and chain links, the retire tag, the advance): x86 pays for
/// that only on the stores (an `xchg`), and ThreadSanitizer models it (it does not model
/// standalone fences).
///
/// Thread-safety: the guard is per thread; `epoch_try_advance` may run on any thread.

#include <atomic>
#include <cstdint>

namespace dogpile::detail {

/// One thread's slot: the epoch it is pinned at (0 = not pinned). Records are never freed; a
/// thread's record is reused by a later thread once it has exited.
struct alignas(64) EpochRecord {
  std::atomic<std::uint64_t> pinned{0};
  std::uint32_t depth = 0;                  // nesting of guards on the owning thread
  std::atomic<bool> in_use{false};          // owned by a live thread
  std::atomic<EpochRecord*> next{nullptr};  // the registry list (append-only)
  std::uint32_t index = 0;                  // creation order: live threads' indexes differ
};

/// The global epoch (starts at 1; 0 means "not pinned").
extern std::atomic<std::uint64_t> epoch_global;
/// The calling thread's record, or null before its first guard.
extern thread_local constinit EpochRecord* epoch_tls;

/// Gives the calling thread a record (reusing one whose thread exited) and sets `epoch_tls`.
EpochRecord* epoch_register();

/// Advances the global epoch by one if every pinned thread is pinned at the current epoch;
/// returns the global epoch after the attempt.
std::uint64_t epoch_try_advance() noexcept;

/// True if no thread is pinned. Read after an unlink, it means no reader can hold what was
/// unlinked: one that pinned later cannot reach it, one pinned earlier would still be pinned.
bool epoch_quiescent() noexcept;

/// Pins the calling thread at the current epoch for its lifetime (re-entrant).
class EpochGuard {
 public:
  EpochGuard() : r_(epoch_tls != nullptr ? epoch_tls : epoch_register()) {
    if (r_->depth++ == 0) {
      r_->pinned.exchange(epoch_global.load(std::memory_order_seq_cst), std::memory_order_seq_cst);
    }
  }
  ~EpochGuard() {
    if (--r_->depth == 0) r_->pinned.store(0, std::memory_order_release);
  }
  EpochGuard(const EpochGuard&) = delete;
  EpochGuard& operator=(const EpochGuard&) = delete;

  /// The calling thread's record index: no two live threads share one (a per-thread stripe).
  [[nodiscard]] std::uint32_t index() const noexcept { return r_->index; }

 private:
  EpochRecord* r_;
};

}  // namespace dogpile::detail
