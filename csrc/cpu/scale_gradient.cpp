// CPU kernel of the backward scale (see engines/scale_gradient.h).

#include "engines/scale_gradient.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/element_convert.h"
#include "kernels/math.h"

namespace fusedloss {
namespace cpu {
namespace {

template <typename scalar_t>
void scale(scalar_t* g, int64_t n, acc_t<scalar_t> factor) {
  at::parallel_for(0, n, int64_t{1} << 15, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) g[i] = store_from_acc<scalar_t>(load_as_acc(g[i]) * factor);
  });
}

}  // namespace

void scale_gradient_kernel(const at::Tensor& gradient, const at::Tensor& grad_output,
                           const at::Tensor& scale_tensor) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, gradient.scalar_type(), "fusedloss_scale_gradient_cpu", [&] {
        using acc = acc_t<scalar_t>;
        const acc factor =
            static_cast<acc>(grad_output.item<double>()) * scale_tensor.item<acc>();
        if (factor != acc(1)) {
          scale<scalar_t>(gradient.mutable_data_ptr<scalar_t>(), gradient.numel(), factor);
        }
      });
}

}  // namespace cpu
}  // namespace fusedloss
