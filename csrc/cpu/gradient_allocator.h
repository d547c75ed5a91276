#pragma once
// Allocation of the CPU gradient buffers the fused kernels write.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fusedloss {
namespace cpu {

// An uninitialized CPU tensor like at::empty. Buffers over 1 MiB, whose pages malloc would often
// map fresh on every allocation, are kept in a bounded cache when their tensor dies, for the next
// gradient of the same size: a steady training loop faults its gradient memory in once, not every
// step. From 32 MiB they are backed by transparent huge pages where the kernel allows it (madvise
// mode).
at::Tensor empty_gradient(at::IntArrayRef shape, const at::TensorOptions& options);

// The cache of large gradient blocks: its limit in bytes (FUSEDLOSS_CPU_CACHE_BYTES at load,
// default 2 GiB; the least recently returned blocks are freed first), the bytes it holds, and
// freeing them all.
int64_t set_gradient_cache_limit(int64_t bytes);  // returns the previous limit
int64_t gradient_cache_bytes();
void clear_gradient_cache();

}  // namespace cpu
}  // namespace fusedloss
