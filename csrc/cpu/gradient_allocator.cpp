#include "cpu/gradient_allocator.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fusedloss {
namespace cpu {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
// glibc's malloc serves and reuses blocks up to 32 MiB from its heap (its largest dynamic mmap
// threshold), with no page faults once warm; only larger blocks are mapped fresh each time.
constexpr size_t kMinBytes = (size_t{32} << 20) + 1;

void free_huge(void* ptr) { std::free(ptr); }

class HugePageAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (nbytes >= kMinBytes) {
      const size_t rounded = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
      void* ptr = nullptr;
      if (posix_memalign(&ptr, kHugePage, rounded) == 0) {
        madvise(ptr, rounded, MADV_HUGEPAGE);  // advice only: failure leaves normal pages
        return {ptr, ptr, &free_huge, c10::Device(c10::DeviceType::CPU)};
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

}  // namespace cpu
}  // namespace fusedloss
