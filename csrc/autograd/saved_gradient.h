#pragma once
// Backward of a fused loss that saved its gradient in the forward: a scale by grad_output (and the
// op's backward scale), done in place on the saved buffer when this backward is its last use.
// Shared by the loss families' autograd Functions.

#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/graph_task.h>

#include <optional>
#include <string>

#include "ops/scale_gradient.h"

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

// The backward of a fused loss: the saved gradient times grad_output, and for a reduced loss
// times the op's backward scale too (ops/scale_gradient.h: one kernel, the product formed in the
// accumulation type). For 'none', grad_output is broadcast to the gradient (the caller shapes it).
// The saved buffer is scaled in place when this backward is its last use (reuse_buffer); nothing
// is done when both factors are a plain CPU 1.
inline at::Tensor scaled(const at::Tensor& gradient, const at::Tensor& grad_output,
                         const at::Tensor& backward_scale, bool reduced, bool reuse_buffer) {
  if (!reduced) return reuse_buffer ? gradient.mul_(grad_output) : gradient.mul(grad_output);
  if (is_plain_cpu_one(grad_output) && is_plain_cpu_one(backward_scale)) {
    // A kept graph still needs the saved buffer: hand out a copy a hook may change in place.
    return reuse_buffer ? gradient : gradient.clone();
  }
  at::Tensor out = reuse_buffer ? gradient : gradient.clone();
  ops::scale_gradient_(out, grad_output.to(gradient.scalar_type()), backward_scale);
  return out;
}

// The graph is freed after this backward: the engine releases the saved variables next, so their
// buffers may be reused and move on (into input.grad) with no copy.
inline bool saved_buffers_die_after_backward() {
  return !torch::autograd::get_current_graph_task_keep_graph();
}

}  // namespace autograd
}  // namespace fusedloss
