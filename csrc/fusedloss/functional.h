#pragma once
// fusedloss::functional — the losses as functions, in the style of torch::nn::functional. They
// take torch's own option structs (reduction as torch::kMean / torch::kSum / torch::kNone), so
// switching from torch::nn::functional::mse_loss is a change of namespace.

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/nn/options/loss.h>

#include <string>
#include <variant>

namespace fusedloss {
namespace functional {
namespace detail {

// "none" / "mean" / "sum" from torch's reduction variant.
template <typename Variant>
std::string reduction_name(const Variant& reduction) {
  return std::visit(
      [](const auto& r) -> std::string {
        using R = std::decay_t<decltype(r)>;
        if constexpr (std::is_same_v<R, torch::enumtype::kNone>) return "none";
        if constexpr (std::is_same_v<R, torch::enumtype::kSum>) return "sum";
        return "mean";
      },
      reduction);
}

// A fusedloss operator from the dispatcher, looked up once.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Signature>();
}

using PointwiseLossOp = at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view);
using PointwiseLossWithParamOp = at::Tensor(const at::Tensor&, const at::Tensor&,
                                            c10::string_view, double);

}  // namespace detail

using MSELossFuncOptions = torch::nn::MSELossOptions;
using L1LossFuncOptions = torch::nn::L1LossOptions;
using HuberLossFuncOptions = torch::nn::HuberLossOptions;
using SmoothL1LossFuncOptions = torch::nn::SmoothL1LossOptions;

inline at::Tensor mse_loss(const at::Tensor& input, const at::Tensor& target,
                           const MSELossFuncOptions& options = {}) {
  static const auto handle = detail::op<detail::PointwiseLossOp>("fusedloss::mse_loss");
  return handle.call(input, target, detail::reduction_name(options.reduction()));
}

inline at::Tensor l1_loss(const at::Tensor& input, const at::Tensor& target,
                          const L1LossFuncOptions& options = {}) {
  static const auto handle = detail::op<detail::PointwiseLossOp>("fusedloss::l1_loss");
  return handle.call(input, target, detail::reduction_name(options.reduction()));
}

inline at::Tensor huber_loss(const at::Tensor& input, const at::Tensor& target,
                             const HuberLossFuncOptions& options = {}) {
  static const auto handle = detail::op<detail::PointwiseLossWithParamOp>("fusedloss::huber_loss");
  return handle.call(input, target, detail::reduction_name(options.reduction()),
                     options.delta());
}

inline at::Tensor smooth_l1_loss(const at::Tensor& input, const at::Tensor& target,
                                 const SmoothL1LossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<detail::PointwiseLossWithParamOp>("fusedloss::smooth_l1_loss");
  // torch's SmoothL1LossOptions keeps beta optional (unset means 1.0).
  return handle.call(input, target, detail::reduction_name(options.reduction()),
                     options.beta().value_or(1.0));
}

}  // namespace functional
}  // namespace fusedloss
