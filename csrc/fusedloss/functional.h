#pragma once
// fusedloss::functional — the losses as functions, in the style of torch::nn::functional. They
// take torch's own option structs (reduction as torch::kMean / torch::kSum / torch::kNone), so
// switching from torch::nn::functional::mse_loss is a change of namespace.

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/arg.h>
#include <torch/nn/options/loss.h>

#include <optional>
#include <string>
#include <tuple>
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
        if constexpr (std::is_same_v<R, torch::enumtype::kBatchMean>) return "batchmean";
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
using PointwiseLossWithParamOp = at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view,
                                            double);

// An undefined tensor (torch's options use that for "no weight") as an absent optional.
inline std::optional<at::Tensor> optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

using Reduction =
    std::variant<torch::enumtype::kNone, torch::enumtype::kMean, torch::enumtype::kSum>;

}  // namespace detail

// Options of the losses torch has no module for.
struct SigmoidFocalLossOptions {
  TORCH_ARG(double, alpha) = 0.25;  // weight of positives; negative: no weighting
  TORCH_ARG(double, gamma) = 2.0;   // focusing exponent, >= 0
  TORCH_ARG(detail::Reduction, reduction) = torch::kNone;  // torchvision's default
};

struct HingeLossOptions {
  TORCH_ARG(double, margin) = 1.0;
  TORCH_ARG(bool, squared) = false;  // the L2-SVM
  TORCH_ARG(detail::Reduction, reduction) = torch::kMean;
};

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
  return handle.call(input, target, detail::reduction_name(options.reduction()), options.delta());
}

inline at::Tensor smooth_l1_loss(const at::Tensor& input, const at::Tensor& target,
                                 const SmoothL1LossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<detail::PointwiseLossWithParamOp>("fusedloss::smooth_l1_loss");
  // torch's SmoothL1LossOptions keeps beta optional (unset means 1.0).
  return handle.call(input, target, detail::reduction_name(options.reduction()),
                     options.beta().value_or(1.0));
}

using PoissonNLLLossFuncOptions = torch::nn::PoissonNLLLossOptions;

inline at::Tensor poisson_nll_loss(const at::Tensor& input, const at::Tensor& target,
                                   const PoissonNLLLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, bool, bool, double,
                            c10::string_view)>("fusedloss::poisson_nll_loss");
  return handle.call(input, target, options.log_input(), options.full(), options.eps(),
                     detail::reduction_name(options.reduction()));
}

// torch::nn has no GaussianNLLLoss in C++: the options of torch's Python module.
struct GaussianNLLLossOptions {
  TORCH_ARG(bool, full) = false;  // add log(2 pi) / 2
  TORCH_ARG(double, eps) = 1e-6;  // var is clamped to at least eps
  TORCH_ARG(detail::Reduction, reduction) = torch::kMean;
};
using GaussianNLLLossFuncOptions = GaussianNLLLossOptions;

// (log v + (input - target)^2 / v) / 2, v = max(var, eps); var input-shaped, or without input's
// last dimension, or with one dimension of size 1. Gradients for input, target and var.
inline at::Tensor gaussian_nll_loss(const at::Tensor& input, const at::Tensor& target,
                                    const at::Tensor& var,
                                    const GaussianNLLLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double,
                            c10::string_view)>("fusedloss::gaussian_nll_loss");
  return handle.call(input, target, var, options.full(), options.eps(),
                     detail::reduction_name(options.reduction()));
}

using KLDivFuncOptions = torch::nn::KLDivLossOptions;

// Input: log-probabilities; target: probabilities (or log-probabilities with log_target).
// reduction kBatchMean divides the sum by the input's first size, as torch's.
inline at::Tensor kl_div(const at::Tensor& input, const at::Tensor& target,
                         const KLDivFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view, bool)>(
          "fusedloss::kl_div");
  return handle.call(input, target, detail::reduction_name(options.reduction()),
                     options.log_target());
}

using MarginRankingLossFuncOptions = torch::nn::MarginRankingLossOptions;

// max(0, margin - target (input1 - input2)); target broadcasts to input1 and input2.
inline at::Tensor margin_ranking_loss(const at::Tensor& input1, const at::Tensor& input2,
                                      const at::Tensor& target,
                                      const MarginRankingLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                            c10::string_view)>("fusedloss::margin_ranking_loss");
  return handle.call(input1, input2, target, options.margin(),
                     detail::reduction_name(options.reduction()));
}

using CosineEmbeddingLossFuncOptions = torch::nn::CosineEmbeddingLossOptions;

// 1 - cos(input1, input2) where target is 1, max(0, cos - margin) where it is -1; inputs (N, D)
// with a target (N), or (D) with a 0-d target.
inline at::Tensor cosine_embedding_loss(const at::Tensor& input1, const at::Tensor& input2,
                                        const at::Tensor& target,
                                        const CosineEmbeddingLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                            c10::string_view)>("fusedloss::cosine_embedding_loss");
  return handle.call(input1, input2, target, options.margin(),
                     detail::reduction_name(options.reduction()));
}

// Knowledge distillation (LibTorch has no such loss): student logits `input`, teacher logits
// `target`. beta = 0: forward KL(teacher || student); 1: reverse KL; otherwise the generalized
// Jensen-Shannon divergence. Rows whose label is ignore_index count 0; 'mean' is over the others.
struct JensenShannonDivergenceOptions {
  TORCH_ARG(double, beta) = 0.5;
  TORCH_ARG(double, temperature) = 1.0;  // both softmaxes of logits / temperature
  TORCH_ARG(int64_t, ignore_index) = -100;
  TORCH_ARG(detail::Reduction, reduction) = torch::kMean;
};
using JensenShannonDivergenceFuncOptions = JensenShannonDivergenceOptions;

inline at::Tensor jensen_shannon_divergence(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& labels = std::nullopt,
    const JensenShannonDivergenceFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, double, double, int64_t,
                            c10::string_view)>("fusedloss::jensen_shannon_divergence");
  return handle.call(input, target, labels, options.beta(), options.temperature(),
                     options.ignore_index(), detail::reduction_name(options.reduction()));
}

using MultilabelMarginLossFuncOptions = torch::nn::MultiLabelMarginLossOptions;

// Per row, the hinge max(0, 1 - x[y] + x[i]) of every label y (the target's entries before its
// first -1) against every non-label i, over C; input (N, C) or (C), target int64 of its shape.
inline at::Tensor multilabel_margin_loss(const at::Tensor& input, const at::Tensor& target,
                                         const MultilabelMarginLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view)>(
          "fusedloss::multilabel_margin_loss");
  return handle.call(input, target, detail::reduction_name(options.reduction()));
}

using CTCLossFuncOptions = torch::nn::CTCLossOptions;

// Connectionist temporal classification: -log p(target | log_probs) summed over the alignments;
// log_probs (T, N, C) or (T, C), targets padded (N, S) or concatenated, a length of each per
// sample (int64 tensors on the CPU or log_probs' device). 'mean' divides each sample's loss by
// its target length, then averages, as torch.
inline at::Tensor ctc_loss(const at::Tensor& log_probs, const at::Tensor& targets,
                           const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                           const CTCLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, int64_t, c10::string_view, bool)>(
          "fusedloss::ctc_loss");
  return handle.call(log_probs, targets, input_lengths, target_lengths, options.blank(),
                     detail::reduction_name(options.reduction()), options.zero_infinity());
}

using TripletMarginLossFuncOptions = torch::nn::TripletMarginLossOptions;

// max(0, margin + ||a - p + eps||_p - ||a - n + eps||_p) over the last dimension (with swap, the
// negative distance is the smaller of d(a, n) and d(p, n)); inputs (N, D) or (D).
inline at::Tensor triplet_margin_loss(const at::Tensor& anchor, const at::Tensor& positive,
                                      const at::Tensor& negative,
                                      const TripletMarginLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                            double, double, bool, c10::string_view)>(
          "fusedloss::triplet_margin_loss");
  return handle.call(anchor, positive, negative, options.margin(), options.p(), options.eps(),
                     options.swap(), detail::reduction_name(options.reduction()));
}

using MultilabelSoftMarginLossFuncOptions = torch::nn::MultiLabelSoftMarginLossOptions;

// Per sample, the mean over the classes of binary cross entropy with logits (class weights).
inline at::Tensor multilabel_soft_margin_loss(
    const at::Tensor& input, const at::Tensor& target,
    const MultilabelSoftMarginLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            c10::string_view)>("fusedloss::multilabel_soft_margin_loss");
  const at::Tensor& weight = options.weight();
  return handle.call(input, target,
                     weight.defined() ? std::optional<at::Tensor>(weight) : std::nullopt,
                     detail::reduction_name(options.reduction()));
}

using BinaryCrossEntropyFuncOptions = torch::nn::BCELossOptions;
using BinaryCrossEntropyWithLogitsFuncOptions = torch::nn::BCEWithLogitsLossOptions;
using SoftMarginLossFuncOptions = torch::nn::SoftMarginLossOptions;
using HingeEmbeddingLossFuncOptions = torch::nn::HingeEmbeddingLossOptions;
using SigmoidFocalLossFuncOptions = SigmoidFocalLossOptions;
using HingeLossFuncOptions = HingeLossOptions;

// Probabilities in [0, 1]; `weight` rescales each element (broadcast to input).
inline at::Tensor binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                       const BinaryCrossEntropyFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            c10::string_view)>("fusedloss::binary_cross_entropy");
  return handle.call(input, target, detail::optional(options.weight()),
                     detail::reduction_name(options.reduction()));
}

// Logits; `pos_weight` weighs the positives of each class (broadcast along the last dimension).
inline at::Tensor binary_cross_entropy_with_logits(
    const at::Tensor& input, const at::Tensor& target,
    const BinaryCrossEntropyWithLogitsFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, c10::string_view)>(
          "fusedloss::binary_cross_entropy_with_logits");
  return handle.call(input, target, detail::optional(options.weight()),
                     detail::optional(options.pos_weight()),
                     detail::reduction_name(options.reduction()));
}

// torchvision.ops.sigmoid_focal_loss on logits.
inline at::Tensor sigmoid_focal_loss(const at::Tensor& inputs, const at::Tensor& targets,
                                     const SigmoidFocalLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, double, double,
                            c10::string_view)>("fusedloss::sigmoid_focal_loss");
  return handle.call(inputs, targets, options.alpha(), options.gamma(),
                     detail::reduction_name(options.reduction()));
}

inline at::Tensor soft_margin_loss(const at::Tensor& input, const at::Tensor& target,
                                   const SoftMarginLossFuncOptions& options = {}) {
  static const auto handle = detail::op<detail::PointwiseLossOp>("fusedloss::soft_margin_loss");
  return handle.call(input, target, detail::reduction_name(options.reduction()));
}

inline at::Tensor hinge_embedding_loss(const at::Tensor& input, const at::Tensor& target,
                                       const HingeEmbeddingLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::string_view)>(
          "fusedloss::hinge_embedding_loss");
  return handle.call(input, target, options.margin(), detail::reduction_name(options.reduction()));
}

// max(0, margin - target * input) (squared: its square); target holds the labels -1 and 1.
inline at::Tensor hinge_loss(const at::Tensor& input, const at::Tensor& target,
                             const HingeLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, double, bool, c10::string_view)>(
          "fusedloss::hinge_loss");
  return handle.call(input, target, options.margin(), options.squared(),
                     detail::reduction_name(options.reduction()));
}

// --- Multi-class losses.

// What fusedloss adds to torch's CrossEntropyLossOptions (defaults: torch's behaviour).
struct CrossEntropyExtras {
  TORCH_ARG(double, z_loss) = 0.0;                           // + z_loss * logsumexp^2 per row
  TORCH_ARG(std::optional<double>, softcap) = std::nullopt;  // logits -> softcap tanh(x / softcap)
  TORCH_ARG(bool, check_target) = true;  // false: no range check (on CUDA, no synchronization)
};

using CrossEntropyFuncOptions = torch::nn::CrossEntropyLossOptions;
using NLLLossFuncOptions = torch::nn::NLLLossOptions;
using MultiMarginLossFuncOptions = torch::nn::MultiMarginLossOptions;

namespace detail {
using CrossEntropySignature = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
    c10::string_view, double, double, std::optional<double>, bool);
}  // namespace detail

// Logits (C), (N, C) or (N, C, d1, ...); class indices or class probabilities as target.
inline at::Tensor cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                const CrossEntropyFuncOptions& options = {},
                                const CrossEntropyExtras& extras = {}) {
  static const auto handle =
      detail::op<detail::CrossEntropySignature>("fusedloss::cross_entropy_with_z_loss");
  return std::get<0>(
      handle.call(input, target, detail::optional(options.weight()), options.ignore_index(),
                  detail::reduction_name(options.reduction()), options.label_smoothing(),
                  extras.z_loss(), extras.softcap(), extras.check_target()));
}

// The loss and its z-loss part (already in the loss; no gradient of its own), for logging.
inline std::tuple<at::Tensor, at::Tensor> cross_entropy_with_z_loss(
    const at::Tensor& input, const at::Tensor& target, const CrossEntropyFuncOptions& options = {},
    const CrossEntropyExtras& extras = {}) {
  static const auto handle =
      detail::op<detail::CrossEntropySignature>("fusedloss::cross_entropy_with_z_loss");
  return handle.call(input, target, detail::optional(options.weight()), options.ignore_index(),
                     detail::reduction_name(options.reduction()), options.label_smoothing(),
                     extras.z_loss(), extras.softcap(), extras.check_target());
}

// Log-probabilities (pair with log_softmax).
inline at::Tensor nll_loss(const at::Tensor& input, const at::Tensor& target,
                           const NLLLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            int64_t, c10::string_view, bool)>("fusedloss::nll_loss");
  return handle.call(input, target, detail::optional(options.weight()), options.ignore_index(),
                     detail::reduction_name(options.reduction()), true);
}

// Multi-class hinge: sum over j != y of w_y max(0, margin - x_y + x_j)^p / C, p in {1, 2}.
inline at::Tensor multi_margin_loss(const at::Tensor& input, const at::Tensor& target,
                                    const MultiMarginLossFuncOptions& options = {}) {
  static const auto handle =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double,
                            const std::optional<at::Tensor>&, c10::string_view)>(
          "fusedloss::multi_margin_loss");
  return handle.call(input, target, options.p(), options.margin(),
                     detail::optional(options.weight()),
                     detail::reduction_name(options.reduction()));
}

// Options of linear_cross_entropy (torch has no option struct for it).
struct LinearCrossEntropyFuncOptions {
  TORCH_ARG(at::Tensor, bias) = {};    // (V) added to the logits
  TORCH_ARG(at::Tensor, weight) = {};  // (V) class weights, as cross_entropy's
  TORCH_ARG(int64_t, ignore_index) = -100;
  TORCH_ARG(detail::Reduction, reduction) = torch::kMean;
  TORCH_ARG(double, label_smoothing) = 0.0;
  TORCH_ARG(double, z_loss) = 0.0;
  TORCH_ARG(std::optional<double>, softcap) = std::nullopt;
  TORCH_ARG(std::optional<int64_t>, chunk_size) = std::nullopt;  // rows per chunk; none: see README
  TORCH_ARG(bool, check_target) = true;
};

// cross_entropy(input @ linear_weight.T + bias, target) without materializing the logits: input
// (N, H) or (B, T, H), linear_weight (V, H) (or (V, d1..dK, H), torch's out_features), target
// class indices (N) or (B, T) (then (N, d1..dK)) or probabilities of the logits' shape.
inline at::Tensor linear_cross_entropy(const at::Tensor& input, const at::Tensor& linear_weight,
                                       const at::Tensor& target,
                                       const LinearCrossEntropyFuncOptions& options = {}) {
  static const auto handle = detail::op<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
      const std::optional<at::Tensor>&, int64_t, c10::string_view, double, double,
      std::optional<double>, std::optional<int64_t>, bool)>("fusedloss::linear_cross_entropy");
  return handle.call(input, linear_weight, target, detail::optional(options.bias()),
                     detail::optional(options.weight()), options.ignore_index(),
                     detail::reduction_name(options.reduction()), options.label_smoothing(),
                     options.z_loss(), options.softcap(), options.chunk_size(),
                     options.check_target());
}


// ---- Post-training: per-token log-probabilities, preference and RL losses (TRL 1.9.0's formulas).

struct LinearLogProbsFuncOptions {
  TORCH_ARG(at::Tensor, bias) = {};  // (V) added to the logits
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(int64_t, ignore_index) = -100;
  TORCH_ARG(std::optional<int64_t>, chunk_size) = std::nullopt;
  TORCH_ARG(bool, check_target) = true;
};

// (log p(target), entropy) per token of softmax((input @ linear_weight.T + bias) / temperature),
// without the (N, V) logits; float32 for float16/bfloat16 input.
inline std::tuple<at::Tensor, at::Tensor> linear_log_probs(
    const at::Tensor& input, const at::Tensor& linear_weight, const at::Tensor& target,
    const LinearLogProbsFuncOptions& options = {}) {
  static const auto handle = detail::op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
      double, int64_t, std::optional<int64_t>, bool)>("fusedloss::linear_log_probs");
  return handle.call(input, linear_weight, target, detail::optional(options.bias()),
                     options.temperature(), options.ignore_index(), options.chunk_size(),
                     options.check_target());
}

struct LinearJsdFuncOptions {
  TORCH_ARG(at::Tensor, teacher_weight) = {};  // none: teacher_input holds the teacher's logits
  TORCH_ARG(at::Tensor, labels) = {};          // rows labelled ignore_index count 0
  TORCH_ARG(at::Tensor, bias) = {};
  TORCH_ARG(at::Tensor, teacher_bias) = {};
  TORCH_ARG(double, beta) = 0.5;  // 0: forward KL(teacher || student), 1: reverse KL
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(int64_t, ignore_index) = -100;
  TORCH_ARG(detail::Reduction, reduction) = torch::kMean;
  TORCH_ARG(std::optional<int64_t>, chunk_size) = std::nullopt;
};

namespace detail {
using LinearJsdOp = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                               const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                               double, double, int64_t, c10::string_view, std::optional<int64_t>);
}  // namespace detail

// Distillation from hidden states: the generalized JSD between the student's softmax of
// input @ linear_weight.T (+ bias) and the teacher's, without either's (N, V) logits.
inline at::Tensor linear_jsd(const at::Tensor& input, const at::Tensor& linear_weight,
                             const at::Tensor& teacher_input,
                             const LinearJsdFuncOptions& options = {}) {
  static const auto handle = detail::op<detail::LinearJsdOp>("fusedloss::linear_jsd");
  return handle.call(input, linear_weight, teacher_input,
                     detail::optional(options.teacher_weight()), detail::optional(options.labels()),
                     detail::optional(options.bias()), detail::optional(options.teacher_bias()),
                     options.beta(), options.temperature(), options.ignore_index(),
                     detail::reduction_name(options.reduction()), options.chunk_size());
}

// KL(teacher || student) from hidden states: linear_jsd with beta = 0 (options.beta() unused).
inline at::Tensor linear_kl_div(const at::Tensor& input, const at::Tensor& linear_weight,
                                const at::Tensor& teacher_input,
                                const LinearJsdFuncOptions& options = {}) {
  static const auto handle = detail::op<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
      const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
      const std::optional<at::Tensor>&, double, int64_t, c10::string_view,
      std::optional<int64_t>)>("fusedloss::linear_kl_div");
  return handle.call(input, linear_weight, teacher_input,
                     detail::optional(options.teacher_weight()), detail::optional(options.labels()),
                     detail::optional(options.bias()), detail::optional(options.teacher_bias()),
                     options.temperature(), options.ignore_index(),
                     detail::reduction_name(options.reduction()), options.chunk_size());
}

struct DpoLossOptions {
  TORCH_ARG(double, beta) = 0.1;
  TORCH_ARG(std::string, loss_type) = "sigmoid";  // "hinge", "ipo", "robust"
  TORCH_ARG(double, label_smoothing) = 0.0;       // "robust" only
  TORCH_ARG(at::Tensor, chosen_lengths) = {};     // "ipo": completion token counts
  TORCH_ARG(at::Tensor, rejected_lengths) = {};
  TORCH_ARG(detail::Reduction, reduction) = torch::kMean;
};

// (loss, chosen_rewards, rejected_rewards) from sequence log-probabilities.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> dpo_loss(
    const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
    const at::Tensor& ref_chosen_logps, const at::Tensor& ref_rejected_logps,
    const DpoLossOptions& options = {}) {
  static const auto handle = detail::op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
      c10::string_view, double, const std::optional<at::Tensor>&,
      const std::optional<at::Tensor>&, c10::string_view)>("fusedloss::dpo_loss");
  return handle.call(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     options.beta(), options.loss_type(), options.label_smoothing(),
                     detail::optional(options.chosen_lengths()),
                     detail::optional(options.rejected_lengths()),
                     detail::reduction_name(options.reduction()));
}

struct GrpoLossOptions {
  TORCH_ARG(at::Tensor, old_per_token_logps) = {};  // none: the current ones, detached
  TORCH_ARG(at::Tensor, ref_per_token_logps) = {};  // needed when beta > 0
  TORCH_ARG(double, beta) = 0.0;
  TORCH_ARG(double, epsilon_low) = 0.2;
  TORCH_ARG(std::optional<double>, epsilon_high) = std::nullopt;  // none: epsilon_low
  TORCH_ARG(std::optional<double>, delta) = std::nullopt;
  TORCH_ARG(std::string, loss_type) = "dapo";  // "grpo", "bnpo", "dr_grpo"
  TORCH_ARG(std::string, importance_sampling_level) = "token";  // "sequence": GSPO
  TORCH_ARG(std::optional<int64_t>, max_completion_length) = std::nullopt;  // "dr_grpo"
  TORCH_ARG(at::Tensor, num_items_in_batch) = {};  // "dapo": none, this batch's tokens
  // linear_grpo_loss only:
  TORCH_ARG(at::Tensor, bias) = {};
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(std::optional<int64_t>, chunk_size) = std::nullopt;
};

// GRPO's policy loss on per-token log-probabilities (B, T).
inline at::Tensor grpo_loss(const at::Tensor& per_token_logps, const at::Tensor& advantages,
                            const at::Tensor& completion_mask,
                            const GrpoLossOptions& options = {}) {
  static const auto handle = detail::op<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
      const std::optional<at::Tensor>&, double, double, std::optional<double>,
      std::optional<double>, c10::string_view, c10::string_view, std::optional<int64_t>,
      const std::optional<at::Tensor>&)>("fusedloss::grpo_loss");
  return handle.call(per_token_logps, advantages, completion_mask,
                     detail::optional(options.old_per_token_logps()),
                     detail::optional(options.ref_per_token_logps()), options.beta(),
                     options.epsilon_low(), options.epsilon_high(), options.delta(),
                     options.loss_type(), options.importance_sampling_level(),
                     options.max_completion_length(),
                     detail::optional(options.num_items_in_batch()));
}

// grpo_loss on the log-probabilities of completion_ids (B, T) under the head: input (B, T, H).
inline at::Tensor linear_grpo_loss(const at::Tensor& input, const at::Tensor& linear_weight,
                                   const at::Tensor& completion_ids, const at::Tensor& advantages,
                                   const at::Tensor& completion_mask,
                                   const GrpoLossOptions& options = {}) {
  static const auto handle = detail::op<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
      const std::optional<at::Tensor>&, double, double, double, std::optional<double>,
      std::optional<double>, c10::string_view, c10::string_view, std::optional<int64_t>,
      const std::optional<at::Tensor>&, std::optional<int64_t>)>("fusedloss::linear_grpo_loss");
  return handle.call(input, linear_weight, completion_ids, advantages, completion_mask,
                     detail::optional(options.old_per_token_logps()),
                     detail::optional(options.ref_per_token_logps()),
                     detail::optional(options.bias()), options.temperature(), options.beta(),
                     options.epsilon_low(), options.epsilon_high(), options.delta(),
                     options.loss_type(), options.importance_sampling_level(),
                     options.max_completion_length(),
                     detail::optional(options.num_items_in_batch()), options.chunk_size());
}

struct LinearDpoLossOptions {
  TORCH_ARG(at::Tensor, ref_chosen_logps) = {};  // the reference's sequence log-probs, or
  TORCH_ARG(at::Tensor, ref_rejected_logps) = {};
  TORCH_ARG(at::Tensor, ref_input) = {};  // its hidden states and head
  TORCH_ARG(at::Tensor, ref_weight) = {};
  TORCH_ARG(at::Tensor, bias) = {};
  TORCH_ARG(at::Tensor, ref_bias) = {};
  TORCH_ARG(double, beta) = 0.1;
  TORCH_ARG(std::string, loss_type) = "sigmoid";
  TORCH_ARG(double, label_smoothing) = 0.0;
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(std::optional<int64_t>, chunk_size) = std::nullopt;
};

// dpo_loss from the head: input (2B, T, H), the chosen completions then the rejected ones.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_dpo_loss(
    const at::Tensor& input, const at::Tensor& linear_weight, const at::Tensor& target,
    const at::Tensor& completion_mask, const LinearDpoLossOptions& options = {}) {
  using Opt = const std::optional<at::Tensor>&;
  static const auto handle = detail::op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, Opt, Opt, Opt,
      Opt, Opt, Opt, double, c10::string_view, double, double, std::optional<int64_t>)>(
      "fusedloss::linear_dpo_loss");
  return handle.call(input, linear_weight, target, completion_mask,
                     detail::optional(options.ref_chosen_logps()),
                     detail::optional(options.ref_rejected_logps()),
                     detail::optional(options.ref_input()), detail::optional(options.ref_weight()),
                     detail::optional(options.bias()), detail::optional(options.ref_bias()),
                     options.beta(), options.loss_type(), options.label_smoothing(),
                     options.temperature(), options.chunk_size());
}

}  // namespace functional
}  // namespace fusedloss
