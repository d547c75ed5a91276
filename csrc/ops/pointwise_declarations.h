#pragma once
// Every elementwise loss, declared once. A declaration gives the public op's name and arguments
// (its schema, defaults included), how a gradient reaches the target, and bind(): the checks of
// its own arguments and their mapping onto the engine's spec (which formula, which parameters).
// Everything else follows from it (ops/pointwise_losses.cpp, autograd/pointwise_losses.cpp): the
// public op and its typed internal op `_<name>_forward(<arguments>, bool compute_grad,
// bool compute_target_grad)`, their CPU, CUDA and Meta kernels, and the autograd kernel.
//
// To add a loss: its formula and enumerator in kernels/*_formulas.h, a declaration here (and in
// PointwiseDeclarations below), then the front-ends. docs/adding_a_loss.md has the steps.

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "engines/pointwise_engine.h"
#include "ops/arguments.h"

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

// One call of an elementwise loss, as bind() leaves it.
struct PointwiseCall {
  Tensor input, target;
  OptionalTensor weight, pos_weight;
  c10::string_view reduction;
  PointwiseLossSpec spec;   // loss, param, param2, op, bad_kind (the op layer fills the rest)
  bool same_shape = false;  // input and target must have one shape (no broadcasting), as torch
  bool batch_mean = false;  // reduction 'mean' divides by input.size(0), not the element count
  const char* weight_name = "weight";  // the public argument that the weight operand is
};

namespace declared {

inline PointwiseCall call(const char* op, const Tensor& input, const Tensor& target,
                          c10::string_view reduction, std::variant<RegressionLoss, BinaryLoss> loss,
                          double param = 0, double param2 = 0) {
  PointwiseCall c{input, target, std::nullopt, std::nullopt, reduction, {}, false, false, "weight"};
  c.spec.loss = loss;
  c.spec.param = param;
  c.spec.param2 = param2;
  c.spec.op = op;
  return c;
}

struct MseLoss {
  static constexpr const char* kName = "mse_loss";
  static constexpr const char* kArguments = "Tensor input, Tensor target, str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::NegatedInputGradient;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, c10::string_view reduction) {
    return call(kName, input, target, reduction, RegressionLoss::Mse);
  }
};

struct L1Loss {
  static constexpr const char* kName = "l1_loss";
  static constexpr const char* kArguments = "Tensor input, Tensor target, str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::NegatedInputGradient;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, c10::string_view reduction) {
    return call(kName, input, target, reduction, RegressionLoss::L1);
  }
};

struct HuberLoss {
  static constexpr const char* kName = "huber_loss";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, str reduction=\"mean\", float delta=1.0";
  static constexpr TargetGradient kTargetGradient = TargetGradient::NegatedInputGradient;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, c10::string_view reduction,
                            double delta) {
    TORCH_CHECK(delta > 0, "fusedloss.huber_loss: delta must be positive, got ", delta);
    return call(kName, input, target, reduction, RegressionLoss::Huber, delta);
  }
};

struct SmoothL1Loss {
  static constexpr const char* kName = "smooth_l1_loss";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, str reduction=\"mean\", float beta=1.0";
  static constexpr TargetGradient kTargetGradient = TargetGradient::NegatedInputGradient;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, c10::string_view reduction,
                            double beta) {
    TORCH_CHECK(beta >= 0, "fusedloss.smooth_l1_loss: beta must be non-negative, got ", beta);
    // beta = 0 is L1, as in torch; the SmoothL1 formula would divide 0 by 0 at d = 0.
    return call(kName, input, target, reduction,
                beta == 0 ? RegressionLoss::L1 : RegressionLoss::SmoothL1, beta);
  }
};

struct BinaryCrossEntropy {
  static constexpr const char* kName = "binary_cross_entropy";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, Tensor? weight=None, str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                            c10::string_view reduction) {
    PointwiseCall c = call(kName, input, target, reduction, BinaryLoss::BinaryCrossEntropy);
    c.weight = weight;
    c.same_shape = true;
    c.spec.bad_kind = BadValueKind::Probability;
    return c;
  }
};

struct BinaryCrossEntropyWithLogits {
  static constexpr const char* kName = "binary_cross_entropy_with_logits";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, Tensor? weight=None, Tensor? pos_weight=None, "
      "str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                            const OptionalTensor& pos_weight, c10::string_view reduction) {
    PointwiseCall c =
        call(kName, input, target, reduction, BinaryLoss::BinaryCrossEntropyWithLogits);
    c.weight = weight;
    c.pos_weight = pos_weight;
    c.same_shape = true;
    return c;
  }
};

struct SigmoidFocalLoss {
  static constexpr const char* kName = "sigmoid_focal_loss";
  static constexpr const char* kArguments =
      "Tensor inputs, Tensor targets, float alpha=0.25, float gamma=2.0, str reduction=\"none\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static PointwiseCall bind(const Tensor& inputs, const Tensor& targets, double alpha, double gamma,
                            c10::string_view reduction) {
    TORCH_CHECK_VALUE(gamma >= 0, "fusedloss.sigmoid_focal_loss: gamma must be >= 0, got ", gamma);
    TORCH_CHECK_VALUE(alpha <= 1,
                      "fusedloss.sigmoid_focal_loss: alpha must be in [0, 1] (or negative to "
                      "disable weighting), got ",
                      alpha);
    return call(kName, inputs, targets, reduction, BinaryLoss::SigmoidFocal, alpha, gamma);
  }
};

struct SoftMarginLoss {
  static constexpr const char* kName = "soft_margin_loss";
  static constexpr const char* kArguments = "Tensor input, Tensor target, str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::NotDifferentiable;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, c10::string_view reduction) {
    return call(kName, input, target, reduction, BinaryLoss::SoftMargin);
  }
};

struct HingeEmbeddingLoss {
  static constexpr const char* kName = "hinge_embedding_loss";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, float margin=1.0, str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::None;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, double margin,
                            c10::string_view reduction) {
    TORCH_CHECK_VALUE(!std::isnan(margin), "fusedloss.hinge_embedding_loss: margin is NaN");
    return call(kName, input, target, reduction, BinaryLoss::HingeEmbedding, margin);
  }
};

struct HingeLoss {
  static constexpr const char* kName = "hinge_loss";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, float margin=1.0, bool squared=False, str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, double margin, bool squared,
                            c10::string_view reduction) {
    TORCH_CHECK_VALUE(!std::isnan(margin), "fusedloss.hinge_loss: margin is NaN");
    PointwiseCall c =
        call(kName, input, target, reduction, BinaryLoss::Hinge, margin, squared ? 1.0 : 0.0);
    c.spec.bad_kind = BadValueKind::HingeLabel;
    return c;
  }
};

struct PoissonNllLoss {
  static constexpr const char* kName = "poisson_nll_loss";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, bool log_input=True, bool full=False, float eps=1e-08, "
      "str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, bool log_input, bool full,
                            double eps, c10::string_view reduction) {
    TORCH_CHECK_VALUE(!std::isnan(eps), "fusedloss.poisson_nll_loss: eps is NaN");
    return call(kName, input, target, reduction, BinaryLoss::PoissonNll, eps,
                (log_input ? 1.0 : 0.0) + (full ? 2.0 : 0.0));
  }
};

struct KlDiv {
  static constexpr const char* kName = "kl_div";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, str reduction=\"mean\", bool log_target=False";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, c10::string_view reduction,
                            bool log_target) {
    // 'batchmean': the sum over the batch's first dimension's size (the sum for a 0-d input).
    const bool batch_mean = reduction == "batchmean";
    PointwiseCall c = call(kName, input, target,
                           !batch_mean        ? reduction
                           : input.dim() == 0 ? "sum"
                                              : "mean",
                           BinaryLoss::KlDiv, 0, log_target ? 1.0 : 0.0);
    c.batch_mean = batch_mean && input.dim() != 0;
    return c;
  }
};

// input1 and input2 take the engine's input and target places, and the label y its weight
// operand (broadcast to them: it may not enlarge their shape).
struct MarginRankingLoss {
  static constexpr const char* kName = "margin_ranking_loss";
  static constexpr const char* kArguments =
      "Tensor input1, Tensor input2, Tensor target, float margin=0.0, str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static PointwiseCall bind(const Tensor& input1, const Tensor& input2, const Tensor& target,
                            double margin, c10::string_view reduction) {
    TORCH_CHECK(input1.dim() == input2.dim() && input1.dim() == target.dim(),
                "fusedloss.margin_ranking_loss: all input tensors should have the same number of "
                "dimensions (as torch), got input1 ",
                input1.sym_sizes(), ", input2 ", input2.sym_sizes(), " and target ",
                target.sym_sizes());
    TORCH_CHECK_VALUE(!std::isnan(margin), "fusedloss.margin_ranking_loss: margin is NaN");
    PointwiseCall c = call(kName, input1, input2, reduction, BinaryLoss::MarginRanking, margin);
    // Labels may be integers (+-1), as torch's formula promotes them.
    c.weight = at::isFloatingType(target.scalar_type())
                   ? target
                   : target.to(c10::promoteTypes(input1.scalar_type(), input2.scalar_type()));
    c.weight_name = "target";
    return c;
  }
};

// input in the engine's input place; var in its target place (the gradient formula of the
// engine's second output: kTargetPlaceArgument); the target y in its weight place, whose gradient
// is minus the input's (kWeightPlaceArgument). var may be input-shaped, input's shape without
// its last dimension (then unsqueezed), or input's with one dimension of size 1, as torch.
struct GaussianNllLoss {
  static constexpr const char* kName = "gaussian_nll_loss";
  static constexpr const char* kArguments =
      "Tensor input, Tensor target, Tensor var, bool full=False, float eps=1e-06, "
      "str reduction=\"mean\"";
  static constexpr TargetGradient kTargetGradient = TargetGradient::Formula;
  static constexpr int kTargetPlaceArgument = 2;
  static constexpr int kWeightPlaceArgument = 1;
  static PointwiseCall bind(const Tensor& input, const Tensor& target, const Tensor& var, bool full,
                            double eps, c10::string_view reduction) {
    TORCH_CHECK_VALUE(eps >= 0, "fusedloss.gaussian_nll_loss: eps must be >= 0, got ", eps);
    // input and target, as every loss checks them (var is checked in the engine's target place).
    TORCH_CHECK(input.device() == target.device(),
                "fusedloss.gaussian_nll_loss: input and target must be on the same device, got "
                "input on ",
                input.device(), " and target on ", target.device());
    TORCH_CHECK_NOT_IMPLEMENTED(
        is_supported_dtype(c10::promoteTypes(input.scalar_type(), target.scalar_type())),
        "fusedloss.gaussian_nll_loss: input and target must promote to float32, float64, "
        "float16 or bfloat16, got input ",
        input.scalar_type(), " and target ", target.scalar_type());
    broadcast_shape(kName, "input and target", input.sym_sizes(), target.sym_sizes());
    Tensor v = var;
    const auto in = input.sym_sizes(), vs = var.sym_sizes();
    if (vs != in) {
      if (input.dim() >= 1 && vs == in.slice(0, in.size() - 1)) {
        v = var.unsqueeze(-1);  // one variance per sample (homoscedastic)
      } else {
        int64_t mismatched = 0;
        bool ones = input.dim() == var.dim();
        for (size_t d = 0; ones && d < in.size(); ++d) {
          if (in[d] == vs[d]) continue;
          ++mismatched;
          ones = vs[d] == 1;
        }
        TORCH_CHECK_VALUE(ones && mismatched == 1,
                          "fusedloss.gaussian_nll_loss: var is of incorrect size: expected the "
                          "input's shape ",
                          in,
                          ", or it without its last dimension, or it with one dimension of "
                          "size 1; got ",
                          vs);
      }
    }
    PointwiseCall c = call(kName, input, v, reduction, BinaryLoss::GaussianNll, eps, full ? 1 : 0);
    c.weight = target;
    c.weight_name = "target";
    c.spec.bad_kind = BadValueKind::NegativeVariance;
    return c;
  }
};

}  // namespace declared

// The declared elementwise losses: each is registered as an op with its kernels.
using PointwiseDeclarations =
    std::tuple<declared::MseLoss, declared::L1Loss, declared::HuberLoss, declared::SmoothL1Loss,
               declared::BinaryCrossEntropy, declared::BinaryCrossEntropyWithLogits,
               declared::SigmoidFocalLoss, declared::SoftMarginLoss, declared::HingeEmbeddingLoss,
               declared::HingeLoss, declared::PoissonNllLoss, declared::KlDiv,
               declared::MarginRankingLoss, declared::GaussianNllLoss>;

// Calls f.template operator()<D>() for every declared loss D (registration).
template <typename F, typename... D>
void for_each_declared(F&& f, std::tuple<D...>* /*list*/) {
  (f.template operator()<D>(), ...);
}
template <typename F>
void for_each_declared(F&& f) {
  for_each_declared(f, static_cast<PointwiseDeclarations*>(nullptr));
}

}  // namespace ops
}  // namespace fusedloss
