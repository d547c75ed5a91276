#pragma once
// Reductions over the threads that share one row in the CUDA row engines: a group of kGroup
// threads, either one warp (32) or the whole block. Every thread gets the result, and the order of
// the additions depends only on kGroup, so results are bitwise reproducible.

#include <cuda_runtime.h>

namespace fusedloss {
namespace cuda {

constexpr int kRowThreads = 256;  // threads per block of the row engines

// Combines the values of the kGroup threads of a row with op (associative, commutative up to
// rounding); `shared` holds kRowThreads / 32 values and is only used when kGroup > 32.
template <int kGroup, typename T, typename Op>
__device__ __forceinline__ T group_all_reduce(T value, Op op, T* shared) {
  static_assert(kGroup == 32 || kGroup == kRowThreads, "a group is a warp or the block");
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
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
