// Epoch-based reclamation (detail/epoch.hpp): the registry of per-thread records and the
// advance of the global epoch. The pin and unpin are inline in the header (the read path).
#include "dogpile/detail/epoch.hpp"

#include <pthread.h>

#include <mutex>

namespace dogpile::detail {

std::atomic<std::uint64_t> epoch_global{1};
thread_local constinit EpochRecord* epoch_tls = nullptr;

namespace {

std::atomic<EpochRecord*> registry_head{nullptr};
std::mutex registry_mutex;        // serializes registration (the scan needs no lock)
std::uint32_t registry_size = 0;  // records created so far (registry_mutex)

// The registry mutex is held across fork(): a child forked while another thread registered
// would otherwise inherit it locked and hang at its own first registration.
void before_fork() noexcept { registry_mutex.lock(); }
void after_fork_in_parent() noexcept { registry_mutex.unlock(); }

// A forked child has only the forking thread: the records of the parent's other threads would
// stay "in use", and one pinned at the fork would stop the epoch forever. The child frees them.
void after_fork_in_child() noexcept {
  registry_mutex.unlock();
  for (EpochRecord* r = registry_head.load(std::memory_order_acquire); r != nullptr;
       r = r->next.load(std::memory_order_acquire)) {
    if (r == epoch_tls) continue;
    r->depth = 0;
    r->pinned.store(0, std::memory_order_relaxed);
    r->in_use.store(false, std::memory_order_relaxed);
  }
}

// Hands the record back when its thread exits.
struct Release {
  EpochRecord* record = nullptr;
  ~Release() {
    if (record == nullptr) return;
    record->depth = 0;
    record->pinned.store(0, std::memory_order_release);
    record->in_use.store(false, std::memory_order_release);
    if (epoch_tls == record) epoch_tls = nullptr;
  }
};

}  // namespace

EpochRecord* epoch_register() {
  static const bool at_fork =
      (::pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child), true);
  (void)at_fork;
  static thread_local Release release;
  EpochRecord* mine = nullptr;
  {
    std::lock_guard lk(registry_mutex);
    for (EpochRecord* r = registry_head.load(std::memory_order_acquire); r != nullptr;
         r = r->next.load(std::memory_order_acquire)) {
      bool free = false;
      if (r->in_use.compare_exchange_strong(free, true, std::memory_order_acq_rel)) {
        mine = r;
        break;
      }
    }
    if (mine == nullptr) {
      mine = new EpochRecord;  // never freed: a scan may be reading it
      mine->in_use.store(true, std::memory_order_relaxed);
      mine->index = registry_size++;
      mine->next.store(registry_head.load(std::memory_order_relaxed), std::memory_order_relaxed);
      registry_head.store(mine, std::memory_order_release);
    }
  }
  mine->depth = 0;
  release.record = mine;
  epoch_tls = mine;
  return mine;
}

bool epoch_quiescent() noexcept {
  for (EpochRecord* r = registry_head.load(std::memory_order_acquire); r != nullptr;
       r = r->next.load(std::memory_order_acquire)) {
    if (r->pinned.load(std::memory_order_seq_cst) != 0) return false;
  }
  return true;
}

std::uint64_t epoch_try_advance() noexcept {
  std::uint64_t g = epoch_global.load(std::memory_order_seq_cst);
  for (EpochRecord* r = registry_head.load(std::memory_order_acquire); r != nullptr;
       r = r->next.load(std::memory_order_acquire)) {
    const std::uint64_t p = r->pinned.load(std::memory_order_seq_cst);
    if (p != 0 && p != g) return g;  // a reader still in an older epoch
  }
  if (epoch_global.compare_exchange_strong(g, g + 1, std::memory_order_seq_cst)) return g + 1;
  return g;  // another thread advanced it: g holds the current value
}

}  // namespace dogpile::detail
