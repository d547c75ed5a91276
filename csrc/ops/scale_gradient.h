#pragma once
// fusedloss::_scale_gradient_ through the dispatcher (see engines/scale_gradient.h).

#include <ATen/core/Tensor.h>

namespace fusedloss {
namespace ops {

using at::Tensor;

// gradient *= grad_output * scale, in place; grad_output and scale are 0-d (grad_output of the
// gradient's dtype, scale of its accumulation dtype).
void scale_gradient_(const Tensor& gradient, const Tensor& grad_output, const Tensor& scale);

}  // namespace ops
}  // namespace fusedloss
