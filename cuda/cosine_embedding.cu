// CUDA engine of cosine_embedding_loss (interface: engines/row_engines.h; per-row math:
// kernels/cosine_embedding.h): a warp owns a row pair, sums its three dot products (reduced in a
// fixed order by shuffles, no atomics), and writes the row's loss and both gradients once.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/cosine_embedding.h"

namespace fusedloss {
namespace cuda {
namespace {

template <typename scalar_t>
struct CosineRows {
  using acc = acc_t<scalar_t>;
  int64_t rows, dim;
  const scalar_t *x1, *x2, *target;
  acc* row_loss;
  scalar_t *g1, *g2;  // nullptr: no gradient
  acc margin, scale;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads) cosine_embedding_rows(CosineRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  constexpr int kRowsPerBlock = kRowThreads / 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;  // uniform over the warp
  const scalar_t* u = a.x1 + r * a.dim;
  const scalar_t* v = a.x2 + r * a.dim;
  acc dot = 0, sq1 = 0, sq2 = 0;
  for (int64_t d = lane; d < a.dim; d += 32) {
    const acc p = static_cast<acc>(u[d]), q = static_cast<acc>(v[d]);
    dot += p * q;
    sq1 += p * p;
    sq2 += q * q;
  }
  dot = group_all_reduce<32>(dot, Plus<acc>{}, static_cast<acc*>(nullptr));
  sq1 = group_all_reduce<32>(sq1, Plus<acc>{}, static_cast<acc*>(nullptr));
  sq2 = group_all_reduce<32>(sq2, Plus<acc>{}, static_cast<acc*>(nullptr));
  const auto row =
      cosine_embedding_row<acc>(dot, sq1, sq2, static_cast<acc>(a.target[r]), a.margin, a.scale);
  if (lane == 0) a.row_loss[r] = row.loss;
  if (a.g1 == nullptr) return;
  for (int64_t d = lane; d < a.dim; d += 32) {
    const acc p = static_cast<acc>(u[d]), q = static_cast<acc>(v[d]);
    a.g1[r * a.dim + d] = static_cast<scalar_t>(row.c1 * p + row.c12 * q);
    a.g2[r * a.dim + d] = static_cast<scalar_t>(row.c2 * q + row.c12 * p);
  }
}

}  // namespace

void cosine_embedding_kernel(const CosineEmbeddingSpec& spec,
                             const CosineEmbeddingOperands& o) {
  const int64_t rows = o.input1.size(0);
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(o.input1.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.input1.scalar_type(), "fusedloss_cosine_embedding_cuda", [&] {
        using acc = acc_t<scalar_t>;
        CosineRows<scalar_t> a{};
        a.rows = rows;
        a.dim = o.input1.size(1);
        a.x1 = o.input1.const_data_ptr<scalar_t>();
        a.x2 = o.input2.const_data_ptr<scalar_t>();
        a.target = o.target.const_data_ptr<scalar_t>();
        a.row_loss = o.row_loss.mutable_data_ptr<acc>();
        a.g1 = o.grad1.defined() ? o.grad1.mutable_data_ptr<scalar_t>() : nullptr;
        a.g2 = o.grad2.defined() ? o.grad2.mutable_data_ptr<scalar_t>() : nullptr;
        a.margin = static_cast<acc>(spec.margin);
        a.scale = static_cast<acc>(o.grad_scale);
        constexpr int kRowsPerBlock = kRowThreads / 32;
        const int blocks = static_cast<int>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
        cosine_embedding_rows<scalar_t>
            <<<blocks, kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace cuda
}  // namespace fusedloss
