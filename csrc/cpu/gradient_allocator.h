#pragma once
// Allocation of the CPU gradient buffers the fused kernels write.

#include <ATen/core/Tensor.h>

namespace fusedloss {
namespace cpu {

// An uninitialized CPU tensor like at::empty. Buffers over 32 MiB, which malloc maps fresh on every
// allocation, are backed by transparent huge pages where the kernel allows it (madvise mode): a
// fresh gradient of 64 MiB then costs 34 page faults instead of 16,385, and those faults are most
// of a memory-bound loss's time on the CPU.
at::Tensor empty_gradient(at::IntArrayRef shape, const at::TensorOptions& options);

}  // namespace cpu
}  // namespace fusedloss
