#pragma once
// fusedloss::nn — loss modules in the style of torch::nn (Cloneable Impl + TORCH_MODULE holder),
// constructed with torch's own option structs, so torch::nn::MSELoss -> fusedloss::nn::MSELoss is
// the whole change in a trainer.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
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
FUSEDLOSS_POINTWISE_MODULE(PoissonNLLLoss, torch::nn::PoissonNLLLossOptions, poisson_nll_loss);
FUSEDLOSS_POINTWISE_MODULE(KLDivLoss, torch::nn::KLDivLossOptions, kl_div);
FUSEDLOSS_POINTWISE_MODULE(BCELoss, torch::nn::BCELossOptions, binary_cross_entropy);
FUSEDLOSS_POINTWISE_MODULE(BCEWithLogitsLoss, torch::nn::BCEWithLogitsLossOptions,
                           binary_cross_entropy_with_logits);
FUSEDLOSS_POINTWISE_MODULE(SigmoidFocalLoss, functional::SigmoidFocalLossOptions,
                           sigmoid_focal_loss);
FUSEDLOSS_POINTWISE_MODULE(SoftMarginLoss, torch::nn::SoftMarginLossOptions, soft_margin_loss);
FUSEDLOSS_POINTWISE_MODULE(HingeEmbeddingLoss, torch::nn::HingeEmbeddingLossOptions,
                           hinge_embedding_loss);
FUSEDLOSS_POINTWISE_MODULE(HingeLoss, functional::HingeLossOptions, hinge_loss);
FUSEDLOSS_POINTWISE_MODULE(MultiLabelSoftMarginLoss, torch::nn::MultiLabelSoftMarginLossOptions,
                           multilabel_soft_margin_loss);

FUSEDLOSS_POINTWISE_MODULE(NLLLoss, torch::nn::NLLLossOptions, nll_loss);
FUSEDLOSS_POINTWISE_MODULE(MultiMarginLoss, torch::nn::MultiMarginLossOptions, multi_margin_loss);
FUSEDLOSS_POINTWISE_MODULE(MultiLabelMarginLoss, torch::nn::MultiLabelMarginLossOptions,
                           multilabel_margin_loss);

#undef FUSEDLOSS_POINTWISE_MODULE

// torch::nn::GaussianNLLLoss: forward(input, target, var).
class GaussianNLLLossImpl : public torch::nn::Cloneable<GaussianNLLLossImpl> {
 public:
  explicit GaussianNLLLossImpl(functional::GaussianNLLLossOptions options = {})
      : options(std::move(options)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override {
    stream << "fusedloss::nn::GaussianNLLLoss()";
  }
  at::Tensor forward(const at::Tensor& input, const at::Tensor& target, const at::Tensor& var) {
    return functional::gaussian_nll_loss(input, target, var, options);
  }
  functional::GaussianNLLLossOptions options;
};
TORCH_MODULE(GaussianNLLLoss);

// torch::nn::CosineEmbeddingLoss: forward(input1, input2, target).
class CosineEmbeddingLossImpl : public torch::nn::Cloneable<CosineEmbeddingLossImpl> {
 public:
  explicit CosineEmbeddingLossImpl(torch::nn::CosineEmbeddingLossOptions options = {})
      : options(std::move(options)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override {
    stream << "fusedloss::nn::CosineEmbeddingLoss()";
  }
  at::Tensor forward(const at::Tensor& input1, const at::Tensor& input2,
                     const at::Tensor& target) {
    return functional::cosine_embedding_loss(input1, input2, target, options);
  }
  torch::nn::CosineEmbeddingLossOptions options;
};
TORCH_MODULE(CosineEmbeddingLoss);

// Knowledge distillation (torch has no such module): forward(student_logits, teacher_logits,
// labels = nullopt).
class JSDLossImpl : public torch::nn::Cloneable<JSDLossImpl> {
 public:
  explicit JSDLossImpl(functional::JensenShannonDivergenceOptions options = {})
      : options(std::move(options)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override { stream << "fusedloss::nn::JSDLoss()"; }
  at::Tensor forward(const at::Tensor& input, const at::Tensor& target,
                     const std::optional<at::Tensor>& labels = std::nullopt) {
    return functional::jensen_shannon_divergence(input, target, labels, options);
  }
  functional::JensenShannonDivergenceOptions options;
};
TORCH_MODULE(JSDLoss);

// torch::nn::CTCLoss: forward(log_probs, targets, input_lengths, target_lengths).
class CTCLossImpl : public torch::nn::Cloneable<CTCLossImpl> {
 public:
  explicit CTCLossImpl(torch::nn::CTCLossOptions options = {}) : options(std::move(options)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override { stream << "fusedloss::nn::CTCLoss()"; }
  at::Tensor forward(const at::Tensor& log_probs, const at::Tensor& targets,
                     const at::Tensor& input_lengths, const at::Tensor& target_lengths) {
    return functional::ctc_loss(log_probs, targets, input_lengths, target_lengths, options);
  }
  torch::nn::CTCLossOptions options;
};
TORCH_MODULE(CTCLoss);

// torch::nn::TripletMarginLoss: forward(anchor, positive, negative).
class TripletMarginLossImpl : public torch::nn::Cloneable<TripletMarginLossImpl> {
 public:
  explicit TripletMarginLossImpl(torch::nn::TripletMarginLossOptions options = {})
      : options(std::move(options)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override {
    stream << "fusedloss::nn::TripletMarginLoss()";
  }
  at::Tensor forward(const at::Tensor& anchor, const at::Tensor& positive,
                     const at::Tensor& negative) {
    return functional::triplet_margin_loss(anchor, positive, negative, options);
  }
  torch::nn::TripletMarginLossOptions options;
};
TORCH_MODULE(TripletMarginLoss);

// torch::nn::MarginRankingLoss: forward(input1, input2, target).
class MarginRankingLossImpl : public torch::nn::Cloneable<MarginRankingLossImpl> {
 public:
  explicit MarginRankingLossImpl(torch::nn::MarginRankingLossOptions options = {})
      : options(std::move(options)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override {
    stream << "fusedloss::nn::MarginRankingLoss()";
  }
  at::Tensor forward(const at::Tensor& input1, const at::Tensor& input2, const at::Tensor& target) {
    return functional::margin_ranking_loss(input1, input2, target, options);
  }
  torch::nn::MarginRankingLossOptions options;
};
TORCH_MODULE(MarginRankingLoss);

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

struct LinearCrossEntropyLossOptions {
  LinearCrossEntropyLossOptions(int64_t in_features, int64_t num_classes)
      : in_features_(in_features), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(bool, bias) = false;
  // The loss options; their bias is the module's own (this one is ignored).
  TORCH_ARG(functional::LinearCrossEntropyFuncOptions, loss) = {};
};

// A linear layer (V, H) followed by cross entropy, fused (the LM head of a language model): owns
// `linear` (a torch::nn::Linear, initialized as torch's), forward(input, target) -> loss.
class LinearCrossEntropyLossImpl : public torch::nn::Cloneable<LinearCrossEntropyLossImpl> {
 public:
  explicit LinearCrossEntropyLossImpl(LinearCrossEntropyLossOptions options)
      : options(std::move(options)) {
    reset();
  }
  void reset() override {
    linear = register_module(
        "linear",
        torch::nn::Linear(torch::nn::LinearOptions(options.in_features(), options.num_classes())
                              .bias(options.bias())));
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "fusedloss::nn::LinearCrossEntropyLoss(in_features=" << options.in_features()
           << ", num_classes=" << options.num_classes() << ")";
  }
  at::Tensor forward(const at::Tensor& input, const at::Tensor& target) {
    auto loss_options = options.loss();
    loss_options.bias(linear->bias);
    return functional::linear_cross_entropy(input, linear->weight, target, loss_options);
  }
  LinearCrossEntropyLossOptions options;
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(LinearCrossEntropyLoss);

}  // namespace nn
}  // namespace fusedloss
