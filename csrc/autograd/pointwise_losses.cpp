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

// Which public argument takes the engine's target place: the second, unless the declaration says
// (gaussian_nll_loss: var). A declaration with kWeightPlaceArgument has a differentiable weight
// operand, whose gradient is minus the input's (gaussian_nll_loss's target); others' weights are
// constants, as in torch.
template <typename D>
constexpr int target_place_argument() {
  if constexpr (requires { D::kTargetPlaceArgument; }) {
    return D::kTargetPlaceArgument;
  } else {
    return 1;
  }
}
template <typename D>
constexpr bool weight_place_has_gradient() {
  return requires { D::kWeightPlaceArgument; };
}
template <typename D>
constexpr int weight_place_argument() {
  if constexpr (weight_place_has_gradient<D>()) {
    return D::kWeightPlaceArgument;
  } else {
    return -1;
  }
}

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
    // The public argument, not c.target: a view bind made below autograd (an unsqueezed var)
    // does not carry requires_grad.
    const Tensor& target_argument = std::get<target_place_argument<D>()>(std::tie(args...));
    const bool target_formula =
        target_argument.requires_grad() && D::kTargetGradient == TargetGradient::Formula;
    auto [loss, grad_input, grad_target, scale] =
        ops::Declared<D>::forward(args..., /*compute_grad=*/true, target_formula);
    ctx->save_for_backward({grad_input, grad_target, scale});
    ctx->saved_data["input_shape"] = c.input.sym_sizes();
    ctx->saved_data["target_shape"] = c.target.sym_sizes();
    // The public argument in the target place may have been reshaped by bind (an unsqueezed var).
    ctx->saved_data["target_argument_shape"] = target_argument.sym_sizes();
    if constexpr (weight_place_has_gradient<D>()) {
      ctx->saved_data["weight_shape"] = c.weight->sym_sizes();
    }
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
    if (ctx->needs_input_grad(target_place_argument<D>())) {
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
        grad_target = at::sum_to(grad_target, ctx->saved_data["target_shape"].toSymIntVector())
                          .view_symint(ctx->saved_data["target_argument_shape"].toSymIntVector());
      }
    }
    constexpr int kWeightPlace = weight_place_argument<D>();
    const bool weight_grad = kWeightPlace >= 0 && ctx->needs_input_grad(kWeightPlace);
    Tensor grad_input, grad_weight;
    if (ctx->needs_input_grad(0) || weight_grad) {
      const Tensor full = scaled_by_output(saved[0], last_use);
      if (weight_grad) {
        grad_weight = at::sum_to(full.neg(), ctx->saved_data["weight_shape"].toSymIntVector());
      }
      if (ctx->needs_input_grad(0)) {
        grad_input = at::sum_to(full, ctx->saved_data["input_shape"].toSymIntVector());
      }
    }
    variable_list grads(sizeof...(Args));  // input comes first in every declaration
    grads[0] = grad_input;
    grads[target_place_argument<D>()] = grad_target;
    if constexpr (kWeightPlace >= 0) grads[kWeightPlace] = grad_weight;
    return grads;
  }

  // The Autograd-key kernel: the fused path with gradients only when a gradient can flow.
  static Tensor with_gradients(Args... args) {
    const ops::PointwiseCall c = D::bind(args...);
    if constexpr (!weight_place_has_gradient<D>()) {
      refuse_weight_gradient(D::kName, c.weight_name, c.weight);
    }
    refuse_weight_gradient(D::kName, "pos_weight", c.pos_weight);
    const bool weight_requires_grad =
        weight_place_has_gradient<D>() && c.weight.has_value() && c.weight->requires_grad();
    if (!at::GradMode::is_enabled() ||
        !(c.input.requires_grad() || c.target.requires_grad() || weight_requires_grad)) {
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
