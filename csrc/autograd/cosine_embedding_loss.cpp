// Autograd for cosine_embedding_loss: the forward saves the two gradients the fused kernel wrote
// (for 'mean' with the 1/N, except in float16) and backward scales them by grad_output. The
// labels take no gradient (torch's formula compares them only).

#include <ATen/ExpandUtils.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"
#include "ops/cosine_embedding_loss.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class CosineEmbeddingFunction : public torch::autograd::Function<CosineEmbeddingFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input1, const Tensor& input2,
                        const Tensor& target, double margin, const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad1, grad2, scale] = ops::cosine_embedding_loss_forward(
        input1, input2, target, margin, reduction, /*compute_grad=*/true);
    ctx->save_for_backward({grad1, grad2, scale});
    ctx->saved_data["reduced"] = reduction != "none";
    ctx->saved_data["shape1"] = input1.sym_sizes();
    ctx->saved_data["shape2"] = input2.sym_sizes();
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("cosine_embedding_loss");
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    const bool last_use = saved_buffers_die_after_backward();
    // Per row for 'none': along the feature dimension (none for (D) inputs: one row).
    const Tensor& g = grad_outputs[0];
    const Tensor factor = reduced || g.dim() == 0 ? g : g.unsqueeze(1);
    variable_list grads(5);
    for (int i : {0, 1}) {
      if (!ctx->needs_input_grad(i)) continue;
      const auto shape = ctx->saved_data[i == 0 ? "shape1" : "shape2"].toSymIntVector();
      grads[i] = at::sum_to(scaled(saved[i], factor, saved[2], reduced, last_use), shape);
    }
    return grads;
  }
};

// The Autograd-key kernel: the fused path with gradients only when a gradient can flow.
Tensor cosine_embedding_with_gradients(const Tensor& input1, const Tensor& input2,
                                       const Tensor& target, double margin,
                                       c10::string_view reduction) {
  if (!at::GradMode::is_enabled() || !(input1.requires_grad() || input2.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::cosine_embedding_loss_forward(input1, input2, target, margin,
                                                          reduction, false));
  }
  return CosineEmbeddingFunction::apply(input1, input2, target, margin, std::string(reduction));
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("cosine_embedding_loss", TORCH_FN(fusedloss::autograd::cosine_embedding_with_gradients));
}
