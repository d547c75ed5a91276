#pragma once
// Backward of a fused loss that saved its gradient in the forward: a scale by grad_output, done
// in place on the saved buffer when this backward is its last use, and skipped when the loss is
// reduced and grad_output is a plain CPU 1. Shared by the loss families' autograd Functions.

#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/graph_task.h>

#include <optional>
#include <string>

namespace fusedloss {
namespace autograd {

// create_graph=True asks for a differentiable gradient. A saved gradient is a constant to
// autograd, so its second derivative would silently be zero: every fused loss refuses instead.
inline void refuse_double_backward(const std::string& op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "fusedloss.", op,
              ": double backward (backward with create_graph=True) is not supported; the fused "
              "kernel saves only the first derivative. Compute the loss with torch.nn.functional "
              "where second derivatives are needed.");
}

// Class or element weights are constants in torch's losses too.
inline void refuse_weight_gradient(const std::string& op, const char* name,
                                   const std::optional<at::Tensor>& weight) {
  TORCH_CHECK(!at::GradMode::is_enabled() || !weight.has_value() || !weight->requires_grad(),
              "fusedloss.", op, ": the derivative for '", name,
              "' is not implemented (as in torch)");
}

// True when `scale` is a plain CPU number equal to 1, so multiplying by it can be skipped. Never
// reads the value of a GPU tensor (that would synchronize) or of a traced one (torch.compile).
inline bool is_plain_cpu_one(const at::Tensor& scale) {
  return scale.dim() == 0 && scale.device().is_cpu() && !at::isTensorSubclassLike(scale) &&
         scale.item<double>() == 1.0;
}

// What backward multiplies a saved gradient by.
struct Scale {
  at::Tensor factor;      // grad_output (broadcastable to the gradient), or 0-d when reduced
  bool reduced = false;   // 'mean' or 'sum'
  bool in_float = false;  // factor is grad_output / n in float: see scaled()
};

// gradient * scale. When the forward left out the 1/n of a float16/bfloat16 mean, the product is
// formed in float and rounded once: a GPU kernel reads a 0-d float factor at the gradient's half
// precision, where 1/n underflows. Otherwise the saved buffer is reused in place when this
// backward is its last use (reuse_buffer).
inline at::Tensor scaled(const at::Tensor& gradient, const Scale& scale, bool reuse_buffer) {
  if (scale.in_float) {
    return gradient.to(at::kFloat).mul_(scale.factor).to(gradient.scalar_type());
  }
  if (scale.reduced && is_plain_cpu_one(scale.factor)) return gradient;
  return reuse_buffer ? gradient.mul_(scale.factor) : gradient.mul(scale.factor);
}

// grad_output / divisor in float, for a 'mean' whose 1/divisor backward applies. A zero divisor
// (every target ignored) gives 0, not inf: the saved gradient is 0 there, and 0 * inf would be NaN
// where torch's gradient is 0.
inline at::Tensor mean_factor(const at::Tensor& grad_output, const at::Tensor& divisor) {
  const at::Tensor d = divisor.to(at::kFloat);
  const at::Tensor factor = grad_output.to(at::kFloat).div(d);
  return factor.masked_fill(d.eq(0), 0.0);
}

// The graph is freed after this backward: the engine releases the saved variables next, so their
// buffers may be reused and move on (into input.grad) with no copy.
inline bool saved_buffers_die_after_backward() {
  return !torch::autograd::get_current_graph_task_keep_graph();
}

}  // namespace autograd
}  // namespace fusedloss
