// Autograd for ctc_loss: the forward saves the gradient the engine wrote (each sample's 'mean'
// factor 1 / max(target_length, 1) folded in, and the 1/N except in float16) and backward scales
// it by grad_output: per sample for 'none'. Targets and lengths take no gradient.

#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"
#include "ops/ctc_loss.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class CtcLossFunction : public torch::autograd::Function<CtcLossFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& log_probs, const Tensor& targets,
                        const Tensor& input_lengths, const Tensor& target_lengths, int64_t blank,
                        const std::string& reduction, bool zero_infinity) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad, scale] = ops::ctc_loss_forward(log_probs, targets, input_lengths,
                                                     target_lengths, blank, reduction,
                                                     zero_infinity, /*compute_grad=*/true);
    ctx->save_for_backward({grad, scale});
    ctx->saved_data["reduced"] = reduction != "none";
    ctx->saved_data["batched"] = log_probs.dim() == 3;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("ctc_loss");
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    // 'none' of a batch: one grad_output per sample, broadcast over time and classes.
    const Tensor& g = grad_outputs[0];
    const bool per_sample = !reduced && ctx->saved_data["batched"].toBool();
    const Tensor factor = per_sample ? g.view({1, -1, 1}) : g;
    return {scaled(saved[0], factor, saved[1], reduced, saved_buffers_die_after_backward()),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// The Autograd-key kernel: the fused path with a gradient only when one can flow.
Tensor ctc_loss_with_gradients(const Tensor& log_probs, const Tensor& targets,
                               const Tensor& input_lengths, const Tensor& target_lengths,
                               int64_t blank, c10::string_view reduction, bool zero_infinity) {
  if (!at::GradMode::is_enabled() || !log_probs.requires_grad()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::ctc_loss_forward(log_probs, targets, input_lengths, target_lengths,
                                             blank, reduction, zero_infinity, false));
  }
  return CtcLossFunction::apply(log_probs, targets, input_lengths, target_lengths, blank,
                                std::string(reduction), zero_infinity);
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("ctc_loss", TORCH_FN(fusedloss::autograd::ctc_loss_with_gradients));
}
