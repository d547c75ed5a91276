// CPU engine of cosine_embedding_loss (interface: engines/row_engines.h; per-row math:
// kernels/cosine_embedding.h): a row pair is read once for its three sums and, when a gradient
// is asked for, once more from cache to write both gradients.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "engines/row_engines.h"
#include "kernels/cosine_embedding.h"

namespace fusedloss {
namespace cpu {
namespace {

template <typename scalar_t, bool kGrad>
FUSEDLOSS_CPU_CLONES void rows_range(const CosineEmbeddingSpec& spec,
                                     const CosineEmbeddingOperands& o, int64_t begin,
                                     int64_t end) {
  using acc = acc_t<scalar_t>;
  const int64_t D = o.input1.size(1);
  const scalar_t* x1 = o.input1.const_data_ptr<scalar_t>();
  const scalar_t* x2 = o.input2.const_data_ptr<scalar_t>();
  const scalar_t* target = o.target.const_data_ptr<scalar_t>();
  acc* row_loss = o.row_loss.mutable_data_ptr<acc>();
  scalar_t* g1 = kGrad ? o.grad1.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* g2 = kGrad ? o.grad2.mutable_data_ptr<scalar_t>() : nullptr;
  const acc margin = static_cast<acc>(spec.margin), scale = static_cast<acc>(o.grad_scale);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* a = x1 + r * D;
    const scalar_t* b = x2 + r * D;
    acc dot = 0, sq1 = 0, sq2 = 0;
#pragma omp simd reduction(+ : dot, sq1, sq2)
    for (int64_t d = 0; d < D; ++d) {
      const acc u = load_as_acc(a[d]), v = load_as_acc(b[d]);
      dot += u * v;
      sq1 += u * u;
      sq2 += v * v;
    }
    const auto row = cosine_embedding_row<acc>(dot, sq1, sq2, load_as_acc(target[r]), margin, scale);
    row_loss[r] = row.loss;
    if constexpr (kGrad) {
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const acc u = load_as_acc(a[d]), v = load_as_acc(b[d]);
        g1[r * D + d] = store_from_acc<scalar_t>(row.c1 * u + row.c12 * v);
        g2[r * D + d] = store_from_acc<scalar_t>(row.c2 * v + row.c12 * u);
      }
    }
  }
}

}  // namespace

void cosine_embedding_kernel(const CosineEmbeddingSpec& spec,
                             const CosineEmbeddingOperands& o) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.input1.scalar_type(), "fusedloss_cosine_embedding_cpu", [&] {
        const int64_t rows = o.input1.size(0), D = o.input1.size(1);
        const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(D, 1));
        at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
          o.grad1.defined() ? rows_range<scalar_t, true>(spec, o, begin, end)
                            : rows_range<scalar_t, false>(spec, o, begin, end);
        });
      });
}

}  // namespace cpu
}  // namespace fusedloss
