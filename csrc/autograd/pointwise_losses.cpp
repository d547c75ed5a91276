// Autograd for the pointwise losses, in C++ so that TorchScript and LibTorch programs get it too.
//
// The forward asks the fused op for the loss and the per-element gradient together and saves only
// that gradient (for float32/float64 and reduction='mean' it already includes the 1/n). Backward
// is then a scale by grad_output, done in place on the saved buffer when the graph is not kept, and
// skipped when grad_output is 1 on the CPU: a plain loss.backward() moves no memory at all. The
// regression losses depend on input - target, so d/d(target) = -d/d(input).

#include <ATen/ExpandUtils.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include "ops/pointwise_losses.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// True when `scale` is a plain CPU number equal to 1, so multiplying by it can be skipped. Never
// reads the value of a GPU tensor (that would synchronize) or of a traced one (torch.compile).
bool is_plain_cpu_one(const Tensor& scale) {
  return scale.dim() == 0 && scale.device().is_cpu() && !at::isTensorSubclassLike(scale) &&
         scale.item<double>() == 1.0;
}

class PointwiseLossFunction : public torch::autograd::Function<PointwiseLossFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& target,
                        const std::string& op, double param, const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // 1/n in half precision could underflow the saved gradient; those dtypes get it in backward.
    const bool mean_in_grad = !at::isReducedFloatingType(
        c10::promoteTypes(input.scalar_type(), target.scalar_type()));
    auto [loss, gradient] = ops::pointwise_loss_forward(input, target, op, param, reduction,
                                                        /*compute_grad=*/true, mean_in_grad);
    ctx->save_for_backward({gradient});
    ctx->saved_data["input_shape"] = input.sym_sizes();
    ctx->saved_data["target_shape"] = target.sym_sizes();
    ctx->saved_data["op"] = op;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["mean_in_grad"] = mean_in_grad;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const std::string op = ctx->saved_data["op"].toStringRef();
    // create_graph=True asks for a differentiable gradient. The saved gradient is a constant to
    // autograd, so its second derivative would silently be zero: refuse instead.
    TORCH_CHECK(!at::GradMode::is_enabled(), "fusedloss.", op,
                ": double backward (backward with create_graph=True) is not supported; the fused "
                "kernel saves only the first derivative. Use torch.nn.functional.", op,
                " where second derivatives are needed.");
    Tensor gradient = ctx->get_saved_variables()[0];
    const std::string& reduction = ctx->saved_data["reduction"].toStringRef();

    Tensor scale = grad_outputs[0];  // per element for 'none', a 0-d tensor otherwise
    if (reduction != "none") {
      // Scale in float or double: a half-precision 1/n would underflow for large n.
      if (at::isReducedFloatingType(scale.scalar_type())) scale = scale.to(at::kFloat);
      if (reduction == "mean" && !ctx->saved_data["mean_in_grad"].toBool()) {
        scale = scale.div(c10::Scalar(gradient.sym_numel()));
      }
    }

    Tensor grad_input, grad_target;
    if (ctx->needs_input_grad(1)) {
      grad_target = gradient.mul(scale).neg_();
      grad_target = at::sum_to(grad_target, ctx->saved_data["target_shape"].toSymIntVector());
    }
    if (ctx->needs_input_grad(0)) {
      if (reduction != "none" && is_plain_cpu_one(scale)) {
        grad_input = gradient;
      } else if (!torch::autograd::get_current_graph_task_keep_graph()) {
        // The graph is freed after this backward, so the saved buffer is ours to reuse: the engine
        // releases the saved variable next, and the gradient moves into input.grad with no copy.
        grad_input = gradient.mul_(scale);
      } else {
        grad_input = gradient.mul(scale);
      }
      grad_input = at::sum_to(grad_input, ctx->saved_data["input_shape"].toSymIntVector());
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
    return std::get<0>(ops::pointwise_loss_forward(input, target, op, param, reduction));
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
