// Internal: what the shim's direct oneDNN calls (winograd.cpp, matmul.cpp) share — one CPU
// engine, a stream per thread, and a process-wide cache of primitives ("plans") by key. Include
// it only where CONTEXTDIFF_ONEDNN is defined. Not part of the public header.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

#include <oneapi/dnnl/dnnl.hpp>

namespace ctorch {

inline dnnl::engine &cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// oneDNN streams are not to be shared between threads executing at once (the two shards of a
// training step each run primitives).
inline dnnl::stream &cpu_stream() {
  static thread_local dnnl::stream s(cpu_engine());
  return s;
}

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
