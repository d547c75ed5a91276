#pragma once
// linear_log_probs' internal ops, as the autograd layer calls them (through the dispatcher).

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace fusedloss {
namespace ops {

struct LinearLogProbsArgs {
  double temperature = 1;
  int64_t ignore_index = -100;
  std::optional<int64_t> chunk_size;
};

// fusedloss::_linear_log_probs_forward: per token log p(target), the entropy and the log-sum-exp
// of softmax((input @ linear_weight.T + linear_bias) / temperature), of the input's leading shape,
// in the accumulation dtype (float32 for float16/bfloat16).
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_log_probs_forward(
    const at::Tensor& input, const at::Tensor& linear_weight, const at::Tensor& target,
    const std::optional<at::Tensor>& linear_bias, const LinearLogProbsArgs& args,
    bool check_target);

// fusedloss::_linear_log_probs_backward: the gradients of input, linear_weight and linear_bias
// (empty where not asked) from those of the two outputs (either may be absent: zero). The chunks'
// logits are computed again; entropy and log_sum_exp are the forward's.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_log_probs_backward(
    const std::optional<at::Tensor>& grad_log_probs, const std::optional<at::Tensor>& grad_entropy,
    const at::Tensor& input, const at::Tensor& linear_weight, const at::Tensor& target,
    const std::optional<at::Tensor>& linear_bias, const at::Tensor& entropy,
    const at::Tensor& log_sum_exp, const LinearLogProbsArgs& args, bool grad_input,
    bool grad_weight, bool grad_bias);

}  // namespace ops
}  // namespace fusedloss
