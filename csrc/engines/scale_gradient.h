#pragma once
// The one kernel of a fused loss's backward: the saved gradient, in place, times grad_output times
// the op's backward scale (both 0-d), with the product formed in the accumulation type, so that a
// float16/bfloat16 gradient is scaled by a 1/n that its own precision could not hold, without a
// float32 copy of the gradient.

#include <ATen/core/Tensor.h>

namespace fusedloss {

namespace cpu {
void scale_gradient_kernel(const at::Tensor& gradient, const at::Tensor& grad_output,
                           const at::Tensor& scale);
}  // namespace cpu
namespace cuda {
void scale_gradient_kernel(const at::Tensor& gradient, const at::Tensor& grad_output,
                           const at::Tensor& scale);
}  // namespace cuda

}  // namespace fusedloss
