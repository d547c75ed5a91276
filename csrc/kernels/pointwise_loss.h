#pragma once
// What one call of a pointwise engine computes, in the form both engines (CPU and CUDA) take, and
// the one place that turns a loss kind into its formula.

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>

#include "kernels/binary_formulas.h"
#include "kernels/regression_formulas.h"
#include "ops/bad_values.h"

namespace fusedloss {

enum class PointwiseLoss {
  // regression: functions of input - target
  Mse,
  L1,
  Huber,
  SmoothL1,
  // binary classification and margin losses
  BinaryCrossEntropy,
  BinaryCrossEntropyWithLogits,
  SigmoidFocal,
  SoftMargin,
  HingeEmbedding,
  Hinge,
};

inline bool is_regression(PointwiseLoss loss) { return loss <= PointwiseLoss::SmoothL1; }

struct PointwiseLossSpec {
  PointwiseLoss loss;
  double param = 0;   // delta, beta, margin or alpha
  double param2 = 0;  // gamma (focal), squared (hinge, 0 or 1)
  at::Reduction::Reduction reduction = at::Reduction::Mean;  // torch's own enum
  double grad_scale = 1.0;      // multiplies every gradient element (1/n folds in a mean)
  double backward_scale = 1.0;  // reduced: what backward multiplies grad_output by
  const char* op = "";          // the public op's name (a string literal), for errors
  BadValueKind bad_kind = BadValueKind::None;  // what an element the formula rejects is
};

// The tensors of one engine call. input, target and the outputs are contiguous with n elements.
// weight and pos_weight are contiguous and repeat with their period along the flat index (the
// period is their numel: n for a full tensor, C for a per-class vector, 1 for a scalar), or are
// undefined (1 everywhere). loss is [n] for Reduction::None, 0-d otherwise; backward_scale (0-d,
// accumulation dtype) receives spec.backward_scale when the loss is reduced. grad_input and
// grad_target are written when defined. Elements the formula rejects (input outside [0, 1] for
// BCE, labels other than +-1 for hinge): the CPU engine counts them into invalid_count (int64,
// 0-d) for the op to raise; the CUDA engine records them for a deferred error (ops/bad_values.h).
struct PointwiseOperands {
  at::Tensor input, target, weight, pos_weight;
  at::Tensor loss, backward_scale, grad_input, grad_target, invalid_count;
};

// A regression formula seen through the engines' element interface.
template <typename F>
struct OfDifference {
  F f;
  template <typename T>
  C10_HOST_DEVICE T value(T x, T t, T, T) const {
    return f.value(x - t);
  }
  template <typename T>
  C10_HOST_DEVICE T grad_input(T x, T t, T, T) const {
    return f.derivative(x - t);
  }
};

// Calls fn(formula) with the formula of a regression spec, in accumulation type T.
template <typename T, typename Fn>
decltype(auto) visit_regression_formula(const PointwiseLossSpec& spec, Fn&& fn) {
  using namespace formulas;
  switch (spec.loss) {
    case PointwiseLoss::Mse:
      return fn(OfDifference<MseLoss<T>>{{}});
    case PointwiseLoss::L1:
      return fn(OfDifference<L1Loss<T>>{{}});
    case PointwiseLoss::Huber:
      return fn(OfDifference<HuberLoss<T>>{{static_cast<T>(spec.param)}});
    default:
      return fn(OfDifference<SmoothL1Loss<T>>{{static_cast<T>(spec.param)}});
  }
}

// Calls fn(formula) with the formula of a binary/margin spec, in accumulation type T.
template <typename T, typename Fn>
decltype(auto) visit_binary_formula(const PointwiseLossSpec& spec, Fn&& fn) {
  using namespace formulas;
  const T p = static_cast<T>(spec.param), p2 = static_cast<T>(spec.param2);
  switch (spec.loss) {
    case PointwiseLoss::BinaryCrossEntropy:
      return fn(BinaryCrossEntropy<T>{});
    case PointwiseLoss::BinaryCrossEntropyWithLogits:
      return fn(BinaryCrossEntropyWithLogits<T>{});
    case PointwiseLoss::SigmoidFocal:
      if (spec.param2 == 2) return fn(SigmoidFocal<T, true>{p, p2});
      return fn(SigmoidFocal<T>{p, p2});
    case PointwiseLoss::SoftMargin:
      return fn(SoftMargin<T>{});
    case PointwiseLoss::HingeEmbedding:
      return fn(HingeEmbedding<T>{p});
    default:
      if (spec.param2 != 0) return fn(Hinge<T, true>{p});
      return fn(Hinge<T, false>{p});
  }
}

// What a formula offers, detected from its members.
template <typename F, typename T>
constexpr bool has_target_gradient = requires(F f, T v) {
  f.grad_target(v, v, v, v);
};
template <typename F, typename T>
constexpr bool validates_elements = requires(F f, T v) {
  f.valid(v, v);
};

// The engines, one translation unit per family and device.
namespace cpu {
void regression_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
void binary_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
}  // namespace cpu
namespace cuda {
void regression_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
void binary_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
}  // namespace cuda

}  // namespace fusedloss
