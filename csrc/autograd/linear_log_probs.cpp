// Autograd for linear_log_probs, in C++ so that TorchScript and LibTorch programs get it too. The
// forward saves the inputs by reference and two numbers per token (entropy, log-sum-exp); backward
// runs the chunks again with the upstream gradients of both outputs (a per-token output cannot be
// folded into a weight gradient in advance).

#include "ops/linear_log_probs.h"

#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LinearLogProbsFunction : public torch::autograd::Function<LinearLogProbsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input,
                               const Tensor& linear_weight, const Tensor& target,
                               const OptionalTensor& linear_bias, double temperature,
                               int64_t ignore_index, std::optional<int64_t> chunk_size,
                               bool check_target) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [log_probs, entropy, lse] = ops::linear_log_probs_forward(
        input, linear_weight, target, linear_bias, {temperature, ignore_index, chunk_size},
        check_target);
    ctx->save_for_backward(
        {input, linear_weight, target, linear_bias.value_or(Tensor()), entropy, lse});
    ctx->saved_data["needs"] = std::vector<bool>{
        input.requires_grad(), linear_weight.requires_grad(),
        linear_bias.has_value() && linear_bias->requires_grad()};
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["chunk_size"] = chunk_size;
    return {log_probs, entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("linear_log_probs");
    const auto saved = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["needs"].toBoolList();
    const auto optional = [](const Tensor& t) {
      return t.defined() ? OptionalTensor(t) : std::nullopt;
    };
    const ops::LinearLogProbsArgs args{ctx->saved_data["temperature"].toDouble(),
                                       ctx->saved_data["ignore_index"].toInt(),
                                       ctx->saved_data["chunk_size"].toOptional<int64_t>()};
    auto [gx, gw, gb] = ops::linear_log_probs_backward(
        optional(grad_outputs[0]), optional(grad_outputs[1]), saved[0], saved[1], saved[2],
        optional(saved[3]), saved[4], saved[5], args, needs[0], needs[1], needs[2]);
    variable_list grads(8);
    if (needs[0]) grads[0] = gx;
    if (needs[1]) grads[1] = gw;
    if (needs[2]) grads[3] = gb;
    return grads;
  }
};

std::tuple<Tensor, Tensor> with_gradients(const Tensor& input, const Tensor& linear_weight,
                                          const Tensor& target, const OptionalTensor& linear_bias,
                                          double temperature, int64_t ignore_index,
                                          std::optional<int64_t> chunk_size, bool check_target) {
  const bool bias_grad = linear_bias.has_value() && linear_bias->requires_grad();
  if (!at::GradMode::is_enabled() ||
      !(input.requires_grad() || linear_weight.requires_grad() || bias_grad)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [log_probs, entropy, lse] = ops::linear_log_probs_forward(
        input, linear_weight, target, linear_bias, {temperature, ignore_index, chunk_size},
        check_target);
    return {log_probs, entropy};
  }
  auto outputs = LinearLogProbsFunction::apply(input, linear_weight, target, linear_bias,
                                               temperature, ignore_index, chunk_size,
                                               check_target);
  return {outputs[0], outputs[1]};
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("linear_log_probs", TORCH_FN(fusedloss::autograd::with_gradients));
}
