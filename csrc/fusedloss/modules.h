#pragma once
// fusedloss::nn — loss modules in the style of torch::nn (Cloneable Impl + TORCH_MODULE holder),
// constructed with torch's own option structs, so torch::nn::MSELoss -> fusedloss::nn::MSELoss is
// the whole change in a trainer.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "fusedloss/functional.h"

namespace fusedloss {
namespace nn {

namespace detail {
// One module class per loss: Options is torch's option struct, Fn the functional form.
template <typename Derived, typename Options,
          at::Tensor (*Fn)(const at::Tensor&, const at::Tensor&, const Options&)>
class PointwiseLossImpl : public torch::nn::Cloneable<Derived> {
 public:
  explicit PointwiseLossImpl(Options options = {}) : options(std::move(options)) {}
  void reset() override {}
  at::Tensor forward(const at::Tensor& input, const at::Tensor& target) {
    return Fn(input, target, options);
  }
  Options options;
};
}  // namespace detail

#define FUSEDLOSS_POINTWISE_MODULE(Name, Options, fn)                                         \
  class Name##Impl : public detail::PointwiseLossImpl<Name##Impl, Options, &functional::fn> { \
   public:                                                                                    \
    using PointwiseLossImpl::PointwiseLossImpl;                                               \
    void pretty_print(std::ostream& stream) const override {                                  \
      stream << "fusedloss::nn::" #Name "()";                                                 \
    }                                                                                         \
  };                                                                                          \
  TORCH_MODULE(Name)

FUSEDLOSS_POINTWISE_MODULE(MSELoss, torch::nn::MSELossOptions, mse_loss);
FUSEDLOSS_POINTWISE_MODULE(L1Loss, torch::nn::L1LossOptions, l1_loss);
FUSEDLOSS_POINTWISE_MODULE(HuberLoss, torch::nn::HuberLossOptions, huber_loss);
FUSEDLOSS_POINTWISE_MODULE(SmoothL1Loss, torch::nn::SmoothL1LossOptions, smooth_l1_loss);
FUSEDLOSS_POINTWISE_MODULE(BCELoss, torch::nn::BCELossOptions, binary_cross_entropy);
FUSEDLOSS_POINTWISE_MODULE(BCEWithLogitsLoss, torch::nn::BCEWithLogitsLossOptions,
                           binary_cross_entropy_with_logits);
FUSEDLOSS_POINTWISE_MODULE(SigmoidFocalLoss, functional::SigmoidFocalLossOptions,
                           sigmoid_focal_loss);
FUSEDLOSS_POINTWISE_MODULE(SoftMarginLoss, torch::nn::SoftMarginLossOptions, soft_margin_loss);
FUSEDLOSS_POINTWISE_MODULE(HingeEmbeddingLoss, torch::nn::HingeEmbeddingLossOptions,
                           hinge_embedding_loss);
FUSEDLOSS_POINTWISE_MODULE(HingeLoss, functional::HingeLossOptions, hinge_loss);

FUSEDLOSS_POINTWISE_MODULE(NLLLoss, torch::nn::NLLLossOptions, nll_loss);
FUSEDLOSS_POINTWISE_MODULE(MultiMarginLoss, torch::nn::MultiMarginLossOptions, multi_margin_loss);

#undef FUSEDLOSS_POINTWISE_MODULE

// torch::nn::CrossEntropyLoss with fusedloss's extras (z_loss, softcap, check_target).
class CrossEntropyLossImpl : public torch::nn::Cloneable<CrossEntropyLossImpl> {
 public:
  explicit CrossEntropyLossImpl(torch::nn::CrossEntropyLossOptions options = {},
                                functional::CrossEntropyExtras extras = {})
      : options(std::move(options)), extras(std::move(extras)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override {
    stream << "fusedloss::nn::CrossEntropyLoss()";
  }
  at::Tensor forward(const at::Tensor& input, const at::Tensor& target) {
    return functional::cross_entropy(input, target, options, extras);
  }
  torch::nn::CrossEntropyLossOptions options;
  functional::CrossEntropyExtras extras;
};
TORCH_MODULE(CrossEntropyLoss);

}  // namespace nn
}  // namespace fusedloss
