#pragma once
// dogpile's NameRegistry: one object per name while anyone holds it, so every thread that
// asks for the mutex of key "k" gets the same mutex. Entries are weak; dead ones are swept
// when the map has grown since the last sweep, which keeps the cost amortized O(1).

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace dogpile::detail {

template <class T>
class NameRegistry {
 public:
  using Factory = std::function<std::shared_ptr<T>(std::string_view)>;
  explicit NameRegistry(Factory factory) : factory_(std::move(factory)) {}

  std::shared_ptr<T> get(std::string_view name) {
    std::lock_guard lk(mutex_);
    auto it = values_.find(std::string(name));
    if (it != values_.end()) {
      if (auto p = it->second.lock()) return p;
    }
    auto p = factory_(name);
    values_[std::string(name)] = p;
    if (values_.size() >= sweep_at_) sweep();
    return p;
  }
  std::size_t size() const {
    std::lock_guard lk(mutex_);
    return values_.size();
  }

 private:
  void sweep() {
    for (auto it = values_.begin(); it != values_.end();) {
      it = it->second.expired() ? values_.erase(it) : std::next(it);
    }
    sweep_at_ = std::max<std::size_t>(64, values_.size() * 2);
  }
  Factory factory_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::weak_ptr<T>> values_;
  std::size_t sweep_at_ = 64;
};

}  // namespace dogpile::detail
