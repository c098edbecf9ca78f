// The parts of CacheRegion (region.hpp) that need no value type, compiled once here instead
// of in every file that includes a region: construction, configuration (the backend, its
// proxies, the invalidation strategy, the per-key mutex factory), and the error texts.

#include "dogpile/region.hpp"

#include <algorithm>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace dogpile {

CacheRegion::CacheRegion(RegionOptions opts) : state_(std::make_shared<detail::RegionState>()) {
  state_->default_clock = !opts.clock;
  state_->clock = opts.clock ? opts.clock : system_clock();
  state_->opts = std::move(opts);
  auto& lo = state_->lock_options;
  lo.stale_policy = state_->opts.stale_policy;
  lo.early_refresh = state_->opts.early_refresh;
  lo.lock_timeout = state_->opts.lock_timeout;
  lo.clock = state_->clock;
}

CacheRegion& CacheRegion::configure(std::string_view backend_name, ConfigureOptions opts) {
  check_not_configured(opts);
  auto backend = make_backend(backend_name, opts.arguments);
  return install(std::move(backend), opts, std::string(backend_name));
}

CacheRegion& CacheRegion::configure(std::shared_ptr<CacheBackend> backend, ConfigureOptions opts) {
  if (!backend) {
    detail::throw_error<ValidationError>("configure(" + region_label() +
                                         "): the backend pointer is null");
  }
  check_not_configured(opts);
  std::string name = backend->name();
  return install(std::move(backend), opts, std::move(name));
}

CacheRegion& CacheRegion::configure_from_config(const nlohmann::json& config,
                                                std::string_view prefix) {
  RegionConfigSettings s = parse_region_config(config, prefix);
  return configure(s.backend, std::move(s.options));
}

std::string CacheRegion::region_label() const {
  return state_->opts.name.empty() ? std::string("an unnamed region")
                                   : "region '" + state_->opts.name + "'";
}

void CacheRegion::throw_not_configured() const {
  detail::throw_error<RegionNotConfigured>(
      region_label() +
      " has no backend yet: call region.configure(\"memory\", {...}) (or another backend) "
      "before using it");
}

void CacheRegion::check_not_configured(const ConfigureOptions& opts) const {
  const auto* c = state_->config.load(std::memory_order_acquire);
  if (c && !opts.replace_existing_backend) {
    detail::throw_error<RegionAlreadyConfigured>(
        region_label() + " is already configured with the '" + c->backend_name +
        "' backend; to replace it, pass .replace_existing_backend = true in ConfigureOptions");
  }
}

CacheRegion& CacheRegion::install(std::shared_ptr<CacheBackend> backend,
                                  const ConfigureOptions& opts, std::string backend_name) {
  std::lock_guard lk(state_->configure_mutex);
  check_not_configured(opts);
  auto cfgp = std::make_unique<detail::RegionConfig>();
  cfgp->actual_backend = backend;
  cfgp->backend_name = std::move(backend_name);
  // wrap = {A, B} gives A(B(backend)): apply in reverse so the first is outermost.
  for (auto it = opts.wrap.rbegin(); it != opts.wrap.rend(); ++it) {
    if (!*it) detail::throw_error<ValidationError>("wrap: null proxy");
    (*it)->wrap(backend);
    backend = *it;
  }
  cfgp->backend = backend;
  cfgp->expiration = opts.expiration_time;
  cfgp->stores_objects = backend->stores_objects();
  cfgp->keeps_decoded = !cfgp->stores_objects && backend->keeps_decoded();
  cfgp->memory_objects = dynamic_cast<const MemoryBackend*>(backend.get()) != nullptr;
  cfgp->codec = state_->opts.codec;
  cfgp->codec.max_value_bytes =
      std::min(cfgp->codec.max_value_bytes, std::max<std::size_t>(1, backend->max_value_bytes()));
  const auto& inv = state_->opts.invalidation;
  if (opts.region_invalidator) {
    cfgp->invalidator = opts.region_invalidator;
  } else if (inv.kind == InvalidationMode::Kind::custom && inv.strategy) {
    cfgp->invalidator = inv.strategy;
  } else if (inv.kind == InvalidationMode::Kind::shared) {
    cfgp->invalidator = std::make_shared<SharedInvalidationStrategy>(
        backend, "_dogpile_invalidation:" + state_->opts.name, inv.poll, state_->clock);
  } else {
    cfgp->invalidator = std::make_shared<DefaultInvalidationStrategy>(state_->clock);
  }
  if (const RegionInvalidationStrategy& strategy = *cfgp->invalidator;
      typeid(strategy) == typeid(DefaultInvalidationStrategy)) {
    cfgp->default_invalidator =
        static_cast<const DefaultInvalidationStrategy*>(cfgp->invalidator.get());
  }
  std::weak_ptr<CacheBackend> weak = backend;
  // Under treat_as_miss a distributed lock that fails degrades to in-process exclusion
  // (detail::FallbackMutex) instead of failing the caller.
  // A lock failure names the region, "lock" and the key, as every other backend error does.
  std::function<void(BackendError&, std::string_view)> report;
  if (state_->opts.on_backend_error.kind == BackendErrorPolicy::Kind::treat_as_miss) {
    std::weak_ptr<detail::RegionState> ws = state_;
    report = [ws](BackendError& e, std::string_view key) {
      if (auto st = ws.lock()) {
        CacheRegion r(st);
        r.add_context(e, {"lock", key});
        r.count(RegionEvent::Kind::backend_error, key, {}, &e, std::current_exception());
        if (const auto& cb = st->opts.on_backend_error.callback) cb(e);
      }
    };
  }
  cfgp->locks = std::make_shared<detail::NameRegistry<CacheMutex>>(
      [weak, report](std::string_view key) -> std::shared_ptr<CacheMutex> {
        if (auto b = weak.lock()) {
          std::shared_ptr<CacheMutex> m;
          try {
            m = b->get_mutex(key);
          } catch (BackendError& e) {
            if (!report) throw;
            report(e, key);
          }
          if (m && report) {
            return std::make_shared<detail::HandoffMutex>(std::make_shared<detail::FallbackMutex>(
                std::move(m), [report, k = std::string(key)](BackendError& e) { report(e, k); }));
          }
          if (m) return m;
        }
        // Under treat_as_miss the key's mutex also hands a value made while the backend is
        // down to the callers that waited for it (detail::HandoffMutex).
        if (report) return std::make_shared<detail::HandoffMutex>(std::make_shared<ThreadMutex>());
        return std::make_shared<ThreadMutex>();
      });
  state_->config.store(cfgp.get(), std::memory_order_release);
  state_->configs.push_back(std::move(cfgp));
  return *this;
}

void CacheRegion::report_lease_lost(std::string_view key) const {
  const LockError e(region_label() + ": the dogpile lock of key '" + std::string(key) +
                    "' lost its lease before the creator finished (another creator may have "
                    "run at the same time); raise the backend's lock_timeout above the "
                    "creator's run time");
  count(RegionEvent::Kind::lock_lost, key, {}, &e, std::make_exception_ptr(e));
  detail::log(LogLevel::warning, e.what());
  if (const auto& cb = state_->opts.on_backend_error.callback) cb(e);
}

MutexHandle CacheRegion::reporting_handle(MutexHandle h, std::string_view key) const {
  return MutexHandle::adopt(std::make_shared<detail::ReportingMutex>(
      h.disown(),
      [state = state_, k = std::string(key)] { CacheRegion(state).report_lease_lost(k); }));
}

void CacheRegion::add_context(BackendError& e, const CallSite& at) const {
  e.add_context(state_->opts.name, at.operation,
                at.key.empty() && at.keys > 0
                    ? std::to_string(at.keys) + (at.keys == 1 ? " key" : " keys")
                    : std::string(at.key));
}

void CacheRegion::set(std::string_view key, const char* value) const {
  set<std::string>(key, std::string(value));
}

void CacheRegion::erase(std::string_view key) const {
  const auto& c = cfg();
  guarded([&] { c.backend->erase(mangle(key)); }, [] {}, {"delete", key});
}

void CacheRegion::erase_multi(const std::vector<std::string>& keys) const {
  if (keys.empty()) return;
  const auto& c = cfg();
  auto mk = mangle_all(keys);
  guarded([&] { c.backend->erase_multi(mk); }, [] {}, {"delete_multi", {}, mk.size()});
}

void CacheRegion::invalidate(InvalidateOptions opts) const {
  cfg().invalidator->invalidate(opts.hard);
}

bool CacheRegion::key_is_locked(std::string_view key) const {
  return cfg().locks->get(mangle(key))->locked();
}

std::shared_ptr<CacheMutex> CacheRegion::mutex_for(std::string_view key) const {
  return cfg().locks->get(mangle(key));
}

RegionStats CacheRegion::stats() const { return state_->stats.snapshot(); }

void CacheRegion::reset_stats() const { state_->stats.reset(); }

void CacheRegion::on_lock_event(LockEvent e, std::string_view key,
                                std::chrono::nanoseconds d) const {
  switch (e) {
    case LockEvent::hit:
      count(RegionEvent::Kind::hit, key);
      break;
    case LockEvent::stale_served:
      count(RegionEvent::Kind::stale_served, key);
      break;
    case LockEvent::waited:
      count(RegionEvent::Kind::lock_wait, key, d);
      break;
    case LockEvent::created:
    case LockEvent::async_started:
      count(RegionEvent::Kind::miss, key);
      count(RegionEvent::Kind::created, key);
      break;
    case LockEvent::lease_lost:
      report_lease_lost(key);
      break;
  }
}

}  // namespace dogpile
