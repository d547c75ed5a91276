// Operator of the backward scale (see engines/scale_gradient.h): the one op every fused loss's
// backward calls for a reduced loss. In place, so that the saved gradient becomes input.grad with
// no copy.

#include "ops/scale_gradient.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "engines/scale_gradient.h"
#include "ops/arguments.h"

namespace fusedloss {
namespace ops {
namespace {

void check(const Tensor& gradient, const Tensor& grad_output, const Tensor& scale) {
  TORCH_CHECK(grad_output.dim() == 0 && scale.dim() == 0,
              "fusedloss._scale_gradient_: grad_output and scale must be 0-d, got shapes ",
              grad_output.sym_sizes(), " and ", scale.sym_sizes());
  TORCH_CHECK(grad_output.scalar_type() == gradient.scalar_type() &&
                  scale.scalar_type() == accumulation_dtype(gradient.scalar_type()),
              "fusedloss._scale_gradient_: expected grad_output of dtype ", gradient.scalar_type(),
              " and scale of dtype ", accumulation_dtype(gradient.scalar_type()), ", got ",
              grad_output.scalar_type(), " and ", scale.scalar_type());
  // Every element gets the same factor, so any dense layout can be scaled as flat memory.
  TORCH_CHECK(gradient.is_non_overlapping_and_dense(),
              "fusedloss._scale_gradient_: gradient must be dense (no gaps, no overlap)");
}

template <void (*kernel)(const Tensor&, const Tensor&, const Tensor&)>
void scale_on_device(const Tensor& gradient, const Tensor& grad_output, const Tensor& scale) {
  check(gradient, grad_output, scale);
  TORCH_CHECK(grad_output.device() == gradient.device() && scale.device() == gradient.device(),
              "fusedloss._scale_gradient_: all tensors must be on ", gradient.device(), ", got ",
              grad_output.device(), " and ", scale.device());
  kernel(gradient, grad_output, scale);
}

void scale_meta(const Tensor& gradient, const Tensor& grad_output, const Tensor& scale) {
  check(gradient, grad_output, scale);
}

}  // namespace

void scale_gradient_(const Tensor& gradient, const Tensor& grad_output, const Tensor& scale) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_scale_gradient_", "")
                           .typed<decltype(scale_meta)>();
  handle.call(gradient, grad_output, scale);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def("_scale_gradient_(Tensor(a!) gradient, Tensor grad_output, Tensor scale) -> ()");
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_scale_gradient_",
         TORCH_FN(fusedloss::ops::scale_on_device<fusedloss::cpu::scale_gradient_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_scale_gradient_",
         TORCH_FN(fusedloss::ops::scale_on_device<fusedloss::cuda::scale_gradient_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_scale_gradient_", TORCH_FN(fusedloss::ops::scale_meta));
}
