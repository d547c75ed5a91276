// Autograd for linear_jsd, in C++ so that TorchScript and LibTorch programs get it too. 'mean' and
// 'sum': the forward computes the student's gradients and saves only those; backward scales them
// by grad_output. 'none': backward runs the chunks again with the per-row grad_output. The
// teacher takes no gradient (refused if it asks for one).

#include "ops/linear_jsd.h"

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

OptionalTensor optional(const Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

class LinearJsdFunction : public torch::autograd::Function<LinearJsdFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& linear_weight,
                        const Tensor& teacher_input, const OptionalTensor& teacher_weight,
                        const OptionalTensor& labels, const OptionalTensor& linear_bias,
                        const OptionalTensor& teacher_bias, double beta, double temperature,
                        int64_t ignore_index, const std::string& reduction,
                        std::optional<int64_t> chunk_size) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const ops::LinearJsdArgs args{beta, temperature, ignore_index, reduction, chunk_size};
    const bool needs_x = input.requires_grad(), needs_w = linear_weight.requires_grad();
    const bool needs_b = linear_bias.has_value() && linear_bias->requires_grad();
    ctx->saved_data["needs"] = std::vector<bool>{needs_x, needs_w, needs_b};
    ctx->saved_data["reduction"] = reduction;
    if (reduction == "none") {
      auto outputs = ops::linear_jsd_forward(input, linear_weight, teacher_input, teacher_weight,
                                             labels, linear_bias, teacher_bias, args, std::nullopt,
                                             false, false, false);
      ctx->save_for_backward({input, linear_weight, teacher_input,
                              teacher_weight.value_or(Tensor()), labels.value_or(Tensor()),
                              linear_bias.value_or(Tensor()), teacher_bias.value_or(Tensor())});
      ctx->saved_data["beta"] = beta;
      ctx->saved_data["temperature"] = temperature;
      ctx->saved_data["ignore_index"] = ignore_index;
      ctx->saved_data["chunk_size"] = chunk_size;
      return std::get<0>(outputs);
    }
    auto [loss, gx, gw, gb, scale] = ops::linear_jsd_forward(
        input, linear_weight, teacher_input, teacher_weight, labels, linear_bias, teacher_bias,
        args, std::nullopt, needs_x, needs_w, needs_b);
    ctx->save_for_backward({gx, gw, gb, scale});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("linear_jsd");
    const auto saved = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["needs"].toBoolList();
    variable_list grads(12);
    if (ctx->saved_data["reduction"].toStringRef() == "none") {
      const ops::LinearJsdArgs args{ctx->saved_data["beta"].toDouble(),
                                    ctx->saved_data["temperature"].toDouble(),
                                    ctx->saved_data["ignore_index"].toInt(), "none",
                                    ctx->saved_data["chunk_size"].toOptional<int64_t>()};
      auto outputs = ops::linear_jsd_forward(
          saved[0], saved[1], saved[2], optional(saved[3]), optional(saved[4]),
          optional(saved[5]), optional(saved[6]), args, grad_outputs[0], needs[0], needs[1],
          needs[2]);
      if (needs[0]) grads[0] = std::get<1>(outputs);
      if (needs[1]) grads[1] = std::get<2>(outputs);
      if (needs[2]) grads[5] = std::get<3>(outputs);
      return grads;
    }
    const bool last_use = saved_buffers_die_after_backward();
    const auto scale = [&](const Tensor& gradient) {
      return scaled(gradient, grad_outputs[0], saved[3], /*reduced=*/true, last_use);
    };
    if (needs[0]) grads[0] = scale(saved[0]);
    if (needs[1]) grads[1] = scale(saved[1]);
    if (needs[2]) grads[5] = scale(saved[2]);
    return grads;
  }
};

Tensor with_gradients(const Tensor& input, const Tensor& linear_weight,
                      const Tensor& teacher_input, const OptionalTensor& teacher_weight,
                      const OptionalTensor& labels, const OptionalTensor& linear_bias,
                      const OptionalTensor& teacher_bias, double beta, double temperature,
                      int64_t ignore_index, c10::string_view reduction,
                      std::optional<int64_t> chunk_size) {
  const bool teacher_grad =
      teacher_input.requires_grad() ||
      (teacher_weight.has_value() && teacher_weight->requires_grad()) ||
      (teacher_bias.has_value() && teacher_bias->requires_grad());
  TORCH_CHECK(!at::GradMode::is_enabled() || !teacher_grad,
              "fusedloss.linear_jsd: only the student takes a gradient; the teacher's tensors "
              "require grad (detach them, or compute them under torch.no_grad())");
  const bool bias_grad = linear_bias.has_value() && linear_bias->requires_grad();
  if (!at::GradMode::is_enabled() ||
      !(input.requires_grad() || linear_weight.requires_grad() || bias_grad)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::linear_jsd_forward(
        input, linear_weight, teacher_input, teacher_weight, labels, linear_bias, teacher_bias,
        {beta, temperature, ignore_index, reduction, chunk_size}, std::nullopt, false, false,
        false));
  }
  return LinearJsdFunction::apply(input, linear_weight, teacher_input, teacher_weight, labels,
                                  linear_bias, teacher_bias, beta, temperature, ignore_index,
                                  std::string(reduction), chunk_size);
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("linear_jsd", TORCH_FN(fusedloss::autograd::with_gradients));
}
