// Autograd for linear_cross_entropy, in C++ so that TorchScript and LibTorch programs get it too.
// 'mean'/'sum': the forward computes the gradients of every input that requires one and saves
// only those; backward scales them by grad_output. 'none': backward runs the chunks again with
// the per-row grad_output (a loss per row cannot be folded into a weight gradient in advance).

#include "ops/linear_cross_entropy.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/matmul.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/saved_gradient.h"

namespace fusedloss {
namespace autograd {
namespace {

using at::Tensor;
using ops::OptionalTensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& linear_weight,
                        const Tensor& target, const OptionalTensor& linear_bias,
                        const OptionalTensor& weight, int64_t ignore_index,
                        const std::string& reduction, double label_smoothing, double z_loss,
                        std::optional<double> softcap, std::optional<int64_t> chunk_size,
                        bool check_target) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const ops::LinearCrossEntropyArgs args{ignore_index, reduction,  label_smoothing, z_loss,
                                           softcap,      chunk_size, check_target};
    const bool needs_x = input.requires_grad(), needs_w = linear_weight.requires_grad();
    const bool needs_b = linear_bias.has_value() && linear_bias->requires_grad();
    ctx->saved_data["reduction"] = reduction;
    // Which gradients are wanted, saved as flags: an absent bias has no autograd edge to ask.
    ctx->saved_data["needs"] = std::vector<bool>{needs_x, needs_w, needs_b};
    if (reduction == "none") {
      auto outputs =
          ops::linear_cross_entropy_forward(input, linear_weight, target, linear_bias, weight, args,
                                            std::nullopt, false, false, false);
      // Saved by reference (no copies): backward recomputes the chunks.
      ctx->save_for_backward({input, linear_weight, target, linear_bias.value_or(Tensor()),
                              weight.value_or(Tensor())});
      ctx->saved_data["ignore_index"] = ignore_index;
      ctx->saved_data["label_smoothing"] = label_smoothing;
      ctx->saved_data["z_loss"] = z_loss;
      ctx->saved_data["softcap"] = softcap;
      ctx->saved_data["chunk_size"] = chunk_size;
      return std::get<0>(outputs);
    }
    auto [loss, z, gx, gw, gb, scale] =
        ops::linear_cross_entropy_forward(input, linear_weight, target, linear_bias, weight, args,
                                          std::nullopt, needs_x, needs_w, needs_b);
    ctx->save_for_backward({gx, gw, gb, scale});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    refuse_double_backward("linear_cross_entropy");
    const auto saved = ctx->get_saved_variables();
    variable_list grads(12);
    const auto needs = ctx->saved_data["needs"].toBoolList();
    if (ctx->saved_data["reduction"].toStringRef() == "none") {
      const auto optional = [](const Tensor& t) {
        return t.defined() ? OptionalTensor(t) : std::nullopt;
      };
      const ops::LinearCrossEntropyArgs args{ctx->saved_data["ignore_index"].toInt(),
                                             "none",
                                             ctx->saved_data["label_smoothing"].toDouble(),
                                             ctx->saved_data["z_loss"].toDouble(),
                                             ctx->saved_data["softcap"].toOptional<double>(),
                                             ctx->saved_data["chunk_size"].toOptional<int64_t>(),
                                             /*check_target=*/false};
      auto outputs = ops::linear_cross_entropy_forward(
          saved[0], saved[1], saved[2], optional(saved[3]), optional(saved[4]), args,
          grad_outputs[0], needs[0], needs[1], needs[2]);
      if (needs[0]) grads[0] = std::get<2>(outputs);
      if (needs[1]) grads[1] = std::get<3>(outputs);
      if (needs[2]) grads[3] = std::get<4>(outputs);
      return grads;
    }
    const bool last_use = saved_buffers_die_after_backward();
    const auto scale = [&](const Tensor& gradient) {
      return scaled(gradient, grad_outputs[0], saved[3], /*reduced=*/true, last_use);
    };
    if (needs[0]) grads[0] = scale(saved[0]);
    if (needs[1]) grads[1] = scale(saved[1]);
    if (needs[2]) grads[3] = scale(saved[2]);
    return grads;
  }
};

// A probability target that takes a gradient: the logits are materialized (torch's reference path
// does the same) and fusedloss's cross_entropy gives both gradients. Leading dimensions become one
// batch dimension, classes second, as cross_entropy reads them.
Tensor with_target_gradient(const Tensor& input, const Tensor& linear_weight, const Tensor& target,
                            const OptionalTensor& linear_bias, const OptionalTensor& weight,
                            int64_t ignore_index, c10::string_view reduction,
                            double label_smoothing, double z_loss,
                            std::optional<double> softcap) {
  const int64_t hidden = input.size(-1), vocab = linear_weight.size(0);
  const auto out_features = linear_weight.sizes().slice(1, linear_weight.dim() - 2);
  std::vector<int64_t> logits_shape{-1, vocab};
  logits_shape.insert(logits_shape.end(), out_features.begin(), out_features.end());
  Tensor logits = at::matmul(input.reshape({-1, hidden}), linear_weight.reshape({-1, hidden}).t());
  if (linear_bias.has_value()) logits = logits.add(linear_bias->reshape({-1}));
  static const auto cross_entropy =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedloss::cross_entropy", "")
          .typed<Tensor(const Tensor&, const Tensor&, const OptionalTensor&, int64_t,
                        c10::string_view, double, double, std::optional<double>, bool)>();
  const Tensor loss = cross_entropy.call(logits.view(logits_shape), target.reshape(logits_shape),
                                         weight, ignore_index, reduction, label_smoothing, z_loss,
                                         softcap, /*check_target=*/false);
  if (reduction != "none") return loss;
  const auto leading = input.sizes().slice(0, input.dim() - 1);
  std::vector<int64_t> loss_shape(leading.begin(), leading.end());
  loss_shape.insert(loss_shape.end(), out_features.begin(), out_features.end());
  return loss.view(loss_shape);
}

Tensor with_gradients(const Tensor& input, const Tensor& linear_weight, const Tensor& target,
                      const OptionalTensor& linear_bias, const OptionalTensor& weight,
                      int64_t ignore_index, c10::string_view reduction, double label_smoothing,
                      double z_loss, std::optional<double> softcap,
                      std::optional<int64_t> chunk_size, bool check_target) {
  refuse_weight_gradient("linear_cross_entropy", "weight", weight);  // the class weights
  if (at::GradMode::is_enabled() && target.requires_grad()) {
    ops::check_linear_cross_entropy(input, linear_weight, target, linear_bias, weight);
    return with_target_gradient(input, linear_weight, target, linear_bias, weight, ignore_index,
                                reduction, label_smoothing, z_loss, softcap);
  }
  const bool bias_grad = linear_bias.has_value() && linear_bias->requires_grad();
  if (!at::GradMode::is_enabled() ||
      !(input.requires_grad() || linear_weight.requires_grad() || bias_grad)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(ops::linear_cross_entropy_forward(
        input, linear_weight, target, linear_bias, weight,
        {ignore_index, reduction, label_smoothing, z_loss, softcap, chunk_size, check_target},
        std::nullopt, false, false, false));
  }
  return LinearCrossEntropyFunction::apply(input, linear_weight, target, linear_bias, weight,
                                           ignore_index, std::string(reduction), label_smoothing,
                                           z_loss, softcap, chunk_size, check_target);
}

}  // namespace
}  // namespace autograd
}  // namespace fusedloss

TORCH_LIBRARY_IMPL(fusedloss, Autograd, m) {
  m.impl("linear_cross_entropy", TORCH_FN(fusedloss::autograd::with_gradients));
}
