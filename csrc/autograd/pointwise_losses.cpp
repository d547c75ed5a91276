// Autograd for the elementwise losses (every declaration of ops/pointwise_declarations.h), in C++
// so that TorchScript and LibTorch programs get it too.
//
// The forward asks the fused op for the loss and the per-element gradients together and saves
// only those (for reduction='mean' they include the 1/n, except in float16) and the op's backward
// scale. Backward is then one scale by grad_output, in place on the saved buffer when the graph is
// not kept, and nothing at all for a plain loss.backward() (skipped on the CPU, a kernel that
// returns at once on CUDA).

#include "ops/pointwise_losses.h"

#include <ATen/ExpandUtils.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using ops::TargetGradient;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The autograd Function of one declared loss D; Args are its public op's arguments.
template <typename D, typename Bind = decltype(&D::bind)>
class PointwiseLossFunction;

template <typename D, typename... Args>
class PointwiseLossFunction<D, ops::PointwiseCall (*)(Args...)>
    : public torch::autograd::Function<PointwiseLossFunction<D>> {
 public:
  static Tensor forward(AutogradContext* ctx, Args... args) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const ops::PointwiseCall c = D::bind(args...);
    const bool target_formula =
        c.target.requires_grad() && D::kTargetGradient == TargetGradient::Formula;
    auto [loss, grad_input, grad_target, scale] =
        ops::Declared<D>::forward(args..., /*compute_grad=*/true, target_formula);
    ctx->save_for_backward({grad_input, grad_target, scale});
    ctx->saved_data["input_shape"] = c.input.sym_sizes();
    ctx->saved_data["target_shape"] = c.target.sym_sizes();
    ctx->saved_data["reduced"] = c.reduction != "none";
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward(D::kName);
    const auto saved = ctx->get_saved_variables();
    const bool reduced = ctx->saved_data["reduced"].toBool();
    const auto scaled_by_output = [&](const Tensor& gradient, bool reuse_buffer) {
      return scaled(gradient, grad_outputs[0], saved[2], reduced, reuse_buffer);
    };
    const bool last_use = saved_buffers_die_after_backward();

    Tensor grad_target;
    if (ctx->needs_input_grad(1)) {
      switch (D::kTargetGradient) {
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
          TORCH_CHECK(false, "fusedloss.", D::kName,
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
    variable_list grads(sizeof...(Args));  // input and target come first in every declaration
    grads[0] = grad_input;
    grads[1] = grad_target;
    return grads;
  }

  // The Autograd-key kernel: the fused path with gradients only when a gradient can flow.
  static Tensor with_gradients(Args... args) {
    const ops::PointwiseCall c = D::bind(args...);
    refuse_weight_gradient(D::kName, c.weight_name, c.weight);
    refuse_weight_gradient(D::kName, "pos_weight", c.pos_weight);
    if (!at::GradMode::is_enabled() || !(c.input.requires_grad() || c.target.requires_grad())) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      return std::get<0>(ops::Declared<D>::forward(args..., false, false));
    }
    return PointwiseLossFunction::apply(args...);
  }
};

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  using namespace fusedloss;
  ops::for_each_declared([&]<typename D>() {
    m.impl(D::kName, TORCH_FN(autograd::PointwiseLossFunction<D>::with_gradients));
  });
}
