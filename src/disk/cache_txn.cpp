// DiskCache connections and transactions: one SQLite connection per thread (closed at thread
// exit), BEGIN IMMEDIATE at the outermost level and SAVEPOINTs inside, the files and undo work
// a transaction carries, the public Transaction, and fork safety: a child never uses or closes
// its parent's connections, and a database the parent was writing when it forked is refused.
#include "cache_impl.hpp"
#include "cache_sql.hpp"

#include <pthread.h>

#include <algorithm>
#include <set>

namespace dogpile {

using namespace std::chrono_literals;

namespace detail {

namespace {

// Bumped in the child after every fork(): connections opened by an older generation belong to
// the parent and are abandoned (never used, never closed).
std::atomic<std::uint64_t> g_fork_generation{1};
std::atomic<std::uint64_t> g_serial{0};

// Databases (by path) on which this process holds an open write transaction. A child forked
// meanwhile inherits SQLite's in-process lock bookkeeping for them (the parent's WAL write lock
// looks held forever), so the child must not use them: `g_poisoned` lists them in the child.
std::mutex g_txn_mu;
std::map<std::string, int>* g_open_txns = new std::map<std::string, int>();  // never freed
std::set<std::string>* g_poisoned = new std::set<std::string>();             // never freed

}  // namespace
void install_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::pthread_atfork([] { g_txn_mu.lock(); }, [] { g_txn_mu.unlock(); },
                     [] {
                       for (const auto& [path, n] : *g_open_txns) {
                         if (n > 0) g_poisoned->insert(path);
                       }
                       g_open_txns->clear();
                       g_fork_generation.fetch_add(1);
                       g_txn_mu.unlock();
                     });
  });
}

void note_txn(const std::string& path, int delta) {
  std::lock_guard lk(g_txn_mu);
  // The entry stays at 0 when the last transaction ends (one per database path): no node
  // allocation and string copy per write transaction.
  auto it = g_open_txns->find(path);
  if (it == g_open_txns->end()) it = g_open_txns->emplace(path, 0).first;
  it->second = std::max(0, it->second + delta);
}

bool poisoned(const std::string& path) {
  std::lock_guard lk(g_txn_mu);
  return g_poisoned->count(path) != 0;
}

std::uint64_t fork_generation() noexcept {
  return g_fork_generation.load(std::memory_order_relaxed);
}

std::uint64_t next_cache_serial() noexcept { return g_serial.fetch_add(1) + 1; }

// ---- connections (one per thread) ------------------------------------------------------------

Connection& DiskCacheImpl::conn() {
  struct Tl {
    std::uint64_t serial = 0;
    std::uint64_t gen = 0;
    std::uint64_t fork = 0;
    Connection* c = nullptr;
  };
  thread_local Tl tl;
  std::uint64_t fork = g_fork_generation.load(std::memory_order_relaxed);
  std::uint64_t gen = generation_.load(std::memory_order_acquire);
  if (tl.serial == serial_ && tl.gen == gen && tl.fork == fork) return *tl.c;
  std::lock_guard lk(conns_mu_);
  if (fork != conns_fork_gen_) {
    // We are a forked child: the parent's handles must not be used nor closed.
    for (auto& [id, c] : conns_) c->abandon();
    conns_.clear();
    conns_fork_gen_ = fork;
    generation_.fetch_add(1);
    gen = generation_.load();
  }
  if (poisoned(db_path_)) {
    throw DatabaseError("disk cache " + dir_.string() +
                        ": this process was forked while its parent held a write transaction on "
                        "this cache; SQLite's inherited lock state makes it unusable here (fork "
                        "outside transactions, or use the cache in a fresh process)");
  }
  auto& slot = conns_[std::this_thread::get_id()];
  if (!slot) {
    slot = std::make_unique<Connection>(db_path_, opts_.read_only);
    slot->fork_generation = fork;
    configure(*slot);
    // Close this thread's connection when the thread exits (no descriptor leak per thread).
    struct ThreadConns {
      std::vector<std::weak_ptr<DiskCacheImpl>> caches;
      ~ThreadConns() {
        for (auto& w : caches) {
          if (auto impl = w.lock()) impl->drop_thread_conn(std::this_thread::get_id());
        }
      }
    };
    thread_local ThreadConns thread_conns;
    std::erase_if(thread_conns.caches, [](const auto& w) { return w.expired(); });
    thread_conns.caches.push_back(weak_from_this());
  }
  tl = Tl{serial_, gen, fork, slot.get()};
  return *slot;
}

void DiskCacheImpl::close_all() {
  std::lock_guard lk(conns_mu_);
  if (g_fork_generation.load() != conns_fork_gen_) {
    for (auto& [id, c] : conns_) c->abandon();
  }
  conns_.clear();
  generation_.fetch_add(1, std::memory_order_release);
}

void DiskCacheImpl::drop_thread_conn(std::thread::id id) noexcept {
  std::unique_ptr<Connection> victim;
  {
    std::lock_guard lk(conns_mu_);
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    victim = std::move(it->second);
    conns_.erase(it);
    if (g_fork_generation.load() != conns_fork_gen_) victim->abandon();
    generation_.fetch_add(1, std::memory_order_release);  // no thread keeps a stale pointer
  }
}

// ---- transactions ------------------------------------------------------------------------------

void DiskCacheImpl::begin(Connection& c, bool retry,
                          std::optional<std::chrono::milliseconds> wait) {
  if (c.levels.empty()) {
    c.arm(wait.value_or(opts_.timeout), retry);
    int rc = c.try_run(kBeginImmediate);
    if (rc != SQLITE_OK) c.fail(rc, "BEGIN IMMEDIATE");
    note_txn(db_path_, +1);
    c.levels.push_back({0, 0});
    c.new_files.clear();
    c.cleanup.clear();
    if (buffered_.load(std::memory_order_relaxed) > 0) {
      try {
        flush_in_txn(c);
      } catch (...) {
        rollback(c);
        throw;
      }
    }
  } else {
    c.exec("SAVEPOINT dogpile");
    c.levels.push_back({c.new_files.size(), c.cleanup.size()});
  }
}

void DiskCacheImpl::commit(Connection& c) {
  if (c.levels.empty()) return;
  c.levels.pop_back();
  if (!c.levels.empty()) {
    c.exec("RELEASE dogpile");
    for (auto& [level, undo] : c.undo_on_rollback) level = std::min(level, c.levels.size());
    return;
  }
  int rc = c.try_run(kCommit);
  note_txn(db_path_, -1);
  if (rc == SQLITE_OK) c.undo_on_rollback.clear();
  if (rc != SQLITE_OK) {
    // SQLite may have rolled back already (a full disk): keep its message, not the ROLLBACK's.
    const std::string why = c.errmsg();
    c.try_run(kRollback);
    run_undo(c, 0);
    for (const auto& f : c.new_files) remove_value_file(dir_, f);
    c.new_files.clear();
    c.cleanup.clear();
    c.fail(rc, "COMMIT", why);
  }
  std::vector<std::string> cleanup = std::move(c.cleanup);
  c.cleanup.clear();
  c.new_files.clear();
  // Files of replaced or deleted rows go only after the commit made the rows invisible.
  for (const auto& f : cleanup) remove_value_file(dir_, f);
}

void DiskCacheImpl::rollback(Connection& c) noexcept {
  if (c.levels.empty()) return;
  Connection::Level level = c.levels.back();
  c.levels.pop_back();
  if (c.levels.empty()) {
    c.try_run(kRollback);
    note_txn(db_path_, -1);
    for (const auto& f : c.new_files) remove_value_file(dir_, f);
    c.new_files.clear();
    c.cleanup.clear();
    run_undo(c, 0);
  } else {
    c.try_exec("ROLLBACK TO dogpile");
    c.try_exec("RELEASE dogpile");
    run_undo(c, c.levels.size());
    for (std::size_t i = level.new_files_mark; i < c.new_files.size(); ++i) {
      remove_value_file(dir_, c.new_files[i]);
    }
    c.new_files.resize(level.new_files_mark);
    c.cleanup.resize(std::min(c.cleanup.size(), level.cleanup_mark));
  }
}

void DiskCacheImpl::run_undo(Connection& c, std::size_t level) noexcept {
  auto& undo = c.undo_on_rollback;
  // Newest first; a hook never throws.
  for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
    if (it->first > level) it->second();
  }
  undo.erase(
      std::remove_if(undo.begin(), undo.end(), [&](const auto& u) { return u.first > level; }),
      undo.end());
}

}  // namespace detail

// ================================================================================================
// Transaction

Transaction::Transaction(std::shared_ptr<detail::DiskCacheImpl> impl, bool outermost, int uncaught)
    : impl_(std::move(impl)), outermost_(outermost), uncaught_(uncaught) {}

Transaction::Transaction(Transaction&& other) noexcept
    : impl_(std::move(other.impl_)),
      outermost_(other.outermost_),
      done_(other.done_),
      uncaught_(other.uncaught_) {
  other.done_ = true;
}

Transaction::~Transaction() {
  if (done_ || !impl_) return;
  if (std::uncaught_exceptions() > uncaught_) {
    rollback();
    return;
  }
  try {
    commit();
  } catch (...) {  // NOLINT(bugprone-empty-catch): commit failure already rolled back
  }
}

void Transaction::commit() {
  if (done_ || !impl_) return;
  done_ = true;
  impl_->commit(impl_->conn());
}

void Transaction::rollback() noexcept {
  if (done_ || !impl_) return;
  done_ = true;
  try {
    impl_->rollback(impl_->conn());
  } catch (...) {  // NOLINT(bugprone-empty-catch): conn() cannot fail for an open transaction
  }
}

Transaction DiskCache::transact(bool retry) {
  auto& impl = *impl_;
  Connection& c = impl.conn();
  bool outermost = c.levels.empty();
  impl.begin(c, retry);
  return Transaction(impl_, outermost, std::uncaught_exceptions());
}

void DiskCache::close() {
  impl_->flush(false);
  if (impl_->hot_) impl_->hot_->close();  // before the connections: it unmaps the -shm first
  impl_->close_all();
}

}  // namespace dogpile
