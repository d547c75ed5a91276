// Autograd for multilabel_margin_loss: the forward saves the gradient the fused kernel wrote (for
// 'mean' with the 1/N, except in float16) and backward scales it by grad_output. The target holds
// class indices: no gradient.

#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"
#include "ops/multilabel_margin_loss.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class MultilabelMarginFunction : public torch::autograd::Function<MultilabelMarginFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& target,
                        const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad, scale] =
        ops::multilabel_margin_loss_forward(input, target, reduction, /*compute_grad=*/true);
    ctx->save_for_backward({grad, scale});
    ctx->saved_data["reduced"] = reduction != "none";
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("multilabel_margin_loss");
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    // Per row for 'none' of (N, C) scores: along the classes.
    const Tensor& g = grad_outputs[0];
    const Tensor factor = reduced || g.dim() == 0 ? g : g.unsqueeze(1);
    return {scaled(saved[0], factor, saved[1], reduced, saved_buffers_die_after_backward()),
            Tensor(), Tensor()};
  }
};

// The Autograd-key kernel: the fused path with a gradient only when one can flow.
Tensor multilabel_margin_with_gradients(const Tensor& input, const Tensor& target,
                                        c10::string_view reduction) {
  if (!at::GradMode::is_enabled() || !input.requires_grad()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::multilabel_margin_loss_forward(input, target, reduction, false));
  }
  return MultilabelMarginFunction::apply(input, target, std::string(reduction));
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("multilabel_margin_loss", TORCH_FN(fusedloss::autograd::multilabel_margin_with_gradients));
}
