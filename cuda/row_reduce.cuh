#pragma once
// Reductions over the threads that share one row in the CUDA row engines: a group of kGroup
// threads, either part of a warp (a power of two up to 32) or the whole block. Every thread of the
// group gets the result, and the order of the additions depends only on kGroup, so results are
// bitwise reproducible.

#include <cuda_runtime.h>

namespace fusedloss {
namespace cuda {

constexpr int kRowThreads = 256;  // threads per block of the row engines' warp-group kernels

// The lanes of the calling thread's group, as a shuffle mask.
template <int kGroup>
__device__ __forceinline__ unsigned group_mask() {
  if constexpr (kGroup >= 32) {
    return 0xffffffffu;
  } else {
    const unsigned lane = threadIdx.x % 32;
    return ((1u << kGroup) - 1u) << (lane & ~static_cast<unsigned>(kGroup - 1));
  }
}

// Combines the values of the kGroup threads of a row with op (associative, commutative up to
// rounding); `shared` holds kBlock / 32 values and is only used when the group is the block.
template <int kGroup, int kBlock = kRowThreads, typename T, typename Op>
__device__ __forceinline__ T group_all_reduce(T value, Op op, T* shared) {
  static_assert((kGroup <= 32 && (kGroup & (kGroup - 1)) == 0) || kGroup == kBlock,
                "a group is a power of two within a warp, or the block");
  const unsigned mask = group_mask<kGroup>();
#pragma unroll
  for (int offset = (kGroup < 32 ? kGroup : 32) / 2; offset > 0; offset >>= 1) {
    value = op(value, __shfl_xor_sync(mask, value, offset));
  }
  if constexpr (kGroup > 32) {
    const int warp = threadIdx.x / 32;
    __syncthreads();  // earlier readers of `shared` are done
    if (threadIdx.x % 32 == 0) shared[warp] = value;
    __syncthreads();
    value = shared[0];
#pragma unroll
    for (int w = 1; w < kGroup / 32; ++w) value = op(value, shared[w]);
  }
  return value;
}

template <typename T>
struct Plus {
  __device__ T operator()(T a, T b) const { return a + b; }
};

// The larger of two; NaN never wins (the sum of exp carries NaN instead).
template <typename T>
struct Max {
  __device__ T operator()(T a, T b) const { return b > a ? b : a; }
};

}  // namespace cuda
}  // namespace fusedloss
