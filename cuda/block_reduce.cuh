#pragma once
// Deterministic block-wide sum: warp shuffles, then one warp over the per-warp results. The order
// of additions depends only on the block size, never on timing.

#include <cuda_runtime.h>

namespace fusedloss {
namespace cuda {

template <typename T>
__device__ inline T warp_reduce_sum(T value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// The sum over all kThreads threads of the block, valid in thread 0.
template <int kThreads, typename T>
__device__ inline T block_reduce_sum(T value) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block must be whole warps");
  __shared__ T warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  value = warp_reduce_sum(value);
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  value = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : T(0);
  if (warp == 0) value = warp_reduce_sum(value);
  return value;
}

}  // namespace cuda
}  // namespace fusedloss
