// Autograd for cross_entropy and multi_margin_loss, in C++ so that TorchScript and LibTorch
// programs get it too. The forward saves only the gradient the fused kernel wrote (for
// 'mean' it holds 1/denominator, except in float16); backward scales it by grad_output and the
// op's backward scale.
// nll_loss saves no gradient: autograd/nll_loss.cpp.

#include "ops/multiclass_losses.h"

#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using ops::OptionalTensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The saved gradient times grad_output (per row for 'none': broadcast along the class dimension,
// none for an input (C)) and the op's backward scale.
Tensor scaled_gradient(const Tensor& gradient, const Tensor& grad_output, const Tensor& scale,
                       bool reduced, int64_t input_dim, bool last_use) {
  // A 0-d input (multi_margin_loss: one row of one class) may have a (1) target and loss.
  const Tensor factor = input_dim == 0             ? grad_output.reshape({})
                        : reduced || input_dim < 2 ? grad_output
                                                   : grad_output.unsqueeze(1);
  return scaled(gradient, factor, scale, reduced, last_use);
}

class CrossEntropyFunction : public torch::autograd::Function<CrossEntropyFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& target,
                               const OptionalTensor& weight, int64_t ignore_index,
                               const std::string& reduction, double label_smoothing, double z_loss,
                               std::optional<double> softcap, bool check_target) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Outputs with no gradient (z_loss) stay undefined in backward: no zeros kernel for them.
    ctx->set_materialize_grads(false);
    const bool target_grad = target.requires_grad();  // only probability targets can
    const ops::CrossEntropyArgs args{ignore_index, reduction, label_smoothing,
                                     z_loss,       softcap,   check_target};
    auto r =
        ops::cross_entropy_forward(input, target, weight, args, /*compute_grad=*/true, target_grad);
    ctx->save_for_backward({r.grad_input, r.grad_target, r.backward_scale});
    ctx->saved_data["reduced"] = reduction != "none";
    ctx->saved_data["input_dim"] = input.dim();
    ctx->mark_non_differentiable({r.z_loss});  // for logging: it is already part of the loss
    return {r.loss, r.z_loss};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("cross_entropy");
    variable_list grads(9);
    if (!grad_outputs[0].defined()) return grads;  // no gradient reaches the loss: none flows on
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    const int64_t input_dim = ctx->saved_data["input_dim"].toInt();
    const bool last_use = saved_buffers_die_after_backward();
    for (int i : {0, 1}) {
      if (!ctx->needs_input_grad(i)) continue;
      grads[i] = scaled_gradient(saved[i], grad_outputs[0], saved[2], reduced, input_dim, last_use);
    }
    return grads;
  }
};

class MultiMarginFunction : public torch::autograd::Function<MultiMarginFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& target, int64_t p,
                        double margin, const OptionalTensor& weight, const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad_input, scale] =
        ops::multi_margin_loss_forward(input, target, p, margin, weight, reduction, true);
    ctx->save_for_backward({grad_input, scale});
    ctx->saved_data["reduced"] = reduction != "none";
    ctx->saved_data["input_dim"] = input.dim();
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("multi_margin_loss");
    const auto saved = ctx->get_saved_variables();
    Tensor grad_input;
    if (ctx->needs_input_grad(0)) {
      grad_input =
          scaled_gradient(saved[0], grad_outputs[0], saved[1], ctx->saved_data["reduced"].toBool(),
                          ctx->saved_data["input_dim"].toInt(), saved_buffers_die_after_backward());
    }
    return {grad_input, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// The Autograd-key kernels: the fused path with gradients only when a gradient can flow.
std::tuple<Tensor, Tensor> cross_entropy_with_gradients(const Tensor& input, const Tensor& target,
                                                        const OptionalTensor& weight,
                                                        const ops::CrossEntropyArgs& args) {
  refuse_weight_gradient("cross_entropy", "weight", weight);
  if (!at::GradMode::is_enabled() || !(input.requires_grad() || target.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto r = ops::cross_entropy_forward(input, target, weight, args, false, false);
    return {r.loss, r.z_loss};
  }
  auto outputs = CrossEntropyFunction::apply(input, target, weight, args.ignore_index,
                                             std::string(args.reduction), args.label_smoothing,
                                             args.z_loss, args.softcap, args.check_target);
  return {outputs[0], outputs[1]};
}

Tensor multi_margin_with_gradients(const Tensor& input, const Tensor& target, int64_t p,
                                   double margin, const OptionalTensor& weight,
                                   c10::string_view reduction) {
  refuse_weight_gradient("multi_margin_loss", "weight", weight);
  if (!at::GradMode::is_enabled() || !input.requires_grad()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(
        ops::multi_margin_loss_forward(input, target, p, margin, weight, reduction, false));
  }
  return MultiMarginFunction::apply(input, target, p, margin, weight, std::string(reduction));
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  FUSEDLOSS_IMPL_CROSS_ENTROPY_OPS(m, &fusedloss::autograd::cross_entropy_with_gradients);
  m.impl("multi_margin_loss", TORCH_FN(fusedloss::autograd::multi_margin_with_gradients));
}
