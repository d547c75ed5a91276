// Autograd for the pointwise losses, in C++ so that TorchScript and LibTorch programs get it too.
//
// The forward asks the fused op for the loss and the per-element gradients together and saves
// only those (for float32/float64 and reduction='mean' they already include the 1/n). Backward is
// then a scale by grad_output, done in place on the saved buffer when the graph is not kept, and
// skipped when grad_output is 1 on the CPU: a plain loss.backward() moves no memory at all.

#include "ops/pointwise_losses.h"

#include <ATen/ExpandUtils.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using ops::OptionalTensor;
using ops::TargetGradient;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PointwiseLossFunction : public torch::autograd::Function<PointwiseLossFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& target,
                        const OptionalTensor& weight, const OptionalTensor& pos_weight,
                        const std::string& op, const std::vector<double>& params,
                        const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const bool target_formula =
        target.requires_grad() && ops::target_gradient(op) == TargetGradient::Formula;
    auto [loss, grad_input, grad_target, scale] =
        ops::pointwise_loss_forward(input, target, weight, pos_weight, op, params, reduction,
                                    /*compute_grad=*/true, target_formula);
    ctx->save_for_backward({grad_input, grad_target, scale});
    ctx->saved_data["input_shape"] = input.sym_sizes();
    ctx->saved_data["target_shape"] = target.sym_sizes();
    ctx->saved_data["op"] = op;
    ctx->saved_data["reduced"] = reduction != "none";
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const std::string op = ctx->saved_data["op"].toStringRef();
    refuse_double_backward(op);
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    const auto scaled_by_output = [&](const Tensor& gradient, bool reuse_buffer) {
      return scaled(gradient, grad_outputs[0], saved[2], reduced, reuse_buffer);
    };
    const bool last_use = saved_buffers_die_after_backward();

    Tensor grad_target;
    if (ctx->needs_input_grad(1)) {
      switch (ops::target_gradient(op)) {
        case TargetGradient::NegatedInputGradient: {
          // Out of place: saved[0] is still needed for the input gradient below.
          const Tensor product = scaled_by_output(saved[0], /*reuse_buffer=*/false);
          grad_target = product.is_same(saved[0]) ? product.neg() : product.neg_();
          break;
        }
        case TargetGradient::Formula:
          grad_target = scaled_by_output(saved[1], last_use);
          break;
        case TargetGradient::NotDifferentiable:
          TORCH_CHECK(false, "fusedloss.", op,
                      ": not differentiable with respect to argument "
                      "'target' (as torch). Pass a target that does not require grad.");
        case TargetGradient::None:
          break;
      }
      if (grad_target.defined()) {
        grad_target = at::sum_to(grad_target, ctx->saved_data["target_shape"].toSymIntVector());
      }
    }
    Tensor grad_input;
    if (ctx->needs_input_grad(0)) {
      grad_input = at::sum_to(scaled_by_output(saved[0], last_use),
                              ctx->saved_data["input_shape"].toSymIntVector());
    }
    return {grad_input, grad_target, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// The Autograd-key kernel of every pointwise op: the fused path only when a gradient can flow.
Tensor with_gradients(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                      const OptionalTensor& pos_weight, const char* op, std::vector<double> params,
                      c10::string_view reduction) {
  const bool grad_mode = at::GradMode::is_enabled();
  refuse_weight_gradient(op, "weight", weight);
  refuse_weight_gradient(op, "pos_weight", pos_weight);
  if (!grad_mode || !(input.requires_grad() || target.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(
        ops::pointwise_loss_forward(input, target, weight, pos_weight, op, params, reduction));
  }
  return PointwiseLossFunction::apply(input, target, weight, pos_weight, std::string(op), params,
                                      std::string(reduction));
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  FUSEDLOSS_IMPL_POINTWISE_OPS(m, &fusedloss::autograd::with_gradients);
}
