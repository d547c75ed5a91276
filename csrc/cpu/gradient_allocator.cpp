// Allocation of the CPU gradient buffers the fused kernels write; see gradient_allocator.h.

#include "cpu/gradient_allocator.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fusedloss {
namespace cpu {
namespace {

constexpr size_t kHugePage = size_t{2} << 20, kPage = size_t{4} << 10;
// Blocks over 1 MiB are cached. glibc's malloc serves blocks up to 32 MiB from its heap, but
// trims the freed top of the heap back to the system, so that a 26 MB gradient freed and
// allocated every step faulted its pages in again most steps (nll_loss at (65536, 100): steps of
// 2-7 ms against 1.2-2.2 ms cached). Blocks of 32 MiB and more are backed by huge pages (and
// rounded to them); smaller ones are rounded to pages, so that rounding wastes little.
constexpr size_t kMinBytes = (size_t{1} << 20) + 1;
constexpr size_t kHugePageBytes = size_t{32} << 20;
constexpr int64_t kDefaultLimit = int64_t{2} << 30;

// FUSEDLOSS_CPU_CACHE_BYTES: a number of bytes; anything else keeps the default, with a warning.
int64_t limit_from_environment() {
  const char* v = std::getenv("FUSEDLOSS_CPU_CACHE_BYTES");
  if (v == nullptr || *v == '\0') return kDefaultLimit;
  char* end = nullptr;
  const long long bytes = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || bytes < 0) {
    TORCH_WARN("fusedloss: FUSEDLOSS_CPU_CACHE_BYTES must be a number of bytes, got '", v,
               "'; using the default of ", kDefaultLimit);
    return kDefaultLimit;
  }
  return bytes;
}

// Large gradient blocks kept after their tensor dies, for the next step's gradient of the same
// size: a fresh block costs a page fault per huge page (and, with the kernel's defrag=madvise, a
// compaction each), which made the first steps of a process up to 9x slower than steady state.
// Least recently returned blocks go first when the cached bytes would exceed the limit.
class BlockCache {
 public:
  struct Block {
    void* ptr;
    size_t bytes;
  };

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
      if (it->bytes == bytes) {
        void* ptr = it->ptr;
        cached_ -= static_cast<int64_t>(bytes);
        blocks_.erase(std::next(it).base());
        return ptr;
      }
    }
    return nullptr;
  }

  void give_back(void* ptr, size_t bytes) {
    std::deque<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks_.push_back({ptr, bytes});
      cached_ += static_cast<int64_t>(bytes);
      evict_over_limit(evicted);
    }
    for (const Block& b : evicted) std::free(b.ptr);
  }

  int64_t set_limit(int64_t bytes) {
    std::deque<Block> evicted;
    int64_t previous;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      previous = limit_;
      limit_ = std::max<int64_t>(0, bytes);
      evict_over_limit(evicted);
    }
    for (const Block& b : evicted) std::free(b.ptr);
    return previous;
  }

  int64_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  void clear() { set_limit(set_limit(0)); }

 private:
  void evict_over_limit(std::deque<Block>& evicted) {
    while (cached_ > limit_ && !blocks_.empty()) {
      evicted.push_back(blocks_.front());
      cached_ -= static_cast<int64_t>(blocks_.front().bytes);
      blocks_.pop_front();
    }
  }

  std::mutex mutex_;
  std::deque<Block> blocks_;  // oldest returned first
  int64_t cached_ = 0;
  int64_t limit_ = limit_from_environment();
};

// Never destroyed: a gradient may die after static destructors have run.
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();
  return *cache;
}

void return_block(void* context) {
  auto* block = static_cast<BlockCache::Block*>(context);
  block_cache().give_back(block->ptr, block->bytes);
  delete block;
}

class HugePageAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (nbytes >= kMinBytes) {
      const bool huge = nbytes >= kHugePageBytes;
      const size_t unit = huge ? kHugePage : kPage;
      const size_t rounded = (nbytes + unit - 1) / unit * unit;
      void* ptr = block_cache().take(rounded);
      if (ptr == nullptr && posix_memalign(&ptr, unit, rounded) == 0 && huge) {
        madvise(ptr, rounded, MADV_HUGEPAGE);  // advice only: failure leaves normal pages
      }
      if (ptr != nullptr) {
        return {ptr, new BlockCache::Block{ptr, rounded}, &return_block,
                c10::Device(c10::DeviceType::CPU)};
      }
    }
#endif
    return c10::GetCPUAllocator()->allocate(nbytes);
  }
  void copy_data(void* dest, const void* src, size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

HugePageAllocator huge_page_allocator;

}  // namespace

at::Tensor empty_gradient(at::IntArrayRef shape, const at::TensorOptions& options) {
  if (!options.device().is_cpu()) return at::empty(shape, options);
  return at::detail::empty_generic(shape, &huge_page_allocator,
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), std::nullopt);
}

int64_t set_gradient_cache_limit(int64_t bytes) { return block_cache().set_limit(bytes); }

int64_t gradient_cache_bytes() { return block_cache().cached_bytes(); }

void clear_gradient_cache() { block_cache().clear(); }

}  // namespace cpu
}  // namespace fusedloss
