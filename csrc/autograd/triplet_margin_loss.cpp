// Autograd for triplet_margin_loss: the forward saves the gradients the fused kernel wrote for the
// inputs that require one (for 'mean' with the 1/N, except in float16) and backward scales them
// by grad_output.

#include <ATen/ExpandUtils.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"
#include "ops/triplet_margin_loss.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kShapes[] = {"anchor_shape", "positive_shape", "negative_shape"};

class TripletMarginFunction : public torch::autograd::Function<TripletMarginFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& anchor, const Tensor& positive,
                        const Tensor& negative, double margin, double p, double eps, bool swap,
                        const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad_a, grad_p, grad_n, scale] = ops::triplet_margin_loss_forward(
        anchor, positive, negative, margin, p, eps, swap, reduction,
        {anchor.requires_grad(), positive.requires_grad(), negative.requires_grad()});
    ctx->save_for_backward({grad_a, grad_p, grad_n, scale});
    ctx->saved_data["reduced"] = reduction != "none";
    // 0-d inputs (the three share their dimensions): one row, no distance dimension. Not read
    // from a saved gradient: those of inputs that need none are empty placeholders.
    ctx->saved_data["scalar_rows"] = anchor.dim() == 0;
    ctx->saved_data[kShapes[0]] = anchor.sym_sizes();
    ctx->saved_data[kShapes[1]] = positive.sym_sizes();
    ctx->saved_data[kShapes[2]] = negative.sym_sizes();
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("triplet_margin_loss");
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    const bool last_use = saved_buffers_die_after_backward();
    // Per row for 'none': along the distance dimension (none for 0-d inputs).
    const Tensor& g = grad_outputs[0];
    const bool scalar_rows = ctx->saved_data["scalar_rows"].toBool();
    const Tensor factor = reduced || scalar_rows ? g : g.unsqueeze(-1);
    variable_list grads(8);
    for (int i : {0, 1, 2}) {
      if (!ctx->needs_input_grad(i)) continue;
      const auto shape = ctx->saved_data[kShapes[i]].toSymIntVector();
      grads[i] = at::sum_to(scaled(saved[i], factor, saved[3], reduced, last_use), shape);
    }
    return grads;
  }
};

// The Autograd-key kernel: the fused path with gradients only when a gradient can flow.
Tensor triplet_margin_with_gradients(const Tensor& anchor, const Tensor& positive,
                                     const Tensor& negative, double margin, double p, double eps,
                                     bool swap, c10::string_view reduction) {
  const bool wants_grad =
      anchor.requires_grad() || positive.requires_grad() || negative.requires_grad();
  if (!at::GradMode::is_enabled() || !wants_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::triplet_margin_loss_forward(anchor, positive, negative, margin, p,
                                                        eps, swap, reduction, {false, false, false}));
  }
  return TripletMarginFunction::apply(anchor, positive, negative, margin, p, eps, swap,
                                      std::string(reduction));
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("triplet_margin_loss", TORCH_FN(fusedloss::autograd::triplet_margin_with_gradients));
}
