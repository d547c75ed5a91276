// Autograd for nll_loss. The forward saves no gradient, only the targets and the total weight:
// nll_loss's gradient is one value per row, written by backward in one pass over the gradient.
// When backward must itself be differentiable (create_graph=True), it is formed from ATen ops
// instead (a scatter of the rows' values), so second derivatives are exact, as torch's.

#include "ops/nll_loss.h"

#include <ATen/ops/scatter.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
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

// The gradient with ATen ops, differentiable in grad_output.
Tensor differentiable_gradient(const Tensor& grad_output, const Tensor& target,
                               const OptionalTensor& weight, const Tensor& total_weight,
                               c10::SymIntArrayRef input_size, int64_t ignore_index,
                               const std::string& reduction) {
  const int64_t class_dim = input_size.size() == 1 ? 0 : 1;
  const int64_t classes = input_size[class_dim].guard_int(__FILE__, __LINE__);
  const auto options = grad_output.options();
  const Tensor t = target.to(at::kLong);
  const Tensor counted = t.ne(ignore_index).logical_and_(t.ge(0)).logical_and_(t.lt(classes));
  const Tensor safe = at::where(counted, t, at::zeros({}, t.options()));
  Tensor w = weight.has_value()
                 ? weight->to(options.dtype()).index_select(0, safe.reshape({-1})).view(t.sizes())
                 : at::ones(t.sizes(), options);
  w = at::where(counted, w, at::zeros({}, options));
  Tensor value = w.neg().mul(grad_output);
  if (reduction == "mean") {
    const Tensor W = total_weight.to(options.dtype());
    value = at::where(W.eq(0), at::zeros({}, options), value.div(W));
  }
  return at::zeros_symint(input_size, options)
      .scatter(class_dim, safe.unsqueeze(class_dim), value.unsqueeze(class_dim));
}

class NllLossFunction : public torch::autograd::Function<NllLossFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& target,
                        const OptionalTensor& weight, int64_t ignore_index,
                        const std::string& reduction, bool check_target) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, total_weight] =
        ops::nll_loss_forward(input, target, weight, ignore_index, reduction, check_target);
    ctx->save_for_backward({target, weight.value_or(Tensor()), total_weight});
    ctx->saved_data["input_size"] = input.sym_sizes().vec();
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = reduction;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(6);
    if (!ctx->needs_input_grad(0)) return grads;
    const auto saved = ctx->get_saved_variables();
    const OptionalTensor weight = saved[1].defined() ? OptionalTensor(saved[1]) : std::nullopt;
    const auto input_size = ctx->saved_data["input_size"].toSymIntVector();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    if (at::GradMode::is_enabled()) {  // create_graph=True
      grads[0] = differentiable_gradient(grad_outputs[0], saved[0], weight, saved[2], input_size,
                                         ignore_index, reduction);
    } else {
      grads[0] = ops::nll_loss_backward(grad_outputs[0], saved[0], weight, saved[2], input_size,
                                        ignore_index, reduction);
    }
    return grads;
  }
};

// The Autograd-key kernel: the fused path, with its backward only when a gradient can flow.
Tensor nll_loss_with_gradients(const Tensor& input, const Tensor& target,
                               const OptionalTensor& weight, int64_t ignore_index,
                               c10::string_view reduction, bool check_target) {
  refuse_weight_gradient("nll_loss", "weight", weight);
  if (!at::GradMode::is_enabled() || !input.requires_grad()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(
        ops::nll_loss_forward(input, target, weight, ignore_index, reduction, check_target));
  }
  return NllLossFunction::apply(input, target, weight, ignore_index, std::string(reduction),
                                check_target);
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("nll_loss", TORCH_FN(fusedloss::autograd::nll_loss_with_gradients));
}
