#pragma once
// The pointwise loss family at the operator layer: the internal fused op, and the public ops'
// signatures written once for the two layers that implement them (below autograd and autograd).

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>
#include <vector>

namespace fusedloss {
namespace ops {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

// How each loss gives d(loss)/d(target).
enum class TargetGradient {
  NegatedInputGradient,  // a function of input - target (regression)
  Formula,               // its own formula, computed in the fused pass when needed
  NotDifferentiable,     // torch raises when it is asked for (soft_margin_loss)
  None,                  // no gradient flows to target (hinge_embedding_loss, as torch)
};
TargetGradient target_gradient(c10::string_view op);

// fusedloss::_pointwise_loss_forward through the dispatcher. `op` is the public op's name;
// `params` its hyper-parameters (delta | beta | margin | alpha, gamma | margin, squared). Returns
// the loss and, when asked, d(loss)/d(input) and d(loss)/d(target) per element at the broadcast
// shape (empty tensors otherwise), up to the backward scale it returns last (0-d for a reduced
// loss: 1, or the 1/n of a float16/bfloat16 'mean'; empty for 'none').
std::tuple<Tensor, Tensor, Tensor, Tensor> pointwise_loss_forward(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight,
    const OptionalTensor& pos_weight, c10::string_view op, c10::ArrayRef<double> params,
    c10::string_view reduction, bool compute_grad = false, bool compute_target_grad = false);

// Entry(input, target, weight, pos_weight, op, params, reduction) computes a public op.
using PointwiseEntry = Tensor (*)(const Tensor&, const Tensor&, const OptionalTensor&,
                                  const OptionalTensor&, const char*, std::vector<double>,
                                  c10::string_view);

// The public ops, each mapping its arguments onto an Entry.
template <PointwiseEntry Entry>
struct PointwiseOps {
  static Tensor mse_loss(const Tensor& input, const Tensor& target, c10::string_view reduction) {
    return Entry(input, target, std::nullopt, std::nullopt, "mse_loss", std::vector<double>(),
                 reduction);
  }
  static Tensor l1_loss(const Tensor& input, const Tensor& target, c10::string_view reduction) {
    return Entry(input, target, std::nullopt, std::nullopt, "l1_loss", std::vector<double>(),
                 reduction);
  }
  static Tensor huber_loss(const Tensor& input, const Tensor& target, c10::string_view reduction,
                           double delta) {
    return Entry(input, target, std::nullopt, std::nullopt, "huber_loss",
                 std::vector<double>{delta}, reduction);
  }
  static Tensor smooth_l1_loss(const Tensor& input, const Tensor& target,
                               c10::string_view reduction, double beta) {
    return Entry(input, target, std::nullopt, std::nullopt, "smooth_l1_loss",
                 std::vector<double>{beta}, reduction);
  }
  static Tensor binary_cross_entropy(const Tensor& input, const Tensor& target,
                                     const OptionalTensor& weight, c10::string_view reduction) {
    return Entry(input, target, weight, std::nullopt, "binary_cross_entropy", std::vector<double>(),
                 reduction);
  }
  static Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target,
                                                 const OptionalTensor& weight,
                                                 const OptionalTensor& pos_weight,
                                                 c10::string_view reduction) {
    return Entry(input, target, weight, pos_weight, "binary_cross_entropy_with_logits",
                 std::vector<double>(), reduction);
  }
  static Tensor sigmoid_focal_loss(const Tensor& inputs, const Tensor& targets, double alpha,
                                   double gamma, c10::string_view reduction) {
    return Entry(inputs, targets, std::nullopt, std::nullopt, "sigmoid_focal_loss",
                 std::vector<double>{alpha, gamma}, reduction);
  }
  static Tensor soft_margin_loss(const Tensor& input, const Tensor& target,
                                 c10::string_view reduction) {
    return Entry(input, target, std::nullopt, std::nullopt, "soft_margin_loss",
                 std::vector<double>(), reduction);
  }
  static Tensor hinge_embedding_loss(const Tensor& input, const Tensor& target, double margin,
                                     c10::string_view reduction) {
    return Entry(input, target, std::nullopt, std::nullopt, "hinge_embedding_loss",
                 std::vector<double>{margin}, reduction);
  }
  static Tensor hinge_loss(const Tensor& input, const Tensor& target, double margin, bool squared,
                           c10::string_view reduction) {
    return Entry(input, target, std::nullopt, std::nullopt, "hinge_loss",
                 std::vector<double>{margin, squared ? 1.0 : 0.0}, reduction);
  }
};

// Registers every public pointwise op of `m` with the kernels of PointwiseOps<Entry>.
#define FUSEDLOSS_IMPL_POINTWISE_OPS(m, Entry)                                                   \
  do {                                                                                           \
    using Ops = ::fusedloss::ops::PointwiseOps<Entry>;                                           \
    m.impl("mse_loss", TORCH_FN(Ops::mse_loss));                                                 \
    m.impl("l1_loss", TORCH_FN(Ops::l1_loss));                                                   \
    m.impl("huber_loss", TORCH_FN(Ops::huber_loss));                                             \
    m.impl("smooth_l1_loss", TORCH_FN(Ops::smooth_l1_loss));                                     \
    m.impl("binary_cross_entropy", TORCH_FN(Ops::binary_cross_entropy));                         \
    m.impl("binary_cross_entropy_with_logits", TORCH_FN(Ops::binary_cross_entropy_with_logits)); \
    m.impl("sigmoid_focal_loss", TORCH_FN(Ops::sigmoid_focal_loss));                             \
    m.impl("soft_margin_loss", TORCH_FN(Ops::soft_margin_loss));                                 \
    m.impl("hinge_embedding_loss", TORCH_FN(Ops::hinge_embedding_loss));                         \
    m.impl("hinge_loss", TORCH_FN(Ops::hinge_loss));                                             \
  } while (0)

}  // namespace ops
}  // namespace fusedloss
