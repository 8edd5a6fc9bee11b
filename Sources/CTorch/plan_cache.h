// Internal: a process-wide cache of oneDNN primitives ("plans") by key, for the shim's direct
// oneDNN calls (winograd.cpp, matmul.cpp). Not part of the public header.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

namespace ctorch {

// Plans are made once per key and kept for the life of the process (running calls hold them).
// A key for which `make` returned nullptr (oneDNN has no suitable kernel) is remembered as such.
// A long-lived process that meets ever new keys (the studio, across sizes and batches) stops
// adding plans at `capacity`: `get` then answers nullptr and the caller takes libtorch's path.
template <class Key, class Plan> class PlanCache {
 public:
  explicit PlanCache(size_t capacity) : capacity_(capacity) {}

  template <class Make> Plan *get(const Key &key, Make &&make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = plans_.find(key);
    if (found != plans_.end()) return found->second.get();
    if (plans_.size() >= capacity_) return nullptr;
    return (plans_[key] = make()).get();
  }

 private:
  std::mutex mutex_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  size_t capacity_;
};

}  // namespace ctorch
