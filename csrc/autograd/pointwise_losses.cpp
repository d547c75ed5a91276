// Autograd for the pointwise losses, in C++ so that TorchScript and LibTorch programs get it too.
//
// The forward asks the fused op for the loss and the per-element gradient together and saves only
// that gradient. Backward is a scale: by grad_output (per element for reduction='none'), and by
// 1/n for 'mean'. The regression losses depend on input - target, so d/d(target) = -d/d(input).

#include <ATen/ExpandUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/pointwise_losses.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PointwiseLossFunction : public torch::autograd::Function<PointwiseLossFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& target,
                        const std::string& op, double param, const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, gradient] =
        ops::pointwise_loss_forward(input, target, op, param, reduction, /*compute_grad=*/true);
    ctx->save_for_backward({gradient});
    ctx->saved_data["input_shape"] = input.sym_sizes();
    ctx->saved_data["target_shape"] = target.sym_sizes();
    ctx->saved_data["op"] = op;
    ctx->saved_data["reduction"] = reduction;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Tensor gradient = ctx->get_saved_variables()[0];
    const Tensor& grad_output = grad_outputs[0];
    const std::string op = ctx->saved_data["op"].toStringRef();
    // create_graph=True asks for a differentiable gradient. The saved gradient is a constant to
    // autograd, so its second derivative would silently be zero: refuse instead.
    TORCH_CHECK(!at::GradMode::is_enabled(), "fusedloss.", op,
                ": double backward (backward with create_graph=True) is not supported; the fused "
                "kernel saves only the first derivative. Use torch.nn.functional.", op,
                " where second derivatives are needed.");
    const bool reduced = ctx->saved_data["reduction"].toStringRef() != "none";

    Tensor scale = grad_output;
    if (reduced) {
      // Scale in float or double: 1/n in half precision would underflow for large n.
      if (at::isReducedFloatingType(scale.scalar_type())) scale = scale.to(at::kFloat);
      if (ctx->saved_data["reduction"].toStringRef() == "mean") {
        scale = scale.div(c10::Scalar(gradient.sym_numel()));
      }
    }

    Tensor grad_input, grad_target;
    if (ctx->needs_input_grad(0)) {
      grad_input = at::sum_to(gradient.mul(scale),
                              ctx->saved_data["input_shape"].toSymIntVector());
    }
    if (ctx->needs_input_grad(1)) {
      grad_target = at::sum_to(gradient.mul(scale.neg()),
                               ctx->saved_data["target_shape"].toSymIntVector());
    }
    return {grad_input, grad_target, Tensor(), Tensor(), Tensor()};
  }
};

// The Autograd-key kernel shared by the family: the fused path only when a gradient can flow.
Tensor pointwise_loss(const Tensor& input, const Tensor& target, const std::string& op,
                      double param, c10::string_view reduction) {
  const bool wants_grad =
      at::GradMode::is_enabled() && (input.requires_grad() || target.requires_grad());
  if (!wants_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::pointwise_loss_forward(input, target, op, param, reduction, false));
  }
  return PointwiseLossFunction::apply(input, target, op, param, std::string(reduction));
}

Tensor mse_loss(const Tensor& input, const Tensor& target, c10::string_view reduction) {
  return pointwise_loss(input, target, "mse_loss", 0.0, reduction);
}
Tensor l1_loss(const Tensor& input, const Tensor& target, c10::string_view reduction) {
  return pointwise_loss(input, target, "l1_loss", 0.0, reduction);
}
Tensor huber_loss(const Tensor& input, const Tensor& target, c10::string_view reduction,
                  double delta) {
  return pointwise_loss(input, target, "huber_loss", delta, reduction);
}
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, c10::string_view reduction,
                      double beta) {
  return pointwise_loss(input, target, "smooth_l1_loss", beta, reduction);
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  using namespace fusedloss::autograd;
  m.impl("mse_loss", TORCH_FN(mse_loss));
  m.impl("l1_loss", TORCH_FN(l1_loss));
  m.impl("huber_loss", TORCH_FN(huber_loss));
  m.impl("smooth_l1_loss", TORCH_FN(smooth_l1_loss));
}
