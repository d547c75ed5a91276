// Autograd for jensen_shannon_divergence: the forward saves the student's gradient the fused
// kernel wrote and backward scales it by grad_output (and, for a 'mean' over labelled rows, by the
// 1/count the op returned). The teacher takes no gradient: distillation treats it as a constant,
// and one that requires grad is refused rather than silently given none.

#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"
#include "ops/jensen_shannon_divergence.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class JensenShannonFunction : public torch::autograd::Function<JensenShannonFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& target,
                        const std::optional<Tensor>& labels, double beta, double temperature,
                        int64_t ignore_index, const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad, scale] = ops::jensen_shannon_divergence_forward(
        input, target, labels, beta, temperature, ignore_index, reduction, /*compute_grad=*/true);
    ctx->save_for_backward({grad, scale});
    ctx->saved_data["reduced"] = reduction != "none";
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("jensen_shannon_divergence");
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    // Per row for 'none': along the classes.
    const Tensor& g = grad_outputs[0];
    const Tensor factor = reduced ? g : g.unsqueeze(-1);
    variable_list grads(7);
    grads[0] = scaled(saved[0], factor, saved[1], reduced, saved_buffers_die_after_backward());
    return grads;
  }
};

// The Autograd-key kernel: the fused path with a gradient only when one can flow.
Tensor jensen_shannon_with_gradients(const Tensor& input, const Tensor& target,
                                     const std::optional<Tensor>& labels, double beta,
                                     double temperature, int64_t ignore_index,
                                     c10::string_view reduction) {
  TORCH_CHECK(!at::GradMode::is_enabled() || !target.requires_grad(),
              "fusedloss.jensen_shannon_divergence: the derivative for 'target' (the teacher's "
              "logits) is not implemented: only the student takes a gradient. Pass "
              "target.detach().");
  if (!at::GradMode::is_enabled() || !input.requires_grad()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::jensen_shannon_divergence_forward(
        input, target, labels, beta, temperature, ignore_index, reduction, false));
  }
  return JensenShannonFunction::apply(input, target, labels, beta, temperature, ignore_index,
                                      std::string(reduction));
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("jensen_shannon_divergence", TORCH_FN(fusedloss::autograd::jensen_shannon_with_gradients));
}
