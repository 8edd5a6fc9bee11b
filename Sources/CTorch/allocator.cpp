// A caching allocator for libtorch's CPU tensors.
//
// libtorch's CPU allocator is posix_memalign/free. An eager training or sampling step frees and
// re-allocates the same activation sizes every step, and glibc's malloc pays for that in its
// bookkeeping (finding, splitting, coalescing and consolidating large chunks: ~4 % of the
// training step's samples in `perf`, docs/NOTES.md "Performance") and, for blocks above its mmap
// threshold (32 MiB at most), in fresh zeroed pages mapped for every operator. Here blocks of
// at least kMinCached bytes are kept, when freed, in exact-size free lists (sizes rounded up to
// 4 KiB) and handed out again for the next request of that size; the cached (free) bytes are
// bounded by a limit, beyond which a freed block goes back to malloc. Smaller blocks go straight
// to malloc, whose thread caches serve them well.
//
// Every block has a 64-byte header in front of the tensor's memory (the size class, a marker),
// so that the deleter needs no lookup. Tensors allocated before the allocator was installed keep
// the deleter they were made with.
#include <c10/core/CPUAllocator.h>
#include <c10/core/alignment.h>
#include <torch/csrc/api/include/torch/version.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace {

constexpr size_t kHeader = 64;  // keeps the tensor memory 64-byte aligned (c10::gAlignment)
constexpr size_t kMinCached = 64 << 10;
constexpr size_t kRound = 4 << 10;
constexpr uint64_t kMarker = 0x63746361'6368656bULL;  // "ctcachek"

struct Header {
  uint64_t marker;
  uint64_t bytes;  // the block's size class (0: not cached, freed to malloc)
};

struct Cache {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void *>> free;  // size class → blocks (header pointers)
  size_t cachedBytes = 0;
  size_t limit = 0;
  std::atomic<size_t> largest{0};  // requests above this size are not cached
  uint64_t hits = 0, misses = 0;
};

// Never destroyed: tensors may be freed during static destruction.
Cache &cache() {
  static Cache *c = new Cache;
  return *c;
}

void release(void *data) {
  if (data == nullptr) return;
  void *base = static_cast<char *>(data) - kHeader;
  auto *h = static_cast<Header *>(base);
  if (h->marker != kMarker) std::abort();  // not ours: memory corruption
  if (h->bytes != 0) {
    Cache &c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.cachedBytes + h->bytes <= c.limit) {
      c.free[h->bytes].push_back(base);
      c.cachedBytes += h->bytes;
      return;
    }
  }
  std::free(base);
}

// c10::Allocator's interface: `allocate` is non-const and `copy_data` required from torch 2.3 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define CT_ALLOCATE_CONST
#define CT_COPY_DATA \
  void copy_data(void *dest, const void *src, std::size_t count) const override { default_copy_data(dest, src, count); }
#else
#define CT_ALLOCATE_CONST const
#define CT_COPY_DATA
#endif

struct CachingCPUAllocator final : c10::Allocator {
  CT_COPY_DATA
  c10::DataPtr allocate(size_t n) CT_ALLOCATE_CONST override {
    const size_t bytes = n >= kMinCached && n <= cache().largest.load(std::memory_order_relaxed) ? (n + kRound - 1) / kRound * kRound : 0;
    void *base = nullptr;
    if (bytes != 0) {
      Cache &c = cache();
      std::lock_guard<std::mutex> lock(c.mutex);
      auto it = c.free.find(bytes);
      if (it != c.free.end() && !it->second.empty()) {
        base = it->second.back();
        it->second.pop_back();
        c.cachedBytes -= bytes;
        ++c.hits;
      } else {
        ++c.misses;
      }
    }
    if (base == nullptr) {
      TORCH_CHECK(posix_memalign(&base, c10::gAlignment, kHeader + (bytes != 0 ? bytes : n)) == 0 && base != nullptr,
                  "CPU allocator: not enough memory for ", n, " bytes");
      *static_cast<Header *>(base) = Header{kMarker, bytes};
    }
    void *data = static_cast<char *>(base) + kHeader;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
};

CachingCPUAllocator *instance() {
  static auto *a = new CachingCPUAllocator;
  return a;
}

}  // namespace

int ct_cache_tensor_memory(int64_t limit_bytes, int64_t largest_block) {
  if (limit_bytes < 0 || largest_block < 0) return -1;
  {
    Cache &c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    c.limit = (size_t)limit_bytes;
    c.largest.store((size_t)largest_block);
  }
  static std::once_flag installed;
  std::call_once(installed, [] { c10::SetCPUAllocator(instance(), /*priority=*/100); });
  return c10::GetCPUAllocator() == instance() ? 1 : 0;
}

int64_t ct_release_cached_tensor_memory(void) {
  Cache &c = cache();
  std::vector<void *> blocks;
  int64_t released = 0;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    for (auto &entry : c.free) {
      released += (int64_t)(entry.first * entry.second.size());
      blocks.insert(blocks.end(), entry.second.begin(), entry.second.end());
    }
    c.free.clear();
    c.cachedBytes = 0;
  }
  for (void *b : blocks) std::free(b);
  return released;
}

void ct_tensor_memory_cache_stats(int64_t *cached_bytes, int64_t *hits, int64_t *misses) {
  Cache &c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (cached_bytes) *cached_bytes = (int64_t)c.cachedBytes;
  if (hits) *hits = (int64_t)c.hits;
  if (misses) *misses = (int64_t)c.misses;
}
